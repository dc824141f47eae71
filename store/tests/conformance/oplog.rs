//! The operation log ([`OperationLogStore`]).

use super::*;

/// The operation log (LOG-1): batches appended whole, rows read back exactly, newest first,
/// keyset pages going back in time, filters by time, operation type, account and enterprise;
/// bounded batches, fields and pages.
pub(crate) async fn operation_log(store: &Store) {
    let s = &store.entities;
    const T: i64 = 1_700_000_000_000;
    let (alice, bob) = (AccountId(7), AccountId(8));
    let (acme, globex) = (EnterpriseId(70), EnterpriseId(80));
    let row = |account: Option<AccountId>, acting_as: Option<EnterpriseId>, op: &str, at: i64, status: u16| {
        let (method, template) = op.split_once(' ').unwrap();
        NewOperationLog {
            account_id: account,
            account_email: match account {
                Some(AccountId(7)) => "alice@example.com".into(),
                Some(_) => "bob@example.com".into(),
                None => "nobody@example.com".into(),
            },
            acting_as,
            operation: op.into(),
            method: method.into(),
            path: template.replace("{id}", &at.to_string()),
            ip: if at % 2 == 0 { "203.0.113.7".into() } else { "2001:db8::1".into() },
            at: UnixMillis(T + at),
            status,
            outcome: if status < 400 { OperationOutcome::Success } else { OperationOutcome::Failure },
        }
    };
    const CREATE: &str = "POST /api/v1/enterprises";
    const UPDATE: &str = "PUT /api/v1/strategies/{id}";
    const LOGIN: &str = "POST /api/v1/login";
    s.append_operation_logs(Vec::new()).await.unwrap();
    assert!(s.list_operation_logs(OperationLogFilter::default(), Page::first(10)).await.unwrap().is_empty());
    let first = vec![
        row(Some(alice), None, CREATE, 10, 201),
        row(None, None, LOGIN, 20, 401),
        row(Some(alice), Some(acme), UPDATE, 30, 200),
    ];
    let second = vec![
        row(Some(bob), Some(globex), UPDATE, 40, 404),
        row(Some(bob), Some(acme), CREATE, 50, 201),
        row(Some(alice), Some(acme), UPDATE, 60, 200),
    ];
    s.append_operation_logs(first.clone()).await.unwrap();
    s.append_operation_logs(second.clone()).await.unwrap();
    let all = s.list_operation_logs(OperationLogFilter::default(), Page::first(100)).await.unwrap();
    // Newest first: the batches' rows in reverse, every field as given.
    let appended: Vec<NewOperationLog> = first.iter().chain(&second).rev().cloned().collect();
    let stored: Vec<NewOperationLog> = all.iter().map(|r| r.entry.clone()).collect();
    assert_eq!(stored, appended);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "ids descend");
    assert_eq!((all[5].entry.path.as_str(), all[5].entry.method.as_str()), ("/api/v1/enterprises", "POST"));
    assert_eq!(
        (all[0].entry.path.as_str(), all[4].entry.outcome),
        ("/api/v1/strategies/60", OperationOutcome::Failure)
    );

    // Keyset pages: ids below the cursor, newest first.
    let mut paged = Vec::new();
    let mut page = Page::first(4);
    // Bounded: a cursor that does not move on must fail the case, not hang it.
    for _ in 0..=all.len() {
        let rows = s.list_operation_logs(OperationLogFilter::default(), page).await.unwrap();
        assert!(rows.len() <= 4);
        let Some(last) = rows.last() else { break };
        page.after = last.id;
        paged.extend(rows);
    }
    assert_eq!(paged, all);
    let below = s.list_operation_logs(OperationLogFilter::default(), Page { after: all[1].id, limit: 2 }).await;
    assert_eq!(below.unwrap(), all[2..4].to_vec());
    let beyond = Page { after: u64::MAX, limit: 100 };
    assert_eq!(s.list_operation_logs(OperationLogFilter::default(), beyond).await.unwrap(), all);
    assert!(s.list_operation_logs(OperationLogFilter::default(), Page::first(0)).await.unwrap().is_empty());

    // Filters, alone and together; each in the newest-first order.
    let ats = |filter: OperationLogFilter| async move {
        let rows = s.list_operation_logs(filter, Page::first(100)).await.unwrap();
        rows.iter().map(|r| r.entry.at.0 - T).collect::<Vec<_>>()
    };
    let f = OperationLogFilter::default;
    assert_eq!(ats(OperationLogFilter { from: Some(UnixMillis(T + 30)), ..f() }).await, [60, 50, 40, 30]);
    assert_eq!(ats(OperationLogFilter { to: Some(UnixMillis(T + 30)), ..f() }).await, [20, 10]);
    let window = OperationLogFilter { from: Some(UnixMillis(T + 20)), to: Some(UnixMillis(T + 50)), ..f() };
    assert_eq!(ats(window.clone()).await, [40, 30, 20]);
    assert_eq!(ats(OperationLogFilter { operation: Some(UPDATE.into()), ..f() }).await, [60, 40, 30]);
    assert_eq!(ats(OperationLogFilter { operation: Some("PUT /api/v1/strategies".into()), ..f() }).await, [0; 0]);
    let impossible = "o".repeat(MAX_OPERATION_LOG_OPERATION + 1);
    assert_eq!(ats(OperationLogFilter { operation: Some(impossible), ..f() }).await, [0; 0]);
    assert_eq!(ats(OperationLogFilter { operation: Some("PUT\0/".into()), ..f() }).await, [0; 0]);
    assert_eq!(ats(OperationLogFilter { account_id: Some(alice), ..f() }).await, [60, 30, 10]);
    assert_eq!(ats(OperationLogFilter { account_id: Some(AccountId(u64::MAX)), ..f() }).await, [0; 0]);
    assert_eq!(ats(OperationLogFilter { enterprise: Some(acme), ..f() }).await, [60, 50, 30]);
    assert_eq!(ats(OperationLogFilter { enterprise: Some(EnterpriseId(u64::MAX)), ..f() }).await, [0; 0]);
    let alice_updates = OperationLogFilter { account_id: Some(alice), operation: Some(UPDATE.into()), ..f() };
    assert_eq!(ats(alice_updates.clone()).await, [60, 30]);
    assert_eq!(ats(OperationLogFilter { enterprise: Some(acme), ..window }).await, [30]);
    // A tenant's view: its accounts' rows or rows acting inside its enterprises.
    let within = |accounts: Vec<AccountId>, enterprises: Vec<EnterpriseId>| OperationLogFilter {
        within: Some(OperationLogScope { accounts, enterprises }),
        ..f()
    };
    assert_eq!(ats(within(vec![alice], vec![])).await, [60, 30, 10]);
    assert_eq!(ats(within(vec![], vec![acme])).await, [60, 50, 30]);
    assert_eq!(ats(within(vec![alice], vec![acme])).await, [60, 50, 30, 10]);
    assert_eq!(ats(within(vec![], vec![])).await, [0; 0]);
    let crowd = within((0..=MAX_ACCOUNT_FILTER as u64).map(AccountId).collect(), vec![]);
    assert!(matches!(s.list_operation_logs(crowd, Page::first(1)).await, Err(StoreError::InvalidInput(_))));
    let page = s.list_operation_logs(alice_updates, Page { after: all[0].id, limit: 10 }).await.unwrap();
    assert_eq!(page.iter().map(|r| r.entry.at.0 - T).collect::<Vec<_>>(), [30], "filters and the cursor together");

    // Bounds: each field at its limit is kept, one byte more refuses the whole batch.
    let mut longest = row(Some(bob), None, CREATE, 70, 201);
    longest.account_email = "e".repeat(MAX_OPERATION_LOG_EMAIL);
    longest.operation = "o".repeat(MAX_OPERATION_LOG_OPERATION);
    longest.method = "m".repeat(MAX_OPERATION_LOG_METHOD);
    longest.path = "p".repeat(MAX_OPERATION_LOG_PATH);
    longest.ip = "i".repeat(MAX_OPERATION_LOG_IP);
    let too_long: [fn(&mut NewOperationLog); 7] = [
        |r| r.account_email.push('x'),
        |r| r.operation.push('x'),
        |r| r.method.push('x'),
        |r| r.path.push('x'),
        |r| r.ip.push('x'),
        |r| r.path = "/nul\0".into(),
        |r| r.acting_as = Some(EnterpriseId(u64::MAX)),
    ];
    for (i, spoil) in too_long.iter().enumerate() {
        let mut bad = longest.clone();
        spoil(&mut bad);
        let batch = vec![row(Some(bob), None, CREATE, 71, 201), bad];
        let refused = s.append_operation_logs(batch).await;
        assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "field {i}: {refused:?}");
    }
    let too_many = vec![row(Some(bob), None, CREATE, 72, 201); MAX_OPERATION_LOG_BATCH + 1];
    assert!(matches!(s.append_operation_logs(too_many).await, Err(StoreError::InvalidInput(_))));
    assert_eq!(s.list_operation_logs(OperationLogFilter::default(), Page::first(100)).await.unwrap(), all);
    s.append_operation_logs(vec![longest.clone()]).await.unwrap();
    let newest = s.list_operation_logs(OperationLogFilter::default(), Page::first(1)).await.unwrap();
    assert_eq!(
        (newest[0].entry.path.len(), newest[0].entry.account_email.len()),
        (MAX_OPERATION_LOG_PATH, MAX_OPERATION_LOG_EMAIL)
    );
    assert!(newest[0].id > all[0].id);

    // The largest batch is appended whole; a page never holds more than the cap.
    let full: Vec<_> = (0..MAX_OPERATION_LOG_BATCH as i64).map(|i| row(Some(bob), None, LOGIN, 100 + i, 200)).collect();
    s.append_operation_logs(full).await.unwrap();
    let huge = s.list_operation_logs(OperationLogFilter::default(), Page::first(u32::MAX)).await.unwrap();
    assert_eq!(huge.len(), MAX_OPERATION_LOG_PAGE as usize);
    assert_eq!((huge[0].entry.at, huge[999].entry.at), (UnixMillis(T + 1_099), UnixMillis(T + 100)));
    let rest = s.list_operation_logs(OperationLogFilter::default(), Page { after: huge[999].id, limit: 100 }).await;
    assert_eq!(rest.unwrap()[1..], all[..]);
}
