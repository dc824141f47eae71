//! Accounts and sessions: password hashing, the first admin, login/logout, and the
//! [`AuthAdmin`] extractor (bearer token, or session cookie with CSRF protection) every other
//! `/api/v1` route requires.
//!
//! Passwords are hashed with argon2id at the OWASP parameters (19 MiB, 2 passes, 1 lane) and
//! stored as PHC strings. Hashing and verification run on the blocking pool, at most one per core
//! at a time, so that a burst of logins cannot stall the async workers or exhaust memory.
//! Sessions are random 32-byte tokens given to the client once; the store keeps only their
//! SHA-256 ([`secrets::token_hash`]).

use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId, UnixMillis};
use fleetpulse_store::{
    Account, Acting, ChannelAuthorization, DataPermission, Enterprise, EnterpriseFilter, Feature, NewAccount, Role,
    Session, Store,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Json;
use crate::secrets;

/// Fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Most characters a password may have (a bound on hashing work, far above any real password).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Email of the first admin when none is given.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@localhost";
/// Length of a generated first-admin password.
const GENERATED_PASSWORD_CHARS: usize = 20;
/// Longest accepted email (RFC 5321 path limit).
const MAX_EMAIL_CHARS: usize = 254;

/// argon2id with the OWASP recommended parameters: m = 19456 KiB, t = 2, p = 1.
fn argon2id() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("the OWASP argon2 parameters are within argon2's bounds");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with argon2id (m = 19456 KiB, t = 2, p = 1) and a random 16-byte salt;
/// returns the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
///
/// Enforces the password policy: [`MIN_PASSWORD_CHARS`] to [`MAX_PASSWORD_CHARS`] characters,
/// else [`ApiError::InvalidRequest`]. CPU- and memory-heavy (tens of milliseconds, 19 MiB): call
/// it from a blocking context.
pub fn hash_password(pw: &str) -> Result<String, ApiError> {
    check_password_policy(pw)?;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(format!("password salt: {e}")))?;
    argon2id()
        .hash_password(pw.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::Internal(format!("password hashing: {e}")))
}

/// The password policy: [`MIN_PASSWORD_CHARS`] to [`MAX_PASSWORD_CHARS`] characters, else
/// [`ApiError::InvalidRequest`]. Cheap.
pub(crate) fn check_password_policy(pw: &str) -> Result<(), ApiError> {
    let chars = pw.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!("a password has at least {MIN_PASSWORD_CHARS} characters")));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!("a password has at most {MAX_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

/// True if `pw` matches the PHC string `phc`; false if it does not or `phc` is not a valid
/// argon2 PHC string. Verification uses the parameters recorded in `phc`. As heavy as
/// [`hash_password`].
pub fn verify_password(pw: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => argon2id().verify_password(pw.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A hash verified when a login names an unknown email, so that the answer takes as long as for
/// a known email with a wrong password and timing does not reveal which accounts exist.
static TIMING_DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_password("fleetpulse timing dummy password")
        .expect("hashing a constant password of valid length with constant parameters cannot fail")
});

/// Runs `f` (an argon2 computation) on the blocking pool while holding one of the hashing
/// permits. The permit moves into the blocking task, so the bound holds even when the request is
/// abandoned while the computation runs.
pub(crate) async fn password_work<T, F>(permits: &Arc<Semaphore>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Internal("password hashing permits closed".into()))?;
    tokio::task::spawn_blocking(move || {
        let value = f();
        drop(permit);
        value
    })
    .await
    .map_err(|e| ApiError::Internal(format!("password hashing task: {e}")))
}

/// Trims an email and checks its shape (something@something, no spaces, bounded length).
pub(crate) fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    let well_formed = email.chars().count() <= MAX_EMAIL_CHARS
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if well_formed {
        Ok(email.to_owned())
    } else {
        Err(ApiError::invalid(format!("{email:?} is not an email address")))
    }
}

/// What [`bootstrap_admin`] did.
#[derive(Clone, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// A platform admin existed already; nothing was changed.
    AlreadyPresent,
    /// The first platform admin was created.
    Created {
        /// Its id.
        account_id: AccountId,
        /// Its login email.
        email: String,
        /// The password, if it was generated: the binary prints it once; it is stored nowhere.
        generated_password: Option<String>,
    },
}

