//! The first platform admin ([`bootstrap_admin`]), created by the binary at start when there is
//! none.

use fleetpulse_proto::AccountId;
use fleetpulse_store::{NewAccount, Role, Store};

use crate::email_address::normalize_email;
use crate::error::ApiError;
use crate::password::hash_password;
use crate::secrets;

/// Email of the first admin when none is given.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@localhost";
/// Length of a generated first-admin password.
const GENERATED_PASSWORD_CHARS: usize = 20;

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
