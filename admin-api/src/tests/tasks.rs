//! Scheduled tasks (TSK-1): the API (validation, pause / resume / cancel, scoping, the
//! operation log) and the scheduler driven on the harness's manual clock over its embedded
//! store (one-shot, daily at a local time across DST, a restart after a due time with
//! `run_once` and `skip`, a pending run finished after a crash, a filter resolved at run time).

use axum::http::{Method, StatusCode};
use fleetpulse_ingest::CommandSignal;
use fleetpulse_proto::{DeviceId, EnterpriseId, TaskId, UnixMillis};
use fleetpulse_store::{EnterpriseProfile, NewAccount, NewEnterprise, Page, Role, RunState, TaskRun, TaskState};
use serde_json::{Value, json};

use super::*;
use crate::{Scheduler, SchedulerConfig, SchedulerPass};

const HOUR_MS: i64 = 3_600_000;

/// Unix milliseconds of an RFC 3339 instant.
fn at(s: &str) -> UnixMillis {
    UnixMillis(s.parse::<jiff::Timestamp>().expect("an instant").as_millisecond())
}

async fn enterprise(h: &Harness, name: &str, time_zone: &str) -> EnterpriseId {
    let profile = EnterpriseProfile { time_zone: time_zone.into(), ..EnterpriseProfile::default() };
    let new = NewEnterprise { name: name.into(), credential: format!("cred-{name}"), channel_id: None, profile };
    h.store.entities.create_enterprise(new).await.expect("enterprise").id
}

async fn device(h: &Harness, e: EnterpriseId, n: u32, model: &str) -> DeviceId {
    h.phone(e, &format!("0015650{n:05x}"), model).await
}

fn scheduler(h: &Harness) -> Scheduler {
    Scheduler::new(h.store.entities.clone(), CommandSignal::default(), h.clock.clock(), SchedulerConfig::default())
}

async fn create(h: &Harness, token: &str, body: Value) -> Value {
    let reply = h.call(Method::POST, "/api/v1/tasks", Some(token), Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()
}

fn task_id(task: &Value) -> TaskId {
    TaskId(task["id"].as_u64().expect("id"))
}

async fn runs(h: &Harness, task: TaskId) -> Vec<TaskRun> {
    h.store.entities.task_runs(task, Page::first(100)).await.expect("runs")
}

async fn commands_of(h: &Harness, device: DeviceId) -> usize {
    h.store.entities.list_device_commands(device, Page::first(100)).await.expect("commands").len()
}

#[tokio::test]
async fn creating_validates_kind_args_zone_time_targets_and_schedule() {
    let h = harness();
    let token = h.admin_token().await;
    let e = enterprise(&h, "Acme", "Europe/Berlin").await;
    let d = device(&h, e, 1, "T54W").await;
    let ok = json!({
        "enterprise_id": e, "kind": "reboot", "targets": {"device_ids": [d]},
        "schedule": {"kind": "daily", "time": "03:00"}
    });
    let with = |key: &str, value: Value| {
        let mut body = ok.clone();
        body[key] = value;
        body
    };
    let refused = [
        ("unknown kind", with("kind", json!("self_destruct")), "self_destruct"),
        ("bad args", with("kind", json!("ping")), "target"),
        ("bad zone", with("time_zone", json!("Mars/Olympus_Mons")), "Mars/Olympus_Mons"),
        ("bad time", with("schedule", json!({"kind": "daily", "time": "25:00"})), "25:00"),
        ("unknown schedule", with("schedule", json!({"kind": "hourly"})), "hourly"),
        ("no days", with("schedule", json!({"kind": "weekly", "days": [], "time": "03:00"})), "day"),
        ("past", with("schedule", json!({"kind": "once", "at": 1_000})), "past"),
        ("deadline", with("deadline_s", json!(5)), "deadline_s"),
        ("no devices", with("targets", json!({"device_ids": []})), "device_ids"),
        ("device twice", with("targets", json!({"device_ids": [d, d]})), "twice"),
        ("bad filter", with("targets", json!({"filter": "colour=red"})), "colour"),
        ("tenant in filter", with("targets", json!({"filter": format!("enterprise_id={e}")})), "enterprise_id"),
        ("limit in filter", with("targets", json!({"filter": "limit=5"})), "limit"),
        ("unknown field", with("priority", json!(1)), "priority"),
        (
            "no enterprise",
            json!({"kind": "reboot", "targets": {"device_ids": [d]}, "schedule": {"kind": "daily", "time": "03:00"}}),
            "enterprise_id",
        ),
    ];
    for (what, body, needle) in refused {
        let reply = h.call(Method::POST, "/api/v1/tasks", Some(&token), Some(body)).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(needle), "{what}: {message}");
    }
    assert!(h.store.entities.list_tasks(None, Page::first(10)).await.expect("tasks").is_empty());

    // The enterprise's zone by default; arguments answered with their defaults; name = kind.
    h.clock.set(at("2026-01-10T12:00:00Z"));
    let token = h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json()["token"].as_str().expect("token").to_owned();
    let body = json!({
        "enterprise_id": e, "kind": "ping", "args": {"target": "10.0.0.1"}, "targets": {"device_ids": [d]},
        "schedule": {"kind": "weekly", "days": ["monday"], "time": "07:30"}, "missed": "skip"
    });
    let task = create(&h, &token, body).await;
    assert_eq!(task["time_zone"], "Europe/Berlin");
    assert_eq!(task["name"], "ping");
    assert_eq!(task["state"], "active");
    assert_eq!(task["missed"], "skip");
    assert_eq!(task["deadline_s"], 3_600);
    let args: Value = serde_json::from_str(task["args"].as_str().expect("args text")).expect("args JSON");
    assert_eq!(args, json!({"target": "10.0.0.1", "count": 4}));
    assert_eq!(task["next_run_at"], at("2026-01-12T06:30:00Z").0, "Monday 07:30 in Berlin (UTC+1)");
    assert_eq!(task["schedule"], json!({"kind": "weekly", "days": ["monday"], "time": "07:30"}));
    let tokyo = create(&h, &token, with("time_zone", json!("Asia/Tokyo"))).await;
    assert_eq!(tokyo["next_run_at"], at("2026-01-10T18:00:00Z").0, "03:00 in Tokyo (UTC+9)");
    let filter = create(&h, &token, with("targets", json!({"filter": "model=T54W&online=true"}))).await;
    assert_eq!(filter["targets"], json!({"filter": "model=T54W&online=true"}));
}

