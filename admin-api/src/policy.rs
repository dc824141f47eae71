//! Tenant policy (TEN-1..5): who may see and change what, decided in one place as pure
//! functions of the caller ([`Caller`]), the target ([`Target`]) and the tenant tree
//! ([`TenantTree`]: the channel subtrees, enterprises and accounts the question needs).
//!
//! *Architecture invariant*: no I/O and no clock here. A function that lacks a fact of the tree
//! answers [`Refusal::Needs`] with the [`Lookup`] to make; the async shell (`auth.rs`) loads it
//! from the store and asks again, so each question reads exactly what its answer depends on.
//! Handlers ask; they never match on a scope themselves.
//!
//! Outcomes: an object outside the caller's scope answers like an absent one (404
//! [`Refusal::NotFound`]); a route or feature the caller's kind of account may not use answers
//! 403 ([`Refusal::Forbidden`]); a channel that sees an enterprise but does not act inside it is
//! 403 `acting_required`, one acting without the enterprise's authorization 403
//! `authorization_required`.

use std::collections::BTreeMap;

use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId};
use fleetpulse_store::{Account, Acting, ChannelAuthorization, DataPermission, Enterprise, Feature, Role};

use crate::error::ApiError;

/// What an authenticated account may see (TEN-4): resolved once per request from its role, its
/// data permissions if it is a sub-account (TEN-5), and the tenant its session acts for (TEN-3)
/// ([`scope_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everything: a platform admin.
    Platform,
    /// Part of the channel tree: a channel admin's channel and every sub-channel below it, and
    /// their enterprises; for a sub-account with data permissions, the channels and enterprises
    /// it was given (within its parent's scope).
    Channel {
        /// Where new channels and enterprises go by default: the account's own channel (none
        /// for a platform sub-account).
        channel: Option<ChannelId>,
        /// The visible channels, sorted.
        subtree: Vec<ChannelId>,
        /// Enterprises visible besides those of `subtree`, sorted (sub-accounts given single
        /// enterprises).
        enterprises: Vec<EnterpriseId>,
        /// The visible channels are exactly the subtree of `channel` (no data restriction).
        whole_subtree: bool,
    },
    /// An enterprise admin, or a channel account acting inside the enterprise: that enterprise only.
    Enterprise(EnterpriseId),
}

impl Scope {
    /// A scope that sees nothing (a sub-account whose data permissions name nothing it may see).
    fn nothing() -> Scope {
        Scope::Channel { channel: None, subtree: Vec::new(), enterprises: Vec::new(), whole_subtree: false }
    }

    /// Whether the channel is visible: the caller's or below it (platform: every channel).
    pub(crate) fn sees_channel(&self, channel: ChannelId) -> bool {
        match self {
            Scope::Platform => true,
            Scope::Channel { subtree, .. } => subtree.binary_search(&channel).is_ok(),
            Scope::Enterprise(_) => false,
        }
    }

    /// Whether the enterprise (its data) is visible.
    pub(crate) fn sees_enterprise(&self, e: &EnterpriseNode) -> bool {
        match self {
            Scope::Platform => true,
            Scope::Enterprise(own) => *own == e.id,
            Scope::Channel { enterprises, .. } => {
                e.channel.is_some_and(|c| self.sees_channel(c)) || enterprises.binary_search(&e.id).is_ok()
            }
        }
    }
}

/// The caller, as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// Its account.
    pub(crate) account: AccountId,
    /// What it may see.
    pub(crate) scope: Scope,
    /// The features it may use: `None` for a full account (everything its role allows), the
    /// list for a sub-account (TEN-5).
    pub(crate) features: Option<Vec<Feature>>,
    /// The tenant the session acts for (TEN-3).
    pub(crate) acting: Option<Acting>,
}

/// An enterprise as policy sees it: where it hangs in the tree and whether it lets its channel
/// act inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EnterpriseNode {
    pub(crate) id: EnterpriseId,
    /// The managing channel.
    pub(crate) channel: Option<ChannelId>,
    pub(crate) authorization: ChannelAuthorization,
    /// Its permissions (TEN-1): device management, RPS.
    pub(crate) permissions: EnterprisePermissions,
}

