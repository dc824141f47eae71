//! The device inventory ([`InventoryStore`]): add, edit, move, delete (with commands), bulk
//! edits, import batches in each mode and import logs.

use super::*;

async fn enterprise(s: &dyn EntityStore, name: &str) -> EnterpriseId {
    s.create_enterprise(NewEnterprise {
        profile: Default::default(),
        name: name.into(),
        credential: format!("cred-{name}"),
        channel_id: None,
    })
    .await
    .unwrap()
    .id
}

fn added(e: EnterpriseId, mac: Option<Mac>, serial: Option<&str>) -> NewInventoryDevice {
    NewInventoryDevice {
        enterprise_id: e,
        mac,
        serial: serial.map(str::to_owned),
        model: "T54W".into(),
        name: "desk".into(),
        attributes: [("room".to_owned(), "12".to_owned())].into(),
        at: UnixMillis(10),
    }
}

fn row(line: u64, mac: Option<Mac>, name: Option<&str>, attrs: &[(&str, &str)]) -> ImportRow {
    ImportRow {
        line,
        mac,
        serial: None,
        model: None,
        name: name.map(str::to_owned),
        attributes: attrs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        groups: None,
    }
}

/// Add, edit, move, delete and bulk edit.
pub(crate) async fn inventory_devices(store: &Store) {
    let s = store.entities.as_ref();
    let (e1, e2) = (enterprise(s, "inv-1").await, enterprise(s, "inv-2").await);
    let by = s.create_account(platform_admin("inventory@example.com")).await.unwrap().id;
    let d = s.add_device(added(e1, Some(mac(0x7a001)), None)).await.unwrap();
    assert_eq!((d.enterprise_id, d.name.as_str(), d.model.as_str()), (e1, "desk", "T54W"));
    assert_eq!(s.device_attributes(d.id).await.unwrap().unwrap()["room"], "12");
    // Keys are unique per platform: the same MAC in another enterprise, a serial without MAC twice.
    assert!(matches!(s.add_device(added(e2, Some(mac(0x7a001)), None)).await, Err(StoreError::AlreadyExists(_))));
    let sn = s.add_device(added(e1, None, Some("SN-INV-1"))).await.unwrap();
    assert!(matches!(s.add_device(added(e2, None, Some("SN-INV-1"))).await, Err(StoreError::AlreadyExists(_))));
    invalid(s.add_device(added(e1, None, None)).await, "MAC address or a serial");
    invalid(s.add_device(added(EnterpriseId(999_999), Some(mac(0x7a002)), None)).await, "enterprise");
    let mut bad = added(e1, Some(mac(0x7a003)), None);
    bad.attributes.insert("Bad Key".into(), "x".into());
    invalid(s.add_device(bad).await, "attribute key");
    // Registration by the device itself finds the added row.
    let reg = s.register_device(new_device(e1, DeviceKey::Mac(mac(0x7a001)))).await.unwrap();
    assert_eq!((reg.device.id, reg.created), (d.id, false));

    // Edit: name and a merge of attributes; a merge past the bound changes nothing.
    let edit = DeviceEdit {
        name: Some("lobby".into()),
        attributes: Some(AttributeChange::Merge([("floor".into(), Some("2".into())), ("room".into(), None)].into())),
        ..DeviceEdit::default()
    };
    let edited = s.edit_device(d.id, edit, UnixMillis(20)).await.unwrap().unwrap();
    assert_eq!(edited.name, "lobby");
    assert_eq!(s.device_attributes(d.id).await.unwrap().unwrap(), [("floor".to_owned(), "2".to_owned())].into());
    let many = (0..MAX_ATTRIBUTES).map(|i| (format!("k{i}"), Some("v".to_owned()))).collect();
    let over = DeviceEdit { attributes: Some(AttributeChange::Merge(many)), ..DeviceEdit::default() };
    invalid(s.edit_device(d.id, over, UnixMillis(20)).await, "at most 32");
    assert_eq!(s.device_attributes(d.id).await.unwrap().unwrap().len(), 1, "a refused edit changes nothing");
    assert!(s.edit_device(DeviceId(999_999), DeviceEdit::default(), UnixMillis(20)).await.unwrap().is_none());

    // A move cancels pending commands.
    let queued = s
        .enqueue_commands(
            vec![NewCommand {
                device_id: d.id,
                enterprise_id: e1,
                kind: "reboot".into(),
                args: "{}".into(),
                deadline: UnixMillis(1_000_000),
                issued_by: by,
            }],
            UnixMillis(30),
        )
        .await
        .unwrap();
    let command = queued[0].as_ref().unwrap().id;
    let to_e2 = DeviceEdit { enterprise_id: Some(e2), ..DeviceEdit::default() };
    invalid(
        s.edit_device(
            d.id,
            DeviceEdit { enterprise_id: Some(EnterpriseId(999_999)), ..DeviceEdit::default() },
            UnixMillis(40),
        )
        .await,
        "enterprise",
    );
    assert_eq!(s.edit_device(d.id, to_e2, UnixMillis(40)).await.unwrap().unwrap().enterprise_id, e2);
    assert_eq!(s.command(command).await.unwrap().unwrap().state, CommandState::Cancelled);
    assert_eq!(s.device(d.id).await.unwrap().unwrap().enterprise_id, e2);

    // Bulk edit of a filtered set: every device of e1 gets a model and an attribute.
    for i in 0..3 {
        s.add_device(added(e1, Some(mac(0x7a100 + i)), None)).await.unwrap();
    }
    let q = DeviceQuery { enterprises: Some(vec![e1]), ..DeviceQuery::default() };
    let bulk = DeviceEdit {
        model: Some("T46U".into()),
        attributes: Some(AttributeChange::Merge([("batch".into(), Some("a".into()))].into())),
        ..DeviceEdit::default()
    };
    assert_eq!(
        s.bulk_edit_devices(q.clone(), bulk, UnixMillis(50)).await.unwrap(),
        4,
        "three added and the serial one"
    );
    assert_eq!(s.device(sn.id).await.unwrap().unwrap().model, "T46U");
    assert_eq!(s.device_attributes(sn.id).await.unwrap().unwrap()["batch"], "a");
    invalid(
        s.bulk_edit_devices(q.clone(), DeviceEdit { name: Some("x".into()), ..DeviceEdit::default() }, UnixMillis(50))
            .await,
        "names",
    );
    invalid(s.bulk_edit_devices(q, DeviceEdit::default(), UnixMillis(50)).await, "nothing");

    // Delete: the row and its commands go; the key can be added again (a new id).
    assert_eq!(s.delete_device(d.id).await.unwrap().unwrap().id, d.id);
    assert!(s.device(d.id).await.unwrap().is_none());
    assert!(s.command(command).await.unwrap().is_none());
    assert!(s.delete_device(d.id).await.unwrap().is_none());
    let again = s.add_device(added(e1, Some(mac(0x7a001)), None)).await.unwrap();
    assert_ne!(again.id, d.id);
    // Ids are never reused, not even the last one's (its events may outlive it).
    s.delete_device(again.id).await.unwrap().unwrap();
    let next = s.register_device(new_device(e1, DeviceKey::Mac(mac(0x7a001)))).await.unwrap().device;
    assert!(next.id.0 > again.id.0, "{:?} after {:?}", next.id, again.id);
}

