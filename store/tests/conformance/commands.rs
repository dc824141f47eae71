//! The durable per-device command queue ([`CommandStore`], issue 11): refusals and limits,
//! cancelling, claiming, requeueing, forward-only device updates, expiry and paging.
//!
//! `expire_commands` looks at every device: the cases other than [`command_expiry`] give their
//! commands deadlines from [`LATER`] on, and that one expires only before it.

use super::*;

/// Deadlines of the cases that must not expire (`command_expiry` runs before this time).
const LATER: i64 = 1_000_000;

/// An enterprise, an issuing account and `devices` devices of that enterprise; `n` makes
/// names and MACs unique within the suite.
async fn fleet(store: &Store, n: u32, devices: u32) -> (EnterpriseId, AccountId, Vec<DeviceId>) {
    let s = &store.entities;
    let e = s
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: format!("commands-{n}"),
            credential: format!("commands-{n}"),
            channel_id: None,
        })
        .await
        .unwrap();
    let account = s.create_account(platform_admin(&format!("commands-{n}@example.com"))).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..devices {
        let d = s.register_device(new_device(e.id, DeviceKey::Mac(mac(0xc0000 + n * 0x100 + i)))).await.unwrap();
        ids.push(d.device.id);
    }
    (e.id, account.id, ids)
}

fn command(device: DeviceId, enterprise: EnterpriseId, by: AccountId, kind: &str, deadline: i64) -> NewCommand {
    NewCommand {
        device_id: device,
        enterprise_id: enterprise,
        kind: kind.into(),
        args: "{}".into(),
        deadline: UnixMillis(deadline),
        issued_by: by,
    }
}

/// The stored commands of an enqueue that must all have been queued.
fn all_queued(answers: Vec<Result<Command, CommandRefusal>>) -> Vec<Command> {
    answers.into_iter().map(|a| a.expect("queued")).collect()
}

fn states(commands: &[Command]) -> Vec<(CommandId, CommandState)> {
    commands.iter().map(|c| (c.id, c.state)).collect()
}

/// Bounds of a command (kind, arguments, deadline), devices of other enterprises, the batch
/// bound; a refused command stores nothing and the rest of its batch is stored.
pub(crate) async fn command_refusals(store: &Store) {
    let s = &store.entities;
    let (e, by, devices) = fleet(store, 1, 1).await;
    let (other, _, other_devices) = fleet(store, 2, 1).await;
    let d = devices[0];
    let with_args = |args: String| NewCommand { args, ..command(d, e, by, "ping", LATER) };
    let long_args = format!("\"{}\"", "x".repeat(MAX_COMMAND_ARGS - 1));
    let max_args = format!("\"{}\"", "x".repeat(MAX_COMMAND_ARGS - 2));
    let batch = vec![
        command(d, e, by, "reboot", LATER),
        command(d, e, by, "Reboot", LATER),
        command(d, e, by, "", LATER),
        command(d, e, by, &"k".repeat(MAX_COMMAND_KIND + 1), LATER),
        command(d, e, by, &"k".repeat(MAX_COMMAND_KIND), LATER),
        with_args(long_args),
        with_args(max_args.clone()),
        with_args("{\"target\":".into()),
        command(d, e, by, "ping", 100),
        command(other_devices[0], e, by, "ping", LATER),
        command(d, other, by, "ping", LATER),
        command(DeviceId(987_654_321), e, by, "ping", LATER),
    ];
    let answers = s.enqueue_commands(batch, UnixMillis(100)).await.unwrap();
    let refusals: Vec<Option<CommandRefusal>> = answers.iter().map(|a| a.as_ref().err().copied()).collect();
    assert_eq!(
        refusals,
        [
            None,
            Some(CommandRefusal::InvalidKind),
            Some(CommandRefusal::InvalidKind),
            Some(CommandRefusal::InvalidKind),
            None,
            Some(CommandRefusal::ArgsTooLong),
            None,
            Some(CommandRefusal::ArgsNotJson),
            Some(CommandRefusal::DeadlinePassed),
            Some(CommandRefusal::UnknownDevice),
            Some(CommandRefusal::UnknownDevice),
            Some(CommandRefusal::UnknownDevice),
        ]
    );
    let stored: Vec<Command> = answers.into_iter().filter_map(Result::ok).collect();
    let first = &stored[0];
    assert_eq!(
        (first.device_id, first.enterprise_id, first.kind.as_str(), first.args.as_str(), first.issued_by),
        (d, e, "reboot", "{}", by)
    );
    assert_eq!(
        (first.state, first.issued_at, first.deadline, first.attempts),
        (CommandState::Queued, UnixMillis(100), UnixMillis(LATER), 0)
    );
    assert_eq!(
        (first.sent_at, first.accepted_at, first.finished_at, &first.output, &first.reason),
        (None, None, None, &None, &None)
    );
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id), "ids increase along the batch");
    for c in &stored {
        assert_eq!(s.command(c.id).await.unwrap().as_ref(), Some(c), "stored as answered");
    }
    assert_eq!(stored[2].args, max_args);
    // Only the three admitted commands were stored.
    assert_eq!(s.list_device_commands(d, Page::first(100)).await.unwrap().len(), 3);
    assert!(s.list_device_commands(other_devices[0], Page::first(100)).await.unwrap().is_empty());
    assert_eq!(s.command(CommandId(u64::MAX)).await.unwrap(), None);
    assert!(s.enqueue_commands(Vec::new(), UnixMillis(100)).await.unwrap().is_empty());
    let too_many = vec![command(d, e, by, "ping", LATER); MAX_COMMAND_BATCH + 1];
    invalid(s.enqueue_commands(too_many, UnixMillis(100)).await, "commands");
    assert_eq!(s.list_device_commands(d, Page::first(100)).await.unwrap().len(), 3, "nothing of a refused batch");
}

