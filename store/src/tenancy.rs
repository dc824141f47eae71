//! Tenant profiles, searches and permissions (TEN-1, TEN-3, TEN-5): the fields the portal
//! guides list for enterprises and channels, an enterprise's authorization of its managing
//! channel, and the feature and data permissions of sub-accounts.

use fleetpulse_proto::EnterpriseId;
use fleetpulse_proto::ids::ChannelId;
use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// Longest email field of a profile, in characters (RFC 5321 path limit).
pub const MAX_PROFILE_EMAIL: usize = 254;
/// Longest contact name, in characters.
pub const MAX_PROFILE_CONTACT: usize = 128;
/// Longest phone number, in characters.
pub const MAX_PROFILE_PHONE: usize = 32;
/// Longest time zone name, in characters (IANA names are far shorter).
pub const MAX_PROFILE_TIME_ZONE: usize = 64;
/// Longest search text a listing accepts, in characters.
pub const MAX_SEARCH_CHARS: usize = 128;
/// Most ids of each list in [`Permissions::data`].
pub const MAX_DATA_PERMISSION_IDS: usize = 1_000;

/// The unit temperatures are shown in (TEN-1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemperatureUnit {
    /// Degrees Celsius.
    #[default]
    Celsius,
    /// Degrees Fahrenheit.
    Fahrenheit,
}

/// What the guides list for an enterprise besides its name (TEN-1). Every field has a default, so
/// a request may give only some.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EnterpriseProfile {
    /// The enterprise may manage its devices.
    pub device_management: bool,
    /// The enterprise may use RPS (redirection and provisioning service).
    pub rps: bool,
    /// Email of the master administrator.
    pub master_admin_email: String,
    /// Email the enterprise registered with.
    pub register_email: String,
    /// Country or area: an ISO 3166-1 alpha-2 code ("DE"), or empty.
    pub country: String,
    /// IANA time zone name ("Europe/Berlin", "UTC"), or empty.
    pub time_zone: String,
    /// Unit of temperatures.
    pub temperature_unit: TemperatureUnit,
    /// Contact person.
    pub contact: String,
    /// Contact phone.
    pub phone: String,
}

impl EnterpriseProfile {
    /// [`StoreError::InvalidInput`] naming the first field out of its bounds: emails of at most
    /// [`MAX_PROFILE_EMAIL`] characters with one `@` inside, a two-letter upper-case country
    /// code, a time zone of letters, digits and `/_+-:`, bounded contact and phone, no control
    /// characters anywhere.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in
            [("master_admin_email", &self.master_admin_email), ("register_email", &self.register_email)]
        {
            check_text(field, value, MAX_PROFILE_EMAIL)?;
            check_email(field, value)?;
        }
        check_country(&self.country)?;
        check_text("time_zone", &self.time_zone, MAX_PROFILE_TIME_ZONE)?;
        if !self.time_zone.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-:".contains(c)) {
            return Err(StoreError::InvalidInput(format!("time_zone {:?} is not a time zone name", self.time_zone)));
        }
        check_text("contact", &self.contact, MAX_PROFILE_CONTACT)?;
        check_phone(&self.phone)?;
        Ok(())
    }
}

/// [`StoreError::InvalidInput`] if `value` has more than `max` characters or a control character.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() > max {
        return Err(StoreError::InvalidInput(format!("{field} has more than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput(format!("{field} holds a control character")));
    }
    Ok(())
}

/// [`StoreError::InvalidInput`] unless `value` is empty or shaped like an email (`a@b`, no spaces).
pub(crate) fn check_email(field: &str, value: &str) -> Result<()> {
    let ok = value.is_empty()
        || (!value.chars().any(char::is_whitespace)
            && value.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty()));
    if ok { Ok(()) } else { Err(StoreError::InvalidInput(format!("{field} {value:?} is not an email address"))) }
}

/// [`StoreError::InvalidInput`] unless the country is empty or two upper-case ASCII letters.
pub(crate) fn check_country(value: &str) -> Result<()> {
    if value.is_empty() || (value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase())) {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(format!("country {value:?} is not an ISO 3166-1 alpha-2 code such as \"DE\"")))
    }
}

/// [`StoreError::InvalidInput`] unless the phone is empty or digits with `+ -()` and spaces.
pub(crate) fn check_phone(value: &str) -> Result<()> {
    check_text("phone", value, MAX_PROFILE_PHONE)?;
    if value.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c)) {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(format!("phone {value:?} may hold only digits, spaces and + - ( )")))
    }
}

/// The text a case-insensitive substring search looks in: the given fields, lower-cased
/// (full Unicode), joined by a newline (which no searched field and no search text holds).
pub(crate) fn search_text(fields: &[&str]) -> String {
    fields.iter().map(|f| f.to_lowercase()).collect::<Vec<_>>().join("\n")
}

