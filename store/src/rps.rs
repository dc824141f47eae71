//! The RPS device list (`RpsStore`, DEV-1): per enterprise with the RPS permission, which
//! provisioning server each of its devices (by MAC or serial number) is redirected to when it
//! asks the redirect service.
//!
//! Choices where the issue is silent:
//! - A device key (MAC, or serial number for devices without one) is in at most one list across
//!   all enterprises: a device is redirected to one server. Adding a key another enterprise has
//!   is refused ([`StoreError::AlreadyExists`]); an import reports such rows one by one.
//! - An entry's key does not change; its server URL does (delete and add to change the key).
//! - At most [`MAX_RPS_DEVICES_PER_ENTERPRISE`] entries per enterprise.

use async_trait::async_trait;
use fleetpulse_proto::domain::DeviceKey;
use fleetpulse_proto::{EnterpriseId, Mac, RpsDeviceId, UnixMillis};
use serde::Serialize;

use crate::{Page, Result, StoreError, check_text};

/// Most entries of one enterprise's RPS list.
pub const MAX_RPS_DEVICES_PER_ENTERPRISE: u64 = 100_000;
/// Longest server URL, in characters.
pub const MAX_RPS_URL: usize = 512;
/// Longest serial number key, in characters (as devices' serials).
pub const MAX_RPS_SERIAL: usize = fleetpulse_proto::domain::MAX_SHORT_TEXT;
/// Most rows one [`RpsStore::import_rps_devices`] takes.
pub const MAX_RPS_IMPORT_ROWS: usize = 10_000;
/// Most enterprises one [`RpsFilter`] names.
pub const MAX_RPS_ENTERPRISE_FILTER: usize = 10_000;

/// The RPS device list.
#[async_trait]
pub trait RpsStore: Send + Sync + 'static {
    /// Adds an entry. [`StoreError::InvalidInput`] for a URL [`check_server_url`] refuses or an
    /// unknown enterprise; [`StoreError::AlreadyExists`] when the key is in a list (any
    /// enterprise's); [`StoreError::LimitExceeded`] beyond [`MAX_RPS_DEVICES_PER_ENTERPRISE`].
    async fn add_rps_device(&self, new: NewRpsDevice) -> Result<RpsDevice>;
    /// The entry with this id.
    async fn rps_device(&self, id: RpsDeviceId) -> Result<Option<RpsDevice>>;
    /// Replaces an entry's server URL at `at`; `None` for an unknown entry.
    async fn set_rps_server(&self, id: RpsDeviceId, server_url: String, at: UnixMillis) -> Result<Option<RpsDevice>>;
    /// Deletes an entry; false if there was none.
    async fn delete_rps_device(&self, id: RpsDeviceId) -> Result<bool>;
    /// Entries matching the filter, ordered by id, after the cursor (at most `page.limit`).
    async fn list_rps_devices(&self, filter: &RpsFilter, page: Page) -> Result<Vec<RpsDevice>>;
    /// Adds or updates the rows of an import into the enterprise's list in one transaction: a
    /// key new to every list is added, a key of this enterprise gets the row's URL, a key of
    /// another enterprise is refused alone ([`RpsImportOutcome::Taken`]).
    /// [`StoreError::InvalidInput`] (nothing stored) beyond [`MAX_RPS_IMPORT_ROWS`] rows, for an
    /// invalid URL or an unknown enterprise; [`StoreError::LimitExceeded`] (nothing stored) when
    /// the list would grow beyond [`MAX_RPS_DEVICES_PER_ENTERPRISE`].
    async fn import_rps_devices(
        &self,
        enterprise: EnterpriseId,
        rows: Vec<(DeviceKey, String)>,
        at: UnixMillis,
    ) -> Result<Vec<RpsImportOutcome>>;
    /// Where the device with this key is redirected: its entry's enterprise and server URL.
    async fn rps_server(&self, key: &DeviceKey) -> Result<Option<(EnterpriseId, String)>>;
}

/// An entry of an RPS list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RpsDevice {
    /// Identifier.
    pub id: RpsDeviceId,
    /// The enterprise whose list it is in.
    pub enterprise_id: EnterpriseId,
    /// The device's MAC (12 lower-case hex digits), if it is keyed by MAC.
    pub mac: Option<String>,
    /// The device's serial number, if it is keyed by serial.
    pub serial: Option<String>,
    /// The provisioning server the device is sent to.
    pub server_url: String,
    /// When it was added.
    pub created_at: UnixMillis,
    /// When it last changed.
    pub updated_at: UnixMillis,
}