#[tokio::test]
async fn pause_resume_cancel_follow_the_state_table_and_are_logged() {
    let h = harness();
    let token = h.admin_token().await;
    let e = enterprise(&h, "Acme", "").await;
    let d = device(&h, e, 1, "T54W").await;
    h.clock.set(at("2026-01-10T12:00:00Z"));
    drop(token);
    let token = h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json()["token"].as_str().expect("token").to_owned();
    let body = json!({"enterprise_id": e, "kind": "reboot", "targets": {"device_ids": [d]}, "schedule": {"kind": "daily", "time": "03:00"}});
    let task = create(&h, &token, body).await;
    assert_eq!(task["time_zone"], "UTC", "an enterprise without a zone schedules in UTC");
    let id = task_id(&task);
    let uri = |action: &str| format!("/api/v1/tasks/{id}{action}");
    let post = |action: &'static str| {
        let (h, uri, token) = (&h, uri(action), token.clone());
        async move { h.call(Method::POST, &uri, Some(&token), None).await }
    };

    let paused = post("/pause").await;
    assert_eq!((paused.status, paused.json()["state"].clone()), (StatusCode::OK, json!("paused")));
    post("/pause").await.assert_error(StatusCode::CONFLICT, "conflict");
    // Resumed later: the next occurrence after now, not one missed while paused.
    h.clock.advance(std::time::Duration::from_secs(20 * 60));
    let resumed = post("/resume").await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text());
    assert_eq!(
        (resumed.json()["state"].clone(), resumed.json()["next_run_at"].clone()),
        (json!("active"), json!(at("2026-01-11T03:00:00Z").0))
    );
    post("/resume").await.assert_error(StatusCode::CONFLICT, "conflict");
    let cancelled = h.call(Method::DELETE, &uri(""), Some(&token), None).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    assert_eq!(
        (cancelled.json()["state"].clone(), cancelled.json()["next_run_at"].clone()),
        (json!("cancelled"), Value::Null)
    );
    h.call(Method::DELETE, &uri(""), Some(&token), None).await.assert_error(StatusCode::CONFLICT, "conflict");
    post("/resume").await.assert_error(StatusCode::CONFLICT, "conflict");
    let shown = h.get(&uri(""), &token).await;
    assert_eq!(shown.json()["state"], "cancelled");
    assert_eq!(item_ids(&h.get(&format!("/api/v1/tasks?enterprise_id={e}"), &token).await), [id.0]);
    let listed = h.get("/api/v1/tasks?limit=1", &token).await.json();
    assert_eq!(listed["next_after"], id.0, "a full page continues after its last id");
    h.get(&uri("/runs/1"), &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    h.get("/api/v1/tasks/987654", &token).await.assert_error(StatusCode::NOT_FOUND, "not_found");

    // Every create, pause, resume and cancel is in the operation log, refusals too.
    let rows = h.get("/api/v1/operation-logs?limit=100", &token).await.json();
    let ops: Vec<(String, u64)> = rows["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| r["operation"].as_str().is_some_and(|o| o.contains("/api/v1/tasks")))
        .map(|r| (r["operation"].as_str().unwrap_or_default().to_owned(), r["status"].as_u64().unwrap_or_default()))
        .collect();
    let row = |op: &str, status: u64| (op.to_owned(), status);
    assert_eq!(
        ops,
        [
            row("POST /api/v1/tasks/{id}/resume", 409),
            row("DELETE /api/v1/tasks/{id}", 409),
            row("DELETE /api/v1/tasks/{id}", 200),
            row("POST /api/v1/tasks/{id}/resume", 409),
            row("POST /api/v1/tasks/{id}/resume", 200),
            row("POST /api/v1/tasks/{id}/pause", 409),
            row("POST /api/v1/tasks/{id}/pause", 200),
            row("POST /api/v1/tasks", 201),
        ]
    );
}

#[tokio::test]
async fn another_tenants_tasks_answer_404_and_do_not_list() {
    let h = harness();
    let platform = h.admin_token().await;
    let mine = enterprise(&h, "Mine", "").await;
    let theirs = enterprise(&h, "Theirs", "").await;
    let d = device(&h, theirs, 1, "T54W").await;
    let body = json!({"enterprise_id": theirs, "kind": "reboot", "targets": {"device_ids": [d]}, "schedule": {"kind": "daily", "time": "03:00"}});
    let task = task_id(&create(&h, &platform, body.clone()).await);
    let new = NewAccount {
        email: "mine@example.com".into(),
        password_hash: crate::hash_password("tenant-password").expect("hash"),
        role: Role::EnterpriseAdmin,
        channel_id: None,
        enterprise_id: Some(mine),
        must_change_password: false,
        parent_id: None,
        permissions: None,
    };
    h.store.entities.create_account(new).await.expect("account");
    let token =
        h.login("mine@example.com", "tenant-password").await.json()["token"].as_str().expect("token").to_owned();
    for (method, uri) in [
        (Method::GET, format!("/api/v1/tasks/{task}")),
        (Method::DELETE, format!("/api/v1/tasks/{task}")),
        (Method::POST, format!("/api/v1/tasks/{task}/pause")),
        (Method::POST, format!("/api/v1/tasks/{task}/resume")),
        (Method::GET, format!("/api/v1/tasks/{task}/runs")),
        (Method::GET, format!("/api/v1/tasks/{task}/runs/1")),
        (Method::GET, format!("/api/v1/tasks?enterprise_id={theirs}")),
    ] {
        h.call(method, &uri, Some(&token), None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    let intrude = h.call(Method::POST, "/api/v1/tasks", Some(&token), Some(body)).await;
    intrude.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(item_ids(&h.get("/api/v1/tasks", &token).await).is_empty(), "an enterprise lists its own only");
    // Its own task, without naming the enterprise; a device of another enterprise is refused
    // at run time, per device.
    let own = json!({"kind": "reboot", "targets": {"device_ids": [d]}, "schedule": {"kind": "daily", "time": "03:00"}});
    let own = create(&h, &token, own).await;
    assert_eq!(own["enterprise_id"], mine.0);
    assert_eq!(item_ids(&h.get("/api/v1/tasks", &token).await), [own["id"].as_u64().expect("id")]);
    assert_eq!(h.store.entities.task(task).await.expect("read").expect("kept").state, TaskState::Active);
}

#[tokio::test]
async fn a_one_shot_task_runs_once_and_completes() {
    let h = harness();
    let token = h.admin_token().await;
    let e = enterprise(&h, "Acme", "").await;
    let (d1, d2) = (device(&h, e, 1, "T54W").await, device(&h, e, 2, "T54W").await);
    let when = h.clock.now().0 + HOUR_MS;
    let body = json!({"enterprise_id": e, "kind": "reboot", "targets": {"device_ids": [d1, d2]}, "schedule": {"kind": "once", "at": when}});
    let task = create(&h, &token, body).await;
    let id = task_id(&task);
    let s = scheduler(&h);
    assert_eq!(s.tick().await.expect("tick"), SchedulerPass::default(), "not due yet");
    h.clock.advance(std::time::Duration::from_secs(3_600));
    assert_eq!(s.tick().await.expect("tick"), SchedulerPass { runs: 1, commands: 2, ..SchedulerPass::default() });
    assert_eq!(s.tick().await.expect("tick"), SchedulerPass::default(), "never twice");
    assert_eq!(scheduler(&h).tick().await.expect("tick"), SchedulerPass::default(), "nor after a restart");
    let stored = h.store.entities.task(id).await.expect("read").expect("task");
    assert_eq!((stored.state, stored.next_run_at), (TaskState::Completed, None));
    let run = &runs(&h, id).await[0];
    assert_eq!((run.state, run.scheduled_for, run.queued, run.refused), (RunState::Done, UnixMillis(when), 2, 0));
    for d in [d1, d2] {
        let commands = h.store.entities.list_device_commands(d, Page::first(10)).await.expect("commands");
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0].kind, "reboot");
        assert_eq!(commands[0].deadline, UnixMillis(when + HOUR_MS), "the task's deadline_s after the run");
        assert_eq!(commands[0].issued_by.0, task["created_by"].as_u64().expect("creator"));
    }
    // The run through the API (a new session: the first one idled out): totals and per-device
    // results.
    let token = h.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.json()["token"].as_str().expect("token").to_owned();
    let detail = h.get(&format!("/api/v1/tasks/{id}/runs/{}", run.id), &token).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text());
    let detail = detail.json();
    assert_eq!(detail["totals"], json!({"total": 2, "succeeded": 0, "failed": 0, "in_progress": 2}));
    assert_eq!(detail["devices"].as_array().map(Vec::len), Some(2));
    assert_eq!(detail["devices"][0]["command_state"], "queued");
    assert_eq!(item_ids(&h.get(&format!("/api/v1/tasks/{id}/runs"), &token).await), [run.id.0]);
}

