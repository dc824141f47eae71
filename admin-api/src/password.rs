//! Passwords (ACC-2): argon2id hashing at the OWASP parameters, the password policy, and the
//! bounded pool of password work.
//!
//! Passwords are hashed with argon2id (19 MiB, 2 passes, 1 lane) and stored as PHC strings.
//! Hashing and verification run on the blocking pool, at most one per core at a time
//! ([`password_work`]), so that a burst of logins cannot stall the async workers or exhaust
//! memory.

use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Most characters a password may have (a bound on hashing work, far above any real password).
pub const MAX_PASSWORD_CHARS: usize = 1024;

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
pub(crate) static TIMING_DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
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
}