/// What an enterprise's channel lets it do (TEN-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EnterprisePermissions {
    /// Anything sent to its devices: commands, tasks, firmware upgrades, provisioning.
    pub(crate) device_management: bool,
    /// Its RPS device list.
    pub(crate) rps: bool,
}

impl Default for EnterprisePermissions {
    fn default() -> Self {
        EnterprisePermissions { device_management: true, rps: false }
    }
}

impl From<&Enterprise> for EnterpriseNode {
    fn from(e: &Enterprise) -> Self {
        EnterpriseNode {
            id: e.id,
            channel: e.channel_id,
            authorization: e.channel_authorization,
            permissions: EnterprisePermissions { device_management: e.profile.device_management, rps: e.profile.rps },
        }
    }
}

/// An account as policy sees it: its role, its tenant and whose sub-account it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccountNode {
    pub(crate) id: AccountId,
    pub(crate) role: Role,
    pub(crate) channel: Option<ChannelId>,
    pub(crate) enterprise: Option<EnterpriseId>,
    pub(crate) parent: Option<AccountId>,
}

impl From<&Account> for AccountNode {
    fn from(a: &Account) -> Self {
        AccountNode { id: a.id, role: a.role, channel: a.channel_id, enterprise: a.enterprise_id, parent: a.parent_id }
    }
}

/// The part of the tenant tree a question needs, loaded by the shell on [`Refusal::Needs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TenantTree {
    /// Channels looked up: whether each exists.
    pub(crate) channels: BTreeMap<ChannelId, bool>,
    /// Channel subtrees looked up: the channel and every channel below it, sorted.
    pub(crate) subtrees: BTreeMap<ChannelId, Vec<ChannelId>>,
    /// Enterprises looked up (`None`: no such enterprise).
    pub(crate) enterprises: BTreeMap<EnterpriseId, Option<EnterpriseNode>>,
    /// Accounts looked up (`None`: no such account).
    pub(crate) accounts: BTreeMap<AccountId, Option<AccountNode>>,
    /// Every enterprise the caller sees, if looked up (channel scopes).
    pub(crate) visible_enterprises: Option<Vec<EnterpriseId>>,
}

impl TenantTree {
    fn channel_exists(&self, id: ChannelId) -> Result<bool, Refusal> {
        self.channels.get(&id).copied().ok_or(Refusal::Needs(Lookup::Channel(id)))
    }

    fn subtree(&self, id: ChannelId) -> Result<&[ChannelId], Refusal> {
        self.subtrees.get(&id).map(Vec::as_slice).ok_or(Refusal::Needs(Lookup::Subtree(id)))
    }

    fn enterprise(&self, id: EnterpriseId) -> Result<Option<&EnterpriseNode>, Refusal> {
        self.enterprises.get(&id).map(Option::as_ref).ok_or(Refusal::Needs(Lookup::Enterprise(id)))
    }

    fn account(&self, id: AccountId) -> Result<Option<&AccountNode>, Refusal> {
        self.accounts.get(&id).map(Option::as_ref).ok_or(Refusal::Needs(Lookup::Account(id)))
    }

    fn visible_enterprises(&self) -> Result<&[EnterpriseId], Refusal> {
        self.visible_enterprises.as_deref().ok_or(Refusal::Needs(Lookup::VisibleEnterprises))
    }
}

/// A fact of the tenant tree to load from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Whether the channel exists.
    Channel(ChannelId),
    /// The channel's subtree.
    Subtree(ChannelId),
    /// The enterprise.
    Enterprise(EnterpriseId),
    /// These enterprises, in one read (a sub-account's data permissions).
    Enterprises(Vec<EnterpriseId>),
    /// The account.
    Account(AccountId),
    /// Every enterprise the caller sees.
    VisibleEnterprises,
}

