//! Firmware images ([`FirmwareStore`], PRV-4): content round trips chunk by chunk, refusals,
//! listing per enterprise newest first with paging, the per-enterprise bound, and deletion
//! refused while an upgrade to the image is pending (naming it), allowed once it is not.

use std::path::{Path, PathBuf};

use fleetpulse_proto::FirmwareId;

use super::*;

/// An enterprise, an uploading account and one device; `n` makes names unique.
async fn enterprise(s: &dyn EntityStore, n: u32) -> (EnterpriseId, AccountId, DeviceId) {
    let e = s
        .create_enterprise(NewEnterprise {
            profile: Default::default(),
            name: format!("firmware-{n}"),
            credential: format!("firmware-{n}"),
            channel_id: None,
        })
        .await
        .unwrap();
    let account = s.create_account(platform_admin(&format!("firmware-{n}@example.com"))).await.unwrap();
    let d = s.register_device(new_device(e.id, DeviceKey::Mac(mac(0xe0000 + n * 0x100)))).await.unwrap();
    (e.id, account.id, d.device.id)
}

fn image(e: EnterpriseId, by: AccountId, version: &str, size: usize) -> NewFirmware {
    NewFirmware {
        enterprise_id: e,
        model: "T54W".into(),
        version: version.into(),
        name: format!("T54W-{version}.rom"),
        size: size as u64,
        sha256: [0x5a; 32],
        uploaded_by: by,
        uploaded_at: UnixMillis(100),
    }
}

