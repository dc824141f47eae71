//! Firmware images (`FirmwareStore`, PRV-4): images uploaded per enterprise for a device model,
//! with their version, size, SHA-256 and who uploaded them when; their content read back in
//! [`FILE_CHUNK`] pieces; the per-enterprise bound; deletion refused while an upgrade to the
//! image is pending.
//!
//! An image belongs to one enterprise (there are no platform-wide images: a channel or the
//! platform uploads into the enterprise it acts in), so tenancy is the enterprise's. Content is
//! kept as device files are ([`crate::FileStore`]): on the embedded store a file
//! `<data_dir>/firmware/<id>` written in the same crash-safe order, on PostgreSQL a
//! `firmware_chunks` table filled in the image's own transaction; an image is listed only once
//! all of its content is durable.
//!
//! An upgrade *uses* an image while a pending command (queued, sent, accepted, running) of kind
//! [`UPGRADE_FIRMWARE`](fleetpulse_proto::commands::UPGRADE_FIRMWARE) names it in its `image`
//! argument.

use async_trait::async_trait;
use fleetpulse_proto::{AccountId, CommandId, DeviceId, EnterpriseId, FirmwareId, UnixMillis};
use serde::Serialize;

use crate::files::{FILE_CHUNK, hex};
use crate::{Page, Result, StoreError};

/// Most images one enterprise may hold; [`FirmwareStore::store_firmware`] refuses more with
/// [`StoreError::LimitExceeded`].
pub const MAX_FIRMWARE_PER_ENTERPRISE: u64 = 50;

/// Largest image the store accepts, bytes (the configured upload limit is smaller).
pub const MAX_FIRMWARE_IMAGE_BYTES: u64 = fleetpulse_proto::commands::MAX_FIRMWARE_BYTES;

/// Longest model name and version, bytes.
pub const MAX_FIRMWARE_LABEL: usize = 64;

/// Most rows one [`FirmwareStore::list_firmware`] returns, whatever limit it is given.
pub const MAX_FIRMWARE_PAGE: u32 = 100;

/// Most pending upgrades a refused deletion names ([`FirmwareDeletion::InUse`]).
pub const MAX_NAMED_UPGRADES: usize = 20;

/// Firmware images and their content.
#[async_trait]
pub trait FirmwareStore: Send + Sync + 'static {
    /// Stores an image whose content (exactly `image.size` bytes; the caller has checked the
    /// SHA-256) is in the local file `content`, copied in [`FILE_CHUNK`] pieces (bounded memory);
    /// the image is listed only once complete. `content` is left in place.
    ///
    /// [`StoreError::InvalidInput`] (nothing stored) when [`NewFirmware::validate`] refuses it,
    /// its enterprise or account does not exist, or `content` is not `image.size` bytes long;
    /// [`StoreError::LimitExceeded`] when the enterprise already has
    /// [`MAX_FIRMWARE_PER_ENTERPRISE`] images.
    async fn store_firmware(&self, image: NewFirmware, content: &std::path::Path) -> Result<FirmwareImage>;
    /// The complete image with this id.
    async fn firmware(&self, id: FirmwareId) -> Result<Option<FirmwareImage>>;
    /// The enterprise's complete images, newest first (by id): ids below `page.after` when it
    /// is above 0, else from the newest; at most `page.limit`, never more than
    /// [`MAX_FIRMWARE_PAGE`].
    async fn list_firmware(&self, enterprise: EnterpriseId, page: Page) -> Result<Vec<FirmwareImage>>;
    /// Chunk `index` of the content ([`FILE_CHUNK`] bytes, the last one shorter); `None` past
    /// the end or for an unknown image.
    async fn firmware_chunk(&self, id: FirmwareId, index: u64) -> Result<Option<Vec<u8>>>;
    /// Deletes the image and its content unless an upgrade uses it (see the module
    /// documentation): then nothing changes and the answer names those upgrades. `None` for an
    /// unknown image.
    async fn delete_firmware(&self, id: FirmwareId) -> Result<Option<FirmwareDeletion>>;
}

/// An image to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFirmware {
    /// The enterprise it belongs to.
    pub enterprise_id: EnterpriseId,
    /// The device model it is for (as devices report it in `Hello`).
    pub model: String,
    /// The firmware version it installs.
    pub version: String,
    /// The uploaded file's name.
    pub name: String,
    /// Its length in bytes, 1 to [`MAX_FIRMWARE_IMAGE_BYTES`].
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// Who uploaded it.
    pub uploaded_by: AccountId,
    /// When.
    pub uploaded_at: UnixMillis,
}