impl std::fmt::Debug for BootstrapOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootstrapOutcome::AlreadyPresent => f.write_str("AlreadyPresent"),
            BootstrapOutcome::Created { account_id, email, generated_password } => f
                .debug_struct("Created")
                .field("account_id", account_id)
                .field("email", email)
                .field("generated_password", &generated_password.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// Creates the first platform admin if there is none.
///
/// `email` defaults to [`DEFAULT_ADMIN_EMAIL`]; if `password` is `None`, a random 20-character
/// alphanumeric password is generated and returned in the outcome. If a platform admin exists,
/// nothing is done and the arguments are not even validated. Errors: 400 `invalid_request` for an
/// email that is not one or a password outside the policy, 409 `conflict` if the email is taken
/// (by a non-admin account), 500 on store failures.
pub async fn bootstrap_admin(
    store: &Store,
    email: Option<String>,
    password: Option<String>,
) -> Result<BootstrapOutcome, ApiError> {
    if store.entities.count_accounts(Role::PlatformAdmin).await? > 0 {
        return Ok(BootstrapOutcome::AlreadyPresent);
    }
    let email = normalize_email(email.as_deref().unwrap_or(DEFAULT_ADMIN_EMAIL))?;
    let (password, generated) = match password {
        Some(pw) => (pw, false),
        None => (secrets::random_password(GENERATED_PASSWORD_CHARS), true),
    };
    let pw = password.clone();
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing task: {e}")))??;
    // The first admin chose its password (or was shown the generated one): no forced change.
    let new = NewAccount {
        parent_id: None,
        permissions: None,
        email,
        password_hash,
        role: Role::PlatformAdmin,
        channel_id: None,
        enterprise_id: None,
        must_change_password: false,
    };
    let account = store.entities.create_account(new).await?;
    tracing::info!(message = "Created the first platform admin.", account_id = %account.id, email = %account.email);
    Ok(BootstrapOutcome::Created {
        account_id: account.id,
        email: account.email,
        generated_password: generated.then_some(password),
    })
}

/// An account as the API shows it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub(crate) struct AccountView {
    pub(crate) id: AccountId,
    pub(crate) email: String,
    pub(crate) role: Role,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        AccountView { id: a.id, email: a.email.clone(), role: a.role }
    }
}