/// Import batches in each mode and the import log.
pub(crate) async fn inventory_imports(store: &Store) {
    let s = store.entities.as_ref();
    let (e1, e2) = (enterprise(s, "imp-1").await, enterprise(s, "imp-2").await);
    let by = s.create_account(platform_admin("importer@example.com")).await.unwrap().id;
    let other = s.add_device(added(e2, Some(mac(0x7b009)), None)).await.unwrap();
    let rows = vec![
        row(2, Some(mac(0x7b001)), Some("a"), &[("x", "1"), ("y", "2")]),
        row(3, Some(mac(0x7b002)), None, &[]),
        row(4, Some(mac(0x7b009)), Some("theirs"), &[]),
    ];
    let out = s.import_devices(e1, ImportMode::Create, rows, UnixMillis(5)).await.unwrap();
    assert!(matches!(out[0], ImportOutcome::Created(_)) && matches!(out[1], ImportOutcome::Created(_)));
    assert!(matches!(&out[2], ImportOutcome::Failed("mac_address", r) if r.contains("another enterprise")), "{out:?}");
    assert_eq!(s.device(other.id).await.unwrap().unwrap().name, "desk", "a failed row changes nothing");
    let ImportOutcome::Created(a) = out[0] else { unreachable!() };

    let again = vec![row(2, Some(mac(0x7b001)), Some("b"), &[("y", "3")])];
    assert!(matches!(
        s.import_devices(e1, ImportMode::Create, again.clone(), UnixMillis(6)).await.unwrap()[0],
        ImportOutcome::Skipped(_)
    ));
    assert!(matches!(
        s.import_devices(e1, ImportMode::Merge, again.clone(), UnixMillis(6)).await.unwrap()[0],
        ImportOutcome::Updated(_)
    ));
    let merged = s.device_attributes(a).await.unwrap().unwrap();
    assert_eq!((merged["x"].as_str(), merged["y"].as_str()), ("1", "3"));
    assert_eq!(s.device(a).await.unwrap().unwrap().name, "b");
    s.import_devices(e1, ImportMode::Overwrite, vec![row(2, Some(mac(0x7b001)), None, &[("z", "9")])], UnixMillis(7))
        .await
        .unwrap();
    assert_eq!(s.device_attributes(a).await.unwrap().unwrap(), [("z".to_owned(), "9".to_owned())].into());
    assert_eq!(s.device(a).await.unwrap().unwrap().name, "", "overwrite clears what the row leaves empty");
    invalid(
        s.import_devices(
            e1,
            ImportMode::Merge,
            vec![row(2, Some(mac(1)), None, &[]); MAX_IMPORT_BATCH + 1],
            UnixMillis(8),
        )
        .await,
        "import rows",
    );

    // The log: counts add up, errors are kept by line up to the bound.
    let log = s.create_device_import(e1, by, ImportMode::Merge, UnixMillis(100)).await.unwrap();
    let counts = ImportCounts { rows: 3, created: 1, updated: 1, skipped: 0, failed: 1 };
    s.record_device_import(log.id, counts, vec![ImportRowError::new(4, "mac_address", "bad MAC")]).await.unwrap();
    s.record_device_import(log.id, counts, vec![ImportRowError::new(7, "", "x".repeat(500).as_str())]).await.unwrap();
    s.finish_device_import(log.id, ImportState::Done, None, UnixMillis(200)).await.unwrap();
    let read = s.device_import(log.id).await.unwrap().unwrap();
    assert_eq!((read.state, read.counts.rows, read.counts.failed, read.errors_kept), (ImportState::Done, 6, 2, 2));
    assert_eq!((read.enterprise_id, read.account_id, read.finished_at), (e1, by, Some(UnixMillis(200))));
    let errors = s.device_import_errors(log.id, 0, 100).await.unwrap();
    assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [4, 7]);
    assert_eq!(errors[1].reason.chars().count(), MAX_IMPORT_REASON);
    assert_eq!(s.device_import_errors(log.id, 4, 100).await.unwrap().len(), 1);
    assert!(s.device_import(999_999).await.unwrap().is_none());

    // Listing: newest first, by enterprise, keyset paged; a start aborts what still runs.
    let second = s.create_device_import(e2, by, ImportMode::Create, UnixMillis(300)).await.unwrap();
    let third = s.create_device_import(e1, by, ImportMode::Overwrite, UnixMillis(400)).await.unwrap();
    let ids = |v: Vec<DeviceImport>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    let mine = ids(s.list_device_imports(Some(vec![e1]), None, 10).await.unwrap());
    assert_eq!(mine, [third.id, log.id]);
    let all = ids(s.list_device_imports(None, None, 10).await.unwrap());
    assert_eq!(all[..3], [third.id, second.id, log.id]);
    assert_eq!(ids(s.list_device_imports(Some(vec![e1, e2]), Some(third.id), 1).await.unwrap()), [second.id]);
    assert!(s.list_device_imports(Some(vec![]), None, 10).await.unwrap().is_empty());
    let aborted = s.abort_running_device_imports("the server stopped".into(), UnixMillis(500)).await.unwrap();
    assert!(aborted >= 2, "{aborted}");
    let read = s.device_import(third.id).await.unwrap().unwrap();
    assert_eq!(
        (read.state, read.note.as_deref(), read.finished_at),
        (ImportState::Aborted, Some("the server stopped"), Some(UnixMillis(500)))
    );
    assert_eq!(s.device_import(log.id).await.unwrap().unwrap().state, ImportState::Done, "a finished log stays");
    assert_eq!(s.abort_running_device_imports("again".into(), UnixMillis(600)).await.unwrap(), 0);
}