/// Why a question was not answered with yes, or what it needs to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not an answer: the tree lacks this fact; load it and ask again.
    Needs(Lookup),
    /// 401: the session no longer stands for a caller (a tenant account without its tenant,
    /// or a session acting where its account no longer may).
    Unauthorized,
    /// 404: absent, or outside the caller's scope (which looks the same).
    NotFound(&'static str),
    /// 403: not for this kind of account, or a feature a sub-account lacks.
    Forbidden,
    /// 403 `acting_required`: the channel sees the enterprise but must act inside it to change it.
    ActingRequired,
    /// 403 `authorization_required`: the enterprise has not authorized its channel.
    AuthorizationRequired,
    /// 403 `permission_disabled`: the enterprise's permission (named) is off (TEN-1).
    PermissionDisabled(&'static str),
    /// 400.
    Invalid(&'static str),
    /// 409.
    Conflict(&'static str),
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Needs(lookup) => ApiError::Internal(format!("tenant policy asked for {lookup:?} unanswered")),
            Refusal::Unauthorized => ApiError::Unauthorized,
            Refusal::NotFound(what) => ApiError::NotFound(what),
            Refusal::Forbidden => ApiError::Forbidden,
            Refusal::ActingRequired => ApiError::ActingRequired,
            Refusal::AuthorizationRequired => ApiError::AuthorizationRequired,
            Refusal::PermissionDisabled(what) => ApiError::PermissionDisabled(what),
            Refusal::Invalid(message) => ApiError::invalid(message),
            Refusal::Conflict(message) => ApiError::Conflict(message.into()),
        }
    }
}

/// A policy answer: `Ok` with what the caller gets, or why not.
pub(crate) type Decision<T = ()> = Result<T, Refusal>;

/// What the caller wants to see or do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// See a channel (the channel routes; enterprise scopes have none: 403).
    Channel(ChannelId),
    /// See an enterprise.
    Enterprise(EnterpriseId),
    /// See data of an enterprise (devices, alarms, strategies) by its id alone: the platform
    /// and the enterprise itself need no read.
    EnterpriseData(EnterpriseId),
    /// Change things inside an enterprise (strategies, alarm acknowledgements): the platform,
    /// the enterprise's own accounts, and a channel acting inside it (TEN-3).
    ChangeInside(EnterpriseId),
    /// Listings of one enterprise's objects, for the enterprise asked for (`None`: the
    /// caller's own; channel accounts must name one).
    EnterpriseListing(Option<EnterpriseId>),
    /// Create a channel below `parent` (`None`: top-level for the platform, the caller's own
    /// channel for a channel account).
    NewChannel { parent: Option<ChannelId> },
    /// Create an enterprise of `channel` (`None`: as for [`Target::NewChannel`]).
    NewEnterprise { channel: Option<ChannelId> },
    /// Create an account with this role, of this channel or enterprise.
    NewAccount { role: Role, channel: Option<ChannelId>, enterprise: Option<EnterpriseId> },
    /// See a tenant account.
    Account(AccountId),
    /// Freeze or unfreeze a tenant account.
    Freeze(AccountId),
    /// Change a visible channel's permission flags (granted from above: not on its own channel).
    ChannelFlags(ChannelId),
    /// Change a visible enterprise's permissions (granted by its channel: not by itself).
    EnterprisePermissions(EnterpriseId),
    /// Act inside a sub-channel (TEN-3).
    ActInChannel(ChannelId),
    /// Act inside an enterprise (TEN-3).
    ActInEnterprise(EnterpriseId),
    /// The managing channel asks the enterprise for authorization (TEN-3).
    RequestAuthorization(EnterpriseId),
    /// The enterprise accepts, rejects or revokes its channel's authorization (TEN-3).
    AnswerAuthorization(EnterpriseId),
    /// Give a sub-account data permissions on this channel (TEN-5).
    GrantChannel(ChannelId),
    /// Give a sub-account data permissions on this enterprise (TEN-5).
    GrantEnterprise(EnterpriseId),
    /// Have, create and list sub-accounts: full accounts acting for no one (TEN-5).
    SubAccounts,
    /// One of the caller's own sub-accounts.
    SubAccount(AccountId),
    /// The deployment itself (the ingest nodes, issue 16): the platform only.
    Deployment,
    /// Sell to an enterprise: place or cancel its orders (ORD-1). The platform sells to every
    /// enterprise, a channel to those of its subtree it sees; an enterprise scope (an enterprise
    /// admin, or a channel acting inside the enterprise) buys nothing itself (403).
    Sell(EnterpriseId),
    /// Send something to the enterprise's devices (commands, tasks, firmware upgrades,
    /// provisioning): [`Target::ChangeInside`], and the enterprise's device-management
    /// permission on (403 `permission_disabled`; TEN-1).
    ManageDevices(EnterpriseId),
    /// See or change the enterprise's RPS device list (DEV-1): whoever sees the enterprise's
    /// data, with no acting needed (the guides let a channel into an RPS enterprise without its
    /// authorization), while the enterprise's RPS permission is on (403 `permission_disabled`).
    Rps(EnterpriseId),
    /// Freeze or unfreeze every account of a channel (with its subtree) or an enterprise
    /// (TEN-5): the platform any; a channel the channels strictly below its own and the
    /// enterprises it sees; enterprise scopes none (403).
    FreezeTenant(fleetpulse_store::TenantRef),
    /// Move an enterprise under another channel (`None`: directly under the platform, for the
    /// platform only): both must be visible (404), and enterprise scopes may not (403).
    MoveEnterprise { id: EnterpriseId, to: Option<ChannelId> },
    /// See or manage a relay grant of this scope (ING-9, issue 15): the platform any; a channel
    /// account those of a channel it sees (its own or below) or of an enterprise it sees; an
    /// enterprise scope those of its own enterprise. Others: 404 `relay`, as if absent.
    Relay(fleetpulse_store::TenantRef),
}