#[tokio::test]
async fn a_daily_task_runs_at_its_local_time_across_a_dst_change() {
    let h = harness();
    h.clock.set(at("2026-03-07T12:00:00Z"));
    let token = h.admin_token().await;
    let e = enterprise(&h, "Acme", "America/New_York").await;
    let d = device(&h, e, 1, "T54W").await;
    let body = json!({"enterprise_id": e, "kind": "refresh_status", "targets": {"device_ids": [d]}, "schedule": {"kind": "daily", "time": "02:30"}});
    let task = create(&h, &token, body).await;
    let id = task_id(&task);
    // 2026-03-08 02:30 does not exist in New York (02:00 → 03:00): it runs at 03:30 EDT.
    assert_eq!(task["next_run_at"], at("2026-03-08T07:30:00Z").0);
    let s = scheduler(&h);
    h.clock.set(at("2026-03-08T07:29:59Z"));
    assert_eq!(s.tick().await.expect("tick").runs, 0);
    h.clock.set(at("2026-03-08T07:30:00Z"));
    assert_eq!(s.tick().await.expect("tick").runs, 1);
    let next = h.store.entities.task(id).await.expect("read").expect("task").next_run_at;
    assert_eq!(next, Some(at("2026-03-09T06:30:00Z")), "02:30 EDT the next day");
    h.clock.set(at("2026-03-09T06:30:10Z"));
    assert_eq!(s.tick().await.expect("tick").runs, 1);
    let scheduled: Vec<UnixMillis> = runs(&h, id).await.iter().map(|r| r.scheduled_for).collect();
    assert_eq!(scheduled, [at("2026-03-09T06:30:00Z"), at("2026-03-08T07:30:00Z")]);
    assert_eq!(commands_of(&h, d).await, 2);
}