/// The text enterprise searches look in.
pub(crate) fn enterprise_search_text(name: &str, p: &EnterpriseProfile) -> String {
    search_text(&[name, &p.master_admin_email, &p.register_email, &p.contact])
}

/// The text channel searches look in.
pub(crate) fn channel_search_text(name: &str, contact: &str, email: &str) -> String {
    search_text(&[name, contact, email])
}

/// A search as the store compares it: trimmed and lower-cased; `None` for an absent or blank
/// one. [`StoreError::InvalidInput`] for more than [`MAX_SEARCH_CHARS`] characters or a control
/// character.
pub(crate) fn search_needle(q: Option<&str>) -> Result<Option<String>> {
    let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) else { return Ok(None) };
    check_text("search", q, MAX_SEARCH_CHARS)?;
    Ok(Some(q.to_lowercase()))
}

/// Where an enterprise stands with its managing channel (TEN-3): the channel may act inside the
/// enterprise only while the enterprise has accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelAuthorization {
    /// Nothing asked (or the authorization was revoked).
    #[default]
    None,
    /// The channel asked; the enterprise has not answered.
    Pending,
    /// The enterprise accepted: the channel may act inside it.
    Accepted,
    /// The enterprise refused.
    Rejected,
}

impl ChannelAuthorization {
    /// Name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelAuthorization::None => "none",
            ChannelAuthorization::Pending => "pending",
            ChannelAuthorization::Accepted => "accepted",
            ChannelAuthorization::Rejected => "rejected",
        }
    }

    /// Inverse of [`ChannelAuthorization::as_str`].
    pub fn parse(s: &str) -> Option<ChannelAuthorization> {
        match s {
            "none" => Some(ChannelAuthorization::None),
            "pending" => Some(ChannelAuthorization::Pending),
            "accepted" => Some(ChannelAuthorization::Accepted),
            "rejected" => Some(ChannelAuthorization::Rejected),
            _ => None,
        }
    }
}

/// Filter of [`crate::EntityStore::search_enterprises`]. With `channels` and `ids` both `None`,
/// every enterprise; else those whose channel is one of `channels` or whose id is one of `ids`
/// (each at most [`crate::MAX_ENTERPRISE_CHANNEL_FILTER`] ids). `q` keeps those whose name,
/// master administrator or register email or contact contains it, ignoring case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnterpriseFilter {
    /// Enterprises of these channels.
    pub channels: Option<Vec<ChannelId>>,
    /// These enterprises.
    pub ids: Option<Vec<EnterpriseId>>,
    /// Case-insensitive substring search (at most [`MAX_SEARCH_CHARS`] characters).
    pub q: Option<String>,
}

/// The editable fields of a channel ([`crate::EntityStore::update_channel`]); its place in the
/// tree does not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelUpdate {
    /// Display name, 1 to [`crate::MAX_CHANNEL_NAME`] characters.
    pub name: String,
    /// Whether sub-channels may be created under it (existing ones stay).
    pub allow_sub_channels: bool,
    /// Whether it may manage devices.
    pub device_management: bool,
    /// Whether it may use RPS.
    pub rps: bool,
    /// Contact person.
    pub contact: String,
    /// Contact email.
    pub email: String,
    /// Contact phone.
    pub phone: String,
    /// Country or area (ISO 3166-1 alpha-2), or empty.
    pub country: String,
}

impl ChannelUpdate {
    /// The checks of [`crate::NewChannel::validate`].
    pub fn validate(&self) -> Result<()> {
        crate::NewChannel {
            name: self.name.clone(),
            parent_id: None,
            allow_sub_channels: self.allow_sub_channels,
            device_management: self.device_management,
            rps: self.rps,
            contact: self.contact.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            country: self.country.clone(),
        }
        .validate()
    }
}

/// A portal feature a sub-account may be allowed (TEN-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Device lists, details and the dashboard.
    Devices,
    /// Alarm records: read, acknowledge, clear.
    Alarms,
    /// Alarm strategies.
    Strategies,
    /// Enterprises: create, edit, authorization.
    Enterprises,
    /// Channels: create, edit.
    Channels,
    /// Accounts: create, freeze, reset passwords.
    Accounts,
    /// The operation log.
    OperationLog,
}

impl Feature {
    /// Every feature.
    pub const ALL: [Feature; 7] = [
        Feature::Devices,
        Feature::Alarms,
        Feature::Strategies,
        Feature::Enterprises,
        Feature::Channels,
        Feature::Accounts,
        Feature::OperationLog,
    ];
}