/// What an authenticated account may see (TEN-4): resolved once per request from its role, its
/// data permissions if it is a sub-account (TEN-5), and the tenant its session acts for (TEN-3).
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
    /// The scope of an account, acting as its session says. Every tenant check goes through
    /// [`AuthAdmin`]'s methods below, nowhere else.
    async fn of(ctx: &AppState, account: &Account, acting: Option<Acting>) -> Result<Scope, ApiError> {
        let entities = &ctx.api.store.entities;
        let full = match (account.role, account.channel_id, account.enterprise_id) {
            (Role::PlatformAdmin, _, _) => Scope::Platform,
            (Role::ChannelAdmin, Some(channel), _) => Scope::Channel {
                channel: Some(channel),
                subtree: entities.channel_subtree(channel).await?,
                enterprises: Vec::new(),
                whole_subtree: true,
            },
            (Role::EnterpriseAdmin, _, Some(enterprise)) => Scope::Enterprise(enterprise),
            // A tenant account without its tenant sees nothing.
            _ => return Err(ApiError::Unauthorized),
        };
        let scope = match account.permissions.as_ref().map(|p| &p.data) {
            Some(DataPermission::Only { channels, enterprises }) => full.restricted(ctx, channels, enterprises).await?,
            Some(DataPermission::All) | None => full,
        };
        // TEN-3: a session acting inside a tenant sees that tenant only, while the account still
        // sees it (and, for an enterprise, while the enterprise authorizes its channel).
        match acting {
            None => Ok(scope),
            Some(Acting::Enterprise(id)) => {
                let enterprise = entities.enterprise(id).await?.ok_or(ApiError::Unauthorized)?;
                let probe = AuthAdmin::probe(scope);
                if probe.can_see_enterprise(&enterprise)
                    && enterprise.channel_authorization == ChannelAuthorization::Accepted
                {
                    Ok(Scope::Enterprise(id))
                } else {
                    Err(ApiError::Unauthorized)
                }
            }
            Some(Acting::Channel(id)) => {
                if AuthAdmin::probe(scope).can_see_channel(id) {
                    Ok(Scope::Channel {
                        channel: Some(id),
                        subtree: entities.channel_subtree(id).await?,
                        enterprises: Vec::new(),
                        whole_subtree: true,
                    })
                } else {
                    Err(ApiError::Unauthorized)
                }
            }
        }
    }

    /// A scope that sees nothing (a sub-account whose data permissions name nothing it may see).
    fn nothing() -> Scope {
        Scope::Channel { channel: None, subtree: Vec::new(), enterprises: Vec::new(), whole_subtree: false }
    }

    /// This scope narrowed to the given channels (each with its subtree) and enterprises, as far
    /// as they are inside it (TEN-5 data permissions).
    async fn restricted(
        self,
        ctx: &AppState,
        channels: &[ChannelId],
        enterprises: &[EnterpriseId],
    ) -> Result<Scope, ApiError> {
        let entities = &ctx.api.store.entities;
        let outer = AuthAdmin::probe(self.clone());
        let (default_channel, mut visible) = match &self {
            Scope::Enterprise(own) => {
                // An enterprise sub-account sees its enterprise or nothing.
                let allowed = enterprises.contains(own);
                return Ok(if allowed { self } else { Scope::nothing() });
            }
            Scope::Platform => (None, Vec::new()),
            Scope::Channel { channel, .. } => (*channel, Vec::new()),
        };
        for &channel in channels.iter().filter(|&&c| outer.can_see_channel(c)) {
            visible.extend(entities.channel_subtree(channel).await?);
            if visible.len() > fleetpulse_store::MAX_CHANNEL_SUBTREE {
                return Err(ApiError::invalid("the data permissions cover too many channels"));
            }
        }
        visible.sort_unstable();
        visible.dedup();
        // The listed enterprises in one read (at most MAX_DATA_PERMISSION_IDS of them).
        let listed = EnterpriseFilter { ids: Some(enterprises.to_vec()), ..EnterpriseFilter::default() };
        let page = fleetpulse_store::Page::first(fleetpulse_store::MAX_DATA_PERMISSION_IDS as u32);
        let found = entities.search_enterprises(listed, page).await?;
        let extra: Vec<EnterpriseId> = found.iter().filter(|e| outer.can_see_enterprise(e)).map(|e| e.id).collect();
        Ok(Scope::Channel { channel: default_channel, subtree: visible, enterprises: extra, whole_subtree: false })
    }
}

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
    /// What it may see.
    pub(crate) scope: Scope,
    /// The features it may use: `None` for a full account (everything its role allows), the
    /// list for a sub-account (TEN-5).
    pub(crate) features: Option<Vec<Feature>>,
    /// The tenant the session acts for (TEN-3).
    pub(crate) acting: Option<Acting>,
}

impl AuthAdmin {
    /// A caller with this scope and nothing else, for scope arithmetic.
    fn probe(scope: Scope) -> AuthAdmin {
        AuthAdmin {
            account: AccountView { id: AccountId(0), email: String::new(), role: Role::PlatformAdmin },
            scope,
            features: None,
            acting: None,
        }
    }

    /// 403 unless the caller may use the feature: full accounts may use every feature their
    /// role allows, sub-accounts those they were given (TEN-5).
    pub(crate) fn require(&self, feature: Feature) -> Result<(), ApiError> {
        match &self.features {
            Some(features) if !features.contains(&feature) => Err(ApiError::Forbidden),
            _ => Ok(()),
        }
    }

    /// The enterprise a listing is restricted to. A platform admin gets what it asked for; an
    /// enterprise admin its own enterprise (another one is 404); a channel admin the requested
    /// enterprise if it is in its scope (else 404) — channel accounts must name one for
    /// enterprise-level listings.
    pub(crate) async fn enterprise_filter(
        &self,
        ctx: &AppState,
        requested: Option<EnterpriseId>,
    ) -> Result<Option<EnterpriseId>, ApiError> {
        match (&self.scope, requested) {
            (Scope::Platform, requested) => Ok(requested),
            (Scope::Enterprise(own), None) => Ok(Some(*own)),
            (Scope::Enterprise(_) | Scope::Channel { .. }, Some(id)) => {
                if self.can_see(ctx, id).await? {
                    Ok(Some(id))
                } else {
                    Err(ApiError::NotFound("enterprise"))
                }
            }
            (Scope::Channel { .. }, None) => {
                Err(ApiError::invalid("enterprise_id is required for channel accounts on this listing"))
            }
        }
    }