/// The limits of pending commands per device and per enterprise, across calls and within a
/// batch; commands that are no longer pending do not count.
pub(crate) async fn command_limits(store: &Store) {
    let s = &store.entities;
    let (e, by, d) = fleet(store, 3, 3).await;
    let limits = CommandLimits { per_device: 3, per_enterprise: 5 };
    let refusal = |a: &Result<Command, CommandRefusal>| a.as_ref().err().copied();
    let first =
        s.enqueue_commands_within(vec![command(d[0], e, by, "a", LATER); 2], limits, UnixMillis(1)).await.unwrap();
    assert!(first.iter().all(Result::is_ok));
    let second = s
        .enqueue_commands_within(
            vec![
                command(d[0], e, by, "b", LATER),
                command(d[0], e, by, "c", LATER),
                command(d[1], e, by, "d", LATER),
                command(d[1], e, by, "e", LATER),
                command(d[2], e, by, "f", LATER),
            ],
            limits,
            UnixMillis(2),
        )
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(refusal).collect::<Vec<_>>(),
        [
            None,
            Some(CommandRefusal::DeviceLimit { limit: 3 }),
            None,
            None,
            Some(CommandRefusal::EnterpriseLimit { limit: 5 }),
        ]
    );
    // A cancelled command (and a finished one) no longer counts.
    let queued = first[0].as_ref().unwrap();
    assert_eq!(s.cancel_command(queued.id, by, UnixMillis(3)).await.unwrap().unwrap().state, CommandState::Cancelled);
    let sent = s.claim_commands_to_send(d[1], UnixMillis(3), 10).await.unwrap();
    let done = CommandUpdate::Succeeded { output: "ok".into() };
    s.record_command_update(sent[0].id, d[1], done, UnixMillis(4)).await.unwrap();
    let third = s
        .enqueue_commands_within(
            vec![command(d[2], e, by, "g", LATER), command(d[2], e, by, "h", LATER), command(d[2], e, by, "i", LATER)],
            limits,
            UnixMillis(5),
        )
        .await
        .unwrap();
    assert_eq!(
        third.iter().map(refusal).collect::<Vec<_>>(),
        [None, None, Some(CommandRefusal::EnterpriseLimit { limit: 5 })]
    );
    // The default limits: 100 per device.
    assert_eq!((MAX_PENDING_PER_DEVICE, MAX_PENDING_PER_ENTERPRISE), (100, 100_000));
    let (e, by, d) = fleet(store, 4, 1).await;
    let answers = s.enqueue_commands(vec![command(d[0], e, by, "ping", LATER); 101], UnixMillis(1)).await.unwrap();
    assert!(answers[..100].iter().all(Result::is_ok));
    assert_eq!(refusal(&answers[100]), Some(CommandRefusal::DeviceLimit { limit: 100 }));
}