fn local(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

async fn download(s: &dyn EntityStore, image: &FirmwareImage) -> Vec<u8> {
    let mut all = Vec::new();
    for i in 0..image.chunks() {
        let chunk = s.firmware_chunk(image.id, i).await.unwrap().expect("a chunk within the image");
        if i + 1 < image.chunks() {
            assert_eq!(chunk.len(), FILE_CHUNK, "chunk {i}");
        }
        all.extend_from_slice(&chunk);
    }
    assert_eq!(s.firmware_chunk(image.id, image.chunks()).await.unwrap(), None, "past the end");
    all
}

fn upgrade(d: DeviceId, e: EnterpriseId, by: AccountId, image: FirmwareId) -> NewCommand {
    let args = serde_json::json!({
        "url": format!("https://fleet.example.com/firmware/{image}/{d}?token=t"),
        "sha256": "5a".repeat(32),
        "size": 10,
        "version": "2",
        "image": image.0,
    });
    NewCommand {
        device_id: d,
        enterprise_id: e,
        kind: "upgrade_firmware".into(),
        args: args.to_string(),
        deadline: UnixMillis(i64::MAX / 2),
        issued_by: by,
    }
}

pub(crate) async fn firmware(s: &dyn EntityStore, dir: &Path) {
    let (e, by, d) = enterprise(s, 1).await;
    let (other, other_by, _) = enterprise(s, 2).await;

    // Round trip: three chunks, each in its place; metadata as given.
    let big = content(2 * FILE_CHUNK + 777, 9);
    let first = s.store_firmware(image(e, by, "1.0", big.len()), &local(dir, "big", &big)).await.unwrap();
    assert_eq!(
        (first.enterprise_id, first.model.as_str(), first.version.as_str(), first.size),
        (e, "T54W", "1.0", big.len() as u64)
    );
    assert_eq!((first.uploaded_by, first.uploaded_at, first.sha256.clone()), (by, UnixMillis(100), "5a".repeat(32)));
    assert_eq!(first.chunks(), 3);
    assert_eq!(s.firmware(first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(download(s, &first).await, big);
    assert_eq!(s.firmware(FirmwareId(u64::MAX)).await.unwrap(), None);
    assert_eq!(s.firmware_chunk(FirmwareId(u64::MAX), 0).await.unwrap(), None);

    // Refusals store nothing.
    let small = content(10, 1);
    let small_path = local(dir, "small", &small);
    for (bad, why) in [
        (image(e, by, "1.1", 11), "longer than declared"),
        (image(e, by, "1.1", 9), "shorter than declared"),
        (image(e, by, "", 10), "no version"),
        (image(EnterpriseId(999_999), by, "1.1", 10), "unknown enterprise"),
        (image(e, AccountId(999_999), "1.1", 10), "unknown account"),
    ] {
        assert!(matches!(s.store_firmware(bad, &small_path).await, Err(StoreError::InvalidInput(_))), "{why}");
    }
    assert_eq!(s.list_firmware(e, Page { after: 0, limit: 100 }).await.unwrap(), vec![first.clone()]);

    // Listing: newest first, paged, per enterprise.
    let second = s.store_firmware(image(e, by, "1.1", 10), &small_path).await.unwrap();
    let third = s.store_firmware(image(e, by, "1.2", 10), &small_path).await.unwrap();
    let theirs = s.store_firmware(image(other, other_by, "9.9", 10), &small_path).await.unwrap();
    let ids = |list: Vec<FirmwareImage>| list.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_firmware(e, Page { after: 0, limit: 100 }).await.unwrap()), [third.id, second.id, first.id]);
    assert_eq!(ids(s.list_firmware(e, Page { after: 0, limit: 2 }).await.unwrap()), [third.id, second.id]);
    assert_eq!(ids(s.list_firmware(e, Page { after: second.id.0, limit: 2 }).await.unwrap()), [first.id]);
    assert_eq!(ids(s.list_firmware(other, Page { after: 0, limit: 100 }).await.unwrap()), [theirs.id]);
    assert_eq!(download(s, &second).await, small);

    // Deletion is refused while an upgrade to the image is pending, and names it; an upgrade to
    // another image does not count.
    let queued = s
        .enqueue_commands(vec![upgrade(d, e, by, second.id), upgrade(d, e, by, third.id)], UnixMillis(200))
        .await
        .unwrap();
    let (to_second, to_third) = (queued[0].clone().unwrap(), queued[1].clone().unwrap());
    assert_eq!(
        s.delete_firmware(second.id).await.unwrap(),
        Some(FirmwareDeletion::InUse {
            pending: 1,
            upgrades: vec![PendingUpgrade { command_id: to_second.id, device_id: d }]
        })
    );
    assert!(s.firmware(second.id).await.unwrap().is_some());
    assert_eq!(s.delete_firmware(first.id).await.unwrap(), Some(FirmwareDeletion::Deleted));
    assert_eq!(s.firmware(first.id).await.unwrap(), None);
    assert_eq!(s.firmware_chunk(first.id, 0).await.unwrap(), None);
    assert_eq!(s.delete_firmware(first.id).await.unwrap(), None);
    // Once the upgrade finished (here: cancelled), the image may go.
    s.cancel_command(to_second.id, by, UnixMillis(300)).await.unwrap();
    assert_eq!(s.delete_firmware(second.id).await.unwrap(), Some(FirmwareDeletion::Deleted));
    // A running upgrade is pending too.
    s.claim_commands_to_send(d, UnixMillis(300), 10).await.unwrap();
    s.record_command_update(to_third.id, d, CommandUpdate::Running { progress: String::new() }, UnixMillis(310))
        .await
        .unwrap();
    assert!(matches!(s.delete_firmware(third.id).await.unwrap(), Some(FirmwareDeletion::InUse { pending: 1, .. })));
    s.record_command_update(to_third.id, d, CommandUpdate::Succeeded { output: "2".into() }, UnixMillis(320))
        .await
        .unwrap();
    assert_eq!(s.delete_firmware(third.id).await.unwrap(), Some(FirmwareDeletion::Deleted));

    // At most MAX_FIRMWARE_PER_ENTERPRISE images per enterprise (the other one's do not count).
    let held = s.list_firmware(e, Page { after: 0, limit: 100 }).await.unwrap().len() as u64;
    let mut last = None;
    for i in held..MAX_FIRMWARE_PER_ENTERPRISE {
        last = Some(s.store_firmware(image(e, by, &format!("3.{i}"), 10), &small_path).await.unwrap());
    }
    assert!(matches!(s.store_firmware(image(e, by, "4.0", 10), &small_path).await, Err(StoreError::LimitExceeded(_))));
    s.store_firmware(image(other, other_by, "9.8", 10), &small_path).await.unwrap();
    assert_eq!(s.delete_firmware(last.unwrap().id).await.unwrap(), Some(FirmwareDeletion::Deleted));
    s.store_firmware(image(e, by, "4.0", 10), &small_path).await.unwrap();
    assert!(small_path.exists(), "the content file is left in place");
}
