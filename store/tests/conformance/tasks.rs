//! Scheduled tasks ([`TaskStore`], TSK-1): bounds, pause / resume / cancel, the due walk,
//! claiming a run once (also when two claims race), finishing a run once with its commands and
//! per-device results, missed runs, one-shot completion and the bound on kept runs.
//!
//! `due_tasks`, `next_due` and `pending_runs` look at every task: each case leaves its tasks
//! cancelled or completed and its runs finished.

use super::*;

/// An enterprise, a creating account and `devices` devices; `n` makes names unique.
async fn fleet(store: &Store, n: u32, devices: u32) -> (EnterpriseId, AccountId, Vec<DeviceId>) {
    let s = &store.entities;
    let e = s
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: format!("tasks-{n}"),
            credential: format!("tasks-{n}"),
            channel_id: None,
        })
        .await
        .unwrap();
    let account = s.create_account(platform_admin(&format!("tasks-{n}@example.com"))).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..devices {
        let d = s.register_device(new_device(e.id, DeviceKey::Mac(mac(0xd0000 + n * 0x100 + i)))).await.unwrap();
        ids.push(d.device.id);
    }
    (e.id, account.id, ids)
}

fn daily(e: EnterpriseId, by: AccountId, devices: &[DeviceId], next: i64) -> NewTask {
    NewTask {
        enterprise_id: e,
        name: "nightly reboot".into(),
        kind: "reboot".into(),
        args: "{}".into(),
        deadline_s: 3_600,
        targets: TaskTargets::DeviceIds(devices.to_vec()),
        schedule: TaskSchedule::Daily { time: TimeOfDay { hour: 3, minute: 0 } },
        time_zone: "Europe/Berlin".into(),
        missed: MissedRuns::RunOnce,
        created_by: by,
        next_run_at: UnixMillis(next),
    }
}

fn plan(task: &Task, devices: &[DeviceId], at: i64) -> RunPlan {
    RunPlan {
        commands: devices
            .iter()
            .map(|d| NewCommand {
                device_id: *d,
                enterprise_id: task.enterprise_id,
                kind: task.kind.clone(),
                args: task.args.clone(),
                deadline: UnixMillis(at + 3_600_000),
                issued_by: task.created_by,
            })
            .collect(),
        matched: devices.len() as u64,
        note: None,
    }
}

