//! Firmware download links (PRV-4), sans-I/O: the firmware settings, the token key, the
//! per-device token (HMAC-SHA-256 over image, device and expiry) and the arguments of a device's
//! `upgrade_firmware` command.

use std::path::Path;
use std::time::Duration;

use fleetpulse_proto::commands::{UPGRADE_FIRMWARE, validate_internal_command};
use fleetpulse_proto::{DeviceId, FirmwareId, UnixMillis};
use fleetpulse_store::{Device, FirmwareImage};
use rand::RngCore;
use ring::hmac;

/// Default largest firmware upload: 256 MiB.
pub const DEFAULT_MAX_FIRMWARE_UPLOAD: u64 = 256 * 1024 * 1024;

/// Default lifetime of a download link (and of the upgrade command): 24 hours.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(24 * 3600);

/// The secret download tokens are signed with (32 bytes). Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct FirmwareKey([u8; 32]);

impl std::fmt::Debug for FirmwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FirmwareKey(..)")
    }
}

impl FirmwareKey {
    /// A fresh random key (tokens signed with it die with the process).
    pub fn random() -> FirmwareKey {
        let mut key = [0; 32];
        rand::rng().fill_bytes(&mut key);
        FirmwareKey(key)
    }

    /// This key.
    pub fn from_bytes(key: [u8; 32]) -> FirmwareKey {
        FirmwareKey(key)
    }

    /// The key kept in `path` (32 bytes), created there (mode 0600) with a random key if the
    /// file does not exist, so that links survive a restart.
    pub fn load_or_create(path: &Path) -> std::io::Result<FirmwareKey> {
        match std::fs::read(path) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map(FirmwareKey).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} must hold exactly 32 bytes", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = FirmwareKey::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path)?;
                std::io::Write::write_all(&mut file, &key.0)?;
                file.sync_all()?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    fn hmac(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

/// Firmware settings (`[firmware]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareSettings {
    /// Largest image an upload may carry, bytes (at most the store's 1 GiB).
    pub max_upload_bytes: u64,
    /// `https://host:port` of the download server as devices reach it; `None` while no download
    /// server runs (upgrades are then refused with 409).
    pub download_base: Option<String>,
    /// The token key, shared with the download server.
    pub key: FirmwareKey,
    /// How long a download link (and its upgrade command) lives.
    pub link_ttl: Duration,
}

impl Default for FirmwareSettings {
    fn default() -> Self {
        FirmwareSettings {
            max_upload_bytes: DEFAULT_MAX_FIRMWARE_UPLOAD,
            download_base: None,
            key: FirmwareKey::random(),
            link_ttl: DEFAULT_LINK_TTL,
        }
    }
}

/// Why a download token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not of the form `<expiry>.<64 hex digits>`, or not signed for this image and device.
    Invalid,
    /// Signed, but its expiry has passed.
    Expired,
}

fn message(image: FirmwareId, device: DeviceId, expires: UnixMillis) -> Vec<u8> {
    let mut m = b"fleetpulse firmware download v1\0".to_vec();
    m.extend_from_slice(&image.0.to_be_bytes());
    m.extend_from_slice(&device.0.to_be_bytes());
    m.extend_from_slice(&expires.0.to_be_bytes());
    m
}

/// The token of `device`'s download of `image`, valid until `expires`.
pub fn sign_token(key: &FirmwareKey, image: FirmwareId, device: DeviceId, expires: UnixMillis) -> String {
    let tag = hmac::sign(&key.hmac(), &message(image, device, expires));
    format!("{}.{}", expires.0, crate::secrets::hex(tag.as_ref()))
}