#[tokio::test]
async fn a_restart_after_a_due_time_runs_the_missed_run_once_or_records_it_missed() {
    let h = harness();
    h.clock.set(at("2026-01-10T12:00:00Z"));
    let token = h.admin_token().await;
    let e = enterprise(&h, "Acme", "UTC").await;
    let d = device(&h, e, 1, "T54W").await;
    let task = |missed: &str| json!({"enterprise_id": e, "kind": "reboot", "missed": missed, "targets": {"device_ids": [d]}, "schedule": {"kind": "daily", "time": "03:00"}});
    let run_once = task_id(&create(&h, &token, task("run_once")).await);
    let skip = task_id(&create(&h, &token, task("skip")).await);
    // The server was down from before 2026-01-11 03:00 until 2026-01-13 10:00: three
    // occurrences passed.
    h.clock.set(at("2026-01-13T10:00:00Z"));
    let pass = scheduler(&h).tick().await.expect("tick");
    assert_eq!(pass, SchedulerPass { runs: 1, missed: 1, commands: 1, ..SchedulerPass::default() });
    for restart in 0..2 {
        assert_eq!(
            scheduler(&h).tick().await.expect("tick"),
            SchedulerPass::default(),
            "restart {restart}: never twice"
        );
    }
    let ran = runs(&h, run_once).await;
    assert_eq!(
        ran.iter().map(|r| (r.state, r.scheduled_for)).collect::<Vec<_>>(),
        [(RunState::Done, at("2026-01-11T03:00:00Z"))]
    );
    let skipped = runs(&h, skip).await;
    assert_eq!(skipped.iter().map(|r| (r.state, r.queued)).collect::<Vec<_>>(), [(RunState::Missed, 0)]);
    assert_eq!(commands_of(&h, d).await, 1, "only the run_once task queued a command");
    for t in [run_once, skip] {
        let next = h.store.entities.task(t).await.expect("read").expect("task").next_run_at;
        assert_eq!(next, Some(at("2026-01-14T03:00:00Z")), "the next occurrence after the restart");
    }
}