/// Claims (oldest first, not past the deadline, bounded), requeue on reconnect, cancel of a
/// queued vs a sent command.
pub(crate) async fn command_sending(store: &Store) {
    let s = &store.entities;
    let (e, by, d) = fleet(store, 5, 2).await;
    assert!(!s.has_commands_to_send(d[0]).await.unwrap(), "nothing queued yet");
    let queued = all_queued(
        s.enqueue_commands(
            vec![
                command(d[0], e, by, "first", LATER + 100),
                command(d[0], e, by, "short", LATER),
                command(d[0], e, by, "third", LATER + 100),
                command(d[0], e, by, "fourth", LATER + 100),
                command(d[1], e, by, "elsewhere", LATER + 100),
            ],
            UnixMillis(10),
        )
        .await
        .unwrap(),
    );
    let ids: Vec<CommandId> = queued.iter().map(|c| c.id).collect();
    assert!(s.has_commands_to_send(d[0]).await.unwrap() && s.has_commands_to_send(d[1]).await.unwrap());
    assert!(!s.has_commands_to_send(DeviceId(987_654_321)).await.unwrap(), "an unknown device has none");
    // At the short one's deadline it is no longer sent.
    let sent = s.claim_commands_to_send(d[0], UnixMillis(LATER), 2).await.unwrap();
    assert_eq!(states(&sent), [(ids[0], CommandState::Sent), (ids[2], CommandState::Sent)]);
    assert!(sent.iter().all(|c| c.attempts == 1 && c.sent_at == Some(UnixMillis(LATER))));
    assert_eq!(s.command(ids[0]).await.unwrap().unwrap(), sent[0]);
    let rest = s.claim_commands_to_send(d[0], UnixMillis(LATER + 1), 10).await.unwrap();
    assert_eq!(states(&rest), [(ids[3], CommandState::Sent)], "sent ones are not claimed again");
    assert!(s.claim_commands_to_send(d[0], UnixMillis(LATER + 1), 10).await.unwrap().is_empty());
    assert!(s.claim_commands_to_send(d[0], UnixMillis(LATER + 1), 0).await.unwrap().is_empty());
    assert_eq!(s.command(ids[1]).await.unwrap().unwrap().state, CommandState::Queued, "past its deadline, not sent");
    assert_eq!(s.command(ids[4]).await.unwrap().unwrap().state, CommandState::Queued, "another device's");
    // The device accepts one; on reconnect the others go back to the queue and are sent again.
    s.record_command_update(ids[0], d[0], CommandUpdate::Accepted, UnixMillis(LATER + 2)).await.unwrap();
    assert_eq!(s.requeue_unanswered(d[0]).await.unwrap(), 2);
    assert_eq!(s.requeue_unanswered(d[0]).await.unwrap(), 0);
    let requeued = s.command(ids[2]).await.unwrap().unwrap();
    assert_eq!(
        (requeued.state, requeued.attempts, requeued.sent_at),
        (CommandState::Queued, 1, Some(UnixMillis(LATER)))
    );
    let again = s.claim_commands_to_send(d[0], UnixMillis(LATER + 3), 10).await.unwrap();
    assert_eq!(states(&again), [(ids[2], CommandState::Sent), (ids[3], CommandState::Sent)]);
    assert!(again.iter().all(|c| c.attempts == 2 && c.sent_at == Some(UnixMillis(LATER + 3))));
    assert_eq!(s.command(ids[0]).await.unwrap().unwrap().state, CommandState::Accepted, "accepted is not requeued");
    // Cancel: a queued command is cancelled and never sent; a sent one is answered unchanged.
    let cancelled = s.cancel_command(ids[4], by, UnixMillis(LATER + 4)).await.unwrap().unwrap();
    assert_eq!(
        (cancelled.state, cancelled.finished_at, cancelled.reason.as_deref()),
        (CommandState::Cancelled, Some(UnixMillis(LATER + 4)), Some(format!("cancelled by account {by}").as_str()))
    );
    assert!(s.claim_commands_to_send(d[1], UnixMillis(LATER + 5), 10).await.unwrap().is_empty());
    let unchanged = s.cancel_command(ids[2], by, UnixMillis(LATER + 5)).await.unwrap().unwrap();
    assert_eq!(unchanged, again[0], "a sent command is not cancelled");
    assert_eq!(s.cancel_command(ids[4], by, UnixMillis(LATER + 6)).await.unwrap().unwrap(), cancelled);
    assert_eq!(s.cancel_command(CommandId(987_654_321), by, UnixMillis(LATER + 6)).await.unwrap(), None);
}

