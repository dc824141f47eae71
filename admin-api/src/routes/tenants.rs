//! The tenant tree (TEN-1..5): channels and sub-channels (search, edit, acting inside a
//! sub-channel), tenant accounts (listing with search, creating, freezing) and sub-accounts with
//! their permissions. A channel account works inside its own subtree; an enterprise account has
//! no access to the channel and account routes (403), but manages its own sub-accounts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId};
use fleetpulse_store::{
    Account, AccountFilter, Acting, Channel, ChannelUpdate, DataPermission, Feature, NewAccount, NewChannel, Page,
    Permissions, Role,
};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::email_address::normalize_email;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query, Unknown, refuse_unknown};
use crate::password::{MIN_PASSWORD_CHARS, hash_password, password_work};
use crate::policy::{self, AccountListing, ChannelListing, Target, TenantTree};
use crate::routes::listing::{ListPage, SearchQuery, page};
use crate::state::AppState;
use crate::text;
use fleetpulse_store::{MAX_CHANNEL_NAME, MAX_COUNTRY_CHARS, MAX_PROFILE_CONTACT, MAX_PROFILE_PHONE};

const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 1000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/channels", get(list).post(create)),
        ("/api/v1/channels/{id}", get(show).put(edit)),
        ("/api/v1/channels/{id}/act", post(act)),
        ("/api/v1/accounts", get(list_accounts).post(create_account)),
        ("/api/v1/sub-accounts", get(list_sub_accounts).post(create_sub_account)),
        ("/api/v1/sub-accounts/{id}/permissions", axum::routing::put(set_permissions)),
        ("/api/v1/sub-accounts/{id}/freeze", post(freeze_sub_account)),
        ("/api/v1/sub-accounts/{id}/unfreeze", post(unfreeze_sub_account)),
        ("/api/v1/accounts/{id}", get(show_account)),
        ("/api/v1/accounts/{id}/freeze", post(freeze_account)),
        ("/api/v1/accounts/{id}/unfreeze", post(unfreeze_account)),
    ]
}