/// The one decision: may the caller do `target`, given the tree.
pub(crate) fn decide(caller: &Caller, target: &Target, tree: &TenantTree) -> Decision {
    let scope = &caller.scope;
    match *target {
        Target::Channel(id) => {
            if matches!(scope, Scope::Enterprise(_)) {
                return Err(Refusal::Forbidden);
            }
            allow_if(tree.channel_exists(id)? && scope.sees_channel(id), Refusal::NotFound("channel"))
        }
        Target::Enterprise(id) => {
            let visible = tree.enterprise(id)?.is_some_and(|e| scope.sees_enterprise(e));
            allow_if(visible, Refusal::NotFound("enterprise"))
        }
        Target::EnterpriseData(id) => match scope {
            Scope::Platform => Ok(()),
            Scope::Enterprise(own) => allow_if(*own == id, Refusal::NotFound("enterprise")),
            Scope::Channel { .. } => decide(caller, &Target::Enterprise(id), tree),
        },
        Target::ChangeInside(id) => match scope {
            Scope::Platform => Ok(()),
            Scope::Enterprise(own) if *own == id => Ok(()),
            _ => {
                decide(caller, &Target::EnterpriseData(id), tree)?;
                Err(Refusal::ActingRequired)
            }
        },
        Target::EnterpriseListing(requested) => match (scope, requested) {
            (Scope::Platform, _) | (Scope::Enterprise(_), None) => Ok(()),
            (_, Some(id)) => decide(caller, &Target::EnterpriseData(id), tree),
            (Scope::Channel { .. }, None) => {
                Err(Refusal::Invalid("enterprise_id is required for channel accounts on this listing"))
            }
        },
        Target::NewChannel { parent } => match (scope, parent) {
            (Scope::Enterprise(_), _) => Err(Refusal::Forbidden),
            (_, Some(parent)) => decide(caller, &Target::Channel(parent), tree),
            (Scope::Channel { .. }, None) => {
                allow_if(home_channel(caller).is_some(), Refusal::Invalid("parent_id is required"))
            }
            (Scope::Platform, None) => Ok(()),
        },
        Target::NewEnterprise { channel } => match (scope, channel) {
            (Scope::Enterprise(_), _) => Err(Refusal::Forbidden),
            (_, Some(channel)) => allow_if(scope.sees_channel(channel), Refusal::NotFound("channel")),
            (Scope::Channel { .. }, None) => {
                allow_if(home_channel(caller).is_some(), Refusal::Invalid("channel_id is required"))
            }
            (Scope::Platform, None) => Ok(()),
        },
        Target::NewAccount { role, channel, enterprise } => {
            match (scope, role) {
                (Scope::Enterprise(_), _) | (Scope::Channel { .. }, Role::PlatformAdmin) => {
                    return Err(Refusal::Forbidden);
                }
                _ => {}
            }
            if let Some(channel) = channel {
                decide(caller, &Target::Channel(channel), tree)?;
            }
            match enterprise {
                Some(enterprise) => decide(caller, &Target::EnterpriseData(enterprise), tree),
                None => Ok(()),
            }
        }
        Target::Account(id) => {
            if matches!(scope, Scope::Enterprise(_)) {
                return Err(Refusal::Forbidden);
            }
            let Some(account) = tree.account(id)? else { return Err(Refusal::NotFound("account")) };
            let visible = match (scope, account.role) {
                (Scope::Platform, _) => true,
                (_, Role::PlatformAdmin) => false,
                _ => {
                    account.channel.is_some_and(|c| scope.sees_channel(c))
                        || match account.enterprise {
                            Some(e) => {
                                decide(caller, &Target::EnterpriseData(e), tree).map_or_else(needs, |()| Ok(true))?
                            }
                            None => false,
                        }
                }
            };
            allow_if(visible, Refusal::NotFound("account"))
        }
        Target::Freeze(id) => {
            decide(caller, &Target::Account(id), tree)?;
            allow_if(id != caller.account, Refusal::Conflict("an account cannot freeze or unfreeze itself"))
        }
        Target::ChannelFlags(id) => {
            let own = matches!(scope, Scope::Channel { channel: Some(own), .. } if *own == id);
            allow_if(!own, Refusal::Forbidden)
        }
        Target::EnterprisePermissions(_) => allow_if(!matches!(scope, Scope::Enterprise(_)), Refusal::Forbidden),
        Target::ActInChannel(id) => {
            let own = match scope {
                Scope::Channel { channel: Some(own), .. } if caller.acting.is_none() => *own,
                _ => return Err(Refusal::Forbidden),
            };
            decide(caller, &Target::Channel(id), tree)?;
            allow_if(id != own, Refusal::Forbidden)
        }
        Target::ActInEnterprise(id) => {
            if !matches!(scope, Scope::Channel { .. }) || caller.acting.is_some() {
                return Err(Refusal::Forbidden);
            }
            decide(caller, &Target::Enterprise(id), tree)?;
            let accepted = tree.enterprise(id)?.is_some_and(|e| e.authorization == ChannelAuthorization::Accepted);
            allow_if(accepted, Refusal::AuthorizationRequired)
        }
        Target::RequestAuthorization(id) => {
            if !matches!(scope, Scope::Channel { .. }) {
                return Err(Refusal::Forbidden);
            }
            decide(caller, &Target::Enterprise(id), tree)
        }
        Target::AnswerAuthorization(id) => {
            decide(caller, &Target::Enterprise(id), tree)?;
            allow_if(matches!(scope, Scope::Enterprise(_)) && caller.acting.is_none(), Refusal::Forbidden)
        }
        Target::GrantChannel(id) => {
            allow_if(scope.sees_channel(id) && tree.channel_exists(id)?, Refusal::NotFound("channel"))
        }
        Target::GrantEnterprise(id) => decide(caller, &Target::Enterprise(id), tree),
        Target::SubAccounts => allow_if(caller.features.is_none() && caller.acting.is_none(), Refusal::Forbidden),
        Target::SubAccount(id) => {
            let own = tree.account(id)?.is_some_and(|a| a.parent == Some(caller.account));
            allow_if(own, Refusal::NotFound("account"))
        }
        Target::Deployment => allow_if(matches!(scope, Scope::Platform), Refusal::Forbidden),
        Target::Sell(id) => {
            decide(caller, &Target::EnterpriseData(id), tree)?;
            allow_if(!matches!(scope, Scope::Enterprise(_)), Refusal::Forbidden)
        }
        Target::ManageDevices(id) => {
            decide(caller, &Target::ChangeInside(id), tree)?;
            let on = tree.enterprise(id)?.is_none_or(|e| e.permissions.device_management);
            allow_if(on, Refusal::PermissionDisabled("device management"))
        }
        Target::Rps(id) => {
            decide(caller, &Target::EnterpriseData(id), tree)?;
            let on = tree.enterprise(id)?.is_some_and(|e| e.permissions.rps);
            allow_if(on, Refusal::PermissionDisabled("RPS"))
        }
        Target::FreezeTenant(fleetpulse_store::TenantRef::Channel(id)) => {
            decide(caller, &Target::Channel(id), tree)?;
            let own = matches!(scope, Scope::Channel { channel: Some(own), .. } if *own == id);
            allow_if(!own, Refusal::Conflict("an account cannot freeze its own channel"))
        }
        Target::FreezeTenant(fleetpulse_store::TenantRef::Enterprise(id)) => {
            if matches!(scope, Scope::Enterprise(_)) {
                return Err(Refusal::Forbidden);
            }
            decide(caller, &Target::Enterprise(id), tree)
        }
        Target::Relay(tenant) => relay(caller, tenant, tree),
        Target::MoveEnterprise { id, to } => {
            if matches!(scope, Scope::Enterprise(_)) {
                return Err(Refusal::Forbidden);
            }
            decide(caller, &Target::Enterprise(id), tree)?;
            match to {
                Some(channel) => decide(caller, &Target::Channel(channel), tree),
                None => allow_if(matches!(scope, Scope::Platform), Refusal::Invalid("channel_id is required")),
            }
        }
    }
}