/// Device updates move a command forward only; a result for another device's command changes
/// nothing; output and reason are truncated to their bounds.
pub(crate) async fn command_updates(store: &Store) {
    let s = &store.entities;
    let (e, by, d) = fleet(store, 6, 2).await;
    let ids: Vec<CommandId> =
        all_queued(s.enqueue_commands(vec![command(d[0], e, by, "diagnose", LATER); 4], UnixMillis(10)).await.unwrap())
            .iter()
            .map(|c| c.id)
            .collect();
    s.claim_commands_to_send(d[0], UnixMillis(20), 10).await.unwrap();
    let update = |id, device, u, at| s.record_command_update(id, device, u, UnixMillis(at));
    // accepted → running → succeeded, the output truncated on a character boundary.
    let accepted = update(ids[0], d[0], CommandUpdate::Accepted, 30).await.unwrap().unwrap();
    assert_eq!((accepted.state, accepted.accepted_at), (CommandState::Accepted, Some(UnixMillis(30))));
    let running = update(ids[0], d[0], CommandUpdate::Running { progress: String::new() }, 40).await.unwrap().unwrap();
    assert_eq!((running.state, running.accepted_at), (CommandState::Running, Some(UnixMillis(30))));
    assert_eq!(
        update(ids[0], d[0], CommandUpdate::Running { progress: String::new() }, 45).await.unwrap().unwrap(),
        running,
        "progress again"
    );
    // Progress text is stored as the output, also on a command already running.
    for text in ["downloading 10%", "downloading 60%"] {
        let noted = update(ids[0], d[0], CommandUpdate::Running { progress: text.into() }, 46).await.unwrap().unwrap();
        assert_eq!((noted.state, noted.output.as_deref()), (CommandState::Running, Some(text)));
    }
    let output = format!("{}é", "x".repeat(MAX_COMMAND_OUTPUT - 1));
    let done = update(ids[0], d[0], CommandUpdate::Succeeded { output }, 50).await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.finished_at, done.reason.as_deref()),
        (CommandState::Succeeded, Some(UnixMillis(50)), None)
    );
    assert_eq!(done.output.as_deref(), Some("x".repeat(MAX_COMMAND_OUTPUT - 1).as_str()));
    assert_eq!(s.command(ids[0]).await.unwrap().unwrap(), done);
    // Late or repeated answers change nothing.
    for late in [
        CommandUpdate::Accepted,
        CommandUpdate::Running { progress: String::new() },
        CommandUpdate::Failed { output: "x".into(), reason: "y".into() },
    ] {
        assert_eq!(update(ids[0], d[0], late, 60).await.unwrap().unwrap(), done);
    }
    // A result straight from sent: failed with a reason; accepted_at is the first answer's time.
    let failed = update(
        ids[1],
        d[0],
        CommandUpdate::Failed { output: "ping: unknown host".into(), reason: "r".repeat(MAX_COMMAND_REASON + 10) },
        70,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (failed.state, failed.accepted_at, failed.finished_at, failed.output.as_deref()),
        (CommandState::Failed, Some(UnixMillis(70)), Some(UnixMillis(70)), Some("ping: unknown host"))
    );
    assert_eq!(failed.reason.map(|r| r.len()), Some(MAX_COMMAND_REASON));
    assert_eq!(
        update(ids[1], d[0], CommandUpdate::Succeeded { output: "ok".into() }, 80).await.unwrap().unwrap().state,
        CommandState::Failed
    );
    // Another device's answer: nothing changes and nothing is shown.
    let before = s.command(ids[2]).await.unwrap().unwrap();
    assert_eq!(update(ids[2], d[1], CommandUpdate::Succeeded { output: "forged".into() }, 90).await.unwrap(), None);
    assert_eq!(update(ids[2], d[1], CommandUpdate::Accepted, 90).await.unwrap(), None);
    assert_eq!(s.command(ids[2]).await.unwrap().unwrap(), before);
    assert_eq!(update(CommandId(987_654_321), d[0], CommandUpdate::Accepted, 90).await.unwrap(), None);
    // A cancelled command stays cancelled whatever the device says.
    let queued =
        all_queued(s.enqueue_commands(vec![command(d[1], e, by, "reboot", LATER)], UnixMillis(100)).await.unwrap());
    let cancelled = s.cancel_command(queued[0].id, by, UnixMillis(110)).await.unwrap().unwrap();
    assert_eq!(update(queued[0].id, d[1], CommandUpdate::Accepted, 120).await.unwrap().unwrap(), cancelled);
    // An answer to a requeued command (the device had it already) still applies.
    assert_eq!(s.requeue_unanswered(d[0]).await.unwrap(), 2);
    let accepted = update(ids[3], d[0], CommandUpdate::Accepted, 130).await.unwrap().unwrap();
    assert_eq!(accepted.state, CommandState::Accepted);
    // A sent command counts for a session start (it is requeued); accepted, running and final
    // ones do not.
    let lone =
        all_queued(s.enqueue_commands(vec![command(d[1], e, by, "ping", LATER)], UnixMillis(140)).await.unwrap());
    assert!(s.has_commands_to_send(d[1]).await.unwrap(), "queued (its other command was cancelled)");
    assert_eq!(s.claim_commands_to_send(d[1], UnixMillis(142), 10).await.unwrap().len(), 1);
    assert!(s.has_commands_to_send(d[1]).await.unwrap(), "sent, not accepted");
    update(lone[0].id, d[1], CommandUpdate::Accepted, 143).await.unwrap().unwrap();
    assert!(!s.has_commands_to_send(d[1]).await.unwrap(), "accepted: nothing to requeue or claim");
}

