//! Data-driven tests of profile resolution and profile validation: profiles and deployments in,
//! the rendered resultant configuration out, one `check` helper; a property test against a
//! naive model of the ranking.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use fleetpulse_proto::{DeviceId, EnterpriseId, FirmwareId, GroupId, Mac, ProfileId, SiteId, UnixMillis};
use proptest::prelude::*;

use super::resolve::{DeviceFacts, ProfileSet, Template, TemplateError};
use super::*;

const E: EnterpriseId = EnterpriseId(1);

fn profile(id: u64, name: &str, params: &[(&str, &str)]) -> StoredProfile {
    StoredProfile {
        id: ProfileId(id),
        enterprise_id: E,
        settings: ProfileSettings {
            name: name.into(),
            description: String::new(),
            parameters: params.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            firmware: BTreeMap::new(),
        },
        created_at: UnixMillis(0),
        updated_at: UnixMillis(0),
    }
}

fn with_firmware(mut p: StoredProfile, model: &str, firmware: u64) -> StoredProfile {
    p.settings.firmware.insert(model.into(), FirmwareId(firmware));
    p
}

fn deploy(target: DeploymentTarget, profiles: &[u64]) -> Deployment {
    Deployment {
        enterprise_id: E,
        target,
        profiles: profiles.iter().map(|&p| ProfileId(p)).collect(),
        updated_at: UnixMillis(0),
    }
}

fn site(id: u64) -> DeploymentTarget {
    DeploymentTarget::Site { site_id: SiteId(id) }
}
fn group(id: u64) -> DeploymentTarget {
    DeploymentTarget::Group { group_id: GroupId(id) }
}
fn model(m: &str) -> DeploymentTarget {
    DeploymentTarget::Model { model: m.into() }
}
fn device_target(id: u64) -> DeploymentTarget {
    DeploymentTarget::Device { device_id: DeviceId(id) }
}

/// Device 7, a VVX500 with MAC 0004f2aabbcc in sites [3 (nearest), 1] and groups [20 (top), 10].
fn phone() -> DeviceFacts {
    DeviceFacts {
        id: DeviceId(7),
        mac: Some(Mac::parse("0004f2aabbcc").unwrap()),
        serial: Some("SN123".into()),
        model: "VVX500".into(),
        name: "Front desk".into(),
        attributes: [("room".to_owned(), "A-101".to_owned())].into_iter().collect(),
        sites: vec![SiteId(3), SiteId(1)],
        groups: vec![GroupId(20), GroupId(10)],
    }
}

/// Resolves and renders one line per key (`key = value <- profile @ target #position`) and one
/// for the firmware, then compares with `want`.
fn check(profiles: &[StoredProfile], deployments: &[Deployment], device: &DeviceFacts, want: &[&str]) {
    let set = ProfileSet::new(profiles, deployments);
    let resolved = set.resolve(device);
    let mut got: Vec<String> = resolved
        .parameters
        .iter()
        .map(|(k, p)| {
            let value = match &p.problem {
                Some(problem) => format!("!{problem}"),
                None => p.value.to_string(),
            };
            format!("{k} = {value} <- {} @ {} #{}", p.origin.profile_name, p.origin.target, p.origin.position)
        })
        .collect();
    if let Some(f) = &resolved.firmware {
        got.push(format!(
            "firmware {} <- {} @ {} #{}",
            f.firmware_id, f.origin.profile_name, f.origin.target, f.origin.position
        ));
    }
    assert_eq!(got, want, "\n got: {got:#?}");
}

#[test]
fn the_guides_site_over_global_example() {
    // PDMS-E "Configuration Profile Deployment": call.autoAnswer.SIP enabled in profile A
    // (deployed to a site), disabled in B (Global): phones of the site have it enabled.
    let profiles = [profile(1, "A", &[("call.autoAnswer.SIP", "1")]), profile(2, "B", &[("call.autoAnswer.SIP", "0")])];
    let deployments = [deploy(site(3), &[1]), deploy(DeploymentTarget::Global, &[2])];
    check(&profiles, &deployments, &phone(), &["call.autoAnswer.SIP = 1 <- A @ site 3 #1"]);
    let elsewhere = DeviceFacts { sites: vec![SiteId(9)], ..phone() };
    check(&profiles, &deployments, &elsewhere, &["call.autoAnswer.SIP = 0 <- B @ global #1"]);
}

#[test]
fn the_guides_software_example() {
    // UC software 5.5 in profile A (device group 1), 5.4 in B (Global).
    let profiles =
        [with_firmware(profile(1, "A", &[]), "VVX500", 55), with_firmware(profile(2, "B", &[]), "VVX500", 54)];
    let deployments = [deploy(group(10), &[1]), deploy(DeploymentTarget::Global, &[2])];
    check(&profiles, &deployments, &phone(), &["firmware 55 <- A @ group 10 #1"]);
    let other = DeviceFacts { groups: vec![], ..phone() };
    check(&profiles, &deployments, &other, &["firmware 54 <- B @ global #1"]);
    let other_model = DeviceFacts { model: "Trio8800".into(), ..phone() };
    check(&profiles, &deployments, &other_model, &[]);
}