/// [`Target::Relay`]: visibility of the scope, every "no" read as 404 `relay`.
fn relay(caller: &Caller, tenant: fleetpulse_store::TenantRef, tree: &TenantTree) -> Decision {
    let seen = match tenant {
        fleetpulse_store::TenantRef::Channel(id) => {
            if matches!(caller.scope, Scope::Enterprise(_)) {
                return Err(Refusal::NotFound("relay"));
            }
            decide(caller, &Target::Channel(id), tree)
        }
        fleetpulse_store::TenantRef::Enterprise(id) => match caller.scope {
            // The platform sees every enterprise that exists.
            Scope::Platform => allow_if(tree.enterprise(id)?.is_some(), Refusal::NotFound("relay")),
            _ => decide(caller, &Target::EnterpriseData(id), tree),
        },
    };
    match seen {
        Err(Refusal::Needs(lookup)) => Err(Refusal::Needs(lookup)),
        Err(_) => Err(Refusal::NotFound("relay")),
        Ok(()) => Ok(()),
    }
}

/// `Ok` if `allowed`, else `refusal`.
fn allow_if(allowed: bool, refusal: Refusal) -> Decision {
    if allowed { Ok(()) } else { Err(refusal) }
}

/// A refusal read as "no", unless it is a lookup still to make.
fn needs(refusal: Refusal) -> Decision<bool> {
    match refusal {
        Refusal::Needs(lookup) => Err(Refusal::Needs(lookup)),
        _ => Ok(false),
    }
}