/// Pending commands past their deadline expire with the reason of their state, earliest
/// deadline first and at most `limit`; final ones do not.
pub(crate) async fn command_expiry(store: &Store) {
    let s = &store.entities;
    let (e, by, d) = fleet(store, 7, 1).await;
    let ids: Vec<CommandId> = all_queued(
        s.enqueue_commands(
            vec![
                command(d[0], e, by, "sent", 500),
                command(d[0], e, by, "accepted", 600),
                command(d[0], e, by, "running", 700),
                command(d[0], e, by, "done", 400),
                command(d[0], e, by, "cancelled", 300),
                command(d[0], e, by, "queued", 200),
                command(d[0], e, by, "not_yet", 900),
            ],
            UnixMillis(10),
        )
        .await
        .unwrap(),
    )
    .iter()
    .map(|c| c.id)
    .collect();
    s.cancel_command(ids[4], by, UnixMillis(20)).await.unwrap();
    // The queued one is past its deadline at 200: not sent; the rest are.
    assert_eq!(s.claim_commands_to_send(d[0], UnixMillis(200), 10).await.unwrap().len(), 5);
    s.record_command_update(ids[1], d[0], CommandUpdate::Accepted, UnixMillis(210)).await.unwrap();
    s.record_command_update(ids[2], d[0], CommandUpdate::Running { progress: String::new() }, UnixMillis(210))
        .await
        .unwrap();
    s.record_command_update(ids[3], d[0], CommandUpdate::Succeeded { output: String::new() }, UnixMillis(210))
        .await
        .unwrap();
    let first = s.expire_commands(UnixMillis(800), 2).await.unwrap();
    let second = s.expire_commands(UnixMillis(800), 100).await.unwrap();
    assert!(s.expire_commands(UnixMillis(800), 100).await.unwrap().is_empty());
    let expired: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|c| (c.id, c.state, c.finished_at, c.reason.clone().unwrap_or_default()))
        .collect();
    let reason = |state: CommandState| state.expiry_reason().to_string();
    assert_eq!(
        expired,
        [
            (ids[5], CommandState::Expired, Some(UnixMillis(800)), reason(CommandState::Queued)),
            (ids[0], CommandState::Expired, Some(UnixMillis(800)), reason(CommandState::Sent)),
            (ids[1], CommandState::Expired, Some(UnixMillis(800)), reason(CommandState::Accepted)),
            (ids[2], CommandState::Expired, Some(UnixMillis(800)), reason(CommandState::Running)),
        ],
        "earliest deadline first, at most the limit per call"
    );
    assert_eq!(reason(CommandState::Queued), "deadline passed while queued: the device did not connect");
    assert_eq!(reason(CommandState::Sent), "deadline passed after sending: the device did not answer");
    assert_eq!(s.command(ids[3]).await.unwrap().unwrap().state, CommandState::Succeeded);
    assert_eq!(s.command(ids[4]).await.unwrap().unwrap().state, CommandState::Cancelled);
    assert_eq!(s.command(ids[6]).await.unwrap().unwrap().state, CommandState::Sent);
    for id in [ids[5], ids[0]] {
        assert_eq!(s.command(id).await.unwrap().unwrap().state, CommandState::Expired);
    }
    // An expired command ignores a late result.
    let late =
        s.record_command_update(ids[0], d[0], CommandUpdate::Succeeded { output: "late".into() }, UnixMillis(900));
    assert_eq!(late.await.unwrap().unwrap().state, CommandState::Expired);
}