impl NewFirmware {
    /// Why the image cannot be stored on its own: a model or version that is empty, longer than
    /// [`MAX_FIRMWARE_LABEL`] or not printable ASCII without spaces, a bad file name, a size of 0
    /// or above [`MAX_FIRMWARE_IMAGE_BYTES`].
    pub fn validate(&self) -> Result<()> {
        for (what, text) in [("model", &self.model), ("version", &self.version)] {
            if !is_label(text) {
                return Err(StoreError::InvalidInput(format!(
                    "the {what} must be 1 to {MAX_FIRMWARE_LABEL} printable characters without spaces"
                )));
            }
        }
        fleetpulse_proto::domain::check_file_name(&self.name)
            .map_err(|_| StoreError::InvalidInput(format!("invalid file name {:?}", self.name)))?;
        if self.size == 0 || self.size > MAX_FIRMWARE_IMAGE_BYTES {
            return Err(StoreError::InvalidInput(format!(
                "an image must be 1 to {MAX_FIRMWARE_IMAGE_BYTES} bytes, not {}",
                self.size
            )));
        }
        Ok(())
    }

    /// The stored image with this id.
    pub(crate) fn stored(self, id: FirmwareId) -> FirmwareImage {
        FirmwareImage {
            id,
            enterprise_id: self.enterprise_id,
            model: self.model,
            version: self.version,
            name: self.name,
            size: self.size,
            sha256: hex(&self.sha256),
            uploaded_by: self.uploaded_by,
            uploaded_at: self.uploaded_at,
        }
    }
}

/// Whether `text` is a model or version fleetpulse accepts.
pub fn is_label(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_FIRMWARE_LABEL && text.bytes().all(|b| b.is_ascii_graphic())
}

/// A stored (complete) image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FirmwareImage {
    /// Identifier (never reused).
    pub id: FirmwareId,
    /// The enterprise it belongs to.
    pub enterprise_id: EnterpriseId,
    /// The device model it is for.
    pub model: String,
    /// The firmware version it installs.
    pub version: String,
    /// The uploaded file's name.
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// Who uploaded it.
    pub uploaded_by: AccountId,
    /// When.
    pub uploaded_at: UnixMillis,
}

impl FirmwareImage {
    /// How many chunks the content has.
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(FILE_CHUNK as u64)
    }
}

/// What [`FirmwareStore::delete_firmware`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirmwareDeletion {
    /// The image and its content are gone.
    Deleted,
    /// Nothing changed: upgrades to the image are pending.
    InUse {
        /// How many.
        pending: u64,
        /// The first of them (oldest first), at most [`MAX_NAMED_UPGRADES`].
        upgrades: Vec<PendingUpgrade>,
    },
}

/// A pending upgrade that keeps an image from being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PendingUpgrade {
    /// The upgrade command.
    pub command_id: CommandId,
    /// Its device.
    pub device_id: DeviceId,
}

/// The refusal of an image beyond [`MAX_FIRMWARE_PER_ENTERPRISE`].
pub(crate) fn too_many_images(enterprise: EnterpriseId) -> StoreError {
    StoreError::LimitExceeded(format!(
        "enterprise {enterprise} already has {MAX_FIRMWARE_PER_ENTERPRISE} firmware images; delete one first"
    ))
}

/// The refusal of an image whose enterprise or uploader does not exist.
pub(crate) fn unknown_owner(image: &NewFirmware) -> StoreError {
    StoreError::InvalidInput(format!(
        "enterprise {} or account {} does not exist",
        image.enterprise_id, image.uploaded_by
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(model: &str, version: &str, size: u64) -> NewFirmware {
        NewFirmware {
            enterprise_id: EnterpriseId(1),
            model: model.into(),
            version: version.into(),
            name: "fw.bin".into(),
            size,
            sha256: [0; 32],
            uploaded_by: AccountId(1),
            uploaded_at: UnixMillis(1),
        }
    }

    #[test]
    fn validation_bounds_labels_and_size() {
        assert!(image("T54W", "96.86.0.100", 1).validate().is_ok());
        assert!(image("T54W", "1", MAX_FIRMWARE_IMAGE_BYTES).validate().is_ok());
        for bad in [
            image("", "1", 1),
            image("T54W", "", 1),
            image("T 54", "1", 1),
            image("T54W", &"9".repeat(MAX_FIRMWARE_LABEL + 1), 1),
            image("T54W", "1\n", 1),
            image("T54W", "1", 0),
            image("T54W", "1", MAX_FIRMWARE_IMAGE_BYTES + 1),
            NewFirmware { name: "../fw".into(), ..image("T54W", "1", 1) },
        ] {
            assert!(matches!(bad.validate(), Err(StoreError::InvalidInput(_))), "{bad:?}");
        }
    }
}
