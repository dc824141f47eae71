//! Uploaded files ([`FileStore`], issue 11): content round trips (one chunk, several, none),
//! refusals, listing order and paging per device, the per-device limit, and expiry deleting the
//! content with the row.
//!
//! `delete_expired_files` looks at every device: the cases other than [`file_expiry`] give their
//! files expiries from [`LATER`] on, and that one deletes only before it.

use std::path::{Path, PathBuf};

use super::*;

/// Expiries of the cases that must not be deleted (`file_expiry` deletes only before this).
const LATER: i64 = 1_000_000;

/// An enterprise and `devices` devices of it, with an issuing account; `n` makes names unique.
async fn fleet(s: &dyn EntityStore, n: u32, devices: u32) -> (EnterpriseId, AccountId, Vec<DeviceId>) {
    let e = s
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: format!("files-{n}"),
            credential: format!("files-{n}"),
            channel_id: None,
        })
        .await
        .unwrap();
    let account = s.create_account(platform_admin(&format!("files-{n}@example.com"))).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..devices {
        let d = s.register_device(new_device(e.id, DeviceKey::Mac(mac(0xf0000 + n * 0x100 + i)))).await.unwrap();
        ids.push(d.device.id);
    }
    (e.id, account.id, ids)
}

fn new_file(
    device: DeviceId,
    enterprise: EnterpriseId,
    name: &str,
    size: usize,
    created: i64,
    expires: i64,
) -> NewFile {
    NewFile {
        device_id: device,
        enterprise_id: enterprise,
        command_id: None,
        name: name.into(),
        size: size as u64,
        sha256: [0xab; 32],
        created_at: UnixMillis(created),
        expires_at: UnixMillis(expires),
    }
}