/// Checks a token for `device`'s download of `image` at `now` (constant-time compare).
pub fn verify_token(
    key: &FirmwareKey,
    image: FirmwareId,
    device: DeviceId,
    token: &str,
    now: UnixMillis,
) -> Result<(), TokenRefusal> {
    let (expires, tag) = token.split_once('.').ok_or(TokenRefusal::Invalid)?;
    let expires = expires.parse::<i64>().map(UnixMillis).map_err(|_| TokenRefusal::Invalid)?;
    let tag = unhex32(tag).ok_or(TokenRefusal::Invalid)?;
    hmac::verify(&key.hmac(), &message(image, device, expires), &tag).map_err(|_| TokenRefusal::Invalid)?;
    if expires <= now {
        return Err(TokenRefusal::Expired);
    }
    Ok(())
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        out[i] = digit(pair[0])? * 16 + digit(pair[1])?;
    }
    Some(out)
}

/// The arguments of `device`'s upgrade to `image` at `now`, with the link's expiry (also the
/// command's deadline); `None` while no download server runs.
pub fn upgrade_args(
    settings: &FirmwareSettings,
    image: &FirmwareImage,
    device: DeviceId,
    now: UnixMillis,
) -> Option<(String, UnixMillis)> {
    let base = settings.download_base.as_deref()?;
    let ttl = i64::try_from(settings.link_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires = UnixMillis(now.0.saturating_add(ttl));
    let token = sign_token(&settings.key, image.id, device, expires);
    let args = serde_json::json!({
        "url": format!("{}/firmware/{}/{}?token={token}", base.trim_end_matches('/'), image.id, device),
        "sha256": image.sha256,
        "size": image.size,
        "version": image.version,
        "image": image.id.0,
    });
    // Checked like any command, so a device never receives arguments its catalog refuses.
    let args = validate_internal_command(UPGRADE_FIRMWARE, &args).ok()?;
    Some((args.to_string(), expires))
}

/// Why a device cannot be upgraded to an image.
pub fn model_mismatch(image: &FirmwareImage, device: &Device) -> Option<String> {
    (image.model != device.model).then(|| {
        format!("firmware image {} is for model {}; device {} is a {}", image.id, image.model, device.id, device.model)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_for_its_image_and_device_until_it_expires() {
        let key = FirmwareKey::from_bytes([7; 32]);
        let (image, device, expires) = (FirmwareId(3), DeviceId(11), UnixMillis(10_000));
        let token = sign_token(&key, image, device, expires);
        assert!(token.starts_with("10000."));
        assert_eq!(verify_token(&key, image, device, &token, UnixMillis(9_999)), Ok(()));
        assert_eq!(verify_token(&key, image, device, &token, UnixMillis(10_000)), Err(TokenRefusal::Expired));
        assert_eq!(verify_token(&key, image, DeviceId(12), &token, UnixMillis(0)), Err(TokenRefusal::Invalid));
        assert_eq!(verify_token(&key, FirmwareId(4), device, &token, UnixMillis(0)), Err(TokenRefusal::Invalid));
        let other = FirmwareKey::from_bytes([8; 32]);
        assert_eq!(verify_token(&other, image, device, &token, UnixMillis(0)), Err(TokenRefusal::Invalid));
        // A later expiry with the same tag does not verify.
        let (_, tag) = token.split_once('.').unwrap();
        let extended = format!("99999.{tag}");
        assert_eq!(verify_token(&key, image, device, &extended, UnixMillis(0)), Err(TokenRefusal::Invalid));
        for bad in ["", ".", "10000", "x.y", "10000.zz", &format!("10000.{}", "0".repeat(63)), &token.to_uppercase()] {
            assert_eq!(verify_token(&key, image, device, bad, UnixMillis(0)), Err(TokenRefusal::Invalid), "{bad}");
        }
    }

    #[test]
    fn keys_persist_and_debug_hides_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("firmware.key");
        let first = FirmwareKey::load_or_create(&path).unwrap();
        assert_eq!(FirmwareKey::load_or_create(&path).unwrap(), first);
        assert_eq!(format!("{first:?}"), "FirmwareKey(..)");
        std::fs::write(&path, b"short").unwrap();
        assert!(FirmwareKey::load_or_create(&path).is_err());
    }
}