/// Which tenants' data a sub-account may see (TEN-5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DataPermission {
    /// Everything its parent account sees.
    All,
    /// Only these: each channel with its whole subtree, and each enterprise (each list at most
    /// [`MAX_DATA_PERMISSION_IDS`] ids). Always within the parent account's scope.
    Only {
        /// Channels (with their subtrees).
        #[serde(default)]
        channels: Vec<ChannelId>,
        /// Enterprises.
        #[serde(default)]
        enterprises: Vec<EnterpriseId>,
    },
}

/// A sub-account's permissions (TEN-5): what it may do and whose data it may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// The features it may use, sorted, each once.
    pub features: Vec<Feature>,
    /// Whose data.
    pub data: DataPermission,
}

impl Permissions {
    /// Sorts and dedups the features; [`StoreError::InvalidInput`] if a data list is longer
    /// than [`MAX_DATA_PERMISSION_IDS`].
    pub fn normalized(mut self) -> Result<Permissions> {
        self.features.sort_unstable();
        self.features.dedup();
        if let DataPermission::Only { channels, enterprises } = &mut self.data {
            crate::check_bound("data permission channels", channels.len(), MAX_DATA_PERMISSION_IDS)?;
            crate::check_bound("data permission enterprises", enterprises.len(), MAX_DATA_PERMISSION_IDS)?;
            channels.sort_unstable();
            channels.dedup();
            enterprises.sort_unstable();
            enterprises.dedup();
        }
        Ok(self)
    }

    /// Whether the feature is allowed.
    pub fn allows(&self, feature: Feature) -> bool {
        self.features.binary_search(&feature).is_ok()
    }

    /// As stored (JSON).
    pub(crate) fn encode(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| StoreError::Backend(format!("encoding permissions: {e}")))
    }

    /// Inverse of [`Permissions::encode`].
    pub(crate) fn decode(s: &str) -> std::result::Result<Permissions, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// Whom a session acts for, when a channel account has "logged into" a tenant below it (TEN-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Acting {
    /// Inside an enterprise that authorized its channel.
    Enterprise(EnterpriseId),
    /// Inside one of its sub-channels.
    Channel(ChannelId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_checked_field_by_field() {
        let ok = EnterpriseProfile {
            master_admin_email: "boss@acme.example".into(),
            country: "DE".into(),
            time_zone: "Europe/Berlin".into(),
            phone: "+49 (30) 123-45".into(),
            ..EnterpriseProfile::default()
        };
        assert!(ok.validate().is_ok());
        let bad = |p: EnterpriseProfile| match p.validate() {
            Err(StoreError::InvalidInput(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(bad(EnterpriseProfile { country: "de".into(), ..ok.clone() }).contains("country"));
        assert!(bad(EnterpriseProfile { register_email: "nope".into(), ..ok.clone() }).contains("register_email"));
        assert!(bad(EnterpriseProfile { time_zone: "Europe Berlin".into(), ..ok.clone() }).contains("time_zone"));
        assert!(bad(EnterpriseProfile { phone: "call me".into(), ..ok.clone() }).contains("phone"));
        assert!(bad(EnterpriseProfile { contact: "a\u{7}".into(), ..ok.clone() }).contains("contact"));
        assert!(bad(EnterpriseProfile { contact: "x".repeat(MAX_PROFILE_CONTACT + 1), ..ok }).contains("contact"));
    }

    #[test]
    fn searches_fold_case_and_blank_ones_match_everything() {
        assert_eq!(search_needle(Some("  ÄcMe ")).ok().flatten().as_deref(), Some("äcme"));
        assert_eq!(search_needle(Some("   ")).ok().flatten(), None);
        assert!(search_needle(Some(&"x".repeat(MAX_SEARCH_CHARS + 1))).is_err());
        assert!(search_text(&["ÄCME Corp", "Boss@X"]).contains("äcme corp\nboss@x"));
    }

    #[test]
    fn permissions_normalize_and_round_trip() {
        let p = Permissions {
            features: vec![Feature::Alarms, Feature::Devices, Feature::Alarms],
            data: DataPermission::Only { channels: vec![ChannelId(3), ChannelId(1)], enterprises: vec![] },
        }
        .normalized()
        .expect("normalized");
        assert_eq!(p.features, vec![Feature::Devices, Feature::Alarms]);
        assert!(p.allows(Feature::Alarms) && !p.allows(Feature::Accounts));
        assert_eq!(Permissions::decode(&p.encode().expect("encode")).ok(), Some(p));
        let too_many = Permissions {
            features: vec![],
            data: DataPermission::Only {
                channels: (0..=MAX_DATA_PERMISSION_IDS as u64).map(ChannelId).collect(),
                enterprises: vec![],
            },
        };
        assert!(too_many.normalized().is_err());
    }
}