    /// The enterprise filter of a listing across enterprises: the requested enterprise (checked
    /// as [`AuthAdmin::enterprise_filter`] does), else every enterprise the caller sees — `None`
    /// for the platform (no filter), the list for a channel or sub-account scope.
    pub(crate) async fn listing_filter(
        &self,
        ctx: &AppState,
        requested: Option<EnterpriseId>,
    ) -> Result<(Option<EnterpriseId>, Option<Vec<EnterpriseId>>), ApiError> {
        match (&self.scope, requested) {
            (Scope::Channel { .. }, None) => Ok((None, self.visible_enterprises(ctx).await?)),
            _ => Ok((self.enterprise_filter(ctx, requested).await?, None)),
        }
    }

    /// Every enterprise the caller sees: `None` for the platform (all of them), else the ids,
    /// sorted. 400 beyond [`fleetpulse_store::MAX_ENTERPRISE_CHANNEL_FILTER`] (a listing of that
    /// many enterprises must name one).
    pub(crate) async fn visible_enterprises(&self, ctx: &AppState) -> Result<Option<Vec<EnterpriseId>>, ApiError> {
        const PAGE: u32 = 1000;
        let (channels, extra) = match &self.scope {
            Scope::Platform => return Ok(None),
            Scope::Enterprise(own) => return Ok(Some(vec![*own])),
            Scope::Channel { subtree, enterprises, .. } => (subtree, enterprises),
        };
        let filter = EnterpriseFilter { channels: Some(channels.clone()), ids: Some(extra.clone()), q: None };
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

    /// The enterprise and channel filters of a device listing or dashboard (DEV-1, DEV-2), from
    /// the requested ones (`None`: not given) and the caller's scope:
    /// - a platform admin gets what it asked for (nothing: every device);
    /// - an enterprise admin its own enterprise; any other requested enterprise, and any
    ///   channel filter, is 404;
    /// - a channel account (or sub-account) the enterprises it sees
    ///   ([`AuthAdmin::visible_enterprises`]), or those it named if it sees all of them (else
    ///   404); requested channels must be ones it sees (else 404).
    pub(crate) async fn device_scope(
        &self,
        ctx: &AppState,
        enterprises: Option<Vec<EnterpriseId>>,
        channels: Option<Vec<ChannelId>>,
    ) -> Result<(Option<Vec<EnterpriseId>>, Option<Vec<ChannelId>>), ApiError> {
        match &self.scope {
            Scope::Platform => Ok((enterprises, channels)),
            Scope::Enterprise(own) => {
                if enterprises.as_ref().is_some_and(|e| e.iter().any(|e| e != own)) {
                    return Err(ApiError::NotFound("enterprise"));
                }
                if channels.is_some() {
                    return Err(ApiError::NotFound("channel"));
                }
                Ok((Some(vec![*own]), None))
            }
            Scope::Channel { .. } => {
                if channels.as_ref().is_some_and(|c| c.iter().any(|c| !self.can_see_channel(*c))) {
                    return Err(ApiError::NotFound("channel"));
                }
                let visible = self.visible_enterprises(ctx).await?.unwrap_or_default();
                match enterprises {
                    Some(requested) => {
                        let set: std::collections::HashSet<EnterpriseId> = visible.into_iter().collect();
                        if requested.iter().any(|e| !set.contains(e)) {
                            return Err(ApiError::NotFound("enterprise"));
                        }
                        Ok((Some(requested), channels))
                    }
                    None => Ok((Some(visible), channels)),
                }
            }
        }
    }

    /// Whether the caller may see data of the enterprise; callers answer 404 when not, so that
    /// out-of-scope resources look like absent ones.
    pub(crate) async fn can_see(&self, ctx: &AppState, enterprise: EnterpriseId) -> Result<bool, ApiError> {
        match &self.scope {
            Scope::Platform => Ok(true),
            Scope::Enterprise(own) => Ok(*own == enterprise),
            Scope::Channel { .. } => {
                let found = ctx.api.store.entities.enterprise(enterprise).await?;
                Ok(found.is_some_and(|e| self.can_see_enterprise(&e)))
            }
        }
    }

    /// [`AuthAdmin::can_see`] for an enterprise already loaded.
    pub(crate) fn can_see_enterprise(&self, e: &Enterprise) -> bool {
        match &self.scope {
            Scope::Platform => true,
            Scope::Enterprise(own) => *own == e.id,
            Scope::Channel { enterprises, .. } => {
                e.channel_id.is_some_and(|c| self.can_see_channel(c)) || enterprises.binary_search(&e.id).is_ok()
            }
        }
    }

    /// Whether the channel is the caller's or below it (platform: every channel).
    pub(crate) fn can_see_channel(&self, channel: ChannelId) -> bool {
        match &self.scope {
            Scope::Platform => true,
            Scope::Channel { subtree, .. } => subtree.binary_search(&channel).is_ok(),
            Scope::Enterprise(_) => false,
        }
    }

    /// Whether the caller may change things inside the enterprise (strategies, alarm
    /// acknowledgements): the platform, the enterprise's own accounts, and a channel account
    /// acting inside it with its authorization (TEN-3). A channel account not acting sees the
    /// enterprise's data but changes nothing in it: 403 `acting_required` from
    /// [`AuthAdmin::require_act`].
    pub(crate) async fn require_act(&self, ctx: &AppState, enterprise: EnterpriseId) -> Result<(), ApiError> {
        match &self.scope {
            Scope::Platform => Ok(()),
            Scope::Enterprise(own) if *own == enterprise => Ok(()),
            _ if !self.can_see(ctx, enterprise).await? => Err(ApiError::NotFound("enterprise")),
            _ => Err(ApiError::ActingRequired),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl FromRequestParts<AppState> for AuthAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &AppState) -> Result<Self, Self::Rejection> {
        let (token, source) = crate::cookies::request_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let entities = &ctx.api.store.entities;
        let now = UnixMillis::now();
        let hash = secrets::token_hash(token);
        let session = entities.session(hash, now).await?.ok_or(ApiError::Unauthorized)?;
        let idle = now.0.saturating_sub(session.last_seen_at.0);
        if idle > i64::try_from(ctx.api.config.session_idle.as_millis()).unwrap_or(i64::MAX) {
            entities.delete_session(hash).await?;
            return Err(ApiError::Unauthorized);
        }
        // Written at most once a minute per session (or a quarter of the idle limit, if shorter),
        // not on every request.
        let idle_ms = i64::try_from(ctx.api.config.session_idle.as_millis()).unwrap_or(i64::MAX);
        if idle > TOUCH_AFTER_MS.min(idle_ms / 4) {
            entities.touch_session(hash, now).await?;
        }
        let account = entities.account(session.account_id).await?.ok_or(ApiError::Unauthorized)?;
        let acting = session.acting;
        // The operation log records who made the request, also when it is refused below.
        if let Some(slot) = parts.extensions.get::<crate::routes::oplog::CallerSlot>() {
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
        Ok(AuthAdmin {
            scope: Scope::of(ctx, &account, acting).await?,
            features: account.permissions.as_ref().map(|p| p.features.clone()),
            acting,
            account: AccountView::from(&account),
        })
    }
}

/// The only routes an account that must change its password may use (ACC-2).
const PASSWORD_CHANGE_PATHS: &[&str] = &["/api/v1/account/password", "/api/v1/auth/logout"];

/// A session's last use is written when it is older than this (idle expiry has minute precision).
const TOUCH_AFTER_MS: i64 = 60_000;

/// Wrong passwords in a row that lock an account (ACC-2).
pub const MAX_LOGIN_FAILURES: u32 = 10;
/// How long a locked account stays locked.
pub const LOCKOUT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/auth/login", post(login)),
        ("/api/v1/auth/logout", post(logout)),
        ("/api/v1/account/password", post(change_password)),
        ("/api/v1/account/totp/setup", post(totp_setup)),
        ("/api/v1/account/totp", post(totp_enable)),
        ("/api/v1/account/totp/disable", post(totp_disable)),
    ]
}

/// Counts a wrong password or code of an existing account toward its lockout (ACC-2).
pub(crate) async fn count_login_failure(ctx: &AppState, account: AccountId, now: UnixMillis) -> Result<(), ApiError> {
    let lock_ms = u64::try_from(LOCKOUT.as_millis()).unwrap_or(u64::MAX);
    let after = ctx.api.store.entities.record_login_failure(account, now, MAX_LOGIN_FAILURES, lock_ms).await?;
    if after.is_some_and(|a| a.is_locked(now)) {
        tracing::warn!(message = "Account locked after repeated wrong passwords.", %account);
    }
    Ok(())
}

/// Whole seconds since the epoch (the TOTP clock).
fn unix_seconds(t: UnixMillis) -> u64 {
    u64::try_from(t.0 / 1000).unwrap_or(0)
}

/// Issuer shown in authenticator apps.
const TOTP_ISSUER: &str = "fleetpulse";

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct TotpSetup {
    /// Base32 secret to type into an authenticator app.
    secret: String,
    /// The same as an `otpauth://` URI (for a QR code).
    otpauth_uri: String,
}

/// `POST /api/v1/account/totp/setup`: a fresh secret for the caller's authenticator app. Nothing
/// is stored until `POST /api/v1/account/totp` confirms it with a code.
async fn totp_setup(auth: AuthAdmin) -> Json<TotpSetup> {
    let secret = crate::totp::TotpSecret::random();
    Json(TotpSetup { otpauth_uri: secret.otpauth_uri(TOTP_ISSUER, &auth.account.email), secret: secret.to_base32() })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TotpEnable {
    secret: String,
    code: String,
}

/// `POST /api/v1/account/totp` `{secret, code}`: turns on login protection by TOTP (ACC-3) once
/// `code` proves the app holds `secret`; from then on every login needs a code. 204.
async fn totp_enable(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<TotpEnable>,
) -> Result<StatusCode, ApiError> {
    let secret = crate::totp::TotpSecret::from_base32(&req.secret)
        .ok_or_else(|| ApiError::invalid("secret must be the 32-character base32 secret from setup"))?;
    let now_s = unix_seconds(UnixMillis::now());
    let step = crate::totp::verify(&secret, &req.code, now_s, None)
        .map_err(|e| ApiError::invalid(format!("the code does not match the secret: {e}")))?;
    let entities = &ctx.api.store.entities;
    if !entities.set_totp(auth.account.id, Some(*secret.as_bytes())).await? {
        return Err(ApiError::NotFound("account"));
    }
    // The code just used cannot log in again.
    entities.record_totp_step(auth.account.id, step).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TotpDisable {
    code: String,
}

/// `POST /api/v1/account/totp/disable` `{code}`: turns TOTP off with a current code. 204; 400 if
/// TOTP is not on or the code is wrong or used.
async fn totp_disable(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<TotpDisable>,
) -> Result<StatusCode, ApiError> {
    let entities = &ctx.api.store.entities;
    let account = entities.account(auth.account.id).await?.ok_or(ApiError::NotFound("account"))?;
    let secret = account.totp_secret.ok_or_else(|| ApiError::invalid("TOTP is not turned on"))?;
    let now_s = unix_seconds(UnixMillis::now());
    let secret = crate::totp::TotpSecret::from_bytes(secret);
    let step = crate::totp::verify(&secret, &req.code, now_s, account.totp_last_step)
        .map_err(|e| ApiError::invalid(format!("the code is not valid: {e}")))?;
    if !entities.record_totp_step(account.id, step).await? {
        return Err(ApiError::invalid("the code was already used"));
    }
    entities.set_totp(account.id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct LoginRequest {
    email: String,
    password: String,
    /// The authenticator app's current code, for accounts with TOTP (ACC-3).
    #[serde(default)]
    code: Option<String>,
    /// Answer with a session cookie and a CSRF token instead of a bearer token (ACC-1).
    #[serde(default)]
    cookie: bool,
}

/// A fresh session, as login answers it.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct LoginResponse {
    /// The bearer token (left out of cookie answers, see [`crate::cookies`]).
    pub(crate) token: String,
    pub(crate) expires_at: UnixMillis,
    pub(crate) account: AccountView,
    /// The account must change its password (`POST /api/v1/account/password`) before it may use
    /// any other route (ACC-2).
    pub(crate) must_change_password: bool,
}

/// `POST /api/v1/auth/login`: checks the password and opens a session.
///
/// Ten wrong passwords in a row lock the account for five minutes (ACC-2); a locked account,
/// an unknown email and a wrong password get the same answer after the same work, so the answer
/// does not tell which accounts exist. A frozen account (TEN-2) gets that answer too. The operation log records the email tried.
///
/// With `"cookie": true` the session comes as the `fp_session` cookie and the body carries a
/// `csrf_token` instead of the token (ACC-1, [`crate::cookies`]). An account with login
/// protection by email gets 401 `mfa_required` with a `challenge` instead (ACC-3,
/// [`crate::login_code`]).
async fn login(State(ctx): State<AppState>, Json(req): Json<LoginRequest>) -> Response {
    let email: String = req.email.trim().chars().take(320).collect();
    let mut account_id = None;
    let cookie = req.cookie;
    let result = login_checked(&ctx, req, &mut account_id).await;
    let result = result.and_then(|ok| crate::cookies::session_response(&ok, &ok.token, cookie, session_ttl_s(&ctx)));
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(crate::routes::oplog::Actor { account_id, email });
    response
}

/// The login; `account_id` is set to the account the email names (for the operation log, also
/// when the login fails).
async fn login_checked(
    ctx: &AppState,
    req: LoginRequest,
    account_id: &mut Option<AccountId>,
) -> Result<LoginResponse, ApiError> {
    let account = match normalize_email(&req.email) {
        Ok(email) => ctx.api.store.entities.account_by_email(&email).await?,
        Err(_) => None,
    };
    *account_id = account.as_ref().map(|a| a.id);
    let req_code = req.code;
    let now = UnixMillis::now();
    let locked = account.as_ref().is_some_and(|a| a.is_locked(now));
    // A frozen account (TEN-2) gets the answer of a wrong password, after the same work.
    let frozen = account.as_ref().is_some_and(|a| a.frozen);
    let password = req.password;
    let matches = match &account {
        Some(a) => {
            let phc = a.password_hash.clone();
            password_work(&ctx.password_checks, move || verify_password(&password, &phc)).await?
        }
        None => {
            password_work(&ctx.password_checks, move || verify_password(&password, &TIMING_DUMMY_HASH)).await?;
            false
        }
    };
    let account = match account {
        Some(a) if matches && !locked && !frozen => a,
        other => {
            ctx.metrics.login_failed();
            if let Some(a) = other.filter(|_| !locked && !frozen) {
                count_login_failure(ctx, a.id, now).await?;
            }
            return Err(ApiError::InvalidCredentials);
        }
    };
    if let Some(secret) = account.totp_secret {
        let Some(code) = req_code else { return Err(ApiError::MfaRequired) };
        let secret = crate::totp::TotpSecret::from_bytes(secret);
        let step = crate::totp::verify(&secret, &code, unix_seconds(now), account.totp_last_step).ok();
        // Each code works once: the step is claimed atomically (a replay loses the race).
        let claimed = match step {
            Some(step) => ctx.api.store.entities.record_totp_step(account.id, step).await?,
            None => false,
        };
        if !claimed {
            ctx.metrics.login_failed();
            count_login_failure(ctx, account.id, now).await?;
            return Err(ApiError::InvalidCredentials);
        }
    }
    // ACC-3: with login protection by email, the session opens at POST /api/v1/auth/login/verify.
    crate::login_code::require_email_code(ctx, &account, now).await?;
    if account.failed_logins > 0 || account.locked_until.is_some() {
        ctx.api.store.entities.record_login_success(account.id).await?;
    }
    open_session(ctx, &account, now).await
}

/// Opens a session of the account acting for a tenant (TEN-3) and answers with it, shaped like
/// the login answer plus `acting`. The caller checked that the account may act there; the scope
/// is checked again on every request made with the session.
pub(crate) async fn act_as(ctx: &AppState, account: AccountId, acting: Acting) -> Result<Response, ApiError> {
    let account = ctx.api.store.entities.account(account).await?.ok_or(ApiError::Unauthorized)?;
    let session = open_session_acting(ctx, &account, UnixMillis::now(), Some(acting)).await?;
    tracing::info!(message = "Session acting inside a tenant opened.", account = %account.id, ?acting);
    Ok(Json(ActingSession { session, acting }).into_response())
}

/// The answer of `POST /api/v1/enterprises/{id}/act` and `POST /api/v1/channels/{id}/act`: a
/// new session acting for the tenant.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct ActingSession {
    #[serde(flatten)]
    session: LoginResponse,
    /// For whom the session acts.
    acting: Acting,
}

/// The session lifetime in whole seconds (the cookie's `Max-Age`).
pub(crate) fn session_ttl_s(ctx: &AppState) -> u64 {
    ctx.api.config.session_ttl.as_secs()
}

/// Opens a session of the account (a fresh token) and answers as a login does.
pub(crate) async fn open_session(
    ctx: &AppState,
    account: &Account,
    now: UnixMillis,
) -> Result<LoginResponse, ApiError> {
    open_session_acting(ctx, account, now, None).await
}

/// [`open_session`], acting for a tenant (TEN-3) if given.
async fn open_session_acting(
    ctx: &AppState,
    account: &Account,
    now: UnixMillis,
    acting: Option<Acting>,
) -> Result<LoginResponse, ApiError> {
    let token = secrets::new_session_token();
    let ttl = i64::try_from(ctx.api.config.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at = UnixMillis(now.0.saturating_add(ttl));
    ctx.api
        .store
        .entities
        .create_session(Session {
            acting,
            token_hash: secrets::token_hash(&token),
            account_id: account.id,
            created_at: now,
            last_seen_at: now,
            expires_at,
        })
        .await?;
    Ok(LoginResponse {
        token,
        expires_at,
        account: AccountView::from(account),
        must_change_password: account.must_change_password,
    })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /api/v1/account/password` `{current_password, new_password}`: changes the caller's
/// password (ACC-2; also how an account that must change its password does so).
///
/// 400 if the new password is outside the policy or equals the current one; 401 `unauthorized`
/// if the current password is wrong (counted as a failed login, so it locks the account like
/// login does) or the account is locked. On success the new argon2id hash is stored, the
/// forced change is cleared, and **every** session of the account ends, the caller's too: the
/// answer is 200 with a fresh session, shaped like the login answer
/// (`{token, expires_at, account, must_change_password: false}`).
async fn change_password(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<PasswordChange>,
) -> Result<Response, ApiError> {
    check_password_policy(&req.new_password)?;
    if req.new_password == req.current_password {
        return Err(ApiError::invalid("the new password must differ from the current one"));
    }
    let entities = &ctx.api.store.entities;
    let account = entities.account(auth.account.id).await?.ok_or(ApiError::Unauthorized)?;
    let now = UnixMillis::now();
    // A locked account (ACC-2) gets the answer of a wrong password, after the same work.
    let locked = account.is_locked(now);
    let phc = account.password_hash.clone();
    let PasswordChange { current_password, new_password } = req;
    let new_hash = password_work(&ctx.password_checks, move || {
        if verify_password(&current_password, &phc) { hash_password(&new_password).map(Some) } else { Ok(None) }
    })
    .await??;
    let new_hash = match new_hash {
        Some(hash) if !locked => hash,
        _ => {
            ctx.metrics.login_failed();
            if !locked {
                count_login_failure(&ctx, account.id, now).await?;
            }
            return Err(ApiError::InvalidCredentials);
        }
    };
    if !entities.set_password(account.id, new_hash, false).await? {
        return Err(ApiError::Unauthorized);
    }
    if account.failed_logins > 0 || account.locked_until.is_some() {
        entities.record_login_success(account.id).await?;
    }
    // Every session ends (a stolen one too); the caller continues with a fresh one.
    entities.delete_account_sessions(account.id).await?;
    let account = entities.account(account.id).await?.ok_or(ApiError::Unauthorized)?;
    tracing::info!(message = "Password changed.", account = %account.id);
    let session = open_session(&ctx, &account, now).await?;
    // A browser session continues in a fresh cookie.
    let cookie = crate::cookies::request_token(&headers).is_some_and(|(_, s)| s == crate::cookies::TokenSource::Cookie);
    crate::cookies::session_response(&session, &session.token, cookie, session_ttl_s(&ctx))
}

/// `POST /api/v1/auth/logout`: ends the caller's session (its token stops working); 204, with
/// the session cookie cleared (`Max-Age=0`).
async fn logout(_auth: AuthAdmin, State(ctx): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some((token, _)) = crate::cookies::request_token(&headers) {
        ctx.api.store.entities.delete_session(secrets::token_hash(token)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, crate::cookies::cleared_cookie());
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_owasp_phc_strings_that_verify() {
        let phc = hash_password("correct horse battery").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("correct horse battery!", &phc));
        assert!(!verify_password("correct horse battery", "not a phc string"));
        assert_ne!(phc, hash_password("correct horse battery").expect("hash"), "salts differ");
    }

    #[test]
    fn password_policy_bounds_the_length() {
        assert!(matches!(hash_password("1234567"), Err(ApiError::InvalidRequest(_))));
        assert!(matches!(hash_password(&"x".repeat(MAX_PASSWORD_CHARS + 1)), Err(ApiError::InvalidRequest(_))));
        assert!(hash_password("12345678").is_ok());
    }

    #[test]
    fn emails_are_trimmed_and_checked() {
        assert_eq!(normalize_email("  a@b ").ok().as_deref(), Some("a@b"));
        for bad in ["", "ab", "@b", "a@", "a b@c", "a@b\n c"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("header value"));
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().expect("header value"));
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header value"));
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().expect("header value"));
        assert_eq!(bearer_token(&h), None);
    }
}