/// Arguments of [`RpsStore::add_rps_device`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRpsDevice {
    /// The enterprise.
    pub enterprise_id: EnterpriseId,
    /// The device's MAC or serial.
    pub key: DeviceKey,
    /// Its provisioning server.
    pub server_url: String,
    /// When.
    pub at: UnixMillis,
}

/// What [`RpsStore::import_rps_devices`] did with one row, in the rows' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RpsImportOutcome {
    /// A new entry.
    Added(RpsDeviceId),
    /// The enterprise's entry got the row's URL.
    Updated(RpsDeviceId),
    /// Another enterprise's list has the key: nothing changed.
    Taken,
}

/// Filter of [`RpsStore::list_rps_devices`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpsFilter {
    /// Only these enterprises' entries (`None`: every enterprise; at most
    /// [`MAX_RPS_ENTERPRISE_FILTER`]; an empty list matches nothing).
    pub enterprises: Option<Vec<EnterpriseId>>,
    /// Only entries whose MAC, serial or URL contains this, ignoring case (at most
    /// [`crate::MAX_SEARCH_CHARS`] characters).
    pub q: Option<String>,
}

impl RpsFilter {
    /// [`StoreError::InvalidInput`] for a list beyond its bound.
    pub fn validate(&self) -> Result<()> {
        if let Some(e) = &self.enterprises {
            crate::check_bound("RPS enterprise filter", e.len(), MAX_RPS_ENTERPRISE_FILTER)?;
        }
        Ok(())
    }
}

/// The key as stored: `mac:<12 hex digits>` or `serial:<serial>`.
pub(crate) fn rps_key(key: &DeviceKey) -> Result<String> {
    match key {
        DeviceKey::Mac(mac) => Ok(format!("mac:{mac}")),
        DeviceKey::Serial(serial) => {
            check_text("serial", serial, MAX_RPS_SERIAL)?;
            if serial.trim().is_empty() || serial.chars().any(char::is_whitespace) {
                return Err(StoreError::InvalidInput("serial must be non-empty, without spaces".into()));
            }
            Ok(format!("serial:{serial}"))
        }
    }
}

/// The MAC and serial of a stored key ([`rps_key`]).
pub(crate) fn split_rps_key(stored: &str) -> (Option<String>, Option<String>) {
    match stored.split_once(':') {
        Some(("mac", mac)) => (Mac::parse(mac).ok().map(|m| m.to_string()), None),
        Some(("serial", serial)) => (None, Some(serial.to_owned())),
        _ => (None, None),
    }
}

/// [`StoreError::InvalidInput`] unless the URL is `http://` or `https://` with a host, at most
/// [`MAX_RPS_URL`] characters, without spaces or control characters.
pub fn check_server_url(url: &str) -> Result<()> {
    check_text("server_url", url, MAX_RPS_URL)?;
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    if host.is_none_or(str::is_empty) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(StoreError::InvalidInput(format!(
            "server_url {url:?} must be an http:// or https:// URL with a host, without spaces"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_urls_are_checked() {
        let mac = Mac::parse("001565aabbcc").expect("mac");
        let stored = rps_key(&DeviceKey::Mac(mac)).expect("mac key");
        assert_eq!(stored, "mac:001565aabbcc");
        assert_eq!(split_rps_key(&stored), (Some("001565aabbcc".into()), None));
        let stored = rps_key(&DeviceKey::Serial("SN-1".into())).expect("serial key");
        assert_eq!(split_rps_key(&stored), (None, Some("SN-1".into())));
        assert!(rps_key(&DeviceKey::Serial("a b".into())).is_err());
        assert!(rps_key(&DeviceKey::Serial(String::new())).is_err());
        assert!(check_server_url("https://dm.example.com/dm/cfg").is_ok());
        assert!(check_server_url("http://10.0.0.1:8080").is_ok());
        for bad in ["", "ftp://x", "https://", "https:///x", "https://a b", "javascript:alert(1)"] {
            assert!(check_server_url(bad).is_err(), "{bad:?}");
        }
        assert!(check_server_url(&format!("https://x/{}", "a".repeat(MAX_RPS_URL))).is_err());
    }
}