#[test]
fn containers_rank_device_site_model_group_global() {
    let profiles: Vec<_> = ["dev", "site", "model", "group", "global"]
        .iter()
        .enumerate()
        .map(|(i, n)| profile(i as u64 + 1, n, &[("k", n), (&format!("only.{n}"), "x")]))
        .collect();
    let all = [
        deploy(DeploymentTarget::Global, &[5]),
        deploy(group(20), &[4]),
        deploy(model("VVX500"), &[3]),
        deploy(site(3), &[2]),
        deploy(device_target(7), &[1]),
    ];
    check(
        &profiles,
        &all,
        &phone(),
        &[
            "k = dev <- dev @ device 7 #1",
            "only.dev = x <- dev @ device 7 #1",
            "only.global = x <- global @ global #1",
            "only.group = x <- group @ group 20 #1",
            "only.model = x <- model @ model VVX500 #1",
            "only.site = x <- site @ site 3 #1",
        ],
    );
    let want_k = ["site", "model", "group", "global"];
    for n in 1..all.len() {
        let set = ProfileSet::new(&profiles, &all[..all.len() - n]);
        let device = phone();
        let r = set.resolve(&device);
        assert_eq!(r.get("k").expect("k").value, want_k[n - 1], "with the top {n} containers removed");
    }
}

#[test]
fn first_in_a_container_wins_and_later_ones_fill_in() {
    let profiles = [
        profile(1, "first", &[("a", "1")]),
        profile(2, "second", &[("a", "2"), ("b", "2")]),
        profile(3, "third", &[("b", "3"), ("c", "3")]),
    ];
    check(
        &profiles,
        &[deploy(DeploymentTarget::Global, &[1, 2, 3])],
        &phone(),
        &["a = 1 <- first @ global #1", "b = 2 <- second @ global #2", "c = 3 <- third @ global #3"],
    );
    check(
        &profiles,
        &[deploy(DeploymentTarget::Global, &[3, 2, 1])],
        &phone(),
        &["a = 2 <- second @ global #2", "b = 3 <- third @ global #1", "c = 3 <- third @ global #1"],
    );
}

#[test]
fn a_nearer_site_and_a_higher_group_win() {
    let profiles = [
        profile(1, "parent site", &[("s", "parent")]),
        profile(2, "own site", &[("s", "own")]),
        profile(3, "low group", &[("g", "low")]),
        profile(4, "top group", &[("g", "top")]),
    ];
    let deployments = [deploy(site(1), &[1]), deploy(site(3), &[2]), deploy(group(10), &[3]), deploy(group(20), &[4])];
    check(
        &profiles,
        &deployments,
        &phone(),
        &["g = top <- top group @ group 20 #1", "s = own <- own site @ site 3 #1"],
    );
    // Set the other group to top priority: it wins now.
    let reordered = DeviceFacts { groups: vec![GroupId(10), GroupId(20)], sites: vec![SiteId(1)], ..phone() };
    check(
        &profiles,
        &deployments,
        &reordered,
        &["g = low <- low group @ group 10 #1", "s = parent <- parent site @ site 1 #1"],
    );
}

#[test]
fn substitutions_use_the_devices_facts() {
    let profiles = [profile(
        1,
        "paths",
        &[
            ("cfg", "https://prov.example.com/${mac_address}/config.cfg"),
            ("label", "${name} (${model}, ${serial_number}) in ${attr.room}"),
            ("missing", "[${attr.floor}]"),
            ("dollar", "costs $5 ${mac_address}$"),
        ],
    )];
    let deployments = [deploy(DeploymentTarget::Global, &[1])];
    check(
        &profiles,
        &deployments,
        &phone(),
        &[
            "cfg = https://prov.example.com/0004f2aabbcc/config.cfg <- paths @ global #1",
            "dollar = costs $5 0004f2aabbcc$ <- paths @ global #1",
            "label = Front desk (VVX500, SN123) in A-101 <- paths @ global #1",
            "missing = [] <- paths @ global #1",
        ],
    );
    let bare = DeviceFacts { mac: None, serial: None, attributes: BTreeMap::new(), ..phone() };
    check(
        &profiles,
        &deployments,
        &bare,
        &[
            "cfg = https://prov.example.com//config.cfg <- paths @ global #1",
            "dollar = costs $5 $ <- paths @ global #1",
            "label = Front desk (VVX500, ) in  <- paths @ global #1",
            "missing = [] <- paths @ global #1",
        ],
    );
}

