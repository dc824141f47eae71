//! Strategy receivers that are accounts (ALM-3): the receiver forms a strategy request takes,
//! which accounts a strategy may notify, the list the console's strategy editor picks them from,
//! and how the effective-strategies view names them.
//!
//! Choices where the issue is silent:
//! - An enterprise strategy may notify the accounts of that enterprise (its admins and their
//!   sub-accounts); a channel strategy only the accounts of that channel (its admins and their
//!   sub-accounts), not those of its enterprises: a channel strategy applies to every enterprise
//!   of its reach, and an enterprise's admin must not receive another enterprise's alarms.
//!   Any other account answers 404 `not_found` exactly like one that does not exist.
//! - A frozen account may be chosen (freezing is undone by unfreezing); it receives nothing while
//!   frozen. A deleted one cannot be chosen, and one deleted later is dropped at send time.
//! - The account's address is read when the notification is queued (`fleetpulse-alarm-service`,
//!   `receivers.rs`), never copied into the strategy.

use axum::extract::State;
use axum::routing::{MethodRouter, get};
use fleetpulse_proto::{AccountId, ChannelId, EnterpriseId};
use fleetpulse_store::{Account, AccountFilter, Feature, Page, StrategyReceiver, StrategySettings};
use serde::{Deserialize, Serialize};

use crate::auth::AuthAdmin;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::openapi::{Operation, get_};
use crate::routes::{enterprises, tenants};
use crate::state::AppState;

/// Most accounts the receiver picker lists for one owner.
const MAX_PICKABLE: u32 = 1_000;

/// Routes of this module: (path, handlers by method).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/enterprises/{id}/alarm-receiver-accounts", get(of_enterprise)),
        ("/api/v1/channels/{id}/alarm-receiver-accounts", get(of_channel)),
    ]
}

/// The documented operations of this module.
pub(crate) fn operations() -> Vec<Operation> {
    const ALARMS: &str = "alarms";
    vec![
        get_(
            "/api/v1/enterprises/{id}/alarm-receiver-accounts",
            ALARMS,
            "Accounts the enterprise's alarm strategies may notify (its accounts and sub-accounts)",
        )
        .answers::<ReceiverAccounts>(200),
        get_(
            "/api/v1/channels/{id}/alarm-receiver-accounts",
            ALARMS,
            "Accounts the channel's own alarm strategies may notify (its accounts and sub-accounts)",
        )
        .answers::<ReceiverAccounts>(200),
    ]
}

/// A plain address receiver in a request.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailReceiver {
    /// The address.
    email: String,
}

/// An account receiver in a request.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountReceiver {
    /// An account or sub-account of the strategy's owner (enterprise strategies: the
    /// enterprise's; channel strategies: the channel's), notified at its email of the moment.
    account: AccountId,
}

/// A receiver in a strategy request: `{"email": "ops@acme.test"}`, `{"account": 42}`, or a
/// plain address string (the older form, still taken). Strategies show them tagged.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(crate) enum ReceiverRequest {
    /// A plain address (older form).
    Address(String),
    /// A plain address.
    Email(EmailReceiver),
    /// An account or sub-account.
    Account(AccountReceiver),
}

impl ReceiverRequest {
    /// The stored form, the address checked by `email`.
    pub(crate) fn stored(self, email: impl Fn(&str) -> Result<String, ApiError>) -> Result<StrategyReceiver, ApiError> {
        Ok(match self {
            ReceiverRequest::Address(address) | ReceiverRequest::Email(EmailReceiver { email: address }) => {
                StrategyReceiver::Email(email(&address)?)
            }
            ReceiverRequest::Account(AccountReceiver { account }) => StrategyReceiver::Account(account),
        })
    }
}

/// Whose accounts a strategy may notify: the owner of the strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReceiverOwner {
    /// An enterprise's own strategy.
    Enterprise(EnterpriseId),
    /// A channel's own strategy.
    Channel(ChannelId),
}

/// Whether a strategy of `owner` may notify `account` (the one rule; see the module's doc).
pub(crate) fn may_receive(owner: ReceiverOwner, account: &Account) -> bool {
    match owner {
        ReceiverOwner::Enterprise(e) => account.enterprise_id == Some(e),
        ReceiverOwner::Channel(c) => account.channel_id == Some(c),
    }
}

/// 404 `not_found` unless every account receiver of `settings` exists and `owner` may notify it.
pub(crate) async fn check_accounts(
    ctx: &AppState,
    owner: ReceiverOwner,
    settings: &StrategySettings,
) -> Result<(), ApiError> {
    for id in settings.receivers.iter().filter_map(StrategyReceiver::account) {
        match ctx.api.store.entities.account(id).await? {
            Some(a) if may_receive(owner, &a) => {}
            _ => return Err(ApiError::NotFound("account")),
        }
    }
    Ok(())
}

/// An account a strategy may notify.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ReceiverAccount {
    id: AccountId,
    /// Its current email.
    email: String,
    /// Its contact name (empty if it has none).
    name: String,
    /// Frozen accounts receive nothing until unfrozen.
    frozen: bool,
    /// Whether it is a sub-account.
    sub_account: bool,
}

/// The accounts a strategy of the owner may notify, ordered by id (at most 1,000).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ReceiverAccounts {
    items: Vec<ReceiverAccount>,
}