/// A device's commands newest first, keyset paged; other devices' commands are not listed.
pub(crate) async fn command_pages(store: &Store) {
    let s = &store.entities;
    let (e, by, d) = fleet(store, 8, 2).await;
    let mine: Vec<CommandId> = all_queued(
        s.enqueue_commands(
            (0..5)
                .flat_map(|i| [command(d[0], e, by, &format!("k{i}"), LATER), command(d[1], e, by, "x", LATER)])
                .collect(),
            UnixMillis(10),
        )
        .await
        .unwrap(),
    )
    .into_iter()
    .filter(|c| c.device_id == d[0])
    .map(|c| c.id)
    .collect();
    let device = d[0];
    let page = |after, limit| {
        let s = s.clone();
        async move {
            let rows = s.list_device_commands(device, Page { after, limit }).await.unwrap();
            rows.into_iter().map(|c| c.id).collect::<Vec<_>>()
        }
    };
    let newest: Vec<CommandId> = mine.iter().rev().copied().collect();
    assert_eq!(page(0, 2).await, newest[..2]);
    assert_eq!(page(newest[1].0, 2).await, newest[2..4]);
    assert_eq!(page(newest[3].0, 2).await, newest[4..]);
    assert!(page(newest[4].0, 2).await.is_empty());
    assert_eq!(page(0, 100).await, newest);
    assert!(page(0, 0).await.is_empty());
    assert_eq!(page(u64::MAX, 100).await, newest);
    assert!(s.list_device_commands(DeviceId(987_654_321), Page::first(10)).await.unwrap().is_empty());
}

/// Concurrent callers: batches racing for the last places under a limit never exceed it
/// together, and sessions claiming one device's commands at once send each command once.
pub(crate) async fn command_races(store: &Store) {
    let s = &store.entities;
    let (e, by, d) = fleet(store, 9, 1).await;
    let limits = CommandLimits { per_device: 50, per_enterprise: 1_000 };
    let batches = (0..4).map(|_| {
        let s = s.clone();
        let batch = vec![command(d[0], e, by, "race", LATER); 20];
        tokio::spawn(async move { s.enqueue_commands_within(batch, limits, UnixMillis(10)).await.unwrap() })
    });
    let mut queued = 0;
    for batch in batches.collect::<Vec<_>>() {
        queued += batch.await.unwrap().iter().filter(|a| a.is_ok()).count();
    }
    assert_eq!(queued, 50, "the limit holds across concurrent batches");
    let claims = (0..4).map(|_| {
        let s = s.clone();
        let device = d[0];
        tokio::spawn(async move { s.claim_commands_to_send(device, UnixMillis(20), 7).await.unwrap() })
    });
    let mut sent = Vec::new();
    for claim in claims.collect::<Vec<_>>() {
        sent.extend(claim.await.unwrap().into_iter().map(|c| (c.id, c.attempts)));
    }
    sent.extend(
        s.claim_commands_to_send(d[0], UnixMillis(20), 100).await.unwrap().into_iter().map(|c| (c.id, c.attempts)),
    );
    sent.sort_unstable();
    let mut ids: Vec<CommandId> = sent.iter().map(|(id, _)| *id).collect();
    ids.dedup();
    assert_eq!((sent.len(), ids.len()), (50, 50), "each command claimed once");
    assert!(sent.iter().all(|(_, attempts)| *attempts == 1));
}
