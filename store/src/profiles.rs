//! Configuration profiles (`ProfileStore`, PRV-3, PRV-4): named sets of parameters and firmware
//! per model, their deployments to containers (Device > Site > Model > Group > Global, ordered
//! inside each), and the per-device provisioning record of what was pushed. The resultant
//! configuration of a device is the pure function [`resolve::ProfileSet::resolve`].
//!
//! Profiles do not include other profiles: there is no "base profile", so no cycle can be
//! built. Layering is done by deployments (a Global profile below a Site profile), which is the
//! guides' model.

pub mod resolve;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use async_trait::async_trait;
use fleetpulse_proto::{CommandId, DeviceId, EnterpriseId, FirmwareId, GroupId, ProfileId, SiteId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// Most profiles of one enterprise.
pub const MAX_PROFILES: usize = 1_000;

/// Longest profile name, in characters.
pub const MAX_PROFILE_NAME: usize = 64;

/// Longest profile description, in characters.
pub const MAX_PROFILE_DESCRIPTION: usize = 512;

/// Most parameters of one profile.
pub const MAX_PARAMETERS: usize = 500;

/// Longest parameter key, in bytes (`[A-Za-z0-9._-]`, e.g. `call.autoAnswer.SIP`).
pub const MAX_PARAMETER_KEY: usize = 128;

/// Longest parameter value, in bytes, as saved and after substitution (a resolved value longer
/// than this is reported as a problem and not pushed).
pub const MAX_PARAMETER_VALUE: usize = 1_024;

/// Most keys of one device's resultant configuration: resolution leaves out the lowest-ranked
/// keys beyond it and says so ([`resolve::ResolvedConfiguration::truncated`]).
pub const MAX_RESOLVED_PARAMETERS: usize = 5_000;

/// Most substitutions in one value.
pub const MAX_SUBSTITUTIONS: usize = 8;

/// Most models with a firmware in one profile.
pub const MAX_FIRMWARE_MODELS: usize = 64;

/// Most profiles in one deployment (one container target).
pub const MAX_DEPLOYMENT_PROFILES: usize = 50;

/// Most deployments of one enterprise (one per container target).
pub const MAX_DEPLOYMENTS: usize = 20_000;

/// Longest model name a deployment or a firmware entry may name, in characters.
pub const MAX_MODEL: usize = crate::MAX_DEVICE_MODEL;

/// Parameter key → value template.
pub type Parameters = BTreeMap<String, String>;

/// Device model → firmware image.
pub type FirmwareByModel = BTreeMap<String, FirmwareId>;

/// A profile as the API edits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileSettings {
    /// Display name, unique in the enterprise (1 to [`MAX_PROFILE_NAME`] characters).
    pub name: String,
    /// What it is for (at most [`MAX_PROFILE_DESCRIPTION`] characters).
    #[serde(default)]
    pub description: String,
    /// Parameters: key → value, where the value may hold substitutions (see [`Variable`]).
    #[serde(default)]
    pub parameters: Parameters,
    /// Firmware per device model.
    #[serde(default)]
    pub firmware: FirmwareByModel,
}

impl ProfileSettings {
    /// [`StoreError::InvalidInput`] naming the first field that breaks a bound, an invalid key
    /// or an unknown substitution.
    pub fn validate(&self) -> Result<()> {
        let name = self.name.trim();
        if name.is_empty() || name != self.name {
            return Err(StoreError::InvalidInput("name must not be empty or begin or end with white space".into()));
        }
        crate::model::check_text("name", &self.name, MAX_PROFILE_NAME)?;
        crate::model::check_text("description", &self.description, MAX_PROFILE_DESCRIPTION)?;
        if self.parameters.len() > MAX_PARAMETERS {
            return Err(StoreError::InvalidInput(format!(
                "{} parameters (a profile has at most {MAX_PARAMETERS})",
                self.parameters.len()
            )));
        }
        for (key, value) in &self.parameters {
            check_parameter_key(key)?;
            check_parameter_value(key, value)?;
        }
        if self.firmware.len() > MAX_FIRMWARE_MODELS {
            return Err(StoreError::InvalidInput(format!(
                "firmware for {} models (a profile names at most {MAX_FIRMWARE_MODELS})",
                self.firmware.len()
            )));
        }
        for model in self.firmware.keys() {
            check_model(model)?;
        }
        Ok(())
    }
}

/// [`StoreError::InvalidInput`] unless the key is 1 to [`MAX_PARAMETER_KEY`] bytes of
/// `[A-Za-z0-9._-]`.
pub fn check_parameter_key(key: &str) -> Result<()> {
    if key.is_empty()
        || key.len() > MAX_PARAMETER_KEY
        || !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(StoreError::InvalidInput(format!(
            "parameter key {:?} must be 1 to {MAX_PARAMETER_KEY} characters of A-Z, a-z, 0-9, '.', '_' and '-'",
            key.chars().take(MAX_PARAMETER_KEY).collect::<String>()
        )));
    }
    Ok(())
}