async fn pickable(ctx: &AppState, owner: ReceiverOwner) -> Result<ReceiverAccounts, ApiError> {
    let filter = match owner {
        ReceiverOwner::Enterprise(e) => AccountFilter { enterprises: Some(vec![e]), ..AccountFilter::default() },
        ReceiverOwner::Channel(c) => AccountFilter { channels: Some(vec![c]), ..AccountFilter::default() },
    };
    let accounts = ctx.api.store.entities.list_accounts(filter, Page::first(MAX_PICKABLE)).await?;
    let mut items = Vec::with_capacity(accounts.len());
    for a in accounts.into_iter().filter(|a| may_receive(owner, a)) {
        items.push(ReceiverAccount {
            name: contact_name(ctx, a.id).await?,
            id: a.id,
            email: a.email,
            frozen: a.frozen,
            sub_account: a.parent_id.is_some(),
        });
    }
    Ok(ReceiverAccounts { items })
}

async fn contact_name(ctx: &AppState, id: AccountId) -> Result<String, ApiError> {
    Ok(ctx.api.store.entities.account_settings(id).await?.map(|s| s.contact_name).unwrap_or_default())
}

/// `GET /api/v1/enterprises/{id}/alarm-receiver-accounts`.
async fn of_enterprise(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<EnterpriseId>,
) -> Result<Json<ReceiverAccounts>, ApiError> {
    auth.require(Feature::Strategies)?;
    let id = enterprises::find(&ctx, &auth, id).await?.id;
    Ok(Json(pickable(&ctx, ReceiverOwner::Enterprise(id)).await?))
}

/// `GET /api/v1/channels/{id}/alarm-receiver-accounts`.
async fn of_channel(
    auth: AuthAdmin,
    State(ctx): State<AppState>,
    Path(id): Path<ChannelId>,
) -> Result<Json<ReceiverAccounts>, ApiError> {
    auth.require(Feature::Strategies)?;
    let id = tenants::find(&ctx, &auth, id).await?.id;
    Ok(Json(pickable(&ctx, ReceiverOwner::Channel(id)).await?))
}

/// How the effective-strategies view shows a receiver: an address as it is, an account by name
/// (`Ada Lovelace <ada@acme.test>`, its email alone without a contact name, `account 42
/// (deleted)`, ` (frozen)` added while frozen).
pub(crate) async fn label(ctx: &AppState, receiver: &StrategyReceiver) -> Result<String, ApiError> {
    let id = match receiver {
        StrategyReceiver::Email(address) => return Ok(address.clone()),
        StrategyReceiver::Account(id) => *id,
    };
    let Some(account) = ctx.api.store.entities.account(id).await? else {
        return Ok(format!("account {} (deleted)", id.0));
    };
    let name = contact_name(ctx, id).await?;
    let shown = if name.is_empty() { account.email.clone() } else { format!("{name} <{}>", account.email) };
    Ok(if account.frozen { format!("{shown} (frozen)") } else { shown })
}

#[cfg(test)]
mod tests {
    use fleetpulse_proto::UnixMillis;
    use fleetpulse_store::Role;

    use super::*;

    fn account(role: Role, channel: Option<u64>, enterprise: Option<u64>) -> Account {
        Account {
            id: AccountId(9),
            email: "a@x.test".into(),
            password_hash: String::new(),
            role,
            channel_id: channel.map(ChannelId),
            enterprise_id: enterprise.map(EnterpriseId),
            created_at: UnixMillis(0),
            failed_logins: 0,
            locked_until: None,
            totp_secret: None,
            totp_last_step: None,
            frozen: false,
            must_change_password: false,
            parent_id: None,
            permissions: None,
        }
    }

    #[test]
    fn who_may_receive() {
        use ReceiverOwner::*;
        let enterprise_admin = account(Role::EnterpriseAdmin, None, Some(1));
        let channel_admin = account(Role::ChannelAdmin, Some(5), None);
        let platform = account(Role::PlatformAdmin, None, None);
        for (owner, a, want) in [
            (Enterprise(EnterpriseId(1)), &enterprise_admin, true),
            (Enterprise(EnterpriseId(2)), &enterprise_admin, false),
            (Enterprise(EnterpriseId(1)), &channel_admin, false),
            (Enterprise(EnterpriseId(1)), &platform, false),
            (Channel(ChannelId(5)), &channel_admin, true),
            (Channel(ChannelId(6)), &channel_admin, false),
            (Channel(ChannelId(5)), &enterprise_admin, false),
            (Channel(ChannelId(5)), &platform, false),
        ] {
            assert_eq!(may_receive(owner, a), want, "{owner:?} {a:?}");
        }
    }

    #[test]
    fn request_forms() {
        let email = |raw: &str| Ok(raw.trim().to_lowercase());
        let parse = |json: &str| {
            serde_json::from_str::<ReceiverRequest>(json)
                .map_err(|e| e.to_string())
                .and_then(|r| r.stored(email).map_err(|_| "refused".to_owned()))
        };
        assert_eq!(parse(r#"" Ops@x.test""#), Ok(StrategyReceiver::Email("ops@x.test".into())));
        assert_eq!(parse(r#"{"email": "ops@x.test"}"#), Ok(StrategyReceiver::Email("ops@x.test".into())));
        assert_eq!(parse(r#"{"account": 42}"#), Ok(StrategyReceiver::Account(AccountId(42))));
        for bad in [r#"{"account": "x"}"#, r#"{"account": 1, "email": "a@b.co"}"#, r#"{"phone": "1"}"#, "42"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