#[test]
fn a_value_too_long_after_substitution_is_a_problem_not_a_value() {
    let long = "x".repeat(MAX_PARAMETER_VALUE - 30);
    let template = format!("{long}${{attr.room}}${{attr.room}}");
    assert!(settings(&[("k", &template)]).validate().is_ok(), "the template itself fits");
    let profiles = [profile(1, "p", &[("k", &template)])];
    let mut device = phone();
    device.attributes.insert("room".into(), "r".repeat(200));
    check(
        &profiles,
        &[deploy(DeploymentTarget::Global, &[1])],
        &device,
        &["k = !longer than 1024 bytes after substitution <- p @ global #1"],
    );
}

#[test]
fn templates_refuse_unknown_and_unterminated_substitutions() {
    assert_eq!(Template::parse("${mac}"), Err(TemplateError::Unknown("mac".into())));
    assert_eq!(Template::parse("${MAC_ADDRESS}"), Err(TemplateError::Unknown("MAC_ADDRESS".into())));
    assert_eq!(Template::parse("${attr.}"), Err(TemplateError::Unknown("attr.".into())));
    assert_eq!(Template::parse("${attr.Room}"), Err(TemplateError::Unknown("attr.Room".into())));
    assert_eq!(Template::parse("a${mac_address"), Err(TemplateError::Unterminated));
    assert_eq!(Template::parse(&"${name}".repeat(MAX_SUBSTITUTIONS + 1)), Err(TemplateError::TooMany));
    assert!(Template::parse(&"${name}".repeat(MAX_SUBSTITUTIONS)).is_ok());
    assert!(Template::parse("$ {x} $x {y}").is_ok());
}

fn settings(params: &[(&str, &str)]) -> ProfileSettings {
    ProfileSettings {
        name: "p".into(),
        description: String::new(),
        parameters: params.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        firmware: BTreeMap::new(),
    }
}

