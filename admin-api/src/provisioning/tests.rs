//! The pure parts of provisioning: what a push sends (only changes, removals as null, chunked
//! within the command bounds) and how a pending push settles from its commands.

use fleetpulse_proto::{EnterpriseId, ProfileId};
use fleetpulse_store::{Deployment, DeploymentTarget, MAX_COMMAND_ARGS, ProfileSettings, StoredProfile};
use serde_json::json;

use super::*;

fn set(params: &[(&str, &str)]) -> ProfileSet {
    let profile = StoredProfile {
        id: ProfileId(1),
        enterprise_id: EnterpriseId(1),
        settings: ProfileSettings {
            name: "p".into(),
            description: String::new(),
            parameters: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            firmware: BTreeMap::new(),
        },
        created_at: UnixMillis(0),
        updated_at: UnixMillis(0),
    };
    let global = Deployment {
        enterprise_id: EnterpriseId(1),
        target: DeploymentTarget::Global,
        profiles: vec![ProfileId(1)],
        updated_at: UnixMillis(0),
    };
    ProfileSet::new(&[profile], &[global])
}

fn facts() -> DeviceFacts {
    DeviceFacts {
        id: DeviceId(7),
        mac: fleetpulse_proto::Mac::parse("0004f2000007").ok(),
        serial: None,
        model: "VVX500".into(),
        name: "desk".into(),
        attributes: BTreeMap::new(),
        sites: vec![],
        groups: vec![],
    }
}

fn plan(params: &[(&str, &str)], record: &ProvisionRecord) -> PushPlan {
    let set = set(params);
    plan_push(&set.resolve(&facts()), record)
}

fn changes(plan: &PushPlan) -> Vec<Value> {
    plan.commands.iter().map(|c| serde_json::from_str::<Value>(c).expect("json")["changes"].clone()).collect()
}

#[test]
fn the_first_push_sends_everything_and_the_next_only_changes() {
    let mut record = ProvisionRecord::empty(DeviceId(7));
    let first = plan(&[("a", "1"), ("cfg", "https://p/${mac_address}.cfg")], &record);
    assert_eq!(changes(&first), [json!({"a": "1", "cfg": "https://p/0004f2000007.cfg"})]);
    assert_eq!((first.set, first.removed), (2, 0));
    record.confirmed = first.hashes.clone();
    assert!(plan(&[("a", "1"), ("cfg", "https://p/${mac_address}.cfg")], &record).commands.is_empty());
    let next = plan(&[("a", "2"), ("b", "new")], &record);
    assert_eq!(changes(&next), [json!({"a": "2", "b": "new", "cfg": null})], "changed, added, removed");
    assert_eq!((next.set, next.removed), (2, 1));
}

#[test]
fn the_configuration_after_part_of_a_push_is_the_confirmed_one_with_those_changes() {
    let mut record = ProvisionRecord::empty(DeviceId(7));
    record.confirmed = [("gone".to_owned(), value_hash("x")), ("same".to_owned(), value_hash("1"))].into();
    let short: Vec<(String, String)> = (0..250).map(|i| (format!("k{i:03}"), "1".to_owned())).collect();
    let mut params: Vec<(&str, &str)> = short.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    params.push(("same", "1"));
    let p = plan(&params, &record);
    assert_eq!(p.commands.len(), 2);
    assert_eq!(p.hashes_after(&record.confirmed, 2), p.hashes, "every command gives the target");
    let first = p.hashes_after(&record.confirmed, 1);
    assert_eq!(first.len(), 200, "the first command removes gone and sets 199 keys; same stays: {}", first.len());
    assert_eq!(p.hashes_after(&record.confirmed, 0), record.confirmed);
}

#[test]
fn keys_a_pending_push_changes_are_sent_again_when_the_target_moves_back() {
    let mut record = ProvisionRecord::empty(DeviceId(7));
    record.confirmed = plan(&[("a", "1")], &record).hashes;
    let pending = plan(&[("a", "2")], &record);
    record.pending = Some(ProvisionPush { commands: vec![CommandId(1)], hashes: pending.hashes, at: UnixMillis(1) });
    // Back to "1" while the push to "2" is in flight: "1" is sent again.
    assert_eq!(changes(&plan(&[("a", "1")], &record)), [json!({"a": "1"})]);
}