/// 403 unless the caller may use the feature: full accounts may use every feature their role
/// allows, sub-accounts those they were given (TEN-5).
pub(crate) fn uses(caller: &Caller, feature: Feature) -> Decision {
    match &caller.features {
        Some(features) if !features.contains(&feature) => Err(Refusal::Forbidden),
        _ => Ok(()),
    }
}

/// Where a channel account's new channels and enterprises go when it names none: its own
/// channel, while it sees it. None for the platform (top level) and enterprise scopes.
pub(crate) fn home_channel(caller: &Caller) -> Option<ChannelId> {
    match &caller.scope {
        Scope::Channel { channel: Some(own), .. } if caller.scope.sees_channel(*own) => Some(*own),
        _ => None,
    }
}

/// The enterprise an enterprise-level listing is restricted to when the caller names none
/// (after [`Target::EnterpriseListing`] allowed it): the caller's own enterprise, if it is one.
pub(crate) fn own_enterprise(caller: &Caller) -> Option<EnterpriseId> {
    match caller.scope {
        Scope::Enterprise(own) => Some(own),
        _ => None,
    }
}

/// Whether a listing across enterprises (alarms) that names no enterprise covers every
/// enterprise the caller sees (channel scopes) rather than one ([`Target::EnterpriseListing`]).
pub(crate) fn lists_across_enterprises(caller: &Caller, requested: Option<EnterpriseId>) -> bool {
    matches!(caller.scope, Scope::Channel { .. }) && requested.is_none()
}

/// Whether the caller may see and replay the pipeline's dead letters (issue 18 item 5): full
/// platform accounts only. Others get 403 on the listings (`one` is `None`) and 404 on one dead
/// letter, as on any object outside their scope.
pub(crate) fn dead_letters(caller: &Caller, one: Option<u64>) -> Decision {
    match (&caller.scope, &caller.features, one) {
        (Scope::Platform, None, _) => Ok(()),
        (_, _, Some(_)) => Err(Refusal::NotFound("dead letter")),
        (_, _, None) => Err(Refusal::Forbidden),
    }
}

