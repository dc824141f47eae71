//! Configuration profiles ([`ProfileStore`]): profiles with unique names and bounds,
//! deployments per container target (ordered, only the enterprise's own profiles and devices,
//! a deployed profile cannot be deleted, a deleted device takes its deployment), and
//! provisioning records.

use std::collections::BTreeMap;

use fleetpulse_proto::{FirmwareId, GroupId, ProfileId, SiteId};

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

fn settings(name: &str, params: &[(&str, &str)]) -> ProfileSettings {
    ProfileSettings {
        name: name.into(),
        description: format!("{name} description"),
        parameters: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        firmware: [("VVX500".to_owned(), FirmwareId(3))].into_iter().collect(),
    }
}

pub(crate) async fn profiles(store: &Store) {
    let s = store.entities.as_ref();
    let a = enterprise(s, "prof-a").await;
    let b = enterprise(s, "prof-b").await;
    let auto =
        s.create_profile(a, settings("auto answer", &[("call.autoAnswer.SIP", "1")]), UnixMillis(10)).await.unwrap();
    let prov = s
        .create_profile(
            a,
            settings("Provisioning", &[("cfg", "https://p.example.com/${mac_address}.cfg")]),
            UnixMillis(11),
        )
        .await
        .unwrap();
    let other = s.create_profile(b, settings("auto answer", &[("k", "v")]), UnixMillis(12)).await.unwrap();
    assert_eq!(s.profile(auto.id).await.unwrap(), Some(auto.clone()));
    assert_eq!(s.profile(ProfileId(u64::MAX)).await.unwrap(), None);
    let names: Vec<_> = s.list_profiles(a).await.unwrap().into_iter().map(|p| p.settings.name).collect();
    assert_eq!(names, ["Provisioning", "auto answer"], "the enterprise's own, by name (byte order)");
    assert!(matches!(
        s.create_profile(a, settings("auto answer", &[]), UnixMillis(13)).await,
        Err(StoreError::AlreadyExists("profile name"))
    ));
    invalid(s.create_profile(a, settings("bad", &[("k", "${mac}")]), UnixMillis(13)).await, "unknown substitution");
    // Update: a new name, parameters and time; a taken name is refused.
    let mut changed = settings("auto answer v2", &[("call.autoAnswer.SIP", "0"), ("x", "y")]);
    changed.firmware = BTreeMap::new();
    let updated = s.update_profile(auto.id, changed.clone(), UnixMillis(20)).await.unwrap().unwrap();
    assert_eq!((updated.settings, updated.created_at, updated.updated_at), (changed, UnixMillis(10), UnixMillis(20)));
    assert!(matches!(
        s.update_profile(auto.id, settings("Provisioning", &[]), UnixMillis(21)).await,
        Err(StoreError::AlreadyExists("profile name"))
    ));
    assert_eq!(s.update_profile(ProfileId(999_999), settings("z", &[]), UnixMillis(21)).await.unwrap(), None);

    // Deployments.
    let device = s.register_device(new_device(a, DeviceKey::Mac(mac(0x9f001)))).await.unwrap().device;
    let foreign_device = s.register_device(new_device(b, DeviceKey::Mac(mac(0x9f002)))).await.unwrap().device;
    let global = s.set_deployment(a, DeploymentTarget::Global, vec![prov.id, auto.id], UnixMillis(30)).await.unwrap();
    assert_eq!(global.map(|d| d.profiles), Some(vec![prov.id, auto.id]));
    s.set_deployment(a, DeploymentTarget::Site { site_id: SiteId(4) }, vec![auto.id], UnixMillis(31)).await.unwrap();
    s.set_deployment(a, DeploymentTarget::Group { group_id: GroupId(2) }, vec![auto.id], UnixMillis(31)).await.unwrap();
    s.set_deployment(a, DeploymentTarget::Model { model: "VVX 500".into() }, vec![prov.id], UnixMillis(31))
        .await
        .unwrap();
    s.set_deployment(a, DeploymentTarget::Device { device_id: device.id }, vec![auto.id, prov.id], UnixMillis(32))
        .await
        .unwrap();
    // Reorder the global one: replaced, not appended.
    s.set_deployment(a, DeploymentTarget::Global, vec![auto.id, prov.id], UnixMillis(33)).await.unwrap();
    let listed: Vec<_> =
        s.list_deployments(a).await.unwrap().into_iter().map(|d| (d.target, d.profiles, d.updated_at)).collect();
    assert_eq!(
        listed,
        vec![
            (DeploymentTarget::Device { device_id: device.id }, vec![auto.id, prov.id], UnixMillis(32)),
            (DeploymentTarget::Site { site_id: SiteId(4) }, vec![auto.id], UnixMillis(31)),
            (DeploymentTarget::Model { model: "VVX 500".into() }, vec![prov.id], UnixMillis(31)),
            (DeploymentTarget::Group { group_id: GroupId(2) }, vec![auto.id], UnixMillis(31)),
            (DeploymentTarget::Global, vec![auto.id, prov.id], UnixMillis(33)),
        ]
    );
    assert!(s.list_deployments(b).await.unwrap().is_empty(), "another enterprise sees none of them");
    // Another tenant's profile or device cannot be named.
    invalid(s.set_deployment(a, DeploymentTarget::Global, vec![other.id], UnixMillis(34)).await, "no profile");
    invalid(
        s.set_deployment(a, DeploymentTarget::Device { device_id: foreign_device.id }, vec![auto.id], UnixMillis(34))
            .await,
        "no device",
    );
    invalid(s.set_deployment(a, DeploymentTarget::Global, vec![auto.id, auto.id], UnixMillis(34)).await, "twice");
    assert_eq!(
        s.list_deployments(a)
            .await
            .unwrap()
            .iter()
            .find(|d| d.target == DeploymentTarget::Global)
            .map(|d| d.profiles.clone()),
        Some(vec![auto.id, prov.id]),
        "a refused change leaves the deployment as it was"
    );
    // A deployed profile cannot be deleted; the message names where it is deployed.
    invalid(s.delete_profile(auto.id).await, "site 4");
    assert!(s.profile(auto.id).await.unwrap().is_some());
    // An empty list removes the deployment.
    for t in [
        DeploymentTarget::Global,
        DeploymentTarget::Site { site_id: SiteId(4) },
        DeploymentTarget::Group { group_id: GroupId(2) },
    ] {
        assert_eq!(s.set_deployment(a, t, vec![], UnixMillis(40)).await.unwrap(), None);
    }
    // Deleting the device removes its deployment (and its provisioning record).
    let mut record = ProvisionRecord::empty(device.id);
    record.confirmed.insert("call.autoAnswer.SIP".into(), value_hash("0"));
    record.pending = Some(ProvisionPush { commands: vec![CommandId(5)], hashes: BTreeMap::new(), at: UnixMillis(41) });
    record.last_result = Some(ProvisionResult::Succeeded);
    record.last_at = Some(UnixMillis(40));
    s.save_provision_record(record.clone()).await.unwrap();
    assert_eq!(s.provision_record(device.id).await.unwrap(), record);
    record.pending = None;
    s.save_provision_record(record.clone()).await.unwrap();
    assert_eq!(s.provision_record(device.id).await.unwrap(), record, "saving again replaces the record");
    assert_eq!(s.provision_record(foreign_device.id).await.unwrap(), ProvisionRecord::empty(foreign_device.id));
    s.delete_device(device.id).await.unwrap();
    assert_eq!(s.provision_record(device.id).await.unwrap(), ProvisionRecord::empty(device.id));
    s.save_provision_record(record).await.unwrap();
    assert_eq!(
        s.provision_record(device.id).await.unwrap(),
        ProvisionRecord::empty(device.id),
        "no record for a deleted device"
    );
    let left: Vec<_> = s.list_deployments(a).await.unwrap().into_iter().map(|d| d.target).collect();
    assert_eq!(left, vec![DeploymentTarget::Model { model: "VVX 500".into() }]);
    assert!(
        s.set_deployment(a, DeploymentTarget::Model { model: "VVX 500".into() }, vec![], UnixMillis(50))
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.delete_profile(auto.id).await.unwrap());
    assert!(!s.delete_profile(auto.id).await.unwrap());
    assert_eq!(s.profile(auto.id).await.unwrap(), None);
}
