//! Account self-service ([`AccountSecurityStore`]): settings, reset tokens, login code challenges.

use super::*;

/// Account self-service (ACC-3..5): settings, single-use reset tokens, login code challenges.
pub(crate) async fn account_self_service(s: &dyn EntityStore) {
    let account = s.create_account(platform_admin("self-service@example.com")).await.unwrap();
    let missing = AccountId(999_999);

    // Settings: defaults until saved, validated, replaced whole.
    assert_eq!(s.account_settings(account.id).await.unwrap(), Some(AccountSettings::default()));
    assert_eq!(s.account_settings(missing).await.unwrap(), None);
    let settings = AccountSettings {
        contact_name: "Ada".into(),
        phone: "+1 (555) 010-0199".into(),
        country: "Iceland".into(),
        login_protection: LoginProtection::Email,
    };
    assert!(s.set_account_settings(account.id, settings.clone()).await.unwrap());
    assert_eq!(s.account_settings(account.id).await.unwrap(), Some(settings.clone()));
    let changed = AccountSettings { phone: String::new(), login_protection: LoginProtection::None, ..settings };
    assert!(s.set_account_settings(account.id, changed.clone()).await.unwrap());
    assert_eq!(s.account_settings(account.id).await.unwrap(), Some(changed.clone()));
    assert!(!s.set_account_settings(missing, changed.clone()).await.unwrap());
    let bad = AccountSettings { phone: "not a phone".into(), ..changed.clone() };
    invalid(s.set_account_settings(account.id, bad).await, "phone");
    assert_eq!(s.account_settings(account.id).await.unwrap(), Some(changed.clone()), "nothing changed");
    // TEN-2: accounts are found by their contact name too, ignoring case (Unicode included).
    let renamed = AccountSettings { contact_name: "Zoë Ångström".into(), ..changed };
    assert!(s.set_account_settings(account.id, renamed).await.unwrap());
    let found = |q: &str| {
        let filter = AccountFilter { q: Some(q.into()), ..AccountFilter::default() };
        async move { s.list_accounts(filter, Page::first(100)).await.unwrap().into_iter().map(|a| a.id).collect::<Vec<_>>() }
    };
    assert_eq!(found("ÅNGSTRÖM").await, vec![account.id]);
    assert_eq!(found("self-service@").await, vec![account.id]);
    assert!(found("Ada").await.is_empty(), "the old contact name is gone");

    // Reset tokens: single use, expire, one live token per account.
    let reset = |hash: u8, created: i64| PasswordReset {
        token_hash: TokenHash([hash; 32]),
        account_id: account.id,
        created_at: UnixMillis(created),
        expires_at: UnixMillis(created + 600_000),
    };
    s.create_password_reset(reset(1, 1_000)).await.unwrap();
    assert_eq!(s.consume_password_reset(TokenHash([1; 32]), UnixMillis(2_000)).await.unwrap(), Some(account.id));
    assert_eq!(s.consume_password_reset(TokenHash([1; 32]), UnixMillis(2_001)).await.unwrap(), None, "used");
    s.create_password_reset(reset(2, 3_000)).await.unwrap();
    assert_eq!(s.consume_password_reset(TokenHash([2; 32]), UnixMillis(603_000)).await.unwrap(), None, "expired");
    s.create_password_reset(reset(3, 4_000)).await.unwrap();
    s.create_password_reset(reset(4, 5_000)).await.unwrap();
    assert_eq!(s.consume_password_reset(TokenHash([3; 32]), UnixMillis(6_000)).await.unwrap(), None, "replaced");
    assert_eq!(s.consume_password_reset(TokenHash([9; 32]), UnixMillis(6_000)).await.unwrap(), None, "unknown");
    assert_eq!(s.consume_password_reset(TokenHash([4; 32]), UnixMillis(6_000)).await.unwrap(), Some(account.id));
    invalid(s.create_password_reset(PasswordReset { account_id: missing, ..reset(5, 7_000) }).await, "account");

    // Challenges: attempts counted up to the bound, single use, expire, one live per account.
    let challenge = |hash: u8, created: i64| LoginChallenge {
        id_hash: TokenHash([hash; 32]),
        account_id: account.id,
        code_hash: TokenHash([0xc0; 32]),
        created_at: UnixMillis(created),
        expires_at: UnixMillis(created + 600_000),
        attempts: 7,
    };
    s.create_login_challenge(challenge(1, 1_000)).await.unwrap();
    for n in 1..=3 {
        let claimed = s.claim_login_challenge_attempt(TokenHash([1; 32]), UnixMillis(2_000), 3).await.unwrap();
        let claimed = claimed.expect("live");
        assert_eq!((claimed.account_id, claimed.code_hash, claimed.attempts), (account.id, TokenHash([0xc0; 32]), n));
    }
    assert_eq!(s.claim_login_challenge_attempt(TokenHash([1; 32]), UnixMillis(2_000), 3).await.unwrap(), None);
    invalid(s.claim_login_challenge_attempt(TokenHash([1; 32]), UnixMillis(2_000), 0).await, "max_attempts");
    s.create_login_challenge(challenge(2, 3_000)).await.unwrap();
    assert!(s.claim_login_challenge_attempt(TokenHash([2; 32]), UnixMillis(4_000), 5).await.unwrap().is_some());
    assert!(s.finish_login_challenge(TokenHash([2; 32]), UnixMillis(4_000)).await.unwrap());
    assert!(!s.finish_login_challenge(TokenHash([2; 32]), UnixMillis(4_000)).await.unwrap(), "single use");
    assert_eq!(s.claim_login_challenge_attempt(TokenHash([2; 32]), UnixMillis(4_000), 5).await.unwrap(), None);
    s.create_login_challenge(challenge(3, 5_000)).await.unwrap();
    assert_eq!(s.claim_login_challenge_attempt(TokenHash([3; 32]), UnixMillis(605_000), 5).await.unwrap(), None);
    assert!(!s.finish_login_challenge(TokenHash([3; 32]), UnixMillis(605_000)).await.unwrap(), "expired");
    s.create_login_challenge(challenge(4, 6_000)).await.unwrap();
    s.create_login_challenge(challenge(5, 7_000)).await.unwrap();
    assert_eq!(s.claim_login_challenge_attempt(TokenHash([4; 32]), UnixMillis(8_000), 5).await.unwrap(), None);
    assert!(s.claim_login_challenge_attempt(TokenHash([5; 32]), UnixMillis(8_000), 5).await.unwrap().is_some());
    invalid(s.create_login_challenge(LoginChallenge { account_id: missing, ..challenge(6, 9_000) }).await, "account");

    // Outbox payloads are redacted only once no longer pending.
    let message = NewOutboxMessage {
        key: "account-email-redaction".into(),
        enterprise_id: EnterpriseId(0),
        receiver: "self-service@example.com".into(),
        payload: "secret".into(),
        not_before: UnixMillis(0),
        item_keys: Vec::new(),
    };
    assert!(s.enqueue_outbox(message, UnixMillis(1)).await.unwrap());
    let id = s.due_outbox(UnixMillis(10), 1000).await.unwrap().into_iter().find(|m| m.payload == "secret").unwrap().id;
    assert!(!s.redact_outbox_payload(id, "redacted".into()).await.unwrap(), "still pending");
    s.record_outbox_attempt(id, OutboxState::Sent, UnixMillis(20), UnixMillis(20), None).await.unwrap();
    assert!(s.redact_outbox_payload(id, "redacted".into()).await.unwrap());
    assert!(!s.redact_outbox_payload(u64::MAX, "redacted".into()).await.unwrap());
}
