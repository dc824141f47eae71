//! Files devices upload in answer to commands (`FileStore`, issue 11): the metadata, the
//! content read back in [`FILE_CHUNK`] pieces, the per-device bound and the expiry.
//!
//! A file is *complete* once its row and all of its content are durable; only complete files are
//! ever answered (listed, read or read in chunks). The embedded backend keeps the content as a
//! file under the data directory (`<data_dir>/files/<id>`), the PostgreSQL backend in a
//! `file_chunks` table so that any node can serve it.

use async_trait::async_trait;
use fleetpulse_proto::{CommandId, DeviceId, EnterpriseId, FileId, UnixMillis};
use serde::Serialize;

use crate::{Page, Result, StoreError};

/// The granularity of reads and copies of file content: every chunk but the last of a file is
/// this long.
pub const FILE_CHUNK: usize = 1024 * 1024;

/// Most files one device may have stored and not yet expired; [`FileStore::store_file`] refuses
/// more with [`StoreError::LimitExceeded`].
pub const MAX_FILES_PER_DEVICE: u64 = 100;

/// Largest file the store accepts, in bytes (1 GiB; the configured upload limit is smaller).
pub const MAX_STORED_FILE_BYTES: u64 = 1 << 30;

/// Most rows one [`FileStore::list_device_files`] returns, whatever limit it is given.
pub const MAX_FILE_PAGE: u32 = 1_000;

/// Most files one [`FileStore::delete_expired_files`] deletes, whatever limit it is given.
pub const MAX_FILE_DELETES: u32 = 10_000;

/// Uploaded files: their metadata and content.
#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Stores a file whose content (exactly `file.size` bytes; the caller has checked the
    /// SHA-256) is in the local file `content`. The store copies it in FILE_CHUNK pieces (bounded
    /// memory) and never exposes a half-written file: it is listed only once complete.
    ///
    /// [`StoreError::InvalidInput`] (and nothing is stored) when [`NewFile::validate`] refuses
    /// the file, when its device is not a device of its enterprise, when its command is not a
    /// command of its device, or when `content` is not `file.size` bytes long;
    /// [`StoreError::LimitExceeded`] when the device already has [`MAX_FILES_PER_DEVICE`] files
    /// not expired at `file.created_at`. `content` is left in place.
    async fn store_file(&self, file: NewFile, content: &std::path::Path) -> Result<StoredFile>;
    /// The complete file with this id.
    async fn file(&self, id: FileId) -> Result<Option<StoredFile>>;
    /// Newest first, keyset like list_device_commands (Page.after = id).
    ///
    /// The device's complete files with an id below `page.after` when it is above 0, else from
    /// the newest; at most `page.limit`, and never more than [`MAX_FILE_PAGE`].
    async fn list_device_files(&self, device: DeviceId, page: Page) -> Result<Vec<StoredFile>>;
    /// Chunk `index` of the content (FILE_CHUNK bytes, the last one shorter); None past the end
    /// or for an unknown file.
    async fn file_chunk(&self, id: FileId, index: u64) -> Result<Option<Vec<u8>>>;
    /// Deletes files with expires_at <= now (content too), at most `limit`; answers how many.
    ///
    /// Earliest expiry first; never more than [`MAX_FILE_DELETES`] in one call.
    async fn delete_expired_files(&self, now: UnixMillis, limit: u32) -> Result<u64>;
}

/// A file to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// The device that uploaded it.
    pub device_id: DeviceId,
    /// The device's enterprise.
    pub enterprise_id: EnterpriseId,
    /// The command it answers, if any (a command of the same device).
    pub command_id: Option<CommandId>,
    /// Its name, as [`fleetpulse_proto::domain::check_file_name`] allows.
    pub name: String,
    /// Its length in bytes (0 allowed: an empty log is an answer too), at most
    /// [`MAX_STORED_FILE_BYTES`].
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// When it was received (and the time its device's file count is taken at).
    pub created_at: UnixMillis,
    /// When it is deleted; after `created_at`.
    pub expires_at: UnixMillis,
}

