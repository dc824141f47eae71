//! Commands down the session (ING-8), end to end over real QUIC against an embedded store:
//! delivery to connected and reconnecting devices, answers made durable before their ack,
//! resending what was never accepted (also across a server restart), expiry, answers for
//! another device's command, and the refusal of an unsupported protocol version.

mod common;

use std::time::Duration;

use common::{Device, Harness, WAIT, hello, open};
use fleetpulse_proto::close_code;
use fleetpulse_proto::wire::{CommandStatus, Downlink, Heartbeat, Message};
use fleetpulse_store::CommandState;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_queued_command_reaches_the_connected_device_and_its_answers_are_stored() {
    let h = Harness::start().await;
    let mut device = Device::connect(&h, "00155d000001").await;
    let id = h.enqueue(device.id, "ping", r#"{"host":"10.0.0.1"}"#, HOUR).await;
    let command = device.next_command().await;
    assert_eq!(command.command_id, id.0);
    assert_eq!(command.kind, "ping");
    assert_eq!(command.args_json, r#"{"host":"10.0.0.1"}"#);
    assert_eq!(command.deadline_ms, h.command(id).await.deadline.0);

    device.answer(id.0, CommandStatus::Accepted, "", "").await;
    let seq = device.answer(id.0, CommandStatus::Succeeded, "4 packets, 0% loss", "").await;
    device.wait_ack(seq).await;
    // The ack means the answer is durable: no waiting.
    let stored = h.command(id).await;
    assert_eq!(stored.state, CommandState::Succeeded);
    assert_eq!(stored.output.as_deref(), Some("4 packets, 0% loss"));
    assert_eq!(stored.attempts, 1);
    assert!(stored.accepted_at.is_some() && stored.finished_at.is_some());

    // A resent answer is harmless: updates only move forward.
    let seq = device.answer(id.0, CommandStatus::Accepted, "", "").await;
    device.wait_ack(seq).await;
    assert_eq!(h.command(id).await.state, CommandState::Succeeded);
}

#[tokio::test]
async fn a_command_queued_while_the_device_is_offline_is_sent_when_it_connects() {
    let h = Harness::start().await;
    let device = Device::connect(&h, "00155d000002").await;
    let id = device.id;
    device.close().await;
    let first = h.enqueue(id, "reboot", "{}", HOUR).await;
    let second = h.enqueue(id, "ping", "null", HOUR).await;
    assert_eq!(h.command(first).await.state, CommandState::Queued);

    let mut device = Device::connect(&h, "00155d000002").await;
    assert_eq!(device.next_command().await.command_id, first.0);
    assert_eq!(device.next_command().await.command_id, second.0);
    let seq = device.answer(first.0, CommandStatus::Failed, "", "busy").await;
    device.wait_ack(seq).await;
    let stored = h.command(first).await;
    assert_eq!((stored.state, stored.reason.as_deref()), (CommandState::Failed, Some("busy")));
    assert_eq!(h.command(second).await.state, CommandState::Sent);
}

#[tokio::test]
async fn after_a_reconnect_only_the_commands_never_accepted_are_sent_again() {
    let h = Harness::start().await;
    let mut device = Device::connect(&h, "00155d000003").await;
    let accepted = h.enqueue(device.id, "ping", "{}", HOUR).await;
    let unaccepted = h.enqueue(device.id, "reboot", "{}", HOUR).await;
    assert_eq!(device.next_command().await.command_id, accepted.0);
    assert_eq!(device.next_command().await.command_id, unaccepted.0);
    let seq = device.answer(accepted.0, CommandStatus::Accepted, "", "").await;
    device.wait_ack(seq).await;
    device.close().await;

    let mut device = Device::connect(&h, "00155d000003").await;
    // Claims go oldest first: had the accepted command been resent, it would come first.
    let resent = device.next_command().await;
    assert_eq!(resent.command_id, unaccepted.0, "the same id: the device deduplicates by it");
    let later = h.enqueue(device.id, "ping", "{}", HOUR).await;
    assert_eq!(device.next_command().await.command_id, later.0);
    assert_eq!(h.command(accepted).await.state, CommandState::Accepted);
    assert_eq!(h.command(accepted).await.attempts, 1);
    let resent = h.command(unaccepted).await;
    assert_eq!((resent.state, resent.attempts), (CommandState::Sent, 2));
}

#[tokio::test]
async fn a_restarted_server_resends_the_commands_in_flight() {
    let mut h = Harness::start().await;
    let mut device = Device::connect(&h, "00155d000004").await;
    let running = h.enqueue(device.id, "ping", "{}", HOUR).await;
    let in_flight = h.enqueue(device.id, "reboot", "{}", HOUR).await;
    assert_eq!(device.next_command().await.command_id, running.0);
    assert_eq!(device.next_command().await.command_id, in_flight.0);
    let seq = device.answer(running.0, CommandStatus::Running, "", "").await;
    device.wait_ack(seq).await;

    h.restart().await;
    drop(device);
    let mut device = Device::connect(&h, "00155d000004").await;
    assert_eq!(device.next_command().await.command_id, in_flight.0);
    let later = h.enqueue(device.id, "ping", "{}", HOUR).await;
    assert_eq!(device.next_command().await.command_id, later.0, "the running command is not resent");
    let seq = device.answer(running.0, CommandStatus::Succeeded, "done", "").await;
    device.wait_ack(seq).await;
    assert_eq!(h.command(running).await.state, CommandState::Succeeded);
}

#[tokio::test]
async fn a_command_past_its_deadline_expires_without_an_answer() {
    let h = Harness::start().await;
    let mut device = Device::connect(&h, "00155d000005").await;
    let id = h.enqueue(device.id, "ping", "{}", Duration::from_millis(1500)).await;
    assert_eq!(device.next_command().await.command_id, id.0);
    let expired = h.wait_command(id, |c| c.state == CommandState::Expired).await;
    assert_eq!(expired.reason.as_deref(), Some(CommandState::Sent.expiry_reason()));
    assert!(expired.finished_at.is_some());
    // A late answer changes nothing.
    let seq = device.answer(id.0, CommandStatus::Succeeded, "late", "").await;
    device.wait_ack(seq).await;
    assert_eq!(h.command(id).await.state, CommandState::Expired);
}

#[tokio::test]
async fn an_answer_for_another_devices_command_is_rejected_and_changes_nothing() {
    let h = Harness::start().await;
    let mut mallory = Device::connect(&h, "00155d000006").await;
    let mut victim = Device::connect(&h, "00155d000007").await;
    let id = h.enqueue(victim.id, "reboot", "{}", HOUR).await;
    assert_eq!(victim.next_command().await.command_id, id.0);
    let before = h.command(id).await;

    let seq = mallory.answer(id.0, CommandStatus::Succeeded, "pwned", "").await;
    match mallory.next().await {
        Downlink::Rejected(r) => {
            assert_eq!(r.seq, seq);
            assert!(r.reason.contains("not a command of this device"), "{}", r.reason);
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    let unknown = mallory.answer(999_999, CommandStatus::Accepted, "", "").await;
    assert!(matches!(mallory.next().await, Downlink::Rejected(r) if r.seq == unknown));
    mallory.wait_ack(unknown).await;
    assert_eq!(h.command(id).await, before);
    // The session goes on.
    let seq = mallory.send(Message::Heartbeat(Heartbeat { uptime_s: 5 })).await;
    mallory.wait_ack(seq).await;
}

#[tokio::test]
async fn protocol_version_1_is_refused_naming_the_versions_spoken() {
    let h = Harness::start().await;
    let (_endpoint, conn, _send, _recv) = open(&h, &hello("00155d000008", &h.credential, 1)).await;
    let closed = tokio::time::timeout(WAIT, conn.closed()).await.expect("closed in time");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), u64::from(close_code::UNSUPPORTED_VERSION));
            let reason = String::from_utf8_lossy(&c.reason);
            assert!(reason.contains("2..=2"), "{reason}");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_deleted_device_s_session_is_closed_with_device_deleted() {
    let h = Harness::start().await;
    let device = Device::connect(&h, "00155d0000d1").await;
    let deleted = h.store.entities.delete_device(device.id).await.expect("delete").expect("the device");
    assert_eq!(deleted.id, device.id);
    let closer = h.ingest().session_closer();
    assert!(closer.close(device.id, close_code::DEVICE_DELETED, "deleted by an admin"));
    assert!(!closer.close(device.id, close_code::DEVICE_DELETED, "deleted by an admin"), "closed once");
    match tokio::time::timeout(WAIT, device.conn.closed()).await.expect("closed in time") {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), u64::from(close_code::DEVICE_DELETED));
            assert_eq!(String::from_utf8_lossy(&c.reason), "deleted by an admin");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    // Connecting again adds the device anew, with a new id.
    let again = Device::connect(&h, "00155d0000d1").await;
    assert_ne!(again.id, device.id);
}