/// `GET /api/v1/channels?q=&after=&limit=`: every channel (platform), the sub-channels below the
/// caller's channel, or the channels a sub-account's data permissions give it; ordered by id,
/// optionally only those matching the search.
async fn list(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<ListPage<Channel>>, ApiError> {
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let entities = &ctx.api.store.entities;
    let items = match policy::channel_listing(&auth.caller)? {
        ChannelListing::All => entities.search_channels(None, q.q.as_deref(), page).await?,
        ChannelListing::Subtree(root) => entities.search_channels(Some(root), q.q.as_deref(), page).await?,
        ChannelListing::Only(subtree) => {
            // Data permissions: the given channels, read one by one (a page at most).
            let needle = q.q.as_deref().map(|n| n.trim().to_lowercase()).filter(|n| !n.is_empty());
            let mut items = Vec::new();
            for &id in subtree.iter().filter(|c| c.0 > page.after) {
                if items.len() >= page.limit as usize {
                    break;
                }
                if let Some(c) = entities.channel(id).await?
                    && needle.as_ref().is_none_or(|n| {
                        [&c.name, &c.contact, &c.email].iter().any(|f| f.to_lowercase().contains(n.as_str()))
                    })
                {
                    items.push(c);
                }
            }
            items
        }
    };
    Ok(Json(ListPage::new(items, page, |c| c.id.0)))
}

/// The channel, or 404 when it does not exist or is outside the caller's subtree.
/// Enterprise accounts: 403.
pub(crate) async fn find(ctx: &AppState, auth: &AuthAdmin, id: ChannelId) -> Result<Channel, ApiError> {
    let mut looked = auth.decide(ctx, Target::Channel(id)).await?;
    looked.take_channel(id).ok_or(ApiError::NotFound("channel"))
}

/// `GET /api/v1/channels/{id}`.
async fn show(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ChannelId>,
) -> Result<Json<Channel>, ApiError> {
    Ok(Json(find(&ctx, &auth, id).await?))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateChannel {
    name: String,
    /// The parent: none for a top-level channel (platform only); a channel account creates
    /// sub-channels below its own channel (the default) where the parent allows them.
    #[serde(default)]
    parent_id: Option<ChannelId>,
    #[serde(default)]
    allow_sub_channels: bool,
    #[serde(default)]
    device_management: bool,
    #[serde(default)]
    rps: bool,
    #[serde(default)]
    contact: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    /// ISO 3166-1 alpha-2, e.g. "DE".
    #[serde(default)]
    country: String,
}

/// `POST /api/v1/channels`: 201 with the channel.
async fn create(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<CreateChannel>,
) -> Result<Response, ApiError> {
    auth.require(Feature::Channels)?;
    auth.decide(&ctx, Target::NewChannel { parent: req.parent_id }).await?;
    let parent_id = req.parent_id.or_else(|| policy::home_channel(&auth.caller));
    let new = NewChannel {
        name: text::name("name", &req.name, MAX_CHANNEL_NAME)?,
        parent_id,
        allow_sub_channels: req.allow_sub_channels,
        device_management: req.device_management,
        rps: req.rps,
        contact: text::text("contact", &req.contact, MAX_PROFILE_CONTACT)?,
        email: text::optional_email("email", &req.email)?,
        phone: text::text("phone", &req.phone, MAX_PROFILE_PHONE)?,
        country: text::text("country", &req.country, MAX_COUNTRY_CHARS)?,
    };
    let channel = ctx.api.store.entities.create_channel(new, ctx.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(channel)).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditChannel {
    name: Option<String>,
    allow_sub_channels: Option<bool>,
    device_management: Option<bool>,
    rps: Option<bool>,
    contact: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    country: Option<String>,
}

/// `PUT /api/v1/channels/{id}` with any of the fields of the creation but `parent_id`: the
/// given fields change, the others stay (TEN-2 edit). A channel account edits the channels below
/// its own; its own channel's permissions (`allow_sub_channels`, `device_management`, `rps`)
/// are granted from above (403 if it changes them).
async fn edit(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ChannelId>,
    Json(req): Json<EditChannel>,
) -> Result<Json<Channel>, ApiError> {
    auth.require(Feature::Channels)?;
    let current = find(&ctx, &auth, id).await?;
    let given = |field: &str, v: Option<String>, old: &str, max: usize| {
        text::optional(field, v, max).map(|v| v.unwrap_or_else(|| old.to_owned()))
    };
    let name = req.name.map(|n| text::name("name", &n, MAX_CHANNEL_NAME)).transpose()?;
    let email = req.email.map(|e| text::optional_email("email", &e)).transpose()?;
    let update = ChannelUpdate {
        name: name.unwrap_or(current.name.clone()),
        allow_sub_channels: req.allow_sub_channels.unwrap_or(current.allow_sub_channels),
        device_management: req.device_management.unwrap_or(current.device_management),
        rps: req.rps.unwrap_or(current.rps),
        contact: given("contact", req.contact, &current.contact, MAX_PROFILE_CONTACT)?,
        email: email.unwrap_or(current.email.clone()),
        phone: given("phone", req.phone, &current.phone, MAX_PROFILE_PHONE)?,
        country: given("country", req.country, &current.country, MAX_COUNTRY_CHARS)?,
    };
    let flags = |c: &ChannelUpdate| (c.allow_sub_channels, c.device_management, c.rps);
    if flags(&update) != (current.allow_sub_channels, current.device_management, current.rps) {
        auth.decide(&ctx, Target::ChannelFlags(id)).await?;
    }
    let updated = ctx.api.store.entities.update_channel(id, update).await?;
    Ok(Json(updated.ok_or(ApiError::NotFound("channel"))?))
}

/// `POST /api/v1/channels/{id}/act`: a channel account "logs into" one of its sub-channels
/// (TEN-3: freely, no authorization needed): 200 with a NEW session (shaped like the login
/// answer) whose scope is that sub-channel's subtree. 403 for other accounts and for the
/// caller's own channel. From a browser (the session cookie) the acting session comes as the new
/// cookie with its `csrf_token`, and the browser's session ends.
async fn act(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<ChannelId>,
) -> Result<Response, ApiError> {
    auth.decide(&ctx, Target::ActInChannel(id)).await?;
    crate::login::act_as(&ctx, auth.account.id, Acting::Channel(id), &headers).await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAccount {
    email: String,
    /// The first password; generated (and emailed) when absent.
    #[serde(default)]
    password: Option<String>,
    role: Role,
    #[serde(default)]
    channel_id: Option<ChannelId>,
    #[serde(default)]
    enterprise_id: Option<EnterpriseId>,
}

/// An account as the API shows it: never its password hash nor its TOTP secret.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct AccountBody {
    id: AccountId,
    email: String,
    role: Role,
    channel_id: Option<ChannelId>,
    enterprise_id: Option<EnterpriseId>,
    frozen: bool,
    /// The account whose sub-account this is (TEN-5).
    parent_id: Option<AccountId>,
    /// A sub-account's permissions.
    permissions: Option<Permissions>,
}

impl AccountBody {
    /// A sub-account's permissions.
    pub(crate) fn permissions(&self) -> Option<&Permissions> {
        self.permissions.as_ref()
    }
}

impl From<Account> for AccountBody {
    fn from(a: Account) -> Self {
        AccountBody {
            id: a.id,
            email: a.email,
            role: a.role,
            channel_id: a.channel_id,
            enterprise_id: a.enterprise_id,
            frozen: a.frozen,
            parent_id: a.parent_id,
            permissions: a.permissions,
        }
    }
}

/// `POST /api/v1/accounts` `{email, password?, role, channel_id?, enterprise_id?}`: creates a
/// platform admin (platform only), a channel admin of a channel in the caller's subtree, or an
/// enterprise admin of an enterprise the caller may see. 201. Without a password one is
/// generated; the account's details (and that temporary password) are emailed to it (TEN-1).
async fn create_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<CreateAccount>,
) -> Result<Response, ApiError> {
    auth.require(Feature::Accounts)?;
    let target = Target::NewAccount { role: req.role, channel: req.channel_id, enterprise: req.enterprise_id };
    auth.decide(&ctx, target).await?;
    let email = normalize_email(&req.email)?;
    let (password, generated) = crate::account_email::initial_password(req.password);
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!("a password has at least {MIN_PASSWORD_CHARS} characters")));
    }
    let temporary = generated.then(|| password.clone());
    let password_hash = password_work(&ctx.password_checks, move || hash_password(&password)).await??;
    let new = NewAccount {
        parent_id: None,
        permissions: None,
        email,
        password_hash,
        role: req.role,
        channel_id: req.channel_id,
        enterprise_id: req.enterprise_id,
        // ACC-2: an account created by another account changes its password at first login.
        must_change_password: true,
    };
    let account = ctx.api.store.entities.create_account(new).await?;
    crate::account_email::queue_account_created(&ctx, &account, temporary.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(AccountBody::from(account))).into_response())
}

