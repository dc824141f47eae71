//! The tenant tree (`TenantStore`): channels (resellers, distributors) in a tree under the
//! platform, enterprises under them (TEN-1..4) with their profiles, provisioning credentials,
//! searches, and an enterprise's authorization of its managing channel (TEN-3).

use async_trait::async_trait;
use fleetpulse_proto::EnterpriseId;
use fleetpulse_proto::UnixMillis;
use fleetpulse_proto::ids::ChannelId;
use serde::{Deserialize, Serialize};

use crate::{Page, Result, StoreError, check_text, search_text};

/// Most channels one [`TenantStore::channel_subtree`] returns: a larger subtree is refused.
pub const MAX_CHANNEL_SUBTREE: usize = 10_000;

/// Most channel ids one [`TenantStore::list_enterprises_in`] may filter by.
pub const MAX_ENTERPRISE_CHANNEL_FILTER: usize = 10_000;

/// Longest email field of a profile, in characters (RFC 5321 path limit).
pub const MAX_PROFILE_EMAIL: usize = 254;
/// Longest contact name, in characters.
pub const MAX_PROFILE_CONTACT: usize = 128;
/// Longest phone number, in characters.
pub const MAX_PROFILE_PHONE: usize = 32;
/// Longest time zone name, in characters (IANA names are far shorter).
pub const MAX_PROFILE_TIME_ZONE: usize = 64;
/// Longest [`NewChannel::name`], in characters.
pub const MAX_CHANNEL_NAME: usize = 200;

/// Channels and enterprises.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Creates an enterprise with a fresh provisioning credential, under `new.channel_id` if
    /// given ([`StoreError::InvalidInput`] if that channel does not exist).
    async fn create_enterprise(&self, new: NewEnterprise) -> Result<Enterprise>;
    /// The enterprise with this id.
    async fn enterprise(&self, id: EnterpriseId) -> Result<Option<Enterprise>>;
    /// The enterprise owning this provisioning credential.
    async fn enterprise_by_credential(&self, credential: &str) -> Result<Option<Enterprise>>;
    /// Enterprises ordered by id, after the cursor.
    async fn list_enterprises(&self, page: Page) -> Result<Vec<Enterprise>> {
        self.list_enterprises_in(None, page).await
    }
    /// Enterprises ordered by id, after the cursor: all of them (`None`), or those whose
    /// channel is one of `channels` (enterprises without a channel never match a list; an
    /// empty list matches nothing). Typically `channels` is a [`TenantStore::channel_subtree`].
    /// [`StoreError::InvalidInput`] for more than [`MAX_ENTERPRISE_CHANNEL_FILTER`] ids.
    async fn list_enterprises_in(&self, channels: Option<&[ChannelId]>, page: Page) -> Result<Vec<Enterprise>> {
        let filter = EnterpriseFilter { channels: channels.map(<[ChannelId]>::to_vec), ..EnterpriseFilter::default() };
        self.search_enterprises(filter, page).await
    }
    /// Enterprises matching the filter ([`EnterpriseFilter`]: channels or ids, and a
    /// case-insensitive substring of the name, emails or contact), ordered by id, after the
    /// cursor. [`StoreError::InvalidInput`] for more than [`MAX_ENTERPRISE_CHANNEL_FILTER`] ids
    /// in a list, or a search of more than [`MAX_SEARCH_CHARS`](crate::MAX_SEARCH_CHARS) characters.
    async fn search_enterprises(&self, filter: EnterpriseFilter, page: Page) -> Result<Vec<Enterprise>>;
    /// Replaces an enterprise's name and profile (TEN-2 edit); `None` for an unknown one.
    /// [`StoreError::InvalidInput`] (nothing changed) for a profile
    /// [`EnterpriseProfile::validate`] refuses.
    async fn update_enterprise(
        &self,
        id: EnterpriseId,
        name: String,
        profile: EnterpriseProfile,
    ) -> Result<Option<Enterprise>>;
    /// Moves the enterprise's authorization of its channel (TEN-3) to `to`, atomically, only if
    /// it is one of `from` now; returns the enterprise as updated, or `None` (nothing changed)
    /// if it does not exist or stands elsewhere. Leaving [`ChannelAuthorization::Accepted`]
    /// also ends every session acting inside the enterprise, in the same transaction.
    async fn set_channel_authorization(
        &self,
        id: EnterpriseId,
        from: &[ChannelAuthorization],
        to: ChannelAuthorization,
    ) -> Result<Option<Enterprise>>;
    /// Creates a channel (TEN-1) at `now`: a top-level one, or a sub-channel of
    /// `new.parent_id`.
    ///
    /// [`StoreError::InvalidInput`] (and nothing is created) if [`NewChannel::validate`]
    /// refuses it (a name not of 1 to [`MAX_CHANNEL_NAME`] characters), if the parent does not
    /// exist, or if the parent does not allow sub-channels.
    async fn create_channel(&self, new: NewChannel, now: UnixMillis) -> Result<Channel>;
    /// The channel with this id.
    async fn channel(&self, id: ChannelId) -> Result<Option<Channel>>;
    /// Channels ordered by id, after the cursor (at most `page.limit`): all of them (`None`),
    /// or the strict descendants of `within` (its sub-channels, theirs, and so on; not
    /// `within` itself, and nothing for an unknown channel).
    async fn list_channels(&self, within: Option<ChannelId>, page: Page) -> Result<Vec<Channel>> {
        self.search_channels(within, None, page).await
    }
    /// [`TenantStore::list_channels`], keeping only channels whose name, contact or email
    /// contains `q`, ignoring case. [`StoreError::InvalidInput`] for a search of more than
    /// [`MAX_SEARCH_CHARS`](crate::MAX_SEARCH_CHARS) characters.
    async fn search_channels(&self, within: Option<ChannelId>, q: Option<&str>, page: Page) -> Result<Vec<Channel>>;
    /// Replaces a channel's editable fields (TEN-2 edit); `None` for an unknown channel.
    /// [`StoreError::InvalidInput`] (nothing changed) if [`ChannelUpdate::validate`] refuses it.
    async fn update_channel(&self, id: ChannelId, update: ChannelUpdate) -> Result<Option<Channel>>;
    /// The ids of `root` and of all its descendants, ordered by id; empty for an unknown
    /// channel. [`StoreError::InvalidInput`] if the subtree has more than
    /// [`MAX_CHANNEL_SUBTREE`] channels.
    async fn channel_subtree(&self, root: ChannelId) -> Result<Vec<ChannelId>>;
}

