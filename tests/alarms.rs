//! End-to-end alarm notifications (ALM-5): the real `fleetpulse` binary, real devices over QUIC
//! and a real SMTP server (aiosmtpd) on loopback; the assertions are on what arrived there.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::alarms::{
    acked, alarm, device, emails, mail_config, message_id, notifications_in, outbox_read_only, strategy, to,
};
use common::{Api, RawDevice, TestServer, metric, until};
use fleetpulse_proto::wire::{CommandResult, CommandStatus, Downlink, Heartbeat, Message, ResourceReport, Uplink};
use fleetpulse_testkit::smtp::SmtpServer;
use serde_json::json;

/// Runs that load both cores: one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_one_email_reminders_follow_and_a_restart_sends_nothing_twice() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = mail_config(&smtp, "");
    let mut server = TestServer::start(dir.path(), None, &config);
    let ports = (server.quic_addr, server.http_addr);
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Burst Co").await;
    strategy(&api, enterprise, json!({"group_wait_ms": 1500, "repeat_interval_ms": 60_000})).await;

    // Three devices crash within a moment: one email lists all three.
    let mut devices = Vec::new();
    for i in 0..3 {
        let mut dev = device(&server, &credential, &format!("00156500b0{i:02}")).await;
        dev.send(&[alarm(1, 105, true, &format!("segfault in app {i}"))]).await;
        acked(&mut dev, 1).await;
        devices.push(dev);
    }
    let first = emails(&smtp, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first_batch = smtp.messages();
    assert_eq!(first_batch.len(), 1, "one grouped email: {first:#?}");
    let email = &first_batch[0];
    assert_eq!(to(email), "ops@example.test");
    assert!(email.contains("Firing alarms for Burst Co: 3 alarms"), "{email}");
    for i in 0..3 {
        assert!(email.contains(&format!("segfault in app {i}")), "{email}");
    }
    assert!(email.contains("Details:     https://portal.fleetpulse.test/alarms?device_id="), "{email}");

    // SIGKILL and restart: the active alarms are taken over, their firing email is not sent again.
    drop(devices);
    server.kill9();
    let restarted_at = Instant::now();
    let server = TestServer::start(dir.path(), Some(ports), &config);
    let api = Api::login(&server.api()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(smtp.messages().len(), 1, "nothing sent twice after the restart");

    // One alarm acknowledged: the reminder a minute later lists the other two.
    let active = api.get(&format!("/api/v1/alarms?enterprise_id={enterprise}&status=active")).await;
    let ids: Vec<u64> = active["items"].as_array().unwrap().iter().map(|a| a["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{active}");
    api.post(&format!("/api/v1/alarms/{}/acknowledge", ids[0]), json!({})).await;
    let with_reminder = emails(&smtp, 2, Duration::from_secs(90)).await;
    assert_eq!(with_reminder.len(), 2, "a reminder after the repeat interval");
    assert!(restarted_at.elapsed() >= Duration::from_secs(55), "not before the repeat interval");
    let reminder = &with_reminder[1];
    assert!(reminder.contains("Reminder: alarms still active for Burst Co: 2 alarms"), "{reminder}");

    // A manual clear sends its resolution.
    api.post(&format!("/api/v1/alarms/{}/clear", ids[1]), json!({})).await;
    let all = emails(&smtp, 3, Duration::from_secs(10)).await;
    assert_eq!(all.len(), 3);
    assert!(all[2].contains("Resolved alarms for Burst Co: 1 alarm"), "{}", all[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_strategies_and_unselected_types_or_severities_send_nothing() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &mail_config(&smtp, ""));
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Quiet Co").await;
    let disabled = strategy(&api, enterprise, json!({"enabled": false, "receivers": ["a@quiet.test"]})).await;
    strategy(&api, enterprise, json!({"alarm_types": [301], "receivers": ["b@quiet.test"]})).await;
    strategy(&api, enterprise, json!({"severities": ["critical"], "receivers": ["c@quiet.test"]})).await;

    let mut dev = device(&server, &credential, "0015650000c1").await;
    dev.send(&[alarm(1, 202, true, "rebooted")]).await; // major: no strategy selects it
    acked(&mut dev, 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(smtp.messages().is_empty(), "{:#?}", smtp.messages());

    dev.send(&[alarm(2, 301, true, "call failed")]).await; // minor, type 301: only b
    acked(&mut dev, 2).await;
    let got = emails(&smtp, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().len(), 1, "{got:#?}");
    assert_eq!(to(&got[0]), "b@quiet.test");

    // Enabling a strategy takes effect at once (the engine reloads on the API's change).
    api.post(&format!("/api/v1/alarm-strategies/{disabled}/enable"), json!({})).await;
    dev.send(&[alarm(3, 203, true, "meet now failed")]).await; // major: now a gets it
    acked(&mut dev, 3).await;
    let got = emails(&smtp, 2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().len(), 2, "{got:#?}");
    assert_eq!(to(&got[1]), "a@quiet.test");
    assert!(got[1].contains("Meet now failure"), "{}", got[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_smtp_refusal_is_retried_and_delivered_once() {
    let smtp = SmtpServer::start_failing(451, 1);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &mail_config(&smtp, ""));
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Retry Co").await;
    strategy(&api, enterprise, json!({})).await;
    let mut dev = device(&server, &credential, "0015650000d1").await;
    let sent = Instant::now();
    dev.send(&[alarm(1, 102, true, "register failure")]).await;
    acked(&mut dev, 1).await;
    let got = emails(&smtp, 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "delivered after the retry");
    assert!(sent.elapsed() >= Duration::from_millis(900), "after the 1 s backoff");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 1, "once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_smtp_acceptance_and_the_sent_mark_sends_at_most_twice() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = mail_config(&smtp, "");
    let fault = [("FLEETPULSE_FAULT", "abort-after-smtp-accept")];
    let mut server = TestServer::start_with_env(dir.path(), None, &config, &fault);
    let ports = (server.quic_addr, server.http_addr);
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Crash Co").await;
    strategy(&api, enterprise, json!({})).await;
    let mut dev = device(&server, &credential, "0015650000e1").await;
    dev.send(&[alarm(1, 107, true, "kernel panic")]).await;
    acked(&mut dev, 1).await;
    assert!(server.wait_exit(Duration::from_secs(15)).is_some(), "the injected fault aborts the server");
    assert_eq!(smtp.messages().len(), 1, "accepted before the crash");

    let _restarted = TestServer::start(dir.path(), Some(ports), &config);
    let got = emails(&smtp, 2, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = smtp.messages();
    assert_eq!(all.len(), 2, "at least once, at most twice: {got:#?}");
    assert_eq!(message_id(&all[0]), message_id(&all[1]), "the duplicate carries the same Message-ID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_10000_alarms_is_rate_limited_into_digests_and_other_enterprises_keep_flowing() {
    let _heavy = HEAVY.lock().await;
    const PER_MINUTE: usize = 6;
    const DEVICES: u64 = 20;
    const CYCLES: u64 = 500; // raise + clear per device: 10,000 raises in all
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}per_receiver_per_minute = {PER_MINUTE}\nbatch = 10000\n\
         [ingest]\ndevice_rate = 100000\ndevice_burst = 100000\nenterprise_rate = 100000\nenterprise_burst = 100000\n",
        mail_config(&smtp, "")
    );
    let server = TestServer::start(dir.path(), None, &config);
    let api = Api::login(&server.api()).await;
    let (storm, storm_credential) = api.enterprise("Storm Co").await;
    strategy(&api, storm, json!({"receivers": ["storm@example.test"]})).await; // grouping off: the worst case
    let (_calm, calm_credential) = api.enterprise("Calm Co").await;
    let mut calm = device(&server, &calm_credential, "0015650000f0").await;

    // Another enterprise's device sends a heartbeat every 100 ms for the whole run (the storm's
    // ingest, evaluation, outbox and digests); its worst acknowledgement time is measured.
    let (stop_calm, stopped) = tokio::sync::watch::channel(false);
    let calm_task = tokio::spawn(async move {
        let (mut worst, mut seq) = (Duration::ZERO, 0);
        while !*stopped.borrow() {
            seq += 1;
            let t0 = Instant::now();
            calm.send(&[RawDevice::data(seq, Message::Heartbeat(Heartbeat { uptime_s: seq }))]).await;
            acked(&mut calm, seq).await;
            worst = worst.max(t0.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (worst, seq)
    });

    let started = Instant::now();
    let mut storm_tasks = Vec::new();
    for d in 0..DEVICES {
        let mut dev = device(&server, &storm_credential, &format!("0015650010{d:02}")).await;
        storm_tasks.push(tokio::spawn(async move {
            let frames: Vec<Uplink> =
                (0..CYCLES * 2).map(|i| alarm(i + 1, 105, i % 2 == 0, &format!("storm {d}/{}", i / 2))).collect();
            for chunk in frames.chunks(100) {
                dev.send(chunk).await;
            }
            acked(&mut dev, CYCLES * 2).await;
            dev
        }));
    }
    for t in storm_tasks {
        t.await.unwrap();
    }
    println!("storm ingested in {:.1} s", started.elapsed().as_secs_f64());

    // Every notification (a firing and a resolution per raise) arrives, merged into digests.
    let expected = (DEVICES * CYCLES * 2) as usize;
    let deadline = Instant::now() + Duration::from_secs(90);
    let messages = loop {
        let messages = smtp.messages();
        let delivered: usize = messages.iter().map(|m| notifications_in(m)).sum();
        if delivered >= expected || Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed_min = started.elapsed().as_secs_f64() / 60.0;
    let delivered: usize = messages.iter().map(|m| notifications_in(m)).sum();
    println!("{} emails carried {delivered} notifications in {:.1} s", messages.len(), elapsed_min * 60.0);
    stop_calm.send(true).unwrap();
    let (worst, heartbeats) = calm_task.await.unwrap();
    println!("worst calm acknowledgement {worst:?} over {heartbeats} heartbeats");
    assert!(heartbeats >= 20, "the calm device was measured throughout");
    assert!(worst < Duration::from_secs(2), "the calm enterprise stalled for {worst:?}");
    if delivered != expected {
        let kept = dir.keep();
        println!("data directory kept for inspection: {}", kept.display());
    }
    assert_eq!(delivered, expected, "nothing dropped");
    let allowed = PER_MINUTE + (elapsed_min * PER_MINUTE as f64).ceil() as usize;
    assert!(messages.len() <= allowed, "{} emails, the rate limit allows {allowed}", messages.len());
    assert!(messages.iter().all(|m| to(m) == "storm@example.test"));
    // The worker records the digests' messages as sent after the relay accepted them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let metrics = api.metrics().await;
        if metric(&metrics, "fleetpulse_outbox_messages_sent_total") >= expected as f64 || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metric(&metrics, "fleetpulse_alarm_events_total") >= 20_000.0, "{metrics}");
    assert_eq!(metric(&metrics, "fleetpulse_alarm_notifications_queued_total"), expected as f64);
    assert_eq!(metric(&metrics, "fleetpulse_outbox_messages_sent_total"), expected as f64);
    assert_eq!(metric(&metrics, "fleetpulse_outbox_emails_sent_total"), messages.len() as f64);
    assert!(metric(&metrics, "fleetpulse_outbox_digests_sent_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_threshold_raises_high_cpu_usage_and_a_low_sample_clears_it() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &mail_config(&smtp, ""));
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Hot Co").await;
    let rule = json!([{"metric": "cpu", "above_percent": 80.0, "for_minutes": 0}]);
    strategy(&api, enterprise, json!({"alarm_types": [401], "thresholds": rule})).await;
    let mut dev = device(&server, &credential, "0015650000a7").await;
    let cpu = |seq: u64, pct: u16| {
        RawDevice::data(
            seq,
            Message::ResourceReport(ResourceReport { cpu_centi_pct: pct * 100, mem_used_bytes: 1, mem_total_bytes: 4 }),
        )
    };
    dev.send(&[cpu(1, 50), cpu(2, 95)]).await;
    acked(&mut dev, 2).await;
    let got = emails(&smtp, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("Firing alarms for Hot Co: 1 alarm") && got[0].contains("High CPU usage"), "{}", got[0]);
    let path = format!("/api/v1/alarms?enterprise_id={enterprise}&code=401");
    let records = api.get(&path).await;
    assert_eq!(records["items"].as_array().unwrap().len(), 1, "{records}");
    assert_eq!(records["items"][0]["status"], "active");

    dev.send(&[cpu(3, 10)]).await;
    acked(&mut dev, 3).await;
    let got = emails(&smtp, 2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    assert!(got[1].contains("Resolved alarms for Hot Co: 1 alarm"), "{}", got[1]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.get(&path).await["items"][0]["status"] != "cleared" {
        assert!(Instant::now() < deadline, "the record clears");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The feed behind the bell icon shows it, newest first.
    let feed = api.get(&format!("/api/v1/alarms/latest?enterprise_id={enterprise}")).await;
    assert_eq!(feed["items"][0]["code"], 401, "{feed}");
    assert_eq!(feed["unread"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_strategy_notifies_for_an_enterprise_that_has_none_and_not_for_one_that_opted_out() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &mail_config(&smtp, ""));
    let api = Api::login(&server.api()).await;
    let reseller = api.post("/api/v1/channels", json!({"name": "Reseller", "allow_sub_channels": true})).await["id"]
        .as_u64()
        .unwrap();
    let dealer =
        api.post("/api/v1/channels", json!({"name": "Dealer", "parent_id": reseller})).await["id"].as_u64().unwrap();
    let enterprise = |name: &'static str| {
        let api = &api;
        async move {
            let e = api.post("/api/v1/enterprises", json!({"name": name, "channel_id": dealer})).await;
            (e["id"].as_u64().unwrap(), e["credential"].as_str().unwrap().to_owned())
        }
    };
    let (_, shop_credential) = enterprise("Shop Co").await;
    let (quiet, quiet_credential) = enterprise("Quiet Co").await;
    let noc = api
        .post(
            &format!("/api/v1/channels/{reseller}/alarm-strategies"),
            json!({
                "name": "Reseller NOC",
                "receivers": ["noc@reseller.test"],
                "group_wait_ms": 0,
                "group_interval_ms": 1000,
                "inheritance": {"sub_channel_levels": 1, "enterprises_may": "opt_out"},
            }),
        )
        .await["id"]
        .as_u64()
        .unwrap();
    let chosen = api
        .put(
            &format!("/api/v1/enterprises/{quiet}/alarm-strategy-choices"),
            json!({"strategy_id": noc, "choice": "opt_out"}),
        )
        .await;
    assert_eq!(chosen["items"][0]["status"], "opted_out", "{chosen}");

    let mut quiet_device = device(&server, &quiet_credential, "0015650000d2").await;
    quiet_device.send(&[alarm(1, 105, true, "quiet crash")]).await;
    acked(&mut quiet_device, 1).await;
    let mut shop_device = device(&server, &shop_credential, "0015650000d1").await;
    shop_device.send(&[alarm(1, 105, true, "shop crash")]).await;
    acked(&mut shop_device, 1).await;
    let got = emails(&smtp, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 1, "only the enterprise that did not opt out: {:#?}", smtp.messages());
    assert_eq!(to(&got[0]), "noc@reseller.test");
    assert!(got[0].contains("Shop Co") && got[0].contains("shop crash"), "{}", got[0]);
}

/// Reads downlinks until a command arrives (acknowledgements in between are skipped); its id.
async fn next_command(dev: &mut RawDevice) -> u64 {
    loop {
        match dev.next().await {
            Some(Downlink::Command(c)) => return c.command_id,
            Some(Downlink::Ack(_)) => {}
            other => panic!("expected a command, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_holds_back_a_rollouts_reboots_and_notifies_what_is_still_broken_at_its_end() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &mail_config(&smtp, ""));
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Rollout Co").await;
    strategy(&api, enterprise, json!({"group_wait_ms": 1000})).await;
    let mut d1 = device(&server, &credential, "0015650000e1").await;
    let mut d2 = device(&server, &credential, "0015650000e2").await;
    let listed = api.get(&format!("/api/v1/devices?enterprise_id={enterprise}")).await;
    let ids: Vec<u64> = listed["items"].as_array().unwrap().iter().map(|d| d["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{listed}");

    // A reboot rollout for both phones, and a window over their reboots and offline alarms
    // for as long as it runs.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let task = api
        .post(
            "/api/v1/tasks",
            json!({
                "enterprise_id": enterprise, "name": "Rollout", "kind": "reboot",
                "targets": {"device_ids": ids}, "schedule": {"kind": "once", "at": now + 1_000},
            }),
        )
        .await;
    let task_id = task["id"].as_u64().unwrap();
    let window = json!({
        "name": "Rollout window", "alarm_types": [202, 109],
        "scope": {"kind": "devices", "ids": ids},
        "timing": {"kind": "while_task", "task_id": task_id},
    });
    let window = api.post(&format!("/api/v1/enterprises/{enterprise}/maintenance-windows"), window).await;
    assert_eq!(window["settings"]["name"], "Rollout window", "{window}");

    // The scheduler runs the task (it looks for due tasks at least every 30 s); both phones get
    // the command and reboot; the first comes back fine, the second does not.
    let runs = format!("/api/v1/tasks/{task_id}/runs");
    until(
        "the rollout runs",
        Duration::from_secs(60),
        || api.get(&runs),
        |r: &serde_json::Value| r["items"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let c1 = next_command(&mut d1).await;
    let c2 = next_command(&mut d2).await;
    d1.send(&[alarm(1, 202, true, "rebooted for the rollout (phone 1)")]).await;
    acked(&mut d1, 1).await;
    d2.send(&[alarm(1, 202, true, "rebooted for the rollout (phone 2)")]).await;
    acked(&mut d2, 1).await;
    d1.send(&[alarm(2, 202, false, "")]).await;
    acked(&mut d1, 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(smtp.messages().is_empty(), "nothing while the rollout runs: {:#?}", smtp.messages());
    let active = api.get(&format!("/api/v1/alarms?enterprise_id={enterprise}&status=active")).await;
    let broken = active["items"].as_array().unwrap();
    assert_eq!(broken.len(), 1, "{active}");
    let broken = broken[0]["id"].as_u64().unwrap();
    let story = api.get(&format!("/api/v1/alarms/{broken}/notifications")).await;
    assert_eq!(story["window"]["window_name"], "Rollout window", "{story}");
    assert_eq!(story["window"]["state"], "suppressed", "{story}");

    // The rollout finishes: what is still broken is notified, once; what recovered is not.
    let done = |seq, command_id| {
        RawDevice::data(
            seq,
            Message::CommandResult(CommandResult {
                command_id,
                status: CommandStatus::Succeeded,
                output: String::new(),
                reason: String::new(),
            }),
        )
    };
    d1.send(&[done(3, c1)]).await;
    acked(&mut d1, 3).await;
    d2.send(&[done(2, c2)]).await;
    acked(&mut d2, 2).await;
    let got = emails(&smtp, 1, Duration::from_secs(40)).await;
    assert_eq!(got.len(), 1, "one email at the window's end");
    assert!(got[0].contains("Firing alarms for Rollout Co: 1 alarm"), "{}", got[0]);
    assert!(got[0].contains("rebooted for the rollout (phone 2)"), "{}", got[0]);
    assert!(!got[0].contains("phone 1"), "{}", got[0]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 1, "once");
    // The notification audit tells the whole story, the relay's reply and Message-ID included.
    let story_path = format!("/api/v1/alarms/{broken}/notifications");
    let story = until(
        "the audit has the sent entry",
        Duration::from_secs(10),
        || api.get(&story_path),
        |s: &serde_json::Value| s["entries"].as_array().is_some_and(|e| e.iter().any(|x| x["event"] == "sent")),
    )
    .await;
    assert_eq!(story["window"]["state"], "released", "{story}");
    let events: Vec<&str> = story["entries"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["suppressed_by_window", "released", "planned", "sent"], "{story}");
    let sent = &story["entries"][3]["detail"];
    assert!(sent.as_str().unwrap().starts_with("accepted: 250"), "{story}");
    assert!(sent.as_str().unwrap().contains(&format!("Message-ID {}", message_id(&got[0]).unwrap())), "{story}");
}

/// ALM-3: a strategy's receiver may be an account: notified at its email of the moment; while it
/// is frozen its notification is left out with a note in the audit, and the strategy's plain
/// address still receives. The operation log records the receiver and email changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_receivers_follow_their_email_and_are_dropped_while_frozen() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &mail_config(&smtp, ""));
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Receiver Co").await;
    let lead = json!({"email": "lead@receiver.test", "password": "receiver-password-1", "role": "enterprise_admin",
        "enterprise_id": enterprise});
    let lead = api.post("/api/v1/accounts", lead).await["id"].as_u64().unwrap();
    let id = strategy(&api, enterprise, json!({"receivers": [{"account": lead}, "ops@example.test"]})).await;
    let mut dev = device(&server, &credential, "00156500c001").await;
    // Alarm emails only (the new account's details email is not one), in arrival order.
    let firing = || -> Vec<String> {
        smtp.messages().into_iter().filter(|m| m.contains("Firing alarms for Receiver Co")).collect()
    };
    let firing_count = |n: usize| {
        let firing = &firing;
        until(
            "alarm emails",
            Duration::from_secs(10),
            move || std::future::ready(firing()),
            move |m: &Vec<String>| m.len() >= n,
        )
    };
    let receivers_from = |from: usize| {
        let mut tos: Vec<String> = firing()[from..].iter().map(|m| to(m).to_owned()).collect();
        tos.sort();
        tos
    };

    dev.send(&[alarm(1, 105, true, "first crash")]).await;
    acked(&mut dev, 1).await;
    firing_count(2).await;
    assert_eq!(receivers_from(0), ["lead@receiver.test", "ops@example.test"]);

    // The account's email changes: the next alarm goes to the new address.
    api.put(&format!("/api/v1/accounts/{lead}/email"), json!({"email": "new-lead@receiver.test"})).await;
    dev.send(&[alarm(2, 106, true, "no response")]).await;
    acked(&mut dev, 2).await;
    firing_count(4).await;
    assert_eq!(receivers_from(2), ["new-lead@receiver.test", "ops@example.test"]);

    // Frozen: its notification is left out and the audit says why; the address still receives.
    api.post(&format!("/api/v1/accounts/{lead}/freeze"), json!({})).await;
    dev.send(&[alarm(3, 301, true, "third")]).await;
    acked(&mut dev, 3).await;
    firing_count(5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receivers_from(4), ["ops@example.test"], "nothing more");
    let active = api.get(&format!("/api/v1/alarms?enterprise_id={enterprise}&code=301")).await;
    let third = active["items"][0]["id"].as_u64().unwrap();
    let story_path = format!("/api/v1/alarms/{third}/notifications");
    let story = until(
        "the audit has the suppressed receiver",
        Duration::from_secs(10),
        || api.get(&story_path),
        |s: &serde_json::Value| {
            s["entries"].as_array().is_some_and(|e| e.iter().any(|x| x["event"] == "suppressed_receiver"))
        },
    )
    .await;
    let entries = story["entries"].as_array().unwrap();
    let dropped = entries.iter().find(|e| e["event"] == "suppressed_receiver").unwrap();
    let note = format!("receiver account {lead} frozen");
    assert!(dropped["detail"].as_str().unwrap().starts_with(&note), "{story}");
    assert!(entries.iter().any(|e| e["event"] == "planned" && e["receiver"] == "ops@example.test"), "{story}");

    // The receiver change and the email change are in the operation log.
    api.put(&format!("/api/v1/alarm-strategies/{id}"), json!({"name": "ops", "receivers": ["ops@example.test"]})).await;
    let log = api.get("/api/v1/operation-logs").await.to_string();
    for path in [format!("/api/v1/alarm-strategies/{id}"), format!("/api/v1/accounts/{lead}/email")] {
        assert!(log.contains(&format!("\"{path}\"")), "{path} in {log}");
    }
}

/// Issue 18 item 5: a store that refuses the alarm service's outbox writes for a moment is
/// retried and the email sent once it is back; refusing them past the retries dead-letters the
/// notification (reason, metric, API listing), and a replay queues it: emailed once, even when
/// replayed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_an_outbox_refusing_writes_is_retried_then_dead_lettered_and_a_replay_emails_once() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    // 7 attempts, 100 ms doubling: given up after about 6.3 s.
    let config = mail_config(&smtp, "store_attempts = 7\n");
    let server = TestServer::start(dir.path(), None, &config);
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Dead Letter Co").await;
    strategy(&api, enterprise, json!({"group_wait_ms": 200})).await;
    let dead = "fleetpulse_dead_letters_total{stage=\"alarm_effects\",reason=\"store_unavailable\"}";

    // Refused for about 2 s: retried, then sent once.
    outbox_read_only(dir.path(), true);
    let mut first = device(&server, &credential, "00156500d001").await;
    first.send(&[alarm(1, 105, true, "crash while the outbox refused writes")]).await;
    acked(&mut first, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(smtp.messages().is_empty(), "nothing can be queued yet");
    outbox_read_only(dir.path(), false);
    let sent = emails(&smtp, 1, Duration::from_secs(15)).await;
    assert!(sent[0].contains("crash while the outbox refused writes"), "{}", sent[0]);
    assert_eq!(metric(&api.metrics().await, dead), 0.0, "retried, not given up");

    // Refused past the retries: a dead letter, counted and listed; nothing sent.
    outbox_read_only(dir.path(), true);
    let mut second = device(&server, &credential, "00156500d002").await;
    second.send(&[alarm(1, 106, true, "crash past the retries")]).await;
    acked(&mut second, 1).await;
    until("the dead letter's count", Duration::from_secs(30), || api.metrics(), |m| metric(m, dead) == 1.0).await;
    let listed = api.get("/api/v1/dead-letters?stage=alarm_effects").await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    let letter = &items[0];
    assert_eq!(letter["reason"], "store_unavailable", "{letter}");
    assert!(letter["detail"].as_str().unwrap().contains("read-only"), "{letter}");
    assert_eq!((letter["attempts"].as_u64(), letter["enterprise_id"].as_u64()), (Some(7), Some(enterprise)));
    assert_eq!(letter["payload"]["kind"], "notification", "{letter}");
    assert_eq!(letter["payload"]["items"][0]["description"], "crash past the retries", "{letter}");
    let id = letter["id"].as_u64().unwrap();
    // The alarm itself is recorded (the shard stored it with the frame).
    let active = api.get(&format!("/api/v1/alarms?enterprise_id={enterprise}&status=active")).await;
    assert_eq!(active["items"].as_array().unwrap().len(), 2, "{active}");

    // A replay while the outbox still refuses: 503, kept.
    let replay = format!("/api/v1/dead-letters/{id}/replay");
    let (status, body) = api.call(reqwest::Method::POST, &replay, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(api.get("/api/v1/dead-letters").await["items"].as_array().unwrap().len(), 1);

    // Back: replayed, emailed once; the letter is gone, a second replay finds nothing.
    outbox_read_only(dir.path(), false);
    let (status, body) = api.call(reqwest::Method::POST, &replay, None).await;
    assert_eq!((status, body["stage"].as_str()), (200, Some("alarm_effects")), "{body}");
    let sent = emails(&smtp, 2, Duration::from_secs(15)).await;
    assert!(sent[1].contains("crash past the retries"), "{}", sent[1]);
    let (status, _) = api.call(reqwest::Method::POST, &replay, None).await;
    assert_eq!(status, 404);
    let all = api.post("/api/v1/dead-letters/replay?stage=alarm_effects", json!({})).await;
    assert_eq!(all["replayed"], 0, "{all}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 2, "each alarm emailed once");
    let log = api.get("/api/v1/operation-logs?operation=POST%20/api/v1/dead-letters/%7Bid%7D/replay").await;
    assert_eq!(log["items"].as_array().unwrap().len(), 3, "every replay is logged: {log}");
}

/// Issue 18 item 5: durable events the alarm engine was not handed (dead letters of stage
/// `alarm_engine`, as a stopped engine leaves them) are evaluated when replayed; the same event
/// replayed twice is emailed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_the_alarm_engine_are_evaluated_when_replayed_and_emailed_once() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &mail_config(&smtp, ""));
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Replay Co").await;
    strategy(&api, enterprise, json!({"group_wait_ms": 200})).await;
    let _phone = device(&server, &credential, "00156500d101").await;
    let listed = api.get(&format!("/api/v1/devices?enterprise_id={enterprise}")).await;
    let device_id = listed["items"][0]["id"].as_u64().unwrap();
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let event = json!({
        "kind": "event", "device_id": device_id, "enterprise_id": enterprise, "at": at,
        "input": {"input": "alarm", "code": 105, "clear": false, "description": "crash the engine never saw"}
    });
    let db = rusqlite::Connection::open(dir.path().join("fleetpulse.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    for _ in 0..2 {
        db.execute(
            "INSERT INTO dead_letters (stage, reason, detail, enterprise_id, device_id, payload, attempts, at) \
             VALUES ('alarm_engine', 'stage_stopped', 'the alarm engine has stopped', ?1, ?2, ?3, 1, ?4)",
            rusqlite::params![enterprise, device_id, event.to_string(), at],
        )
        .unwrap();
    }
    let letters = api.get("/api/v1/dead-letters?stage=alarm_engine").await;
    let first = letters["items"][0]["id"].as_u64().unwrap();
    let (status, body) = api.call(reqwest::Method::POST, &format!("/api/v1/dead-letters/{first}/replay"), None).await;
    assert_eq!(status, 200, "{body}");
    let sent = emails(&smtp, 1, Duration::from_secs(15)).await;
    assert!(sent[0].contains("crash the engine never saw"), "{}", sent[0]);
    let all = api.post("/api/v1/dead-letters/replay?stage=alarm_engine", json!({})).await;
    assert_eq!((all["replayed"].as_u64(), all["failed"].as_array().map(Vec::len)), (Some(1), Some(0)), "{all}");
    assert_eq!(api.get("/api/v1/dead-letters").await["items"], json!([]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 1, "the same event replayed twice is emailed once");
}

/// A device of the incident test: Hello with `heartbeat_s`, then its status from a public
/// address in 203.0.113.0/24 (the site's network).
async fn site_device(server: &TestServer, credential: &str, i: u8, heartbeat_s: u32) -> RawDevice {
    let mut dev = RawDevice::connect(server).await;
    dev.send(&[RawDevice::hello(&format!("0015650c00{i:02x}"), credential, heartbeat_s)]).await;
    match dev.next().await {
        Some(Downlink::Welcome(_)) => {}
        other => panic!("expected Welcome, got {other:?}"),
    }
    site_status(&mut dev, i, 1).await;
    dev
}

/// Sends the device's status from 203.0.113.`i` as frame `seq` (which also keeps it online).
async fn site_status(dev: &mut RawDevice, i: u8, seq: u64) {
    use fleetpulse_proto::wire::{CallStatus, IpAddress, StatusChange};
    let status = StatusChange {
        lines: vec![],
        call_status: CallStatus::Idle,
        firmware: "96.86.0.100".into(),
        public_ip: Some(IpAddress::V4([203, 0, 113, i])),
        private_ip: None,
        uptime_s: 10,
        last_reboot_ms: None,
    };
    dev.send(&[RawDevice::data(seq, Message::StatusChange(status))]).await;
    acked(dev, seq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_devices_of_one_site_going_offline_send_one_incident_email_and_one_resolution() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), None, &mail_config(&smtp, ""));
    let api = Api::login(&server.api()).await;
    let (enterprise, credential) = api.enterprise("Site Co").await;
    let site = json!({"enterprise_id": enterprise, "name": "Berlin-3", "subnets": [{"public": "203.0.113.0/24"}]});
    let site_id = api.post("/api/v1/sites", site).await["id"].as_u64().unwrap();

    // 40 phones at Berlin-3: 30 that beat every 5 s (offline 15 s after they go quiet) and 10
    // that stay.
    let mut leaving = Vec::new();
    let mut staying = Vec::new();
    for i in 1..=40u8 {
        let heartbeat = if i <= 30 { 5 } else { 600 };
        let dev = site_device(&server, &credential, i, heartbeat).await;
        if i <= 30 { leaving.push(dev) } else { staying.push(dev) }
    }
    let in_site = format!("/api/v1/devices?enterprise_id={enterprise}&site_id={site_id}&limit=100");
    until(
        "40 phones are matched into Berlin-3",
        Duration::from_secs(30),
        || api.get(&in_site),
        |v: &serde_json::Value| v["items"].as_array().is_some_and(|a| a.len() == 40),
    )
    .await;
    let rule = json!({"min_devices": 5, "min_fraction_pct": 25, "window_s": 20, "resolve_fraction_pct": 100});
    strategy(&api, enterprise, json!({"group_wait_ms": 1000, "site_incident": rule})).await;

    // The 30 go quiet together (a last frame each, now that the strategy is in place): one
    // incident email, not 30 alarms.
    for (i, dev) in leaving.iter_mut().enumerate() {
        site_status(dev, i as u8 + 1, 2).await;
    }
    drop(leaving);
    let incidents = format!("/api/v1/incidents?enterprise_id={enterprise}");
    let listed = until(
        "the incident counts all 30",
        Duration::from_secs(90),
        || api.get(&incidents),
        |v: &serde_json::Value| v["items"][0]["affected"] == 30,
    )
    .await;
    let incident = &listed["items"][0];
    assert_eq!(
        (incident["site_name"].as_str(), incident["site_devices"].as_u64()),
        (Some("Berlin-3"), Some(40)),
        "{listed}"
    );
    assert_eq!(incident["resolved_at"], serde_json::Value::Null, "{listed}");
    // Past the window (20 s) and the group wait: still exactly one email.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let sent = smtp.messages();
    assert_eq!(sent.len(), 1, "one incident email: {sent:#?}");
    assert!(sent[0].contains("Incident: "), "{}", sent[0]);
    assert!(sent[0].contains(" of 40 devices at site Berlin-3: Offline for Site Co."), "{}", sent[0]);
    let id = incident["id"].as_u64().unwrap();
    let detail = api.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(detail["members"].as_array().map(Vec::len), Some(30), "{detail}");
    // Each member alarm says which incident it is part of.
    let active = api.get(&format!("/api/v1/alarms?enterprise_id={enterprise}&status=active&limit=100")).await;
    let alarms = active["items"].as_array().unwrap();
    assert_eq!(alarms.len(), 30, "{active}");
    let one = alarms[0]["id"].as_u64().unwrap();
    let story = api.get(&format!("/api/v1/alarms/{one}/notifications")).await;
    assert_eq!(story["incidents"], json!([id]), "{story}");

    // They come back: one resolution, once.
    let mut back = Vec::new();
    for i in 1..=30u8 {
        back.push(site_device(&server, &credential, i, 600).await);
    }
    let sent = emails(&smtp, 2, Duration::from_secs(30)).await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert!(sent[1].contains("Incident resolved: 30 of 30 devices back at site Berlin-3: Offline"), "{}", sent[1]);
    let detail = api.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!((detail["back"].as_u64(), detail["resolved_at"].is_u64()), (Some(30), true), "{detail}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 2, "nothing more: {:#?}", smtp.messages());
    drop(staying);
}
