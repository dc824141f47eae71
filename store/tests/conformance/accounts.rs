//! Accounts and sessions ([`AccountStore`]): password changes, lockout, session activity and
//! logout, TOTP.

use super::*;

/// Login protection (ACC-2): `max_failures` wrong passwords lock the account for `lock_for_ms`
/// and start the count again; a success forgets the count and the lock; failures counted at
/// once each count.
pub(crate) async fn login_protection(store: &Store) {
    let s = &store.entities;
    let new = |email: &str| platform_admin(email);
    let account = s.create_account(new("locked@example.com")).await.unwrap();
    let other = s.create_account(new("bystander@example.com")).await.unwrap();
    assert_eq!((account.failed_logins, account.locked_until), (0, None));
    assert_eq!(s.account(account.id).await.unwrap(), Some(account.clone()));
    const NOW: i64 = 1_700_000_000_000;
    const LOCK: u64 = 300_000;
    let fail = |at: i64| s.record_login_failure(account.id, UnixMillis(at), 10, LOCK);
    for n in 1..=9 {
        let a = fail(NOW + n).await.unwrap().unwrap();
        assert_eq!((a.failed_logins, a.locked_until), (n as u32, None), "failure {n}");
        assert!(!a.is_locked(UnixMillis(NOW + n)));
    }
    let locked = fail(NOW + 10).await.unwrap().unwrap();
    let until = UnixMillis(NOW + 10 + LOCK as i64);
    assert_eq!((locked.failed_logins, locked.locked_until), (0, Some(until)), "the 10th locks and resets");
    assert!(locked.is_locked(UnixMillis(NOW + 10)) && locked.is_locked(UnixMillis(until.0 - 1)));
    assert!(!locked.is_locked(until));
    assert_eq!(s.account(account.id).await.unwrap(), Some(locked.clone()));
    assert_eq!(s.account_by_email("LOCKED@example.com").await.unwrap(), Some(locked.clone()));
    let bystander = s.account(other.id).await.unwrap().unwrap();
    assert_eq!((bystander.failed_logins, bystander.locked_until), (0, None), "other accounts are untouched");
    // Counting goes on from 0; the lock stays until it runs out or a success lifts it.
    let again = fail(NOW + 20).await.unwrap().unwrap();
    assert_eq!((again.failed_logins, again.locked_until), (1, Some(until)));
    s.record_login_success(account.id).await.unwrap();
    let cleared = s.account(account.id).await.unwrap().unwrap();
    assert_eq!((cleared.failed_logins, cleared.locked_until), (0, None));
    assert_eq!(
        (cleared.email, cleared.password_hash, cleared.created_at),
        (account.email, account.password_hash, account.created_at)
    );

    // Unknown accounts: nothing to count or clear.
    assert_eq!(s.record_login_failure(AccountId(999_999), UnixMillis(NOW), 10, LOCK).await.unwrap(), None);
    assert_eq!(s.record_login_failure(AccountId(u64::MAX), UnixMillis(NOW), 10, LOCK).await.unwrap(), None);
    s.record_login_success(AccountId(999_999)).await.unwrap();
    s.record_login_success(AccountId(u64::MAX)).await.unwrap();
    // Bounds: at least one failure; a lock beyond the end of time ends there.
    let zero = s.record_login_failure(other.id, UnixMillis(NOW), 0, LOCK).await;
    assert!(matches!(zero, Err(StoreError::InvalidInput(_))), "{zero:?}");
    let huge = s.record_login_failure(other.id, UnixMillis(NOW), MAX_LOGIN_FAILURE_THRESHOLD + 1, LOCK).await;
    assert!(matches!(huge, Err(StoreError::InvalidInput(_))), "{huge:?}");
    let forever = s.record_login_failure(other.id, UnixMillis(NOW), 1, u64::MAX).await.unwrap().unwrap();
    assert_eq!((forever.failed_logins, forever.locked_until), (0, Some(UnixMillis(i64::MAX))));
    s.record_login_success(other.id).await.unwrap();

    // Concurrent failures each count exactly once: 25 at once with a limit of 10 lock twice
    // and leave 5 counted; the answers are the counts 1..=10 (10 as 0), twice, then 1..=5.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..25 {
        let entities = store.entities.clone();
        tasks.spawn(async move { entities.record_login_failure(account.id, UnixMillis(NOW + 100), 10, LOCK).await });
    }
    let mut counts: Vec<u32> = tasks.join_all().await.into_iter().map(|a| a.unwrap().unwrap().failed_logins).collect();
    counts.sort_unstable();
    let mut expected: Vec<u32> = (0..10).chain(0..10).chain(1..=5).collect();
    expected.sort_unstable();
    assert_eq!(counts, expected);
    let after = s.account(account.id).await.unwrap().unwrap();
    assert_eq!((after.failed_logins, after.locked_until), (5, Some(UnixMillis(NOW + 100 + LOCK as i64))));
}