#[test]
fn profile_settings_are_validated() {
    let refused = |s: ProfileSettings, needle: &str| match s.validate() {
        Err(StoreError::InvalidInput(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected a refusal with {needle:?}, got {other:?}"),
    };
    assert!(settings(&[("call.autoAnswer.SIP", "1"), ("_mac_cfg-x", "${mac_address}")]).validate().is_ok());
    refused(settings(&[("a", "${nope}")]), "unknown substitution ${nope}");
    refused(settings(&[("bad key", "1")]), "parameter key");
    refused(settings(&[("", "1")]), "parameter key");
    refused(settings(&[(&"k".repeat(MAX_PARAMETER_KEY + 1), "1")]), "parameter key");
    refused(settings(&[("k", &"v".repeat(MAX_PARAMETER_VALUE + 1))]), "more than 1024 bytes");
    refused(settings(&[("k", "a\nb")]), "control character");
    refused(ProfileSettings { name: " p".into(), ..settings(&[]) }, "white space");
    refused(ProfileSettings { name: String::new(), ..settings(&[]) }, "empty");
    refused(ProfileSettings { name: "n".repeat(MAX_PROFILE_NAME + 1), ..settings(&[]) }, "name has more");
    let many: Vec<(String, String)> = (0..=MAX_PARAMETERS).map(|i| (format!("k{i}"), "v".into())).collect();
    let many = ProfileSettings { parameters: many.into_iter().collect(), ..settings(&[]) };
    refused(many, "parameters");
    let mut fw = settings(&[]);
    fw.firmware.insert(String::new(), FirmwareId(1));
    refused(fw, "model");
    assert!(check_deployment_profiles(&[ProfileId(1), ProfileId(2)]).is_ok());
    assert!(check_deployment_profiles(&[ProfileId(1), ProfileId(1)]).is_err());
    let too_many: Vec<_> = (0..=MAX_DEPLOYMENT_PROFILES as u64).map(ProfileId).collect();
    assert!(check_deployment_profiles(&too_many).is_err());
}

#[test]
fn deployment_targets_round_trip_through_storage() {
    for t in [device_target(7), site(3), model("VVX 500"), group(20), DeploymentTarget::Global] {
        assert_eq!(DeploymentTarget::from_stored(t.container().as_str(), &t.member_key()), Some(t.clone()));
    }
    assert_eq!(DeploymentTarget::from_stored("site", "x"), None);
    assert_eq!(DeploymentTarget::from_stored("planet", "1"), None);
}

#[test]
fn value_hashes_are_stable() {
    assert_eq!(value_hash(""), "cbf29ce484222325");
    assert_eq!(value_hash("a"), "af63dc4c8601ec8c");
    assert_ne!(value_hash("1"), value_hash("0"));
}

/// A random enterprise: profiles 1..=6 over keys k0..k3 (some with firmware for model M0 or
/// M1), deployments to a few targets, and a device in some of them.
fn arb_case() -> impl Strategy<Value = (Vec<StoredProfile>, Vec<Deployment>, DeviceFacts)> {
    let profiles =
        prop::collection::vec((prop::collection::btree_map(0..4u8, 0..3u8, 0..4), prop::option::of(0..2u8)), 6)
            .prop_map(|ps| {
                ps.into_iter()
                    .enumerate()
                    .map(|(i, (params, fw))| {
                        let mut p = profile(i as u64 + 1, &format!("p{}", i + 1), &[]);
                        p.settings.parameters =
                            params.into_iter().map(|(k, v)| (format!("k{k}"), format!("v{v}"))).collect();
                        if let Some(m) = fw {
                            p.settings.firmware.insert(format!("M{m}"), FirmwareId(i as u64 + 100));
                        }
                        p
                    })
                    .collect::<Vec<_>>()
            });
    let target = prop_oneof![
        (1..3u64).prop_map(device_target),
        (1..4u64).prop_map(site),
        (0..2u8).prop_map(|m| model(&format!("M{m}"))),
        (1..4u64).prop_map(group),
        Just(DeploymentTarget::Global),
    ];
    let deployments = prop::collection::btree_map(
        target,
        prop::sample::subsequence((1..=6u64).collect::<Vec<_>>(), 0..4).prop_shuffle(),
        0..8,
    )
    .prop_map(|m| m.into_iter().map(|(t, ps)| deploy(t, &ps)).collect::<Vec<_>>());
    let device = (
        1..3u64,
        prop::sample::subsequence(vec![1u64, 2, 3], 0..3).prop_shuffle(),
        prop::sample::subsequence(vec![1u64, 2, 3], 0..3).prop_shuffle(),
        0..2u8,
    )
        .prop_map(|(id, sites, groups, m)| DeviceFacts {
            id: DeviceId(id),
            mac: None,
            serial: None,
            model: format!("M{m}"),
            name: String::new(),
            attributes: BTreeMap::new(),
            sites: sites.into_iter().map(SiteId).collect(),
            groups: groups.into_iter().map(GroupId).collect(),
        });
    (profiles, deployments, device)
}

/// The model: rank every (deployment, position) that applies to the device as a tuple
/// (container, index of the member in the device's list, position) and take the smallest.
fn model_rank(d: &Deployment, device: &DeviceFacts) -> Option<(Container, usize)> {
    let member = match &d.target {
        DeploymentTarget::Device { device_id } => (*device_id == device.id).then_some(0),
        DeploymentTarget::Site { site_id } => device.sites.iter().position(|s| s == site_id),
        DeploymentTarget::Model { model } => (*model == device.model).then_some(0),
        DeploymentTarget::Group { group_id } => device.groups.iter().position(|g| g == group_id),
        DeploymentTarget::Global => Some(0),
    }?;
    Some((d.target.container(), member))
}

proptest! {
    #[test]
    fn the_winner_is_the_highest_ranked_deployment_holding_the_key((profiles, deployments, device) in arb_case()) {
        let set = ProfileSet::new(&profiles, &deployments);
        let resolved = set.resolve(&device);
        let mut resolver = set.resolver();
        prop_assert_eq!(&resolver.resolve(&device), &resolved, "the caching resolver agrees");
        prop_assert_eq!(&resolver.resolve(&device), &resolved, "also from its cache");
        let by_id: BTreeMap<ProfileId, &StoredProfile> = profiles.iter().map(|p| (p.id, p)).collect();
        let mut candidates: Vec<((Container, usize, usize), &Deployment, &StoredProfile)> = Vec::new();
        for d in &deployments {
            if let Some((c, m)) = model_rank(d, &device) {
                for (pos, pid) in d.profiles.iter().enumerate() {
                    candidates.push(((c, m, pos), d, by_id[pid]));
                }
            }
        }
        candidates.sort_by_key(|c| c.0);
        for key in (0..4).map(|k| format!("k{k}")) {
            let want = candidates.iter().find(|c| c.2.settings.parameters.contains_key(&key));
            match (want, resolved.get(key.as_str())) {
                (None, None) => {}
                (Some((rank, d, p)), Some(got)) => {
                    prop_assert_eq!(got.origin.profile_id, p.id);
                    prop_assert_eq!(got.origin.target, &d.target);
                    prop_assert_eq!(got.origin.position as usize, rank.2 + 1);
                    prop_assert_eq!(got.value.as_ref(), p.settings.parameters[&key].as_str());
                }
                (want, got) => prop_assert!(false, "{key}: want {want:?}, got {got:?}"),
            }
        }
        let want_fw = candidates.iter().find_map(|c| c.2.settings.firmware.get(&device.model).map(|f| (*f, c.2.id)));
        prop_assert_eq!(resolved.firmware.map(|f| (f.firmware_id, f.origin.profile_id)), want_fw);
    }
}