/// Bounds, listing, and the changes of the module table.
pub(crate) async fn task_lifecycle(store: &Store) {
    let s = &store.entities;
    let (e, by, devices) = fleet(store, 1, 2).await;
    let (other, _, _) = fleet(store, 2, 0).await;
    let ok = daily(e, by, &devices, 10_000);
    invalid(s.create_task(NewTask { name: String::new(), ..ok.clone() }, UnixMillis(1)).await, "name");
    invalid(s.create_task(NewTask { kind: "Reboot".into(), ..ok.clone() }, UnixMillis(1)).await, "kind");
    invalid(s.create_task(NewTask { args: "{".into(), ..ok.clone() }, UnixMillis(1)).await, "args");
    invalid(s.create_task(NewTask { deadline_s: 1, ..ok.clone() }, UnixMillis(1)).await, "deadline_s");
    let twice = TaskTargets::DeviceIds(vec![devices[0], devices[0]]);
    invalid(s.create_task(NewTask { targets: twice, ..ok.clone() }, UnixMillis(1)).await, "twice");
    invalid(
        s.create_task(NewTask { targets: TaskTargets::DeviceIds(vec![]), ..ok.clone() }, UnixMillis(1)).await,
        "device_ids",
    );
    let long = TaskTargets::Filter("q=".to_string() + &"x".repeat(MAX_TASK_FILTER));
    invalid(s.create_task(NewTask { targets: long, ..ok.clone() }, UnixMillis(1)).await, "filter");
    let no_days = TaskSchedule::Weekly { days: vec![], time: TimeOfDay { hour: 1, minute: 0 } };
    invalid(s.create_task(NewTask { schedule: no_days, ..ok.clone() }, UnixMillis(1)).await, "weekly");
    invalid(
        s.create_task(NewTask { time_zone: "Europe Berlin".into(), ..ok.clone() }, UnixMillis(1)).await,
        "time_zone",
    );
    invalid(
        s.create_task(NewTask { enterprise_id: EnterpriseId(987_654), ..ok.clone() }, UnixMillis(1)).await,
        "enterprise",
    );
    invalid(s.create_task(NewTask { created_by: AccountId(987_654), ..ok.clone() }, UnixMillis(1)).await, "account");

    let a = s.create_task(ok.clone(), UnixMillis(1)).await.unwrap();
    assert_eq!(
        (a.state, a.next_run_at, a.created_at, a.targets.clone(), a.schedule.clone()),
        (TaskState::Active, Some(UnixMillis(10_000)), UnixMillis(1), ok.targets.clone(), ok.schedule.clone())
    );
    assert_eq!(s.task(a.id).await.unwrap(), Some(a.clone()));
    let filter = TaskTargets::Filter("model=T54W&online=true".into());
    let b = s
        .create_task(NewTask { targets: filter.clone(), missed: MissedRuns::Skip, ..ok.clone() }, UnixMillis(2))
        .await
        .unwrap();
    assert_eq!((b.targets.clone(), b.missed), (filter, MissedRuns::Skip));
    let c = s.create_task(NewTask { enterprise_id: other, ..ok.clone() }, UnixMillis(3)).await.unwrap();
    let ids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_tasks(Some(vec![e]), Page::first(10)).await.unwrap()), [a.id, b.id]);
    assert_eq!(ids(s.list_tasks(Some(vec![e]), Page { after: a.id.0, limit: 10 }).await.unwrap()), [b.id]);
    assert_eq!(ids(s.list_tasks(Some(vec![e, other]), Page::first(2)).await.unwrap()), [a.id, b.id]);
    assert!(s.list_tasks(Some(vec![]), Page::first(10)).await.unwrap().is_empty());
    assert!(ids(s.list_tasks(None, Page::first(1000)).await.unwrap()).contains(&c.id));

    // Due: active tasks at or before now, earliest first; paused ones are not due.
    assert!(s.due_tasks(UnixMillis(9_999), 10).await.unwrap().is_empty());
    assert_eq!(ids(s.due_tasks(UnixMillis(10_000), 10).await.unwrap()), [a.id, b.id, c.id]);
    assert_eq!(s.next_due().await.unwrap(), Some(UnixMillis(10_000)));
    let paused = s.change_task(a.id, TaskChange::Pause, UnixMillis(50)).await.unwrap().unwrap();
    assert_eq!(
        (paused.state, paused.next_run_at, paused.updated_at),
        (TaskState::Paused, Some(UnixMillis(10_000)), UnixMillis(50))
    );
    assert_eq!(ids(s.due_tasks(UnixMillis(10_000), 10).await.unwrap()), [b.id, c.id]);
    assert_eq!(
        s.change_task(a.id, TaskChange::Pause, UnixMillis(51)).await.unwrap().unwrap().updated_at,
        UnixMillis(50),
        "pausing twice changes nothing"
    );
    let resumed = s
        .change_task(a.id, TaskChange::Resume { next_run_at: UnixMillis(20_000) }, UnixMillis(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((resumed.state, resumed.next_run_at), (TaskState::Active, Some(UnixMillis(20_000))));
    let again =
        s.change_task(a.id, TaskChange::Resume { next_run_at: UnixMillis(1) }, UnixMillis(61)).await.unwrap().unwrap();
    assert_eq!(again.next_run_at, Some(UnixMillis(20_000)), "resuming an active task changes nothing");
    for t in [a.id, b.id, c.id] {
        let cancelled = s.change_task(t, TaskChange::Cancel, UnixMillis(70)).await.unwrap().unwrap();
        assert_eq!((cancelled.state, cancelled.next_run_at), (TaskState::Cancelled, None));
    }
    let still =
        s.change_task(a.id, TaskChange::Resume { next_run_at: UnixMillis(1) }, UnixMillis(80)).await.unwrap().unwrap();
    assert_eq!(still.state, TaskState::Cancelled, "a cancelled task stays cancelled");
    assert_eq!(s.change_task(TaskId(987_654), TaskChange::Cancel, UnixMillis(80)).await.unwrap(), None);
    assert_eq!(s.next_due().await.unwrap(), None);
}

/// A claimed run is finished once: its commands are queued with per-device results; a missed
/// run queues nothing; a one-shot task completes; runs beyond the bound are dropped.
pub(crate) async fn task_run_cycle(store: &Store) {
    let s = &store.entities;
    let (e, by, devices) = fleet(store, 3, 3).await;
    let (_, _, foreign) = fleet(store, 4, 1).await;
    let task = s.create_task(daily(e, by, &devices, 100_000), UnixMillis(1)).await.unwrap();

    assert_eq!(
        s.claim_run(task.id, UnixMillis(99_999), Some(UnixMillis(200_000)), false, UnixMillis(100_001)).await.unwrap(),
        None,
        "not the due time"
    );
    let run = s
        .claim_run(task.id, UnixMillis(100_000), Some(UnixMillis(200_000)), false, UnixMillis(100_001))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (run.task_id, run.scheduled_for, run.claimed_at, run.state, run.finished_at),
        (task.id, UnixMillis(100_000), UnixMillis(100_001), RunState::Pending, None)
    );
    assert_eq!(
        s.claim_run(task.id, UnixMillis(100_000), Some(UnixMillis(200_000)), false, UnixMillis(100_002)).await.unwrap(),
        None,
        "claimed once"
    );
    assert_eq!(s.task(task.id).await.unwrap().unwrap().next_run_at, Some(UnixMillis(200_000)));
    assert_eq!(s.pending_runs(10).await.unwrap(), std::slice::from_ref(&run));

    let mut targets = devices.clone();
    targets.push(foreign[0]);
    let mut twice = plan(&task, &targets, 100_003);
    twice.commands.push(twice.commands[0].clone());
    invalid(s.finish_run(run.id, twice, UnixMillis(100_003)).await, "one command per device");
    let results = s.finish_run(run.id, plan(&task, &targets, 100_003), UnixMillis(100_003)).await.unwrap().unwrap();
    assert_eq!(results.len(), 4);
    assert!(results[..3].iter().all(|r| r.command_id.is_some() && r.command_state == Some(CommandState::Queued)));
    assert_eq!(results[3].command_id, None);
    assert_eq!(results[3].refusal.as_deref(), Some("the device does not exist in this enterprise"));
    assert_eq!(
        s.finish_run(run.id, plan(&task, &targets, 100_004), UnixMillis(100_004)).await.unwrap(),
        None,
        "finished once"
    );
    assert!(s.pending_runs(10).await.unwrap().is_empty());
    for (d, r) in devices.iter().zip(&results) {
        let queued = s.list_device_commands(*d, Page::first(10)).await.unwrap();
        assert_eq!(queued.iter().map(|c| Some(c.id)).collect::<Vec<_>>(), [r.command_id], "one command per device");
        assert_eq!(
            (queued[0].kind.as_str(), queued[0].issued_by, queued[0].issued_at),
            ("reboot", by, UnixMillis(100_003))
        );
    }
    let done = s.task_run(run.id).await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.finished_at, done.matched, done.queued, done.refused),
        (RunState::Done, Some(UnixMillis(100_003)), 4, 3, 1)
    );
    let mut stored = s.task_run_devices(run.id, Page::first(1000)).await.unwrap();
    let mut expected = results.clone();
    expected.sort_by_key(|r| r.device_id);
    stored.sort_by_key(|r| r.device_id);
    assert_eq!(stored, expected);
    let first = s.task_run_devices(run.id, Page::first(2)).await.unwrap();
    let rest = s.task_run_devices(run.id, Page { after: first[1].device_id.0, limit: 10 }).await.unwrap();
    assert_eq!(first.into_iter().chain(rest).collect::<Vec<_>>(), expected);
    // The results show where each command stands now.
    let first_command = results[0].command_id.unwrap();
    s.record_command_update(
        first_command,
        devices[0],
        CommandUpdate::Succeeded { output: String::new() },
        UnixMillis(100_010),
    )
    .await
    .unwrap();
    s.record_command_update(
        results[1].command_id.unwrap(),
        devices[1],
        CommandUpdate::Failed { output: String::new(), reason: "busy".into() },
        UnixMillis(100_010),
    )
    .await
    .unwrap();
    assert_eq!(
        s.task_run_totals(run.id).await.unwrap(),
        RunTotals { total: 4, succeeded: 1, failed: 2, in_progress: 1 }
    );
    let shown = s.task_run_devices(run.id, Page::first(1)).await.unwrap();
    assert_eq!(shown[0].command_state, Some(CommandState::Succeeded));

    // A missed run is finished as it is claimed and queues nothing.
    let missed = s
        .claim_run(task.id, UnixMillis(200_000), Some(UnixMillis(300_000)), true, UnixMillis(250_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((missed.state, missed.finished_at), (RunState::Missed, Some(UnixMillis(250_000))));
    assert_eq!(s.finish_run(missed.id, plan(&task, &devices, 250_000), UnixMillis(250_000)).await.unwrap(), None);
    assert_eq!(s.task_run_totals(missed.id).await.unwrap(), RunTotals::default());
    let runs = s.task_runs(task.id, Page::first(10)).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [missed.id, run.id], "newest first");
    assert_eq!(s.task_runs(task.id, Page { after: missed.id.0, limit: 10 }).await.unwrap()[0].id, run.id);

    // Only the last runs are kept.
    for due in (300_000..).take(MAX_RUNS_PER_TASK) {
        s.claim_run(task.id, UnixMillis(due), Some(UnixMillis(due + 1)), true, UnixMillis(due)).await.unwrap().unwrap();
    }
    let kept = s.task_runs(task.id, Page::first(1000)).await.unwrap();
    assert_eq!(kept.len(), MAX_RUNS_PER_TASK);
    assert!(kept.iter().all(|r| r.id != run.id && r.id != missed.id), "the oldest runs are dropped");
    assert_eq!(s.task_run(run.id).await.unwrap(), None);
    assert!(s.task_run_devices(run.id, Page::first(10)).await.unwrap().is_empty(), "with their results");

    // A one-shot task completes with its claim.
    let once = NewTask { schedule: TaskSchedule::Once { at: UnixMillis(500_000) }, ..daily(e, by, &devices, 500_000) };
    let once = s.create_task(once, UnixMillis(2)).await.unwrap();
    let last = s.claim_run(once.id, UnixMillis(500_000), None, false, UnixMillis(500_000)).await.unwrap().unwrap();
    let completed = s.task(once.id).await.unwrap().unwrap();
    assert_eq!((completed.state, completed.next_run_at), (TaskState::Completed, None));
    s.finish_run(last.id, RunPlan::default(), UnixMillis(500_001)).await.unwrap().unwrap();
    s.change_task(task.id, TaskChange::Cancel, UnixMillis(600_000)).await.unwrap();
}