/// Session activity and logout (ACC-2): `last_seen_at` is stored as given and only moves
/// forward; logout deletes one session, or all of an account's.
pub(crate) async fn session_lifecycle(store: &Store) {
    let s = &store.entities;
    let new = |email: &str| platform_admin(email);
    let alice = s.create_account(new("sessions-alice@example.com")).await.unwrap();
    let bob = s.create_account(new("sessions-bob@example.com")).await.unwrap();
    let session = |hash: u8, account: AccountId| Session {
        acting: None,
        token_hash: TokenHash([hash; 32]),
        account_id: account,
        created_at: UnixMillis(10_000),
        expires_at: UnixMillis(1_000_000),
        last_seen_at: UnixMillis(10_500),
    };
    let read = |hash: u8| s.session(TokenHash([hash; 32]), UnixMillis(20_000));
    for (hash, account) in [(40, alice.id), (41, alice.id), (42, bob.id)] {
        s.create_session(session(hash, account)).await.unwrap();
    }
    assert_eq!(read(40).await.unwrap(), Some(session(40, alice.id)), "last_seen_at is stored as given");

    // Touching moves last_seen_at forward only, and only of that session.
    s.touch_session(TokenHash([40; 32]), UnixMillis(12_000)).await.unwrap();
    assert_eq!(read(40).await.unwrap().unwrap().last_seen_at, UnixMillis(12_000));
    s.touch_session(TokenHash([40; 32]), UnixMillis(11_000)).await.unwrap();
    assert_eq!(read(40).await.unwrap().unwrap().last_seen_at, UnixMillis(12_000), "never back");
    s.touch_session(TokenHash([40; 32]), UnixMillis(12_000)).await.unwrap();
    assert_eq!(read(40).await.unwrap().unwrap().last_seen_at, UnixMillis(12_000));
    assert_eq!(read(41).await.unwrap(), Some(session(41, alice.id)), "other sessions are untouched");
    s.touch_session(TokenHash([49; 32]), UnixMillis(12_000)).await.unwrap();
    assert_eq!(read(49).await.unwrap(), None, "touching an unknown session creates none");

    // Logout deletes the one session, once.
    assert!(s.delete_session(TokenHash([40; 32])).await.unwrap());
    assert_eq!(read(40).await.unwrap(), None);
    assert!(!s.delete_session(TokenHash([40; 32])).await.unwrap());
    assert!(read(41).await.unwrap().is_some());

    // Deleting an account's sessions leaves other accounts' sessions.
    s.create_session(session(43, alice.id)).await.unwrap();
    assert_eq!(s.delete_account_sessions(alice.id).await.unwrap(), 2);
    assert_eq!((read(41).await.unwrap(), read(43).await.unwrap()), (None, None));
    assert_eq!(read(42).await.unwrap(), Some(session(42, bob.id)));
    assert_eq!(s.delete_account_sessions(alice.id).await.unwrap(), 0);
    assert_eq!(s.delete_account_sessions(AccountId(999_999)).await.unwrap(), 0);
    assert_eq!(s.delete_account_sessions(AccountId(u64::MAX)).await.unwrap(), 0);
    assert_eq!(s.delete_account_sessions(bob.id).await.unwrap(), 1);
    assert_eq!(read(42).await.unwrap(), None);
}