/// [`StoreError::InvalidInput`] unless the value has at most [`MAX_PARAMETER_VALUE`] bytes, no
/// control character, and only known substitutions ([`resolve::Template::parse`]).
pub fn check_parameter_value(key: &str, value: &str) -> Result<()> {
    if value.len() > MAX_PARAMETER_VALUE {
        return Err(StoreError::InvalidInput(format!("parameter {key} has more than {MAX_PARAMETER_VALUE} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput(format!("parameter {key} holds a control character")));
    }
    resolve::Template::parse(value).map(|_| ()).map_err(|e| StoreError::InvalidInput(format!("parameter {key}: {e}")))
}

/// [`StoreError::InvalidInput`] unless the model is 1 to [`MAX_MODEL`] characters without a
/// control character.
pub fn check_model(model: &str) -> Result<()> {
    if model.is_empty() {
        return Err(StoreError::InvalidInput("a model must not be empty".into()));
    }
    crate::model::check_text("model", model, MAX_MODEL)
}

/// A stored profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StoredProfile {
    /// Identifier.
    pub id: ProfileId,
    /// Owning enterprise.
    pub enterprise_id: EnterpriseId,
    /// Name, description, parameters and firmware.
    pub settings: ProfileSettings,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
}

/// The five containers of profile deployment, highest priority first (the derived order is the
/// priority: `Device < Site` means Device wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    /// One device.
    Device,
    /// The devices of a site (a nearer site before its parents).
    Site,
    /// The devices of a model.
    Model,
    /// The devices of a group (a higher-priority group of the device first).
    Group,
    /// Every device of the enterprise.
    Global,
}

impl Container {
    /// Every container, highest priority first.
    pub const ALL: [Container; 5] =
        [Container::Device, Container::Site, Container::Model, Container::Group, Container::Global];

    /// The snake-case name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Container::Device => "device",
            Container::Site => "site",
            Container::Model => "model",
            Container::Group => "group",
            Container::Global => "global",
        }
    }

    /// The container of this name.
    pub fn parse(s: &str) -> Option<Container> {
        Container::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What a deployment applies to: a container and, but for Global, its member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "container", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeploymentTarget {
    /// One device.
    Device {
        /// The device.
        device_id: DeviceId,
    },
    /// A site.
    Site {
        /// The site.
        site_id: SiteId,
    },
    /// A device model.
    Model {
        /// The model, as devices report it.
        model: String,
    },
    /// A device group.
    Group {
        /// The group.
        group_id: GroupId,
    },
    /// Every device of the enterprise.
    Global,
}

impl DeploymentTarget {
    /// The container.
    pub fn container(&self) -> Container {
        match self {
            DeploymentTarget::Device { .. } => Container::Device,
            DeploymentTarget::Site { .. } => Container::Site,
            DeploymentTarget::Model { .. } => Container::Model,
            DeploymentTarget::Group { .. } => Container::Group,
            DeploymentTarget::Global => Container::Global,
        }
    }

    /// The member as stored beside the container: the id, the model, or "" for Global.
    pub fn member_key(&self) -> String {
        match self {
            DeploymentTarget::Device { device_id } => device_id.0.to_string(),
            DeploymentTarget::Site { site_id } => site_id.0.to_string(),
            DeploymentTarget::Model { model } => model.clone(),
            DeploymentTarget::Group { group_id } => group_id.0.to_string(),
            DeploymentTarget::Global => String::new(),
        }
    }

    /// The target stored as (container, member key); `None` for a row no target writes.
    pub fn from_stored(container: &str, member: &str) -> Option<DeploymentTarget> {
        let id = || fleetpulse_proto::parse_id(member).ok();
        Some(match Container::parse(container)? {
            Container::Device => DeploymentTarget::Device { device_id: DeviceId(id()?) },
            Container::Site => DeploymentTarget::Site { site_id: SiteId(id()?) },
            Container::Model => DeploymentTarget::Model { model: member.to_owned() },
            Container::Group => DeploymentTarget::Group { group_id: GroupId(id()?) },
            Container::Global => DeploymentTarget::Global,
        })
    }

    /// [`StoreError::InvalidInput`] for a Model target with an invalid model.
    pub fn validate(&self) -> Result<()> {
        match self {
            DeploymentTarget::Model { model } => check_model(model),
            _ => Ok(()),
        }
    }
}

/// The ordered profiles deployed to one container target (first wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Deployment {
    /// Owning enterprise.
    pub enterprise_id: EnterpriseId,
    /// The container target.
    pub target: DeploymentTarget,
    /// The profiles, first wins.
    pub profiles: Vec<ProfileId>,
    /// Last change.
    pub updated_at: UnixMillis,
}