/// Which channels a channel listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelListing {
    /// Every channel (platform).
    All,
    /// The subtree of this channel (a channel account).
    Subtree(ChannelId),
    /// Exactly these (a sub-account's data permissions), sorted.
    Only(Vec<ChannelId>),
}

/// The channels the caller lists; 403 for enterprise scopes.
pub(crate) fn channel_listing(caller: &Caller) -> Decision<ChannelListing> {
    match &caller.scope {
        Scope::Platform => Ok(ChannelListing::All),
        Scope::Channel { channel: Some(root), whole_subtree: true, .. } => Ok(ChannelListing::Subtree(*root)),
        Scope::Channel { subtree, .. } => Ok(ChannelListing::Only(subtree.clone())),
        Scope::Enterprise(_) => Err(Refusal::Forbidden),
    }
}

/// Which enterprises the caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnterpriseListing {
    /// Every enterprise (platform).
    All,
    /// Exactly these.
    Only(Vec<EnterpriseId>),
    /// Those of these channels, and these besides.
    Within { channels: Vec<ChannelId>, enterprises: Vec<EnterpriseId> },
}

/// The enterprises the caller sees, as a listing filter.
pub(crate) fn enterprise_listing(caller: &Caller) -> EnterpriseListing {
    match &caller.scope {
        Scope::Platform => EnterpriseListing::All,
        Scope::Enterprise(own) => EnterpriseListing::Only(vec![*own]),
        Scope::Channel { subtree, enterprises, .. } => {
            EnterpriseListing::Within { channels: subtree.clone(), enterprises: enterprises.clone() }
        }
    }
}

/// Whose accounts the caller sees (the account listing, the operation log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccountListing {
    /// Every account (platform).
    All,
    /// The accounts of this enterprise.
    Enterprise(EnterpriseId),
    /// The accounts of these channels and of the enterprises the caller sees.
    Channels(Vec<ChannelId>),
}

/// Whose accounts the caller sees in the tenant account listing: enterprise scopes have none
/// (403).
pub(crate) fn account_listing(caller: &Caller) -> Decision<AccountListing> {
    match operation_log_listing(caller) {
        AccountListing::Enterprise(_) => Err(Refusal::Forbidden),
        other => Ok(other),
    }
}

/// Whose rows the caller sees in the operation log (LOG-1): the accounts it sees and what was
/// done acting inside its enterprises.
pub(crate) fn operation_log_listing(caller: &Caller) -> AccountListing {
    match &caller.scope {
        Scope::Platform => AccountListing::All,
        Scope::Enterprise(own) => AccountListing::Enterprise(*own),
        Scope::Channel { subtree, .. } => AccountListing::Channels(subtree.clone()),
    }
}

/// The enterprise and channel filters of a device listing (`None`: no filter).
pub(crate) type DeviceFilters = (Option<Vec<EnterpriseId>>, Option<Vec<ChannelId>>);

/// The enterprise and channel filters of a device listing or dashboard (DEV-1, DEV-2), from
/// the requested ones (`None`: not given):
/// - the platform gets what it asked for (nothing: every device);
/// - an enterprise scope its own enterprise; any other requested enterprise, and any channel
///   filter, is 404;
/// - a channel scope the enterprises it sees, or those it named if it sees all of them (else
///   404); requested channels must be ones it sees (else 404).
pub(crate) fn device_scope(
    caller: &Caller,
    enterprises: Option<Vec<EnterpriseId>>,
    channels: Option<Vec<ChannelId>>,
    tree: &TenantTree,
) -> Decision<DeviceFilters> {
    let scope = &caller.scope;
    match scope {
        Scope::Platform => Ok((enterprises, channels)),
        Scope::Enterprise(own) => {
            if enterprises.as_ref().is_some_and(|e| e.iter().any(|e| e != own)) {
                return Err(Refusal::NotFound("enterprise"));
            }
            if channels.is_some() {
                return Err(Refusal::NotFound("channel"));
            }
            Ok((Some(vec![*own]), None))
        }
        Scope::Channel { .. } => {
            if channels.as_ref().is_some_and(|c| c.iter().any(|c| !scope.sees_channel(*c))) {
                return Err(Refusal::NotFound("channel"));
            }
            let visible = tree.visible_enterprises()?;
            match enterprises {
                Some(requested) => {
                    let set: std::collections::HashSet<&EnterpriseId> = visible.iter().collect();
                    if requested.iter().any(|e| !set.contains(e)) {
                        return Err(Refusal::NotFound("enterprise"));
                    }
                    Ok((Some(requested), channels))
                }
                None => Ok((Some(visible.to_vec()), channels)),
            }
        }
    }
}