/// Content of `len` bytes that differs at every position modulo a prime (a misplaced chunk
/// shows).
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Writes `bytes` to a new file in `dir`.
fn local(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Every chunk of a file, concatenated, checking that each but the last is FILE_CHUNK long and
/// that there is none past the end.
async fn download(s: &dyn EntityStore, file: &StoredFile) -> Vec<u8> {
    let mut all = Vec::new();
    for i in 0..file.chunks() {
        let chunk = s.file_chunk(file.id, i).await.unwrap().expect("a chunk within the file");
        if i + 1 < file.chunks() {
            assert_eq!(chunk.len(), FILE_CHUNK, "chunk {i}");
        }
        all.extend_from_slice(&chunk);
    }
    assert_eq!(s.file_chunk(file.id, file.chunks()).await.unwrap(), None, "past the end");
    all
}

fn ids(files: &[StoredFile]) -> Vec<FileId> {
    files.iter().map(|f| f.id).collect()
}

/// A one-chunk, a multi-chunk and an empty file come back byte for byte; the metadata is as
/// given, the hash in lowercase hex; an unknown file has neither metadata nor chunks.
pub(crate) async fn file_round_trip(s: &dyn EntityStore, dir: &Path) {
    let (e, by, devices) = fleet(s, 1, 1).await;
    let d = devices[0];
    let command = s
        .enqueue_commands(
            vec![NewCommand {
                device_id: d,
                enterprise_id: e,
                kind: "syslog".into(),
                args: "{}".into(),
                deadline: UnixMillis(LATER),
                issued_by: by,
            }],
            UnixMillis(10),
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();

    let small = content(1000, 1);
    let stored = s
        .store_file(
            NewFile {
                command_id: Some(command.id),
                sha256: [0xa0; 32],
                ..new_file(d, e, "syslog.txt", small.len(), 20, LATER)
            },
            &local(dir, "small", &small),
        )
        .await
        .unwrap();
    assert_eq!(stored.device_id, d);
    assert_eq!(stored.enterprise_id, e);
    assert_eq!(stored.command_id, Some(command.id));
    assert_eq!(stored.name, "syslog.txt");
    assert_eq!(stored.size, 1000);
    assert_eq!(stored.sha256, "a0".repeat(32));
    assert_eq!((stored.created_at, stored.expires_at), (UnixMillis(20), UnixMillis(LATER)));
    assert_eq!(s.file(stored.id).await.unwrap(), Some(stored.clone()));
    assert_eq!(stored.chunks(), 1);
    assert_eq!(download(s, &stored).await, small);

    // Two full chunks and a part: each chunk in its place.
    let big = content(2 * FILE_CHUNK + 12_345, 7);
    let stored_big =
        s.store_file(new_file(d, e, "capture.pcap", big.len(), 21, LATER), &local(dir, "big", &big)).await.unwrap();
    assert_eq!(stored_big.chunks(), 3);
    assert_eq!(download(s, &stored_big).await, big);
    // Exactly one chunk long: no empty chunk after it.
    let exact = content(FILE_CHUNK, 3);
    let stored_exact =
        s.store_file(new_file(d, e, "exact.bin", exact.len(), 22, LATER), &local(dir, "exact", &exact)).await.unwrap();
    assert_eq!(stored_exact.chunks(), 1);
    assert_eq!(download(s, &stored_exact).await, exact);
    // Empty: stored, listed, no chunk at all.
    let empty = s.store_file(new_file(d, e, "empty.log", 0, 23, LATER), &local(dir, "empty", &[])).await.unwrap();
    assert_eq!(s.file(empty.id).await.unwrap(), Some(empty.clone()));
    assert_eq!(s.file_chunk(empty.id, 0).await.unwrap(), None);

    // The content is the store's own copy: the caller may delete its file.
    std::fs::remove_file(dir.join("big")).unwrap();
    assert_eq!(download(s, &stored_big).await, big);

    let unknown = FileId(987_654_321);
    assert_eq!(s.file(unknown).await.unwrap(), None);
    assert_eq!(s.file_chunk(unknown, 0).await.unwrap(), None);
    assert_eq!(s.file(FileId(u64::MAX)).await.unwrap(), None);
    assert_eq!(s.file_chunk(stored.id, u64::MAX).await.unwrap(), None);
    assert_eq!(
        ids(&s.list_device_files(d, Page::first(10)).await.unwrap()),
        [empty.id, stored_exact.id, stored_big.id, stored.id]
    );
}

/// Refused files store nothing: a bad name, content of another length than declared (shorter
/// or longer), a device of another enterprise or unknown, a command of another device, an
/// expiry not after creation.
pub(crate) async fn file_refusals(s: &dyn EntityStore, dir: &Path) {
    let (e, by, devices) = fleet(s, 2, 2).await;
    let (other, _, other_devices) = fleet(s, 3, 1).await;
    let (d, sibling) = (devices[0], devices[1]);
    let bytes = content(100, 5);
    let path = local(dir, "refused", &bytes);
    let sibling_command = s
        .enqueue_commands(
            vec![NewCommand {
                device_id: sibling,
                enterprise_id: e,
                kind: "syslog".into(),
                args: "{}".into(),
                deadline: UnixMillis(LATER),
                issued_by: by,
            }],
            UnixMillis(10),
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();

    invalid(s.store_file(new_file(d, e, "../etc/passwd", 100, 20, LATER), &path).await, "name");
    invalid(s.store_file(new_file(d, e, ".hidden", 100, 20, LATER), &path).await, "name");
    invalid(s.store_file(new_file(d, e, "short.txt", 101, 20, LATER), &path).await, "101");
    invalid(s.store_file(new_file(d, e, "long.txt", 99, 20, LATER), &path).await, "99");
    invalid(
        s.store_file(new_file(d, e, "big.txt", (MAX_STORED_FILE_BYTES + 1) as usize, 20, LATER), &path).await,
        "larger",
    );
    invalid(s.store_file(new_file(d, e, "expired.txt", 100, 20, 20), &path).await, "expire");
    invalid(s.store_file(new_file(other_devices[0], e, "x.txt", 100, 20, LATER), &path).await, "enterprise");
    invalid(s.store_file(new_file(d, other, "x.txt", 100, 20, LATER), &path).await, "enterprise");
    invalid(s.store_file(new_file(DeviceId(987_654_321), e, "x.txt", 100, 20, LATER), &path).await, "enterprise");
    let foreign = NewFile { command_id: Some(sibling_command.id), ..new_file(d, e, "x.txt", 100, 20, LATER) };
    invalid(s.store_file(foreign, &path).await, "command");
    let unknown = NewFile { command_id: Some(CommandId(987_654_321)), ..new_file(d, e, "x.txt", 100, 20, LATER) };
    invalid(s.store_file(unknown, &path).await, "command");
    assert!(s.list_device_files(d, Page::first(10)).await.unwrap().is_empty(), "nothing was stored");
    // A missing content file is an error too, and stores nothing.
    assert!(s.store_file(new_file(d, e, "x.txt", 100, 20, LATER), &dir.join("missing")).await.is_err());
    assert!(s.list_device_files(d, Page::first(10)).await.unwrap().is_empty());

    // After all that, the same file with the right size is stored.
    let ok = s.store_file(new_file(d, e, "x.txt", 100, 20, LATER), &path).await.unwrap();
    assert_eq!(ids(&s.list_device_files(d, Page::first(10)).await.unwrap()), [ok.id]);
    assert_eq!(download(s, &ok).await, bytes);
}

/// A device's files newest first, paged by id; another device's files are never listed.
pub(crate) async fn file_pages(s: &dyn EntityStore, dir: &Path) {
    let (e, _, devices) = fleet(s, 4, 2).await;
    let (a, b) = (devices[0], devices[1]);
    let path = local(dir, "page", b"x");
    let mut stored = Vec::new();
    for i in 0..5 {
        stored.push(s.store_file(new_file(a, e, &format!("a{i}.txt"), 1, 30 + i, LATER), &path).await.unwrap().id);
        if i == 2 {
            s.store_file(new_file(b, e, "b.txt", 1, 30, LATER), &path).await.unwrap();
        }
    }
    let newest_first: Vec<FileId> = stored.iter().rev().copied().collect();
    assert_eq!(ids(&s.list_device_files(a, Page::first(100)).await.unwrap()), newest_first);
    let first = s.list_device_files(a, Page::first(2)).await.unwrap();
    assert_eq!(ids(&first), newest_first[..2]);
    let second = s.list_device_files(a, Page { after: first[1].id.0, limit: 2 }).await.unwrap();
    assert_eq!(ids(&second), newest_first[2..4]);
    let third = s.list_device_files(a, Page { after: second[1].id.0, limit: 2 }).await.unwrap();
    assert_eq!(ids(&third), newest_first[4..]);
    let past = s.list_device_files(a, Page { after: third[0].id.0, limit: 2 }).await.unwrap();
    assert!(past.is_empty());
    assert!(s.list_device_files(a, Page::first(0)).await.unwrap().is_empty());
    let listed_b = s.list_device_files(b, Page::first(100)).await.unwrap();
    assert_eq!(listed_b.len(), 1);
    assert_eq!(listed_b[0].name, "b.txt");
    assert!(s.list_device_files(DeviceId(987_654_321), Page::first(100)).await.unwrap().is_empty());
    assert!(s.list_device_files(DeviceId(u64::MAX), Page::first(100)).await.unwrap().is_empty());
}

/// At most [`MAX_FILES_PER_DEVICE`] files not expired per device; another device is not
/// affected; files expired at the new file's creation no longer count.
pub(crate) async fn file_limit(s: &dyn EntityStore, dir: &Path) {
    let (e, _, devices) = fleet(s, 5, 2).await;
    let (d, other) = (devices[0], devices[1]);
    let path = local(dir, "limit", b"y");
    // The first one expires at LATER + 10, the rest later still.
    for i in 0..MAX_FILES_PER_DEVICE as i64 {
        let expires = if i == 0 { LATER + 10 } else { LATER * 10 };
        s.store_file(new_file(d, e, "f.txt", 1, 40, expires), &path).await.unwrap();
    }
    match s.store_file(new_file(d, e, "f.txt", 1, 41, LATER * 10), &path).await {
        Err(StoreError::LimitExceeded(message)) => assert!(message.contains("100"), "{message}"),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert_eq!(s.list_device_files(d, Page::first(1000)).await.unwrap().len(), MAX_FILES_PER_DEVICE as usize);
    s.store_file(new_file(other, e, "f.txt", 1, 41, LATER * 10), &path).await.unwrap();
    // Created after the first one expired: it no longer counts.
    s.store_file(new_file(d, e, "f.txt", 1, LATER + 10, LATER * 10), &path).await.unwrap();
    match s.store_file(new_file(d, e, "f.txt", 1, LATER + 10, LATER * 10), &path).await {
        Err(StoreError::LimitExceeded(_)) => {}
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

/// Files with an expiry at or before `now` are deleted, content and all, earliest expiry first,
/// at most `limit` a call; the others stay readable.
pub(crate) async fn file_expiry(s: &dyn EntityStore, dir: &Path) {
    let (e, _, devices) = fleet(s, 6, 1).await;
    let d = devices[0];
    let big = content(FILE_CHUNK + 10, 9);
    let path = local(dir, "expiry", &big);
    let mut files = Vec::new();
    for expires in [300, 100, 200, LATER] {
        files.push(s.store_file(new_file(d, e, "e.bin", big.len(), 50, expires), &path).await.unwrap());
    }
    assert_eq!(s.delete_expired_files(UnixMillis(99), 10).await.unwrap(), 0);
    assert_eq!(s.delete_expired_files(UnixMillis(300), 0).await.unwrap(), 0);
    // Earliest expiry first: 100 and 200 go, 300 stays.
    assert_eq!(s.delete_expired_files(UnixMillis(300), 2).await.unwrap(), 2);
    for gone in [&files[1], &files[2]] {
        assert_eq!(s.file(gone.id).await.unwrap(), None);
        assert_eq!(s.file_chunk(gone.id, 0).await.unwrap(), None, "the content goes with the file");
        assert_eq!(s.file_chunk(gone.id, 1).await.unwrap(), None);
    }
    assert_eq!(download(s, &files[0]).await, big, "not deleted yet");
    // At the expiry itself the file goes.
    assert_eq!(s.delete_expired_files(UnixMillis(300), 10).await.unwrap(), 1);
    assert_eq!(s.file(files[0].id).await.unwrap(), None);
    assert_eq!(s.file_chunk(files[0].id, 0).await.unwrap(), None);
    assert_eq!(s.delete_expired_files(UnixMillis(300), 10).await.unwrap(), 0);
    assert_eq!(ids(&s.list_device_files(d, Page::first(10)).await.unwrap()), [files[3].id]);
    assert_eq!(download(s, &files[3]).await, big);
    // A new file never takes a deleted file's id, even of the newest file.
    let newest = s.store_file(new_file(d, e, "n.bin", 1, 60, 400), &local(dir, "one", b"1")).await.unwrap();
    assert_eq!(s.delete_expired_files(UnixMillis(400), 10).await.unwrap(), 1);
    let next = s.store_file(new_file(d, e, "n.bin", 1, 60, LATER), &local(dir, "one", b"1")).await.unwrap();
    assert!(next.id > newest.id, "{:?} after {:?}", next.id, newest.id);
}

/// Every file case on one store; `dir` holds the content files the cases upload from.
pub(crate) async fn files(s: &dyn EntityStore, dir: &Path) {
    file_round_trip(s, dir).await;
    file_refusals(s, dir).await;
    file_pages(s, dir).await;
    file_limit(s, dir).await;
    file_expiry(s, dir).await;
}
