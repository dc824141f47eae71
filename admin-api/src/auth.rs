//! The [`AuthAdmin`] extractor every `/api/v1` route but login needs: the session token (bearer
//! header or session cookie with CSRF protection, `cookies.rs`), the session lookup with its
//! expiry and idle expiry, frozen accounts, the forced password change, and the caller's tenant
//! scope, resolved (and, for a session acting inside a tenant, re-checked) on every request.
//!
//! It is also the async shell of the tenant policy (`policy.rs`): [`AuthAdmin::decide`] and the
//! other questions below ask the pure policy, load from the store what it needs
//! ([`Lookup`]), and ask again until it answers.

use std::collections::BTreeMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId};
use fleetpulse_store::{Account, Acting, Channel, Enterprise, EnterpriseFilter, Feature};

use crate::error::ApiError;
use crate::login::AccountView;
use crate::policy::{
    self, AccountNode, Caller, Decision, DeviceFilters, EnterpriseListing, EnterpriseNode, Lookup, Refusal, Target,
    TenantTree,
};
use crate::secrets;
use crate::state::AppState;

/// An authenticated caller: a valid, unexpired session of an existing account.
///
/// The session token comes from the `Authorization: Bearer <token>` header or, without that
/// header, from the `fp_session` cookie ([`crate::cookies`]): a cookie request that changes state
/// must carry the session's CSRF token, else 403 `csrf_failed`.
///
/// Extracting it answers 401 `unauthorized` (with `WWW-Authenticate: Bearer`) when the
/// token is missing or malformed, or names no live session,
/// and 403 `password_change_required` while the account must change its password (ACC-2),
/// except on [`PASSWORD_CHANGE_PATHS`].
#[derive(Debug, Clone)]
pub(crate) struct AuthAdmin {
    /// The account.
    pub(crate) account: AccountView,
    /// The caller as the tenant policy sees it: scope, features, acting.
    pub(crate) caller: Caller,
}

/// What the shell loaded for the policy: the tree it answered from, and the objects read, for
/// the handler to use instead of reading them again.
#[derive(Debug, Default)]
pub(crate) struct Looked {
    tree: TenantTree,
    channels: BTreeMap<ChannelId, Channel>,
    enterprises: BTreeMap<EnterpriseId, Enterprise>,
    accounts: BTreeMap<AccountId, Account>,
}

impl Looked {
    /// The channel, if the policy had it read.
    pub(crate) fn take_channel(&mut self, id: ChannelId) -> Option<Channel> {
        self.channels.remove(&id)
    }

    /// The enterprise, if the policy had it read.
    pub(crate) fn take_enterprise(&mut self, id: EnterpriseId) -> Option<Enterprise> {
        self.enterprises.remove(&id)
    }

    /// The account, if the policy had it read.
    pub(crate) fn take_account(&mut self, id: AccountId) -> Option<Account> {
        self.accounts.remove(&id)
    }

    /// Reads what the policy needs into the tree. Visible enterprises need the caller.
    async fn load(&mut self, ctx: &AppState, lookup: Lookup, caller: Option<&AuthAdmin>) -> Result<(), ApiError> {
        let entities = &ctx.api.store.entities;
        match lookup {
            Lookup::Channel(id) => {
                let channel = entities.channel(id).await?;
                self.tree.channels.insert(id, channel.is_some());
                if let Some(channel) = channel {
                    self.channels.insert(id, channel);
                }
            }
            Lookup::Subtree(id) => {
                self.tree.subtrees.insert(id, entities.channel_subtree(id).await?);
            }
            Lookup::Enterprise(id) => {
                let enterprise = entities.enterprise(id).await?;
                self.tree.enterprises.insert(id, enterprise.as_ref().map(EnterpriseNode::from));
                if let Some(enterprise) = enterprise {
                    self.enterprises.insert(id, enterprise);
                }
            }
            Lookup::Enterprises(ids) => {
                let listed = EnterpriseFilter { ids: Some(ids.clone()), ..EnterpriseFilter::default() };
                let page = fleetpulse_store::Page::first(fleetpulse_store::MAX_DATA_PERMISSION_IDS as u32);
                let found = entities.search_enterprises(listed, page).await?;
                for id in ids {
                    self.tree.enterprises.entry(id).or_insert(None);
                }
                for enterprise in found {
                    self.tree.enterprises.insert(enterprise.id, Some(EnterpriseNode::from(&enterprise)));
                }
            }
            Lookup::Account(id) => {
                let account = entities.account(id).await?;
                self.tree.accounts.insert(id, account.as_ref().map(AccountNode::from));
                if let Some(account) = account {
                    self.accounts.insert(id, account);
                }
            }
            Lookup::VisibleEnterprises => {
                let caller =
                    caller.ok_or_else(|| ApiError::Internal("visible enterprises asked without a caller".into()))?;
                self.tree.visible_enterprises = Some(caller.visible_enterprises(ctx).await?.unwrap_or_default());
            }
        }
        Ok(())
    }
}