/// `GET /api/v1/accounts`: every account (platform), or the accounts of the channels of the
/// caller's subtree and of the enterprises in it (channel admin), ordered by id.
async fn list_accounts(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<ListPage<AccountBody>>, ApiError> {
    auth.require(Feature::Accounts)?;
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let mut filter = match policy::account_listing(&auth.caller)? {
        AccountListing::Channels(channels) => AccountFilter {
            channels: Some(channels),
            enterprises: auth.visible_enterprises(&ctx).await?,
            ..AccountFilter::default()
        },
        AccountListing::All | AccountListing::Enterprise(_) => AccountFilter::default(),
    };
    filter.q = q.q;
    let items = ctx.api.store.entities.list_accounts(filter, page).await?;
    let items: Vec<AccountBody> = items.into_iter().map(AccountBody::from).collect();
    Ok(Json(ListPage::new(items, page, |a| a.id.0)))
}

/// The account, or 404 when it does not exist or the caller may not see it: visible to the
/// platform; to a channel admin when its channel is in the caller's subtree or its enterprise
/// is visible (platform admin accounts never are). Enterprise admins: 403.
pub(crate) async fn find_account(ctx: &AppState, auth: &AuthAdmin, id: AccountId) -> Result<Account, ApiError> {
    auth.require(Feature::Accounts)?;
    let mut looked = auth.decide(ctx, Target::Account(id)).await?;
    looked.take_account(id).ok_or(ApiError::NotFound("account"))
}

/// `GET /api/v1/accounts/{id}`.
async fn show_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Json<AccountBody>, ApiError> {
    Ok(Json(AccountBody::from(find_account(&ctx, &auth, id).await?)))
}

/// Freezes or unfreezes a visible account other than the caller's (409 for its own).
async fn set_frozen(ctx: &AppState, auth: &AuthAdmin, id: AccountId, frozen: bool) -> Result<AccountBody, ApiError> {
    auth.require(Feature::Accounts)?;
    let mut looked = auth.decide(ctx, Target::Freeze(id)).await?;
    let account = looked.take_account(id).ok_or(ApiError::NotFound("account"))?;
    let entities = &ctx.api.store.entities;
    if !entities.set_account_frozen(account.id, frozen).await? {
        return Err(ApiError::NotFound("account"));
    }
    let account = entities.account(account.id).await?.ok_or(ApiError::NotFound("account"))?;
    Ok(AccountBody::from(account))
}

/// `POST /api/v1/accounts/{id}/freeze` (TEN-2): the account can no longer log in and its
/// sessions end; 200 with the account.
async fn freeze_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Json<AccountBody>, ApiError> {
    Ok(Json(set_frozen(&ctx, &auth, id, true).await?))
}

/// `POST /api/v1/accounts/{id}/unfreeze` (TEN-2): the account can log in again; 200 with the
/// account.
async fn unfreeze_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Json<AccountBody>, ApiError> {
    Ok(Json(set_frozen(&ctx, &auth, id, false).await?))
}

/// Most sub-accounts one account may have.
const MAX_SUB_ACCOUNTS: usize = 500;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PermissionsBody {
    /// The features the sub-account may use.
    features: Vec<Feature>,
    /// Whose data it sees: `"all"` (everything its parent sees) or `{"only": {"channels": [..],
    /// "enterprises": [..]}}`.
    data: DataPermission,
}

impl PermissionsBody {
    /// The permissions, checked against the caller: every channel and enterprise named must be
    /// one it sees (404 otherwise, as for any object out of scope); at most 1,000 of each.
    async fn checked(self, ctx: &AppState, auth: &AuthAdmin) -> Result<Permissions, ApiError> {
        let permissions = Permissions { features: self.features, data: self.data }.normalized()?;
        if let DataPermission::Only { channels, enterprises } = &permissions.data {
            for &channel in channels {
                auth.decide(ctx, Target::GrantChannel(channel)).await?;
            }
            for &enterprise in enterprises {
                auth.decide(ctx, Target::GrantEnterprise(enterprise)).await?;
            }
        }
        Ok(permissions)
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct CreateSubAccount {
    email: String,
    /// The first password; generated (and emailed) when absent.
    #[serde(default)]
    password: Option<String>,
    #[serde(flatten)]
    permissions: PermissionsBody,
    #[serde(flatten)]
    #[schemars(skip)]
    unknown: Unknown,
}

/// 403 unless the caller is a full account (sub-accounts have no sub-accounts) acting for no one.
fn require_full_account(auth: &AuthAdmin) -> Result<(), ApiError> {
    Ok(policy::decide(&auth.caller, &Target::SubAccounts, &TenantTree::default())?)
}

/// `POST /api/v1/sub-accounts` `{email, password?, features, data}` (TEN-5): creates a
/// sub-account of the caller, with its role and tenant, the given features, and data
/// permissions within the caller's scope. 201. Full accounts only (403 for sub-accounts); the
/// sub-account changes its password at first login. Its details (and the generated password,
/// if none was given) are emailed to it, as for any new account (TEN-1).
async fn create_sub_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Json(req): Json<CreateSubAccount>,
) -> Result<Response, ApiError> {
    require_full_account(&auth)?;
    refuse_unknown(&req.unknown)?;
    let entities = &ctx.api.store.entities;
    let parent = entities.account(auth.account.id).await?.ok_or(ApiError::Unauthorized)?;
    let existing = AccountFilter { parent: Some(parent.id), ..AccountFilter::default() };
    if entities.list_accounts(existing, Page::first(MAX_SUB_ACCOUNTS as u32)).await?.len() >= MAX_SUB_ACCOUNTS {
        return Err(ApiError::Conflict(format!("an account has at most {MAX_SUB_ACCOUNTS} sub-accounts")));
    }
    let permissions = req.permissions.checked(&ctx, &auth).await?;
    let email = normalize_email(&req.email)?;
    let (password, generated) = crate::account_email::initial_password(req.password);
    let temporary = generated.then(|| password.clone());
    let password_hash = password_work(&ctx.password_checks, move || hash_password(&password)).await??;
    let new = NewAccount {
        email,
        password_hash,
        role: parent.role,
        channel_id: parent.channel_id,
        enterprise_id: parent.enterprise_id,
        must_change_password: true,
        parent_id: Some(parent.id),
        permissions: Some(permissions),
    };
    let account = entities.create_account(new).await?;
    crate::account_email::queue_account_created(&ctx, &account, temporary.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(AccountBody::from(account))).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageOnly {
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/v1/sub-accounts?after=&limit=`: the caller's sub-accounts, ordered by id.
async fn list_sub_accounts(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Query(q): Query<PageOnly>,
) -> Result<Json<ListPage<AccountBody>>, ApiError> {
    require_full_account(&auth)?;
    let page = page(q.after, q.limit, LIST_DEFAULT, LIST_MAX)?;
    let filter = AccountFilter { parent: Some(auth.account.id), ..AccountFilter::default() };
    let items = ctx.api.store.entities.list_accounts(filter, page).await?;
    Ok(Json(ListPage::new(items.into_iter().map(AccountBody::from).collect(), page, |a| a.id.0)))
}

/// `PUT /api/v1/sub-accounts/{id}/permissions` `{features, data}`: replaces the permissions of
/// one of the caller's sub-accounts (another account's: 404). They apply from its next request.
async fn set_permissions(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
    Json(req): Json<PermissionsBody>,
) -> Result<Json<AccountBody>, ApiError> {
    require_full_account(&auth)?;
    let entities = &ctx.api.store.entities;
    auth.decide(&ctx, Target::SubAccount(id)).await?;
    let permissions = req.checked(&ctx, &auth).await?;
    if !entities.set_account_permissions(id, permissions).await? {
        return Err(ApiError::NotFound("account"));
    }
    let account = entities.account(id).await?.ok_or(ApiError::NotFound("account"))?;
    Ok(Json(AccountBody::from(account)))
}

/// Freezes or unfreezes one of the caller's sub-accounts (another account's: 404).
async fn set_sub_account_frozen(
    ctx: &AppState,
    auth: &AuthAdmin,
    id: AccountId,
    frozen: bool,
) -> Result<AccountBody, ApiError> {
    require_full_account(auth)?;
    auth.decide(ctx, Target::SubAccount(id)).await?;
    let entities = &ctx.api.store.entities;
    if !entities.set_account_frozen(id, frozen).await? {
        return Err(ApiError::NotFound("account"));
    }
    let account = entities.account(id).await?.ok_or(ApiError::NotFound("account"))?;
    Ok(AccountBody::from(account))
}

/// `POST /api/v1/sub-accounts/{id}/freeze` (TEN-5): one of the caller's sub-accounts can no
/// longer log in and its sessions end; 200 with it. Unlike `/accounts/{id}/freeze` this is open
/// to enterprise accounts too: every full account manages its own sub-accounts.
async fn freeze_sub_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Json<AccountBody>, ApiError> {
    Ok(Json(set_sub_account_frozen(&ctx, &auth, id, true).await?))
}

/// `POST /api/v1/sub-accounts/{id}/unfreeze` (TEN-5): the sub-account can log in again.
async fn unfreeze_sub_account(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Json<AccountBody>, ApiError> {
    Ok(Json(set_sub_account_frozen(&ctx, &auth, id, false).await?))
}