/// An enterprise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Enterprise {
    /// Identifier.
    pub id: EnterpriseId,
    /// Display name.
    pub name: String,
    /// Provisioning credential devices present in `Hello`.
    pub credential: String,
    /// The channel the enterprise belongs to (`None`: directly under the platform).
    pub channel_id: Option<ChannelId>,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Permissions, emails, country, time zone, unit, contact (TEN-1).
    #[serde(flatten)]
    pub profile: crate::EnterpriseProfile,
    /// Whether its channel may act inside it (TEN-3).
    pub channel_authorization: crate::ChannelAuthorization,
}

/// Arguments of [`crate::TenantStore::create_enterprise`].
#[derive(Debug, Clone)]
pub struct NewEnterprise {
    /// Display name.
    pub name: String,
    /// The provisioning credential (generated by the caller from a CSPRNG).
    pub credential: String,
    /// The channel the enterprise belongs to (`None`: directly under the platform); must exist.
    pub channel_id: Option<ChannelId>,
    /// Permissions, emails, country, time zone, unit, contact (TEN-1); must pass
    /// [`crate::EnterpriseProfile::validate`].
    pub profile: crate::EnterpriseProfile,
}

/// A channel (TEN-1): a reseller or distributor; channels form a tree under the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Channel {
    /// Identifier.
    pub id: ChannelId,
    /// Display name.
    pub name: String,
    /// The parent channel (`None`: a top-level channel under the platform).
    pub parent_id: Option<ChannelId>,
    /// Whether sub-channels may be created under it.
    pub allow_sub_channels: bool,
    /// Whether it may manage devices.
    pub device_management: bool,
    /// Whether it may use RPS (redirection and provisioning service).
    pub rps: bool,
    /// Contact person.
    pub contact: String,
    /// Contact email.
    pub email: String,
    /// Contact phone.
    pub phone: String,
    /// Country or area (ISO 3166-1 alpha-2), or empty.
    pub country: String,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// Arguments of [`crate::TenantStore::create_channel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NewChannel {
    /// Display name, 1 to [`MAX_CHANNEL_NAME`] characters.
    pub name: String,
    /// The parent channel, which must exist and allow sub-channels; `None` for a top-level one.
    pub parent_id: Option<ChannelId>,
    /// Whether sub-channels may be created under it.
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

impl NewChannel {
    /// [`crate::StoreError::InvalidInput`] unless the name has 1 to [`MAX_CHANNEL_NAME`]
    /// characters, and no text field holds a NUL character (which PostgreSQL cannot store).
    pub fn validate(&self) -> crate::Result<()> {
        let chars = self.name.chars().count();
        if chars == 0 || chars > MAX_CHANNEL_NAME {
            return Err(crate::StoreError::InvalidInput(format!(
                "channel name of {chars} characters (must be 1 to {MAX_CHANNEL_NAME})"
            )));
        }
        for (field, value) in [("name", &self.name), ("contact", &self.contact), ("email", &self.email)] {
            if value.contains('\0') {
                return Err(crate::StoreError::InvalidInput(format!("channel {field} holds a NUL character")));
            }
        }
        check_text("name", &self.name, MAX_CHANNEL_NAME)?;
        check_text("contact", &self.contact, crate::MAX_PROFILE_CONTACT)?;
        check_text("email", &self.email, crate::MAX_PROFILE_EMAIL)?;
        check_email("email", &self.email)?;
        check_phone(&self.phone)?;
        check_country(&self.country)?;
        Ok(())
    }
}

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
/// a request may give only some: device management on (as the guides' form has it), RPS off,
/// the rest empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EnterpriseProfile {
    /// The enterprise may manage its devices: with it off, nothing is sent to its devices
    /// (commands, tasks, firmware upgrades, provisioning); they still report.
    pub device_management: bool,
    /// The enterprise may use RPS (redirection and provisioning service): its RPS device list
    /// and the redirect lookups of its devices.
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