/// Two schedulers claiming the same due run, and finishing the same pending run, at once: each
/// happens once, and the run's commands are queued once.
pub(crate) async fn task_races(store: &Store) {
    let s = &store.entities;
    let (e, by, devices) = fleet(store, 5, 20).await;
    let task = s.create_task(daily(e, by, &devices, 1_000_000), UnixMillis(1)).await.unwrap();
    for round in 0..5 {
        let due = 1_000_000 + round;
        let claims = (0..2).map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                s.claim_run(task.id, UnixMillis(due), Some(UnixMillis(due + 1)), false, UnixMillis(due)).await.unwrap()
            })
        });
        let mut won = Vec::new();
        for claim in claims.collect::<Vec<_>>() {
            won.extend(claim.await.unwrap());
        }
        assert_eq!(won.len(), 1, "round {round}: one claim wins");
        let run = won[0].id;
        let finishes = (0..2).map(|_| {
            let s = s.clone();
            let plan = plan(&task, &devices, due);
            tokio::spawn(async move { s.finish_run(run, plan, UnixMillis(due)).await.unwrap() })
        });
        let mut finished = 0;
        for finish in finishes.collect::<Vec<_>>() {
            finished += usize::from(finish.await.unwrap().is_some());
        }
        assert_eq!(finished, 1, "round {round}: one finish wins");
    }
    for d in &devices {
        assert_eq!(s.list_device_commands(*d, Page::first(100)).await.unwrap().len(), 5, "one command per run");
    }
    s.change_task(task.id, TaskChange::Cancel, UnixMillis(2_000_000)).await.unwrap();
}