/// The scope of an account (TEN-4), from its role and tenant, narrowed by a sub-account's data
/// permissions (TEN-5), and replaced by the tenant its session acts for (TEN-3) while the
/// account still sees it (and, for an enterprise, while the enterprise authorizes its channel):
/// else 401.
pub(crate) fn scope_of(
    account: &AccountNode,
    data: Option<&DataPermission>,
    acting: Option<Acting>,
    tree: &TenantTree,
) -> Decision<Scope> {
    let full = match (account.role, account.channel, account.enterprise) {
        (Role::PlatformAdmin, _, _) => Scope::Platform,
        (Role::ChannelAdmin, Some(channel), _) => Scope::Channel {
            channel: Some(channel),
            subtree: tree.subtree(channel)?.to_vec(),
            enterprises: Vec::new(),
            whole_subtree: true,
        },
        (Role::EnterpriseAdmin, _, Some(enterprise)) => Scope::Enterprise(enterprise),
        // A tenant account without its tenant sees nothing.
        _ => return Err(Refusal::Unauthorized),
    };
    let scope = match data {
        Some(DataPermission::Only { channels, enterprises }) => narrowed(full, channels, enterprises, tree)?,
        Some(DataPermission::All) | None => full,
    };
    match acting {
        None => Ok(scope),
        Some(Acting::Enterprise(id)) => {
            let allowed = tree
                .enterprise(id)?
                .is_some_and(|e| scope.sees_enterprise(e) && e.authorization == ChannelAuthorization::Accepted);
            if allowed { Ok(Scope::Enterprise(id)) } else { Err(Refusal::Unauthorized) }
        }
        Some(Acting::Channel(id)) => {
            if !scope.sees_channel(id) {
                return Err(Refusal::Unauthorized);
            }
            let subtree = tree.subtree(id)?.to_vec();
            Ok(Scope::Channel { channel: Some(id), subtree, enterprises: Vec::new(), whole_subtree: true })
        }
    }
}

/// The scope narrowed to the given channels (each with its subtree) and enterprises, as far as
/// they are inside it (TEN-5 data permissions).
fn narrowed(full: Scope, channels: &[ChannelId], enterprises: &[EnterpriseId], tree: &TenantTree) -> Decision<Scope> {
    let default_channel = match &full {
        // An enterprise sub-account sees its enterprise or nothing.
        Scope::Enterprise(own) => return Ok(if enterprises.contains(own) { full } else { Scope::nothing() }),
        Scope::Platform => None,
        Scope::Channel { channel, .. } => *channel,
    };
    let mut visible = Vec::new();
    for &channel in channels.iter().filter(|&&c| full.sees_channel(c)) {
        visible.extend_from_slice(tree.subtree(channel)?);
        if visible.len() > fleetpulse_store::MAX_CHANNEL_SUBTREE {
            return Err(Refusal::Invalid("the data permissions cover too many channels"));
        }
    }
    visible.sort_unstable();
    visible.dedup();
    // The listed enterprises, in one read.
    if enterprises.iter().any(|e| !tree.enterprises.contains_key(e)) {
        return Err(Refusal::Needs(Lookup::Enterprises(enterprises.to_vec())));
    }
    let mut extra: Vec<EnterpriseId> = enterprises
        .iter()
        .filter_map(|e| tree.enterprises.get(e).copied().flatten())
        .filter(|e| full.sees_enterprise(e))
        .map(|e| e.id)
        .collect();
    extra.sort_unstable();
    extra.dedup();
    Ok(Scope::Channel { channel: default_channel, subtree: visible, enterprises: extra, whole_subtree: false })
}

#[cfg(test)]
mod tests;