impl Default for EnterpriseProfile {
    fn default() -> Self {
        EnterpriseProfile {
            device_management: true,
            rps: false,
            master_admin_email: String::new(),
            register_email: String::new(),
            country: String::new(),
            time_zone: String::new(),
            temperature_unit: TemperatureUnit::default(),
            contact: String::new(),
            phone: String::new(),
        }
    }
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

/// The text enterprise searches look in.
pub(crate) fn enterprise_search_text(name: &str, p: &EnterpriseProfile) -> String {
    search_text(&[name, &p.master_admin_email, &p.register_email, &p.contact])
}

/// The text channel searches look in.
pub(crate) fn channel_search_text(name: &str, contact: &str, email: &str) -> String {
    search_text(&[name, contact, email])
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

/// Filter of [`crate::TenantStore::search_enterprises`]. With `channels` and `ids` both `None`,
/// every enterprise; else those whose channel is one of `channels` or whose id is one of `ids`
/// (each at most [`crate::MAX_ENTERPRISE_CHANNEL_FILTER`] ids). `q` keeps those whose name,
/// master administrator or register email or contact contains it, ignoring case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnterpriseFilter {
    /// Enterprises of these channels.
    pub channels: Option<Vec<ChannelId>>,
    /// These enterprises.
    pub ids: Option<Vec<EnterpriseId>>,
    /// Case-insensitive substring search (at most [`MAX_SEARCH_CHARS`](crate::MAX_SEARCH_CHARS) characters).
    pub q: Option<String>,
}

/// The editable fields of a channel ([`crate::TenantStore::update_channel`]); its place in the
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

/// [`StoreError::InvalidInput`] unless the parent of a new channel exists (`allows` is its
/// `allow_sub_channels`, `None` if there is no such channel) and allows sub-channels.
pub(crate) fn check_parent_channel(parent: ChannelId, allows: Option<bool>) -> Result<()> {
    match allows {
        None => Err(StoreError::InvalidInput(format!("parent channel {parent} does not exist"))),
        Some(false) => Err(StoreError::InvalidInput(format!("parent channel {parent} does not allow sub-channels"))),
        Some(true) => Ok(()),
    }
}

/// [`StoreError::InvalidInput`] if a subtree read with a bound of one beyond
/// [`MAX_CHANNEL_SUBTREE`] hit it; else the ids, sorted.
pub(crate) fn bounded_subtree(root: ChannelId, mut ids: Vec<ChannelId>) -> Result<Vec<ChannelId>> {
    if ids.len() > MAX_CHANNEL_SUBTREE {
        return Err(StoreError::InvalidInput(format!(
            "the subtree of channel {root} has more than {MAX_CHANNEL_SUBTREE} channels"
        )));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// An enterprise profile as stored (JSON).
pub(crate) fn encode_profile(profile: &EnterpriseProfile) -> Result<String> {
    serde_json::to_string(profile).map_err(|e| StoreError::Backend(format!("encoding an enterprise profile: {e}")))
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
    fn a_subtree_above_the_bound_is_refused_and_one_at_it_is_sorted() {
        let at_bound: Vec<ChannelId> = (0..MAX_CHANNEL_SUBTREE as u64).rev().map(ChannelId).collect();
        let sorted = bounded_subtree(ChannelId(0), at_bound).expect("at the bound");
        assert_eq!(sorted.len(), MAX_CHANNEL_SUBTREE);
        assert!(sorted.windows(2).all(|w| w[0] < w[1]));
        let above: Vec<ChannelId> = (0..=MAX_CHANNEL_SUBTREE as u64).map(ChannelId).collect();
        assert!(matches!(bounded_subtree(ChannelId(0), above), Err(StoreError::InvalidInput(_))));
    }

    #[test]
    fn parent_checks_name_the_reason() {
        let err = |r: Result<()>| match r {
            Err(StoreError::InvalidInput(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(check_parent_channel(ChannelId(3), None)).contains("parent channel 3 does not exist"));
        assert!(err(check_parent_channel(ChannelId(3), Some(false))).contains("does not allow sub-channels"));
        assert!(check_parent_channel(ChannelId(3), Some(true)).is_ok());
    }
}