#[test]
fn big_pushes_are_split_within_the_command_bounds() {
    let long = "v".repeat(1_000);
    let params: Vec<(String, String)> = (0..450).map(|i| (format!("key.{i:04}"), long.clone())).collect();
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = plan(&params, &ProvisionRecord::empty(DeviceId(7)));
    assert!(p.commands.len() >= 450 / 4, "{} commands", p.commands.len());
    let mut seen = 0;
    for c in &p.commands {
        assert!(c.len() <= MAX_COMMAND_ARGS, "{} bytes", c.len());
        let value: Value = serde_json::from_str(c).expect("json");
        assert!(validate_internal_command("apply_config", &value).is_ok());
        seen += value["changes"].as_object().expect("object").len();
    }
    assert_eq!(seen, 450);
    let short: Vec<(String, String)> = (0..450).map(|i| (format!("k{i}"), "1".to_owned())).collect();
    let short: Vec<(&str, &str)> = short.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = plan(&short, &ProvisionRecord::empty(DeviceId(7)));
    assert!(changes(&p).iter().all(|c| c.as_object().expect("object").len() as u64 <= MAX_CONFIG_CHANGES));
    assert_eq!(p.commands.len(), 3, "450 short keys in chunks of at most 200");
}

fn command(id: u64, state: CommandState, finished: Option<i64>) -> Option<Command> {
    Some(Command {
        id: CommandId(id),
        device_id: DeviceId(7),
        enterprise_id: EnterpriseId(1),
        kind: "apply_config".into(),
        args: "{}".into(),
        deadline: UnixMillis(1_000_000),
        issued_by: AccountId(1),
        issued_at: UnixMillis(10),
        state,
        sent_at: None,
        accepted_at: None,
        finished_at: finished.map(UnixMillis),
        attempts: 1,
        output: None,
        reason: (state == CommandState::Failed).then(|| "disk full".to_owned()),
    })
}

fn pending_record() -> ProvisionRecord {
    let mut record = ProvisionRecord::empty(DeviceId(7));
    record.confirmed.insert("a".into(), value_hash("1"));
    let hashes = [("a".to_owned(), value_hash("2"))].into_iter().collect();
    record.pending = Some(ProvisionPush { commands: vec![CommandId(1), CommandId(2)], hashes, at: UnixMillis(10) });
    record
}

#[test]
fn a_push_settles_when_all_its_commands_succeeded() {
    let mut record = pending_record();
    assert!(!settle(
        &mut record,
        &[command(1, CommandState::Succeeded, Some(20)), command(2, CommandState::Sent, None)]
    ));
    assert_eq!(last_provision(&record).map(|l| (l.result, l.commands.len())), Some((ProvisionResult::Pending, 2)));
    assert!(settle(
        &mut record,
        &[command(1, CommandState::Succeeded, Some(20)), command(2, CommandState::Succeeded, Some(30))]
    ));
    assert_eq!(record.confirmed["a"], value_hash("2"));
    assert_eq!(record.pending, None);
    let last = last_provision(&record).expect("provisioned");
    assert_eq!((last.result, last.at, last.reason), (ProvisionResult::Succeeded, Some(UnixMillis(30)), None));
}

#[test]
fn a_push_fails_when_one_command_fails_expires_or_is_gone() {
    for (second, reason) in [
        (command(2, CommandState::Failed, Some(25)), "command 2 failed: disk full"),
        (command(2, CommandState::Expired, Some(25)), "command 2 expired"),
        (None, "command 2 no longer exists"),
    ] {
        let mut record = pending_record();
        assert!(settle(&mut record, &[command(1, CommandState::Succeeded, Some(20)), second]));
        assert_eq!(record.confirmed["a"], value_hash("1"), "nothing confirmed");
        let last = last_provision(&record).expect("provisioned");
        assert_eq!(last.result, ProvisionResult::Failed);
        assert!(last.reason.as_deref().is_some_and(|r| r.starts_with(reason)), "{:?}", last.reason);
    }
    assert_eq!(last_provision(&ProvisionRecord::empty(DeviceId(7))), None, "never provisioned");
}