/// [`StoreError::InvalidInput`] for more than [`MAX_DEPLOYMENT_PROFILES`] profiles or one named
/// twice.
pub fn check_deployment_profiles(profiles: &[ProfileId]) -> Result<()> {
    crate::model::check_bound("profiles in a deployment", profiles.len(), MAX_DEPLOYMENT_PROFILES)?;
    for (i, p) in profiles.iter().enumerate() {
        if profiles[..i].contains(p) {
            return Err(StoreError::InvalidInput(format!("profile {p} is listed twice in the deployment")));
        }
    }
    Ok(())
}

/// A push of configuration to a device ([`ProfileStore::record_provision_push`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProvisionPush {
    /// The `apply_config` commands that carry it, in order.
    pub commands: Vec<CommandId>,
    /// The resultant configuration it brings the device to, as key → value hash
    /// ([`value_hash`]).
    pub hashes: BTreeMap<String, String>,
    /// When it was queued.
    pub at: UnixMillis,
}

/// The outcome of the last provisioning of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProvisionResult {
    /// Its commands are queued or running.
    Pending,
    /// The device applied every change.
    Succeeded,
    /// A command failed, expired or was cancelled.
    Failed,
    /// Nothing had changed: no command was needed.
    UpToDate,
}

/// The per-device provisioning record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProvisionRecord {
    /// The device.
    pub device_id: DeviceId,
    /// What the device confirmed applying: key → value hash.
    pub confirmed: BTreeMap<String, String>,
    /// The last push, until it is settled into `confirmed` or given up.
    pub pending: Option<ProvisionPush>,
    /// The settled outcome of the last provisioning (while a push is pending, of the one before).
    pub last_result: Option<ProvisionResult>,
    /// Why it failed, when it did.
    pub last_reason: Option<String>,
    /// When the last provisioning was settled.
    pub last_at: Option<UnixMillis>,
}

impl ProvisionRecord {
    /// The record of a device never provisioned.
    pub fn empty(device_id: DeviceId) -> ProvisionRecord {
        ProvisionRecord {
            device_id,
            confirmed: BTreeMap::new(),
            pending: None,
            last_result: None,
            last_reason: None,
            last_at: None,
        }
    }
}

/// A stable hash of a parameter value (64-bit FNV-1a, 16 hex digits): what the provisioning
/// record keeps instead of the value.
pub fn value_hash(value: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Profiles, deployments and provisioning records of enterprises.
#[async_trait]
pub trait ProfileStore: Send + Sync + 'static {
    /// Creates a profile ([`ProfileSettings::validate`]d); [`StoreError::AlreadyExists`] for a
    /// name the enterprise already uses, [`StoreError::LimitExceeded`] beyond [`MAX_PROFILES`].
    async fn create_profile(
        &self,
        enterprise: EnterpriseId,
        settings: ProfileSettings,
        at: UnixMillis,
    ) -> Result<StoredProfile>;
    /// The profile with this id.
    async fn profile(&self, id: ProfileId) -> Result<Option<StoredProfile>>;
    /// The enterprise's profiles, ordered by name.
    async fn list_profiles(&self, enterprise: EnterpriseId) -> Result<Vec<StoredProfile>>;
    /// Replaces a profile's settings; `None` if it does not exist.
    async fn update_profile(
        &self,
        id: ProfileId,
        settings: ProfileSettings,
        at: UnixMillis,
    ) -> Result<Option<StoredProfile>>;
    /// Deletes a profile that no deployment lists; `Ok(false)` if it did not exist,
    /// [`StoreError::InvalidInput`] naming the deployments that list it.
    async fn delete_profile(&self, id: ProfileId) -> Result<bool>;

    /// Sets the ordered profiles of one container target (an empty list removes the
    /// deployment). Every profile must be the enterprise's own and a Device target the
    /// enterprise's device ([`StoreError::InvalidInput`] otherwise). Site and group targets
    /// are stored by id; their existence is checked by the caller.
    async fn set_deployment(
        &self,
        enterprise: EnterpriseId,
        target: DeploymentTarget,
        profiles: Vec<ProfileId>,
        at: UnixMillis,
    ) -> Result<Option<Deployment>>;
    /// Every deployment of the enterprise, by container priority then member.
    async fn list_deployments(&self, enterprise: EnterpriseId) -> Result<Vec<Deployment>>;

    /// The provisioning record of a device (empty if it was never provisioned).
    async fn provision_record(&self, device: DeviceId) -> Result<ProvisionRecord>;
    /// Replaces the provisioning record of a device.
    async fn save_provision_record(&self, record: ProvisionRecord) -> Result<()>;
}

impl std::fmt::Display for DeploymentTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeploymentTarget::Device { device_id } => write!(f, "device {device_id}"),
            DeploymentTarget::Site { site_id } => write!(f, "site {site_id}"),
            DeploymentTarget::Model { model } => write!(f, "model {model}"),
            DeploymentTarget::Group { group_id } => write!(f, "group {group_id}"),
            DeploymentTarget::Global => f.write_str("global"),
        }
    }
}