/// The caller's scope: the policy's [`policy::scope_of`], with the subtrees and enterprises it
/// needs read from the store.
async fn resolve_scope(ctx: &AppState, account: &Account, acting: Option<Acting>) -> Result<policy::Scope, ApiError> {
    let node = AccountNode::from(account);
    let data = account.permissions.as_ref().map(|p| &p.data);
    let mut looked = Looked::default();
    loop {
        match policy::scope_of(&node, data, acting, &looked.tree) {
            Err(Refusal::Needs(lookup)) => looked.load(ctx, lookup, None).await?,
            other => return other.map_err(ApiError::from),
        }
    }
}

impl AuthAdmin {
    /// Asks the policy `question` until it answers, loading into `looked` what it needs.
    async fn answer<T>(
        &self,
        ctx: &AppState,
        looked: &mut Looked,
        question: impl Fn(&Caller, &TenantTree) -> Decision<T>,
    ) -> Result<Decision<T>, ApiError> {
        loop {
            match question(&self.caller, &looked.tree) {
                Err(Refusal::Needs(lookup)) => looked.load(ctx, lookup, Some(self)).await?,
                other => return Ok(other),
            }
        }
    }

    /// The policy's decision on `target` ([`policy::decide`]): `Ok` with what was read on the
    /// way, else the refusal as the API answers it.
    pub(crate) async fn decide(&self, ctx: &AppState, target: Target) -> Result<Looked, ApiError> {
        let mut looked = Looked::default();
        self.answer(ctx, &mut looked, |caller, tree| policy::decide(caller, &target, tree)).await??;
        Ok(looked)
    }

    /// The policy's decision on `target` as it is, refusals included (for answers per item).
    pub(crate) async fn ask(&self, ctx: &AppState, target: Target) -> Result<Decision, ApiError> {
        let mut looked = Looked::default();
        self.answer(ctx, &mut looked, |caller, tree| policy::decide(caller, &target, tree)).await
    }

    /// Whether the policy allows `target` (a refusal is `false`).
    pub(crate) async fn allows(&self, ctx: &AppState, target: Target) -> Result<bool, ApiError> {
        let mut looked = Looked::default();
        Ok(self.answer(ctx, &mut looked, |caller, tree| policy::decide(caller, &target, tree)).await?.is_ok())
    }

    /// 403 unless the caller may use the feature ([`policy::uses`]).
    pub(crate) fn require(&self, feature: Feature) -> Result<(), ApiError> {
        Ok(policy::uses(&self.caller, feature)?)
    }

    /// Whether the caller may see data of the enterprise ([`Target::EnterpriseData`]); callers
    /// answer 404 when not, so that out-of-scope resources look like absent ones.
    pub(crate) async fn can_see(&self, ctx: &AppState, enterprise: EnterpriseId) -> Result<bool, ApiError> {
        self.allows(ctx, Target::EnterpriseData(enterprise)).await
    }

    /// Whether the caller may change things inside the enterprise ([`Target::ChangeInside`]):
    /// 404 when it does not see it, 403 `acting_required` for a channel not acting inside it.
    pub(crate) async fn require_act(&self, ctx: &AppState, enterprise: EnterpriseId) -> Result<(), ApiError> {
        self.decide(ctx, Target::ChangeInside(enterprise)).await.map(drop)
    }

    /// [`AuthAdmin::require_act`], and the enterprise's device-management permission on
    /// ([`Target::ManageDevices`]: 403 `permission_disabled` when its channel turned it off).
    pub(crate) async fn require_device_management(
        &self,
        ctx: &AppState,
        enterprise: EnterpriseId,
    ) -> Result<(), ApiError> {
        self.decide(ctx, Target::ManageDevices(enterprise)).await.map(drop)
    }

    /// The enterprise a listing of one enterprise's objects is restricted to
    /// ([`Target::EnterpriseListing`]): the platform gets what it asked for, an enterprise scope
    /// its own, a channel scope the one it names if it sees it (404 otherwise; 400 if none).
    pub(crate) async fn enterprise_filter(
        &self,
        ctx: &AppState,
        requested: Option<EnterpriseId>,
    ) -> Result<Option<EnterpriseId>, ApiError> {
        self.decide(ctx, Target::EnterpriseListing(requested)).await?;
        Ok(requested.or_else(|| policy::own_enterprise(&self.caller)))
    }

    /// The enterprise filter of a listing across enterprises: the requested enterprise (checked
    /// as [`AuthAdmin::enterprise_filter`] does), else every enterprise the caller sees — `None`
    /// for the platform (no filter), the list for a channel or sub-account scope.
    pub(crate) async fn listing_filter(
        &self,
        ctx: &AppState,
        requested: Option<EnterpriseId>,
    ) -> Result<(Option<EnterpriseId>, Option<Vec<EnterpriseId>>), ApiError> {
        if policy::lists_across_enterprises(&self.caller, requested) {
            Ok((None, self.visible_enterprises(ctx).await?))
        } else {
            Ok((self.enterprise_filter(ctx, requested).await?, None))
        }
    }