#[tokio::test]
async fn a_run_claimed_before_a_crash_is_finished_once_at_start() {
    let h = harness();
    let token = h.admin_token().await;
    let e = enterprise(&h, "Acme", "").await;
    let d = device(&h, e, 1, "T54W").await;
    let when = h.clock.now().0 + 1_000;
    let body = json!({"enterprise_id": e, "kind": "reboot", "targets": {"device_ids": [d]}, "schedule": {"kind": "once", "at": when}});
    let id = task_id(&create(&h, &token, body).await);
    h.clock.advance(std::time::Duration::from_secs(1));
    // A scheduler claimed the run and stopped before queueing its commands.
    let claimed = h.store.entities.claim_run(id, UnixMillis(when), None, false, h.clock.now()).await.expect("claim");
    assert_eq!(claimed.map(|r| r.state), Some(RunState::Pending));
    let pass = scheduler(&h).tick().await.expect("tick");
    assert_eq!(pass, SchedulerPass { runs: 1, recovered: 1, commands: 1, ..SchedulerPass::default() });
    assert_eq!(scheduler(&h).tick().await.expect("tick"), SchedulerPass::default());
    assert_eq!(commands_of(&h, d).await, 1);
}

#[tokio::test]
async fn a_filter_is_resolved_at_run_time_within_the_enterprise() {
    let h = harness();
    let token = h.admin_token().await;
    let e = enterprise(&h, "Acme", "").await;
    let other = enterprise(&h, "Other", "").await;
    let first = device(&h, e, 1, "T99").await;
    let unmatched = device(&h, e, 2, "T54W").await;
    let foreign = device(&h, other, 3, "T99").await;
    let when = h.clock.now().0 + HOUR_MS;
    let body = json!({"enterprise_id": e, "kind": "reboot", "targets": {"filter": "model=T99"}, "schedule": {"kind": "once", "at": when}});
    let id = task_id(&create(&h, &token, body).await);
    // Added after the task was created: targeted all the same.
    let later = device(&h, e, 4, "T99").await;
    h.clock.advance(std::time::Duration::from_secs(3_600));
    assert_eq!(scheduler(&h).tick().await.expect("tick").commands, 2);
    for (d, expected) in [(first, 1), (later, 1), (unmatched, 0), (foreign, 0)] {
        assert_eq!(commands_of(&h, d).await, expected, "{d}");
    }
    let run = &runs(&h, id).await[0];
    assert_eq!((run.matched, run.queued, run.note.clone()), (2, 2, None));
}
