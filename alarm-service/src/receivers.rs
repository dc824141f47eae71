//! Account receivers (ALM-3) resolved to an address when their notification is queued: the
//! account's email of that moment, or, for an account deleted or frozen since the strategy was
//! saved, the reason it gets nothing (the notification is left out and the audit says why).
//!
//! There is no cache across effect batches, so nothing has to be told when an account changes:
//! one read per account per batch (a storm's batch of 256 effects reads each account once).

use std::collections::HashMap;

use fleetpulse_alarm_engine::Receiver;
use fleetpulse_proto::AccountId;
use fleetpulse_store::{Account, Store, StoreError};

/// Where one receiver's notification goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// To this address; `account` is the account it belongs to, for an account receiver.
    To { address: String, account: Option<AccountId> },
    /// Nowhere: why ("receiver account 42 deleted").
    Gone(String),
}

/// What an account receiver resolves to, given the account as the store has it now.
pub(crate) fn resolve_account(id: AccountId, account: Option<&Account>) -> Resolved {
    match account {
        None => Resolved::Gone(format!("receiver account {} deleted", id.0)),
        Some(a) if a.frozen => Resolved::Gone(format!("receiver account {} frozen", id.0)),
        Some(a) => Resolved::To { address: a.email.clone(), account: Some(id) },
    }
}

/// Resolves the receivers of one batch of notifications, reading each account once.
#[derive(Default)]
pub(crate) struct BatchReceivers {
    accounts: HashMap<AccountId, Resolved>,
}

impl BatchReceivers {
    /// Where `receiver`'s notification goes.
    pub(crate) async fn resolve(&mut self, store: &Store, receiver: &Receiver) -> Result<Resolved, StoreError> {
        match receiver {
            Receiver::Email(address) => Ok(Resolved::To { address: address.clone(), account: None }),
            Receiver::Account(id) => {
                if let Some(known) = self.accounts.get(id) {
                    return Ok(known.clone());
                }
                let resolved = resolve_account(*id, store.entities.account(*id).await?.as_ref());
                self.accounts.insert(*id, resolved.clone());
                Ok(resolved)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fleetpulse_proto::{EnterpriseId, UnixMillis};
    use fleetpulse_store::Role;

    use super::*;

    fn account(frozen: bool) -> Account {
        Account {
            id: AccountId(42),
            email: "lead@acme.test".into(),
            password_hash: String::new(),
            role: Role::EnterpriseAdmin,
            channel_id: None,
            enterprise_id: Some(EnterpriseId(1)),
            created_at: UnixMillis(0),
            failed_logins: 0,
            locked_until: None,
            totp_secret: None,
            totp_last_step: None,
            frozen,
            must_change_password: false,
            parent_id: None,
            permissions: None,
        }
    }

    #[test]
    fn an_account_resolves_to_its_email_unless_gone() {
        let id = AccountId(42);
        assert_eq!(
            resolve_account(id, Some(&account(false))),
            Resolved::To { address: "lead@acme.test".into(), account: Some(id) }
        );
        assert_eq!(resolve_account(id, Some(&account(true))), Resolved::Gone("receiver account 42 frozen".into()));
        assert_eq!(resolve_account(id, None), Resolved::Gone("receiver account 42 deleted".into()));
    }
}