impl NewFile {
    /// Why the file cannot be stored on its own (whatever the store holds): a bad name, a size
    /// above [`MAX_STORED_FILE_BYTES`], an expiry not after its creation.
    pub fn validate(&self) -> Result<()> {
        fleetpulse_proto::domain::check_file_name(&self.name)
            .map_err(|_| StoreError::InvalidInput(format!("invalid file name {:?}", self.name)))?;
        if self.size > MAX_STORED_FILE_BYTES {
            return Err(StoreError::InvalidInput(format!(
                "a file of {} bytes is larger than {MAX_STORED_FILE_BYTES} bytes",
                self.size
            )));
        }
        if self.expires_at <= self.created_at {
            return Err(StoreError::InvalidInput("a file must expire after it is created".into()));
        }
        Ok(())
    }

    /// The stored file with this id.
    pub(crate) fn stored(self, id: FileId) -> StoredFile {
        StoredFile {
            id,
            device_id: self.device_id,
            enterprise_id: self.enterprise_id,
            command_id: self.command_id,
            name: self.name,
            size: self.size,
            sha256: hex(&self.sha256),
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }
}

/// A stored (complete) file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StoredFile {
    /// Identifier (never reused).
    pub id: FileId,
    /// The device that uploaded it.
    pub device_id: DeviceId,
    /// The device's enterprise.
    pub enterprise_id: EnterpriseId,
    /// The command it answers, if any.
    pub command_id: Option<CommandId>,
    /// Its name.
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// When it was received.
    pub created_at: UnixMillis,
    /// When it is deleted.
    pub expires_at: UnixMillis,
}

impl StoredFile {
    /// How many chunks the content has (0 for an empty file).
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(FILE_CHUNK as u64)
    }
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char]).collect()
}

/// The refusal of a file beyond [`MAX_FILES_PER_DEVICE`].
pub(crate) fn too_many_files(device: DeviceId) -> StoreError {
    StoreError::LimitExceeded(format!("device {device} already has {MAX_FILES_PER_DEVICE} stored files"))
}

/// The refusal of content whose length is not the declared size.
pub(crate) fn wrong_size(declared: u64, actual: u64) -> StoreError {
    StoreError::InvalidInput(format!("the content is {actual} bytes, not the declared {declared}"))
}

/// The byte range `[start, end)` of chunk `index` of a file of `size` bytes, `None` past its end.
pub(crate) fn chunk_range(size: u64, index: u64) -> Option<(u64, u64)> {
    let start = index.checked_mul(FILE_CHUNK as u64)?;
    (start < size).then(|| (start, size.min(start + FILE_CHUNK as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = hex(&bytes);
        assert_eq!(text.len(), 512);
        assert_eq!(&text[..8], "00010203");
        assert_eq!(&text[text.len() - 6..], "fdfeff");
        assert_eq!(hex(&[0xab, 0x0c]), "ab0c");
    }

    #[test]
    fn chunks_cover_the_file_once() {
        let c = FILE_CHUNK as u64;
        assert_eq!(chunk_range(0, 0), None);
        assert_eq!(chunk_range(1, 0), Some((0, 1)));
        assert_eq!(chunk_range(1, 1), None);
        assert_eq!(chunk_range(c, 0), Some((0, c)));
        assert_eq!(chunk_range(c, 1), None);
        assert_eq!(chunk_range(c + 1, 1), Some((c, c + 1)));
        assert_eq!(chunk_range(u64::MAX, u64::MAX), None);
    }

    fn file(name: &str, size: u64, created: i64, expires: i64) -> NewFile {
        NewFile {
            device_id: DeviceId(1),
            enterprise_id: EnterpriseId(1),
            command_id: None,
            name: name.into(),
            size,
            sha256: [0; 32],
            created_at: UnixMillis(created),
            expires_at: UnixMillis(expires),
        }
    }

    #[test]
    fn validation_bounds_name_size_and_expiry() {
        assert!(file("log.txt", 0, 1, 2).validate().is_ok());
        assert!(file("log.txt", MAX_STORED_FILE_BYTES, 1, 2).validate().is_ok());
        for bad in [
            file("../x", 1, 1, 2),
            file("", 1, 1, 2),
            file("log.txt", MAX_STORED_FILE_BYTES + 1, 1, 2),
            file("log.txt", 1, 2, 2),
        ] {
            assert!(matches!(bad.validate(), Err(StoreError::InvalidInput(_))), "{bad:?}");
        }
    }
}