    /// Every enterprise the caller sees ([`policy::enterprise_listing`]): `None` for the platform
    /// (all of them), else the ids, sorted. 400 beyond
    /// [`fleetpulse_store::MAX_ENTERPRISE_CHANNEL_FILTER`] (a listing of that many enterprises
    /// must name one).
    pub(crate) async fn visible_enterprises(&self, ctx: &AppState) -> Result<Option<Vec<EnterpriseId>>, ApiError> {
        const PAGE: u32 = 1000;
        let (channels, extra) = match policy::enterprise_listing(&self.caller) {
            EnterpriseListing::All => return Ok(None),
            EnterpriseListing::Only(ids) => return Ok(Some(ids)),
            EnterpriseListing::Within { channels, enterprises } => (channels, enterprises),
        };
        let filter = EnterpriseFilter { channels: Some(channels), ids: Some(extra), q: None };
        let mut ids = Vec::new();
        let mut after = 0;
        loop {
            let page = fleetpulse_store::Page { after, limit: PAGE };
            let batch = ctx.api.store.entities.search_enterprises(filter.clone(), page).await?;
            ids.extend(batch.iter().map(|e| e.id));
            if ids.len() > fleetpulse_store::MAX_ENTERPRISE_CHANNEL_FILTER {
                return Err(ApiError::invalid(format!(
                    "the caller sees more than {} enterprises: name one with enterprise_id",
                    fleetpulse_store::MAX_ENTERPRISE_CHANNEL_FILTER
                )));
            }
            match batch.last() {
                Some(last) if batch.len() >= PAGE as usize => after = last.id.0,
                _ => return Ok(Some(ids)),
            }
        }
    }

    /// The enterprise and channel filters of a device listing or dashboard (DEV-1, DEV-2):
    /// [`policy::device_scope`] of the requested ones.
    pub(crate) async fn device_scope(
        &self,
        ctx: &AppState,
        enterprises: Option<Vec<EnterpriseId>>,
        channels: Option<Vec<ChannelId>>,
    ) -> Result<DeviceFilters, ApiError> {
        let mut looked = Looked::default();
        let question = |caller: &Caller, tree: &TenantTree| {
            policy::device_scope(caller, enterprises.clone(), channels.clone(), tree)
        };
        Ok(self.answer(ctx, &mut looked, question).await??)
    }
}

impl FromRequestParts<AppState> for AuthAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &AppState) -> Result<Self, Self::Rejection> {
        let (token, source) = crate::cookies::request_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let entities = &ctx.api.store.entities;
        let now = ctx.clock.now();
        let hash = secrets::token_hash(token);
        let session = entities.session(hash, now).await?.ok_or(ApiError::Unauthorized)?;
        let idle = now.0.saturating_sub(session.last_seen_at.0);
        if idle > i64::try_from(ctx.api.config.session_idle.as_millis()).unwrap_or(i64::MAX) {
            // Best effort: an expired session is refused whether or not its row could go.
            if let Err(error) = entities.delete_session(hash).await {
                tracing::warn!(message = "Deleting an expired session failed.", %error);
            }
            return Err(ApiError::Unauthorized);
        }
        // Written at most once a minute per session (or a quarter of the idle limit, if shorter),
        // not on every request.
        let idle_ms = i64::try_from(ctx.api.config.session_idle.as_millis()).unwrap_or(i64::MAX);
        // Best effort: a store that cannot write (full disk) must not fail every read; the
        // session merely looks idler than it is until a touch succeeds.
        if idle > TOUCH_AFTER_MS.min(idle_ms / 4)
            && let Err(error) = entities.touch_session(hash, now).await
        {
            tracing::warn!(message = "Touching the session failed; the request goes on.", %error);
        }
        let account = entities.account(session.account_id).await?.ok_or(ApiError::Unauthorized)?;
        let acting = session.acting;
        // The operation log records who made the request, also when it is refused below.
        if let Some(slot) = parts.extensions.get::<crate::operation_log::CallerSlot>() {
            slot.fill(&account, acting);
        }
        crate::cookies::check_csrf(&parts.method, &parts.headers, token, source)?;
        // Freezing deletes the sessions; a frozen account's token is refused all the same (TEN-2).
        if account.frozen {
            return Err(ApiError::Unauthorized);
        }
        // ACC-2: an account that must change its password may do only that, or log out.
        if account.must_change_password && !PASSWORD_CHANGE_PATHS.contains(&parts.uri.path()) {
            return Err(ApiError::PasswordChangeRequired);
        }
        let caller = Caller {
            account: account.id,
            scope: resolve_scope(ctx, &account, acting).await?,
            features: account.permissions.as_ref().map(|p| p.features.clone()),
            acting,
        };
        Ok(AuthAdmin { account: AccountView::from(&account), caller })
    }
}

/// The only routes an account that must change its password may use (ACC-2): the change, logout,
/// and reading its own session.
const PASSWORD_CHANGE_PATHS: &[&str] = &["/api/v1/account/password", "/api/v1/auth/logout", "/api/v1/auth/session"];

/// A session's last use is written when it is older than this (idle expiry has minute precision).
const TOUCH_AFTER_MS: i64 = 60_000;
