//! File upload streams (ING-8) over real QUIC against an embedded store: a file is stored and
//! readable chunk by chunk; a file above the limit, with a bad name or for another device's
//! command is refused before its content is read; bad checksums and short streams store
//! nothing; a third concurrent upload is refused.

mod common;

use std::time::Duration;

use common::{Device, Harness, content, sha256, stopped_with};
use fleetpulse_proto::wire::{CommandStatus, Downlink, FileHeader, FileRefused};
use fleetpulse_proto::{CommandId, DeviceId, FILE_REFUSED, FileId};
use fleetpulse_store::{FILE_CHUNK, Page};

const HOUR: Duration = Duration::from_secs(3600);

/// A device with a command it accepted, ready to upload its answer.
async fn device_with_command(h: &Harness, mac: &str) -> (Device, CommandId) {
    let mut device = Device::connect(h, mac).await;
    let id = h.enqueue(device.id, "fetch_log", "{}", HOUR).await;
    assert_eq!(device.next_command().await.command_id, id.0);
    let seq = device.answer(id.0, CommandStatus::Accepted, "", "").await;
    device.wait_ack(seq).await;
    (device, id)
}

fn header(command: CommandId, name: &str, body: &[u8]) -> FileHeader {
    FileHeader { command_id: command.0, name: name.into(), size: body.len() as u64, sha256: sha256(body) }
}

async fn files_of(h: &Harness, device: DeviceId) -> usize {
    h.store.entities.list_device_files(device, Page { after: 0, limit: 100 }).await.expect("store").len()
}

async fn refused(device: &mut Device) -> FileRefused {
    match device.next().await {
        Downlink::FileRefused(r) => r,
        other => panic!("expected FileRefused, got {other:?}"),
    }
}

fn no_temporary_files(h: &Harness) -> bool {
    std::fs::read_dir(h.dir.path().join("uploads")).expect("upload dir").next().is_none()
}

#[tokio::test]
async fn a_file_is_stored_and_readable_chunk_by_chunk() {
    let h = Harness::start().await;
    let (mut device, command) = device_with_command(&h, "00155d000101").await;
    let body = content(3 * 1024 * 1024 + 17);
    let welcome_max = device.welcome.max_file_bytes;
    assert_eq!(welcome_max, fleetpulse_ingest::DEFAULT_MAX_FILE_BYTES);
    device.upload(&header(command, "device.log", &body), &body).await;
    let stored = match device.next().await {
        Downlink::FileStored(s) => s,
        other => panic!("expected FileStored, got {other:?}"),
    };
    assert_eq!((stored.command_id, stored.name.as_str()), (command.0, "device.log"));

    let file = h.store.entities.file(FileId(stored.file_id)).await.expect("store").expect("stored");
    assert_eq!((file.device_id, file.command_id, file.size), (device.id, Some(command), body.len() as u64));
    assert_eq!(file.expires_at.0 - file.created_at.0, 10 * 24 * 3600 * 1000);
    let mut read = Vec::new();
    for index in 0.. {
        match h.store.entities.file_chunk(FileId(stored.file_id), index).await.expect("store") {
            Some(chunk) => {
                assert!(chunk.len() <= FILE_CHUNK);
                read.extend_from_slice(&chunk);
            }
            None => break,
        }
    }
    assert!(read == body, "the stored bytes are the uploaded ones");
    assert!(no_temporary_files(&h));
    // The device answers its command after its files, as the protocol says.
    let seq = device.answer(command.0, CommandStatus::Succeeded, "1 file", "").await;
    device.wait_ack(seq).await;
}

#[tokio::test]
async fn a_file_above_the_limit_is_refused_before_its_content() {
    let h = Harness::start_with(|c| c.max_file_bytes = 1024 * 1024).await;
    let (mut device, command) = device_with_command(&h, "00155d000102").await;
    assert_eq!(device.welcome.max_file_bytes, 1024 * 1024);
    let body = content(1024 * 1024 + 1);
    // Only the header is sent: the server stops the stream on it alone.
    let mut send = device.upload_header(&header(command, "big.pcap", &body)).await;
    assert_eq!(stopped_with(&mut send).await, Some(u64::from(FILE_REFUSED)));
    let r = refused(&mut device).await;
    assert_eq!((r.command_id, r.name.as_str()), (command.0, "big.pcap"));
    assert!(r.reason.contains("exceeds the limit"), "{}", r.reason);
    assert_eq!(files_of(&h, device.id).await, 0);
}