/// TOTP state (ACC-3): the secret round-trips and is never printed; a step is accepted once
/// and only above the last one, atomically.
pub(crate) async fn totp(store: &Store) {
    let s = &store.entities;
    let new = |email: &str| platform_admin(email);
    let account = s.create_account(new("totp@example.com")).await.unwrap();
    let other = s.create_account(new("totp-other@example.com")).await.unwrap();
    assert_eq!((account.totp_secret, account.totp_last_step), (None, None));
    assert_eq!(s.account(account.id).await.unwrap(), Some(account.clone()));
    let state = |id: AccountId| async move {
        let a = s.account(id).await.unwrap().unwrap();
        (a.totp_secret, a.totp_last_step)
    };

    const SECRET: [u8; 20] = [0xAB; 20];
    assert!(s.set_totp(account.id, Some(SECRET)).await.unwrap());
    assert_eq!(state(account.id).await, (Some(SECRET), None));
    let read = s.account_by_email("TOTP@example.com").await.unwrap().unwrap();
    assert_eq!(read.totp_secret, Some(SECRET));
    let printed = format!("{read:?}");
    assert!(!printed.contains("171") && !printed.contains("ab") && !printed.contains("AB"), "{printed}");

    // Steps: 5 once, then neither 5 again nor 4; 6 after it.
    assert!(s.record_totp_step(account.id, 5).await.unwrap());
    assert_eq!(state(account.id).await, (Some(SECRET), Some(5)));
    assert!(!s.record_totp_step(account.id, 5).await.unwrap(), "replay");
    assert!(!s.record_totp_step(account.id, 4).await.unwrap(), "older step");
    assert_eq!(state(account.id).await, (Some(SECRET), Some(5)));
    assert!(s.record_totp_step(account.id, 6).await.unwrap());
    assert_eq!(state(account.id).await, (Some(SECRET), Some(6)));
    assert_eq!(state(other.id).await, (None, None), "other accounts are untouched");

    // Bounds: steps up to i64::MAX.
    let huge = s.record_totp_step(account.id, i64::MAX as u64 + 1).await;
    assert!(matches!(huge, Err(StoreError::InvalidInput(_))), "{huge:?}");
    assert_eq!(state(account.id).await, (Some(SECRET), Some(6)));
    assert!(s.record_totp_step(account.id, i64::MAX as u64).await.unwrap());
    assert!(!s.record_totp_step(account.id, i64::MAX as u64).await.unwrap());
    assert_eq!(state(account.id).await, (Some(SECRET), Some(i64::MAX as u64)));

    // A new secret forgets the last step; clearing removes the secret.
    let renewed = [7; 20];
    assert!(s.set_totp(account.id, Some(renewed)).await.unwrap());
    assert_eq!(state(account.id).await, (Some(renewed), None));
    assert!(s.record_totp_step(account.id, 1).await.unwrap());
    assert!(s.set_totp(account.id, None).await.unwrap());
    assert_eq!(state(account.id).await, (None, None));
    let cleared = s.account(account.id).await.unwrap().unwrap();
    assert_eq!((cleared.email, cleared.password_hash), (account.email.clone(), account.password_hash.clone()));

    // Unknown accounts.
    for unknown in [AccountId(999_999), AccountId(u64::MAX)] {
        assert!(!s.set_totp(unknown, Some(SECRET)).await.unwrap());
        assert!(!s.set_totp(unknown, None).await.unwrap());
        assert!(!s.record_totp_step(unknown, 5).await.unwrap());
    }

    // Concurrent attempts at the same step: exactly one is accepted.
    assert!(s.set_totp(other.id, Some(SECRET)).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let entities = store.entities.clone();
        tasks.spawn(async move { entities.record_totp_step(other.id, 100).await });
    }
    let accepted = tasks.join_all().await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(accepted, 1);
    assert_eq!(state(other.id).await, (Some(SECRET), Some(100)));
}

/// Forced password change (ACC-2): the flag is stored as created, and `set_password` replaces
/// the hash and the flag of that account only.
pub(crate) async fn password_change(store: &Store) {
    let s = &store.entities;
    let new = |email: &str, must_change_password| NewAccount {
        parent_id: None,
        permissions: None,
        email: email.into(),
        password_hash: "old-phc".into(),
        role: Role::PlatformAdmin,
        channel_id: None,
        enterprise_id: None,
        must_change_password,
    };
    let forced = s.create_account(new("pw-forced@example.com", true)).await.unwrap();
    let free = s.create_account(new("pw-free@example.com", false)).await.unwrap();
    assert!(forced.must_change_password);
    assert!(!free.must_change_password);
    assert!(s.account(forced.id).await.unwrap().unwrap().must_change_password);
    assert!(s.account_by_email("pw-forced@example.com").await.unwrap().unwrap().must_change_password);
    assert!(!s.account(free.id).await.unwrap().unwrap().must_change_password);

    assert!(s.set_password(forced.id, "new-phc".into(), false).await.unwrap());
    let after = s.account(forced.id).await.unwrap().unwrap();
    assert_eq!((after.password_hash.as_str(), after.must_change_password), ("new-phc", false));
    let untouched = s.account(free.id).await.unwrap().unwrap();
    assert_eq!((untouched.password_hash.as_str(), untouched.must_change_password), ("old-phc", false));

    // An administrator can force a change again.
    assert!(s.set_password(free.id, "reset-phc".into(), true).await.unwrap());
    let reset = s.account(free.id).await.unwrap().unwrap();
    assert_eq!((reset.password_hash.as_str(), reset.must_change_password), ("reset-phc", true));

    assert!(!s.set_password(AccountId(999_999), "x".into(), false).await.unwrap());
    assert!(!s.set_password(AccountId(u64::MAX), "x".into(), false).await.unwrap());
}

/// An account's email changes (ALM-3: where strategies naming the account send): found by its
/// new email only, a taken email refused (case-insensitive), unknown accounts false.
pub(crate) async fn email_change(store: &Store) {
    let s = &store.entities;
    let account = s.create_account(platform_admin("before@example.com")).await.unwrap();
    s.create_account(platform_admin("taken@example.com")).await.unwrap();
    assert!(s.set_account_email(account.id, "after@example.com".into()).await.unwrap());
    assert_eq!(s.account(account.id).await.unwrap().unwrap().email, "after@example.com");
    assert_eq!(s.account_by_email("AFTER@example.com").await.unwrap().map(|a| a.id), Some(account.id));
    assert_eq!(s.account_by_email("before@example.com").await.unwrap(), None);
    assert!(matches!(
        s.set_account_email(account.id, "TAKEN@example.com".into()).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(s.account(account.id).await.unwrap().unwrap().email, "after@example.com", "unchanged");
    assert!(!s.set_account_email(AccountId(999_999), "x@example.com".into()).await.unwrap());
}
