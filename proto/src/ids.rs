//! Typed identifiers shared by every crate: never pass bare integers across crate APIs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The largest id the stores can hold: ids are `u64` newtypes stored as SQL `BIGINT` (`i64`).
/// Ids from outside (JSON bodies, paths, query strings) above it are refused when they are
/// deserialized or parsed, so that no out-of-range id reaches a store (where the conversion
/// would fail as a server error instead of "no such object").
pub const MAX_ID: u64 = i64::MAX as u64;

/// Deserializes a `u64` id, refusing values above [`MAX_ID`] (for `#[serde(deserialize_with)]`
/// on bare-integer ids and for the id newtypes).
pub fn deserialize_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let id = u64::deserialize(d)?;
    if id > MAX_ID {
        return Err(serde::de::Error::custom(format_args!("id {id} out of range (at most {MAX_ID})")));
    }
    Ok(id)
}

/// Parses a decimal id in `0..=MAX_ID` (no sign): above it, the error is `i64`'s overflow.
pub fn parse_id(s: &str) -> Result<u64, std::num::ParseIntError> {
    let id: u64 = s.parse()?;
    // Within u64 but above MAX_ID: i64's parse reports the overflow in the same error type.
    s.parse::<i64>()?;
    Ok(id)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// At most [`MAX_ID`]: deserializing or parsing a larger value fails.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_id(d).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_id(s).map($name)
            }
        }
    };
}

id_type!(
    /// A device known to the store (assigned when it is first registered).
    DeviceId
);
id_type!(
    /// An enterprise (tenant owning devices).
    EnterpriseId
);
id_type!(
    /// A channel: a reseller or distributor between the platform and its enterprises (TEN-1);
    /// channels nest (sub-channels) where the parent allows it.
    ChannelId
);
id_type!(
    /// A portal account (platform admin for now; channels and sub-accounts later).
    AccountId
);
id_type!(
    /// An alarm strategy (assigned by the store; unique across enterprises).
    StrategyId
);
id_type!(
    /// A command queued for a device (assigned by the store; unique across devices, never
    /// reused, so that a device can drop a command it has already executed by its id).
    CommandId
);

id_type!(
    /// A file a device uploaded (assigned by the store; unique across devices).
    FileId
);
id_type!(
    /// A scheduled task (TSK-1; assigned by the store).
    TaskId
);
id_type!(
    /// A site (PRV-1): a node of an enterprise's site tree, matched by subnet.
    SiteId
);
id_type!(
    /// A device group (PRV-2; assigned by the store).
    GroupId
);
id_type!(
    /// A configuration profile (PRV-3; assigned by the store).
    ProfileId
);
id_type!(
    /// A firmware image uploaded for a model (PRV-4; assigned by the store).
    FirmwareId
);
id_type!(
    /// An order placed for an enterprise (ORD-1; assigned by the store, never reused).
    OrderId
);
id_type!(
    /// A maintenance window of an enterprise (issue 18; assigned by the store, never reused).
    WindowId
);
id_type!(
    /// An entry of an enterprise's RPS device list (DEV-1: a device's provisioning server).
    RpsDeviceId
);

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The current wall-clock time. Only I/O shells call this; cores take time as input.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        UnixMillis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A device MAC address: exactly 12 lowercase hexadecimal digits, no separators (SPEC ING-2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 12]);

/// Why a string is not a [`Mac`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// The string does not have exactly 12 characters.
    #[error("a MAC address has 12 hex digits, got {0} characters")]
    Length(usize),
    /// A character is not a lowercase hex digit.
    #[error("a MAC address uses lowercase hex digits 0-9a-f without separators")]
    Character,
}

impl Mac {
    /// Parses the strict wire form: 12 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Mac, MacError> {
        let bytes = s.as_bytes();
        if bytes.len() != 12 {
            return Err(MacError::Length(s.chars().count()));
        }
        let mut out = [0u8; 12];
        for (slot, &b) in out.iter_mut().zip(bytes) {
            if !matches!(b, b'0'..=b'9' | b'a'..=b'f') {
                return Err(MacError::Character);
            }
            *slot = b;
        }
        Ok(Mac(out))
    }

    /// The MAC as its 12-digit string.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("Mac holds only ASCII hex digits by construction")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({})", self.as_str())
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mac::parse(s)
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mac::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A MAC address is a string of 12 lowercase hex digits.
impl schemars::JsonSchema for Mac {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Mac".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{12}$",
            "description": "MAC address: 12 lowercase hex digits"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_outside_stay_within_what_the_stores_hold() {
        let json = |s: &str| serde_json::from_str::<DeviceId>(s).ok();
        assert_eq!(json("0"), Some(DeviceId(0)));
        assert_eq!(json("9223372036854775807"), Some(DeviceId(MAX_ID)));
        for bad in ["9223372036854775808", "18446744073709551615", "18446744073709551616", "-1", "\"7\"", "1.5"] {
            assert_eq!(json(bad), None, "{bad}");
        }
        assert_eq!("9223372036854775807".parse::<EnterpriseId>().ok(), Some(EnterpriseId(MAX_ID)));
        for bad in ["9223372036854775808", "18446744073709551616", "-1", "-0", "+", "x", ""] {
            assert!(bad.parse::<EnterpriseId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_accepts_only_the_strict_form() {
        assert_eq!(Mac::parse("001565aabbcc").map(|m| m.to_string()).as_deref(), Ok("001565aabbcc"));
        for (input, err) in [
            ("001565AABBCC", MacError::Character),
            ("00:15:65:aa:bb", MacError::Length(14)),
            ("001565aabbc", MacError::Length(11)),
            ("001565aabbcg", MacError::Character),
            ("", MacError::Length(0)),
        ] {
            assert_eq!(Mac::parse(input), Err(err), "{input:?}");
        }
    }
}