#[tokio::test]
async fn a_bad_checksum_or_a_short_stream_stores_nothing() {
    let h = Harness::start().await;
    let (mut device, command) = device_with_command(&h, "00155d000103").await;
    let body = content(200_000);
    let mut wrong = header(command, "a.log", &body);
    wrong.sha256[0] ^= 1;
    device.upload(&wrong, &body).await;
    assert!(refused(&mut device).await.reason.contains("SHA-256"));

    device.upload(&header(command, "b.log", &body), &body[..150_000]).await;
    let r = refused(&mut device).await;
    assert!(r.reason.contains("150000 of the 200000 bytes"), "{}", r.reason);

    let mut longer = body.clone();
    longer.extend_from_slice(b"extra");
    device.upload(&header(command, "c.log", &body), &longer).await;
    assert!(refused(&mut device).await.reason.contains("more than the 200000 bytes"));

    assert_eq!(files_of(&h, device.id).await, 0);
    assert!(no_temporary_files(&h));
}

#[tokio::test]
async fn a_bad_name_or_another_devices_command_is_refused_before_the_content() {
    let h = Harness::start().await;
    let (mut device, command) = device_with_command(&h, "00155d000104").await;
    let (_other, others) = device_with_command(&h, "00155d000105").await;
    let body = content(1000);

    let mut send = device.upload_header(&header(command, "../etc/passwd", &body)).await;
    assert_eq!(stopped_with(&mut send).await, Some(u64::from(FILE_REFUSED)));
    assert!(refused(&mut device).await.reason.contains("file name"));

    let mut send = device.upload_header(&header(others, "x.log", &body)).await;
    assert_eq!(stopped_with(&mut send).await, Some(u64::from(FILE_REFUSED)));
    let r = refused(&mut device).await;
    assert_eq!(r.command_id, others.0);
    assert!(r.reason.contains("not a command of this device"), "{}", r.reason);

    let mut send = device.upload_header(&header(CommandId(987_654), "x.log", &body)).await;
    assert_eq!(stopped_with(&mut send).await, Some(u64::from(FILE_REFUSED)));
    refused(&mut device).await;
    assert_eq!(files_of(&h, device.id).await, 0);
}

#[tokio::test]
async fn a_finished_command_takes_no_file_and_a_third_upload_at_once_is_refused() {
    let h = Harness::start().await;
    let (mut device, command) = device_with_command(&h, "00155d000106").await;
    let body = content(100_000);
    // Two uploads in progress (content not finished), a third refused.
    let mut first = device.upload_header(&header(command, "1.log", &body)).await;
    let mut second = device.upload_header(&header(command, "2.log", &body)).await;
    first.write_all(&body[..10]).await.expect("write");
    second.write_all(&body[..10]).await.expect("write");
    let mut third = device.upload_header(&header(command, "3.log", &body)).await;
    assert_eq!(stopped_with(&mut third).await, Some(u64::from(FILE_REFUSED)));
    let r = refused(&mut device).await;
    assert!(r.reason.contains("at most 2 uploads"), "{}", r.reason);
    first.write_all(&body[10..]).await.expect("write");
    first.finish().expect("finish");
    second.write_all(&body[10..]).await.expect("write");
    second.finish().expect("finish");
    for _ in 0..2 {
        assert!(matches!(device.next().await, Downlink::FileStored(_)));
    }
    assert_eq!(files_of(&h, device.id).await, 2);

    let seq = device.answer(command.0, CommandStatus::Succeeded, "", "").await;
    device.wait_ack(seq).await;
    let mut late = device.upload_header(&header(command, "late.log", &body)).await;
    assert_eq!(stopped_with(&mut late).await, Some(u64::from(FILE_REFUSED)));
    assert!(refused(&mut device).await.reason.contains("succeeded"));
}
