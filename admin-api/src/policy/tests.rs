//! The tenant policy as tables: caller × target × tree → decision, with one `check` helper
//! per question and no HTTP, no store.
//!
//! The world: platform; channel A with sub-channel A1 (and A1's child A11); sibling channel B.
//! Enterprises EA (of A, authorization accepted), EA1 (of A1, pending), EB (of B, accepted).
//! Accounts: the platform admin, A's admin, EA's admin, B's admin and its sub-account.

use super::*;

const A: ChannelId = ChannelId(1);
const A1: ChannelId = ChannelId(2);
const A11: ChannelId = ChannelId(3);
const B: ChannelId = ChannelId(4);
const GONE: ChannelId = ChannelId(99);
const EA: EnterpriseId = EnterpriseId(10);
const EA1: EnterpriseId = EnterpriseId(11);
const EB: EnterpriseId = EnterpriseId(12);
const NO_ENTERPRISE: EnterpriseId = EnterpriseId(98);
const PLATFORM_ADMIN: AccountId = AccountId(100);
const A_ADMIN: AccountId = AccountId(101);
const EA_ADMIN: AccountId = AccountId(102);
const B_ADMIN: AccountId = AccountId(103);
const B_SUB: AccountId = AccountId(104);
const NO_ACCOUNT: AccountId = AccountId(97);

/// The whole world as a tree (every fact a question could need).
fn tree() -> TenantTree {
    let mut t = TenantTree::default();
    for c in [A, A1, A11, B] {
        t.channels.insert(c, true);
    }
    t.channels.insert(GONE, false);
    t.subtrees.insert(A, vec![A, A1, A11]);
    t.subtrees.insert(A1, vec![A1, A11]);
    t.subtrees.insert(A11, vec![A11]);
    t.subtrees.insert(B, vec![B]);
    let e = |id, channel, authorization| {
        Some(EnterpriseNode { id, channel: Some(channel), authorization, permissions: Default::default() })
    };
    t.enterprises.insert(EA, e(EA, A, ChannelAuthorization::Accepted));
    t.enterprises.insert(EA1, e(EA1, A1, ChannelAuthorization::Pending));
    t.enterprises.insert(EB, e(EB, B, ChannelAuthorization::Accepted));
    t.enterprises.insert(NO_ENTERPRISE, None);
    let a = |id, role, channel, enterprise, parent| Some(AccountNode { id, role, channel, enterprise, parent });
    t.accounts.insert(PLATFORM_ADMIN, a(PLATFORM_ADMIN, Role::PlatformAdmin, None, None, None));
    t.accounts.insert(A_ADMIN, a(A_ADMIN, Role::ChannelAdmin, Some(A), None, None));
    t.accounts.insert(EA_ADMIN, a(EA_ADMIN, Role::EnterpriseAdmin, None, Some(EA), None));
    t.accounts.insert(B_ADMIN, a(B_ADMIN, Role::ChannelAdmin, Some(B), None, None));
    t.accounts.insert(B_SUB, a(B_SUB, Role::ChannelAdmin, Some(B), None, Some(B_ADMIN)));
    t.accounts.insert(NO_ACCOUNT, None);
    t.visible_enterprises = None;
    t
}

/// The callers of the tables.
#[derive(Debug, Clone, Copy)]
enum Who {
    Platform,
    /// A's admin: A's subtree.
    ChannelA,
    /// A1's admin: a sub-channel's subtree (A is its parent, A11 its child).
    ChannelA1,
    /// EA's admin.
    EnterpriseA,
    /// A sub-account of A's admin that sees only EA1 (data narrowed), with every feature.
    NarrowedToEa1,
    /// A sub-account of A's admin that may use devices only.
    DevicesOnly,
    /// A's admin acting inside EA.
    ActingInEa,
    /// A's admin acting inside sub-channel A1.
    ActingInA1,
}

fn caller(who: Who) -> Caller {
    let channel = |own: ChannelId, subtree: &[ChannelId]| Scope::Channel {
        channel: Some(own),
        subtree: subtree.to_vec(),
        enterprises: Vec::new(),
        whole_subtree: true,
    };
    let (account, scope, features, acting) = match who {
        Who::Platform => (PLATFORM_ADMIN, Scope::Platform, None, None),
        Who::ChannelA => (A_ADMIN, channel(A, &[A, A1, A11]), None, None),
        Who::ChannelA1 => (AccountId(105), channel(A1, &[A1, A11]), None, None),
        Who::EnterpriseA => (EA_ADMIN, Scope::Enterprise(EA), None, None),
        Who::NarrowedToEa1 => (
            AccountId(106),
            Scope::Channel { channel: Some(A), subtree: Vec::new(), enterprises: vec![EA1], whole_subtree: false },
            Some(Feature::ALL.to_vec()),
            None,
        ),
        Who::DevicesOnly => (AccountId(107), channel(A, &[A, A1, A11]), Some(vec![Feature::Devices]), None),
        Who::ActingInEa => (A_ADMIN, Scope::Enterprise(EA), None, Some(Acting::Enterprise(EA))),
        Who::ActingInA1 => (A_ADMIN, channel(A1, &[A1, A11]), None, Some(Acting::Channel(A1))),
    };
    Caller { account, scope, features, acting }
}

/// One row of the decision table: `who` doing `target` in the whole world gets `expected`.
#[track_caller]
fn check(who: Who, target: Target, expected: Decision) {
    assert_eq!(decide(&caller(who), &target, &tree()), expected, "{who:?} {target:?}");
}

use Refusal::{ActingRequired, AuthorizationRequired, Conflict, Forbidden, Invalid, NotFound};
use Who::*;

#[test]
fn channels_are_seen_in_the_own_subtree_only() {
    for (who, target, expected) in [
        (Platform, Target::Channel(B), Ok(())),
        (Platform, Target::Channel(GONE), Err(NotFound("channel"))),
        (ChannelA, Target::Channel(A), Ok(())),
        (ChannelA, Target::Channel(A11), Ok(())),
        (ChannelA, Target::Channel(B), Err(NotFound("channel"))),
        (ChannelA1, Target::Channel(A11), Ok(())),
        (ChannelA1, Target::Channel(A), Err(NotFound("channel")) /* the parent */),
        (ChannelA1, Target::Channel(B), Err(NotFound("channel"))),
        (ChannelA1, Target::Channel(GONE), Err(NotFound("channel"))),
        (EnterpriseA, Target::Channel(A), Err(Forbidden)),
        (EnterpriseA, Target::Channel(GONE), Err(Forbidden)),
        (ActingInEa, Target::Channel(A), Err(Forbidden)),
        (NarrowedToEa1, Target::Channel(A1), Err(NotFound("channel"))),
        (ActingInA1, Target::Channel(A), Err(NotFound("channel"))),
        (ActingInA1, Target::Channel(A11), Ok(())),
    ] {
        check(who, target, expected);
    }
}

#[test]
fn enterprises_and_their_data_are_seen_through_the_channel_tree() {
    for (who, target, expected) in [
        (Platform, Target::Enterprise(EB), Ok(())),
        (Platform, Target::Enterprise(NO_ENTERPRISE), Err(NotFound("enterprise"))),
        (Platform, Target::EnterpriseData(NO_ENTERPRISE), Ok(())),
        (ChannelA, Target::Enterprise(EA1), Ok(())),
        (ChannelA, Target::Enterprise(EB), Err(NotFound("enterprise"))),
        (ChannelA1, Target::Enterprise(EA), Err(NotFound("enterprise")) /* the parent's */),
        (ChannelA1, Target::EnterpriseData(EA1), Ok(())),
        (EnterpriseA, Target::Enterprise(EA), Ok(())),
        (EnterpriseA, Target::EnterpriseData(EA), Ok(())),
        (EnterpriseA, Target::EnterpriseData(EA1), Err(NotFound("enterprise"))),
        (NarrowedToEa1, Target::Enterprise(EA1), Ok(())),
        (NarrowedToEa1, Target::EnterpriseData(EA), Err(NotFound("enterprise"))),
        (ActingInEa, Target::EnterpriseData(EA), Ok(())),
        (ActingInEa, Target::EnterpriseData(EB), Err(NotFound("enterprise"))),
        (ActingInA1, Target::EnterpriseData(EA1), Ok(())),
        (ActingInA1, Target::EnterpriseData(EA), Err(NotFound("enterprise"))),
    ] {
        check(who, target, expected);
    }
}

#[test]
fn changes_inside_an_enterprise_need_to_be_it_or_act_inside_it() {
    for (who, target, expected) in [
        (Platform, Target::ChangeInside(EB), Ok(())),
        (EnterpriseA, Target::ChangeInside(EA), Ok(())),
        (EnterpriseA, Target::ChangeInside(EB), Err(NotFound("enterprise"))),
        (ActingInEa, Target::ChangeInside(EA), Ok(())),
        (ChannelA, Target::ChangeInside(EA), Err(ActingRequired)),
        (ChannelA, Target::ChangeInside(EB), Err(NotFound("enterprise"))),
        (NarrowedToEa1, Target::ChangeInside(EA1), Err(ActingRequired)),
        (NarrowedToEa1, Target::ChangeInside(EA), Err(NotFound("enterprise"))),
    ] {
        check(who, target, expected);
    }
}

#[test]
fn enterprise_listings_name_a_visible_enterprise() {
    for (who, requested, expected) in [
        (Platform, None, Ok(())),
        (Platform, Some(NO_ENTERPRISE), Ok(())),
        (EnterpriseA, None, Ok(())),
        (EnterpriseA, Some(EB), Err(NotFound("enterprise"))),
        (ChannelA, Some(EA1), Ok(())),
        (ChannelA, Some(EB), Err(NotFound("enterprise"))),
        (ChannelA, None, Err(Invalid("enterprise_id is required for channel accounts on this listing"))),
    ] {
        check(who, Target::EnterpriseListing(requested), expected);
    }
    assert_eq!(own_enterprise(&caller(EnterpriseA)), Some(EA));
    assert_eq!(own_enterprise(&caller(ChannelA)), None);
    assert!(lists_across_enterprises(&caller(ChannelA), None));
    assert!(!lists_across_enterprises(&caller(ChannelA), Some(EA)));
    assert!(!lists_across_enterprises(&caller(Platform), None));
}

#[test]
fn new_channels_enterprises_and_accounts_go_where_the_caller_sees() {
    let account = |role, channel, enterprise| Target::NewAccount { role, channel, enterprise };
    for (who, target, expected) in [
        (Platform, Target::NewChannel { parent: None }, Ok(())),
        (ChannelA, Target::NewChannel { parent: None }, Ok(())),
        (ChannelA, Target::NewChannel { parent: Some(A11) }, Ok(())),
        (ChannelA, Target::NewChannel { parent: Some(B) }, Err(NotFound("channel"))),
        (ChannelA1, Target::NewChannel { parent: Some(A) }, Err(NotFound("channel"))),
        (EnterpriseA, Target::NewChannel { parent: None }, Err(Forbidden)),
        (NarrowedToEa1, Target::NewChannel { parent: None }, Err(Invalid("parent_id is required"))),
        (Platform, Target::NewEnterprise { channel: Some(GONE) }, Ok(()) /* the store refuses it */),
        (ChannelA, Target::NewEnterprise { channel: None }, Ok(())),
        (ChannelA, Target::NewEnterprise { channel: Some(B) }, Err(NotFound("channel"))),
        (EnterpriseA, Target::NewEnterprise { channel: None }, Err(Forbidden)),
        (NarrowedToEa1, Target::NewEnterprise { channel: None }, Err(Invalid("channel_id is required"))),
        (Platform, account(Role::PlatformAdmin, None, None), Ok(())),
        (ChannelA, account(Role::PlatformAdmin, None, None), Err(Forbidden)),
        (ChannelA, account(Role::ChannelAdmin, Some(A1), None), Ok(())),
        (ChannelA, account(Role::ChannelAdmin, Some(B), None), Err(NotFound("channel"))),
        (ChannelA, account(Role::EnterpriseAdmin, None, Some(EA1)), Ok(())),
        (ChannelA, account(Role::EnterpriseAdmin, None, Some(EB)), Err(NotFound("enterprise"))),
        (EnterpriseA, account(Role::EnterpriseAdmin, None, Some(EA)), Err(Forbidden)),
    ] {
        check(who, target, expected);
    }
    assert_eq!(home_channel(&caller(ChannelA1)), Some(A1));
    assert_eq!(home_channel(&caller(Platform)), None);
    assert_eq!(home_channel(&caller(NarrowedToEa1)), None, "its parent's channel is not in its data");
}

#[test]
fn tenant_accounts_are_seen_frozen_and_granted_within_the_scope() {
    for (who, target, expected) in [
        (Platform, Target::Account(B_SUB), Ok(())),
        (Platform, Target::Account(NO_ACCOUNT), Err(NotFound("account"))),
        (ChannelA, Target::Account(EA_ADMIN), Ok(()) /* through its enterprise */),
        (ChannelA, Target::Account(A_ADMIN), Ok(())),
        (ChannelA, Target::Account(B_ADMIN), Err(NotFound("account"))),
        (ChannelA, Target::Account(PLATFORM_ADMIN), Err(NotFound("account"))),
        (ChannelA1, Target::Account(A_ADMIN), Err(NotFound("account")) /* the parent's */),
        (EnterpriseA, Target::Account(EA_ADMIN), Err(Forbidden)),
        (Platform, Target::Freeze(B_ADMIN), Ok(())),
        (Platform, Target::Freeze(PLATFORM_ADMIN), Err(Conflict("an account cannot freeze or unfreeze itself"))),
        (ChannelA, Target::Freeze(B_ADMIN), Err(NotFound("account"))),
        (ChannelA, Target::GrantChannel(A1), Ok(())),
        (ChannelA, Target::GrantChannel(B), Err(NotFound("channel"))),
        (Platform, Target::GrantChannel(GONE), Err(NotFound("channel"))),
        (EnterpriseA, Target::GrantChannel(A), Err(NotFound("channel"))),
        (EnterpriseA, Target::GrantEnterprise(EA), Ok(())),
        (ChannelA, Target::GrantEnterprise(EB), Err(NotFound("enterprise"))),
    ] {
        check(who, target, expected);
    }
}

#[test]
fn sub_accounts_are_for_full_accounts_acting_for_no_one() {
    let mut tree = tree();
    tree.accounts.insert(B_SUB, Some(AccountNode { parent: Some(A_ADMIN), ..tree.accounts[&B_SUB].expect("B_SUB") }));
    for (who, target, expected) in [
        (ChannelA, Target::SubAccounts, Ok(())),
        (EnterpriseA, Target::SubAccounts, Ok(())),
        (DevicesOnly, Target::SubAccounts, Err(Forbidden)),
        (ActingInEa, Target::SubAccounts, Err(Forbidden)),
        (ChannelA, Target::SubAccount(B_SUB), Ok(())),
        (Platform, Target::SubAccount(B_SUB), Err(NotFound("account")) /* another account's */),
        (ChannelA, Target::SubAccount(NO_ACCOUNT), Err(NotFound("account"))),
    ] {
        assert_eq!(decide(&caller(who), &target, &tree), expected, "{who:?} {target:?}");
    }
}

#[test]
fn permissions_are_granted_from_above_and_acting_follows_the_authorization() {
    for (who, target, expected) in [
        (ChannelA, Target::ChannelFlags(A), Err(Forbidden) /* its own channel */),
        (ChannelA, Target::ChannelFlags(A1), Ok(())),
        (ActingInA1, Target::ChannelFlags(A1), Err(Forbidden)),
        (Platform, Target::ChannelFlags(A), Ok(())),
        (EnterpriseA, Target::EnterprisePermissions(EA), Err(Forbidden)),
        (ChannelA, Target::EnterprisePermissions(EA), Ok(())),
        (ChannelA, Target::ActInChannel(A1), Ok(())),
        (ChannelA, Target::ActInChannel(A), Err(Forbidden) /* its own */),
        (ChannelA, Target::ActInChannel(B), Err(NotFound("channel"))),
        (ActingInA1, Target::ActInChannel(A11), Err(Forbidden) /* acting already */),
        (Platform, Target::ActInChannel(A1), Err(Forbidden)),
        (ChannelA, Target::ActInEnterprise(EA), Ok(())),
        (ChannelA, Target::ActInEnterprise(EA1), Err(AuthorizationRequired)),
        (ChannelA, Target::ActInEnterprise(EB), Err(NotFound("enterprise"))),
        (EnterpriseA, Target::ActInEnterprise(EA), Err(Forbidden)),
        (ActingInEa, Target::ActInEnterprise(EA), Err(Forbidden)),
        (ChannelA, Target::RequestAuthorization(EA1), Ok(())),
        (ChannelA, Target::RequestAuthorization(EB), Err(NotFound("enterprise"))),
        (EnterpriseA, Target::RequestAuthorization(EA), Err(Forbidden)),
        (EnterpriseA, Target::AnswerAuthorization(EA), Ok(())),
        (EnterpriseA, Target::AnswerAuthorization(EB), Err(NotFound("enterprise")) /* 404 before 403 */),
        (ActingInEa, Target::AnswerAuthorization(EA), Err(Forbidden)),
        (ChannelA, Target::AnswerAuthorization(EA), Err(Forbidden)),
    ] {
        check(who, target, expected);
    }
}

#[test]
fn features_are_what_a_sub_account_was_given() {
    assert_eq!(uses(&caller(ChannelA), Feature::Accounts), Ok(()));
    assert_eq!(uses(&caller(DevicesOnly), Feature::Devices), Ok(()));
    assert_eq!(uses(&caller(DevicesOnly), Feature::Alarms), Err(Forbidden));
}

#[test]
fn listings_show_what_the_scope_covers() {
    assert_eq!(channel_listing(&caller(Platform)), Ok(ChannelListing::All));
    assert_eq!(channel_listing(&caller(ChannelA1)), Ok(ChannelListing::Subtree(A1)));
    assert_eq!(channel_listing(&caller(NarrowedToEa1)), Ok(ChannelListing::Only(Vec::new())));
    assert_eq!(channel_listing(&caller(EnterpriseA)), Err(Forbidden));
    assert_eq!(enterprise_listing(&caller(Platform)), EnterpriseListing::All);
    assert_eq!(enterprise_listing(&caller(ActingInEa)), EnterpriseListing::Only(vec![EA]));
    assert_eq!(
        enterprise_listing(&caller(NarrowedToEa1)),
        EnterpriseListing::Within { channels: Vec::new(), enterprises: vec![EA1] }
    );
    assert_eq!(account_listing(&caller(ChannelA1)), Ok(AccountListing::Channels(vec![A1, A11])));
    assert_eq!(account_listing(&caller(EnterpriseA)), Err(Forbidden));
    assert_eq!(operation_log_listing(&caller(EnterpriseA)), AccountListing::Enterprise(EA));
    assert_eq!(operation_log_listing(&caller(Platform)), AccountListing::All);
}

#[test]
fn device_filters_stay_inside_the_scope() {
    let mut t = tree();
    t.visible_enterprises = Some(vec![EA, EA1]);
    let check = |who, enterprises: Option<Vec<EnterpriseId>>, channels: Option<Vec<ChannelId>>, expected| {
        assert_eq!(device_scope(&caller(who), enterprises.clone(), channels.clone(), &t), expected, "{who:?}");
    };
    check(Platform, None, None, Ok((None, None)));
    check(Platform, Some(vec![EB]), Some(vec![B]), Ok((Some(vec![EB]), Some(vec![B]))));
    check(EnterpriseA, None, None, Ok((Some(vec![EA]), None)));
    check(EnterpriseA, Some(vec![EB]), None, Err(NotFound("enterprise")));
    check(EnterpriseA, None, Some(vec![A]), Err(NotFound("channel")));
    check(ChannelA, None, None, Ok((Some(vec![EA, EA1]), None)));
    check(ChannelA, Some(vec![EA1]), Some(vec![A1]), Ok((Some(vec![EA1]), Some(vec![A1]))));
    check(ChannelA, Some(vec![EB]), None, Err(NotFound("enterprise")));
    check(ChannelA, None, Some(vec![B]), Err(NotFound("channel")));
    // The visible enterprises are read only once the channels passed.
    assert_eq!(
        device_scope(&caller(ChannelA), None, Some(vec![A]), &tree()),
        Err(Refusal::Needs(Lookup::VisibleEnterprises))
    );
    assert_eq!(device_scope(&caller(ChannelA), None, Some(vec![B]), &tree()), Err(NotFound("channel")));
}

#[test]
fn questions_ask_only_for_what_their_answer_depends_on() {
    let empty = TenantTree::default();
    for (who, target, expected) in [
        (Platform, Target::EnterpriseData(EA), Ok(())),
        (EnterpriseA, Target::EnterpriseData(EB), Err(NotFound("enterprise"))),
        (ChannelA, Target::EnterpriseData(EA), Err(Refusal::Needs(Lookup::Enterprise(EA)))),
        (EnterpriseA, Target::Channel(A), Err(Forbidden)),
        (ChannelA, Target::Channel(B), Err(Refusal::Needs(Lookup::Channel(B)))),
        (ChannelA, Target::GrantChannel(B), Err(NotFound("channel")) /* not even read */),
        (ChannelA, Target::Account(A_ADMIN), Err(Refusal::Needs(Lookup::Account(A_ADMIN)))),
        (DevicesOnly, Target::SubAccounts, Err(Forbidden)),
    ] {
        assert_eq!(decide(&caller(who), &target, &empty), expected, "{who:?} {target:?}");
    }
}

/// One row of the scope table: the account with these data permissions, acting so, resolves to
/// `expected` in the whole world.
#[track_caller]
fn check_scope(account: AccountId, data: Option<DataPermission>, acting: Option<Acting>, expected: Decision<Scope>) {
    let t = tree();
    let node = t.accounts[&account].expect("account of the world");
    assert_eq!(scope_of(&node, data.as_ref(), acting, &t), expected, "{account:?} {data:?} {acting:?}");
}

#[test]
fn scopes_come_from_the_role_narrowed_by_data_and_replaced_by_acting() {
    let only = |channels: &[ChannelId], enterprises: &[EnterpriseId]| {
        Some(DataPermission::Only { channels: channels.to_vec(), enterprises: enterprises.to_vec() })
    };
    let channel = |own, subtree: &[ChannelId], enterprises: &[EnterpriseId], whole_subtree| {
        Ok(Scope::Channel { channel: own, subtree: subtree.to_vec(), enterprises: enterprises.to_vec(), whole_subtree })
    };
    check_scope(PLATFORM_ADMIN, None, None, Ok(Scope::Platform));
    check_scope(A_ADMIN, None, None, channel(Some(A), &[A, A1, A11], &[], true));
    check_scope(A_ADMIN, Some(DataPermission::All), None, channel(Some(A), &[A, A1, A11], &[], true));
    check_scope(EA_ADMIN, None, None, Ok(Scope::Enterprise(EA)));
    // Sub-accounts: the given channels' subtrees and enterprises, as far as the parent sees them.
    check_scope(A_ADMIN, only(&[A1, B], &[EA, EB, NO_ENTERPRISE]), None, channel(Some(A), &[A1, A11], &[EA], false));
    check_scope(A_ADMIN, only(&[], &[]), None, channel(Some(A), &[], &[], false));
    check_scope(PLATFORM_ADMIN, only(&[B], &[EA]), None, channel(None, &[B], &[EA], false));
    check_scope(EA_ADMIN, only(&[], &[EA]), None, Ok(Scope::Enterprise(EA)));
    check_scope(EA_ADMIN, only(&[A], &[EB]), None, channel(None, &[], &[], false));
    // Acting: inside an authorizing enterprise or a sub-channel it sees; else the session is void.
    check_scope(A_ADMIN, None, Some(Acting::Enterprise(EA)), Ok(Scope::Enterprise(EA)));
    check_scope(A_ADMIN, None, Some(Acting::Enterprise(EA1)), Err(Refusal::Unauthorized));
    check_scope(A_ADMIN, None, Some(Acting::Enterprise(EB)), Err(Refusal::Unauthorized));
    check_scope(A_ADMIN, None, Some(Acting::Enterprise(NO_ENTERPRISE)), Err(Refusal::Unauthorized));
    check_scope(A_ADMIN, None, Some(Acting::Channel(A1)), channel(Some(A1), &[A1, A11], &[], true));
    check_scope(A_ADMIN, None, Some(Acting::Channel(B)), Err(Refusal::Unauthorized));
    check_scope(A_ADMIN, only(&[], &[EA]), Some(Acting::Channel(A1)), Err(Refusal::Unauthorized));
}

#[test]
fn scopes_ask_for_subtrees_and_enterprises_in_order() {
    let node = tree().accounts[&A_ADMIN].expect("A's admin");
    let data = DataPermission::Only { channels: vec![A1], enterprises: vec![EA] };
    let mut t = TenantTree::default();
    assert_eq!(scope_of(&node, Some(&data), None, &t), Err(Refusal::Needs(Lookup::Subtree(A))));
    t.subtrees.insert(A, vec![A, A1, A11]);
    assert_eq!(scope_of(&node, Some(&data), None, &t), Err(Refusal::Needs(Lookup::Subtree(A1))));
    t.subtrees.insert(A1, vec![A1, A11]);
    assert_eq!(scope_of(&node, Some(&data), None, &t), Err(Refusal::Needs(Lookup::Enterprises(vec![EA]))));
    // Too many channels: refused before anything more is read.
    let big: Vec<ChannelId> = (1000..1000 + fleetpulse_store::MAX_CHANNEL_SUBTREE as u64 + 1).map(ChannelId).collect();
    t.subtrees.insert(A1, big);
    assert_eq!(scope_of(&node, Some(&data), None, &t), Err(Invalid("the data permissions cover too many channels")));
    let orphan = AccountNode { role: Role::ChannelAdmin, channel: None, ..node };
    assert_eq!(scope_of(&orphan, None, None, &t), Err(Refusal::Unauthorized));
}

#[test]
fn channels_sell_down_their_tree_and_enterprises_buy_nothing_themselves() {
    for (who, target, expected) in [
        (Platform, Target::Sell(EB), Ok(())),
        (ChannelA, Target::Sell(EA), Ok(())),
        (ChannelA, Target::Sell(EA1), Ok(()) /* a sub-channel's enterprise */),
        (ChannelA, Target::Sell(EB), Err(NotFound("enterprise"))),
        (ChannelA, Target::Sell(NO_ENTERPRISE), Err(NotFound("enterprise"))),
        (ChannelA1, Target::Sell(EA), Err(NotFound("enterprise")) /* the parent's */),
        (ChannelA1, Target::Sell(EA1), Ok(())),
        (NarrowedToEa1, Target::Sell(EA1), Ok(())),
        (NarrowedToEa1, Target::Sell(EA), Err(NotFound("enterprise"))),
        (ActingInA1, Target::Sell(EA1), Ok(())),
        (ActingInA1, Target::Sell(EA), Err(NotFound("enterprise"))),
        (EnterpriseA, Target::Sell(EA), Err(Forbidden)),
        (EnterpriseA, Target::Sell(EB), Err(NotFound("enterprise"))),
        (ActingInEa, Target::Sell(EA), Err(Forbidden)),
    ] {
        check(who, target, expected);
    }
}

#[test]
fn enterprise_permissions_gate_device_actions_and_the_rps_list() {
    use fleetpulse_store::TenantRef;
    // EA without device management and with RPS; EA1 and EB as granted by default (devices
    // managed, no RPS).
    let mut t = tree();
    let off = EnterprisePermissions { device_management: false, rps: true };
    t.enterprises.insert(EA, Some(EnterpriseNode { permissions: off, ..t.enterprises[&EA].expect("EA") }));
    let disabled = |what| Err(Refusal::PermissionDisabled(what));
    for (who, target, expected) in [
        (Platform, Target::ManageDevices(EA), disabled("device management")),
        (EnterpriseA, Target::ManageDevices(EA), disabled("device management")),
        (ActingInEa, Target::ManageDevices(EA), disabled("device management")),
        (ChannelA, Target::ManageDevices(EA), Err(ActingRequired)),
        (ChannelA, Target::ManageDevices(EB), Err(NotFound("enterprise"))),
        (Platform, Target::ManageDevices(EB), Ok(())),
        (Platform, Target::Rps(EA), Ok(())),
        (ChannelA, Target::Rps(EA), Ok(()) /* no acting needed */),
        (EnterpriseA, Target::Rps(EA), Ok(())),
        (ChannelA, Target::Rps(EA1), disabled("RPS")),
        (ChannelA, Target::Rps(EB), Err(NotFound("enterprise"))),
        (NarrowedToEa1, Target::Rps(EA), Err(NotFound("enterprise"))),
        (Platform, Target::FreezeTenant(TenantRef::Channel(A)), Ok(())),
        (ChannelA, Target::FreezeTenant(TenantRef::Channel(A1)), Ok(())),
        (
            ChannelA,
            Target::FreezeTenant(TenantRef::Channel(A)),
            Err(Conflict("an account cannot freeze its own channel")),
        ),
        (ChannelA1, Target::FreezeTenant(TenantRef::Channel(A)), Err(NotFound("channel"))),
        (ChannelA, Target::FreezeTenant(TenantRef::Channel(B)), Err(NotFound("channel"))),
        (ChannelA, Target::FreezeTenant(TenantRef::Enterprise(EA1)), Ok(())),
        (ChannelA, Target::FreezeTenant(TenantRef::Enterprise(EB)), Err(NotFound("enterprise"))),
        (EnterpriseA, Target::FreezeTenant(TenantRef::Enterprise(EA)), Err(Forbidden)),
        (EnterpriseA, Target::FreezeTenant(TenantRef::Channel(A)), Err(Forbidden)),
        (Platform, Target::MoveEnterprise { id: EB, to: Some(A) }, Ok(())),
        (Platform, Target::MoveEnterprise { id: EB, to: None }, Ok(())),
        (ChannelA, Target::MoveEnterprise { id: EA1, to: Some(A) }, Ok(())),
        (ChannelA, Target::MoveEnterprise { id: EA, to: Some(B) }, Err(NotFound("channel"))),
        (ChannelA, Target::MoveEnterprise { id: EB, to: Some(A) }, Err(NotFound("enterprise"))),
        (ChannelA, Target::MoveEnterprise { id: EA, to: None }, Err(Invalid("channel_id is required"))),
        (ChannelA1, Target::MoveEnterprise { id: EA1, to: Some(A) }, Err(NotFound("channel")) /* up is out */),
        (EnterpriseA, Target::MoveEnterprise { id: EA, to: Some(A) }, Err(Forbidden)),
    ] {
        assert_eq!(decide(&caller(who), &target, &t), expected, "{who:?} {target:?}");
    }
}

#[test]
fn dead_letters_are_the_platforms_only() {
    assert_eq!(dead_letters(&caller(Platform), None), Ok(()));
    assert_eq!(dead_letters(&caller(Platform), Some(1)), Ok(()));
    for who in [ChannelA, ChannelA1, EnterpriseA, NarrowedToEa1, DevicesOnly, ActingInEa, ActingInA1] {
        assert_eq!(dead_letters(&caller(who), None), Err(Forbidden), "{who:?} lists");
        assert_eq!(dead_letters(&caller(who), Some(1)), Err(NotFound("dead letter")), "{who:?} one");
    }
}

#[test]
fn relay_grants_are_seen_where_their_scope_is_and_are_otherwise_absent() {
    use fleetpulse_store::TenantRef;
    let t = tree();
    let absent = Err(NotFound("relay"));
    for (who, target, expected) in [
        (Platform, TenantRef::Channel(B), Ok(())),
        (Platform, TenantRef::Enterprise(EB), Ok(())),
        (Platform, TenantRef::Enterprise(NO_ENTERPRISE), absent.clone()),
        (Platform, TenantRef::Channel(GONE), absent.clone()),
        (ChannelA, TenantRef::Channel(A), Ok(())),
        (ChannelA, TenantRef::Channel(A11), Ok(())),
        (ChannelA, TenantRef::Enterprise(EA1), Ok(())),
        (ChannelA, TenantRef::Channel(B), absent.clone()),
        (ChannelA, TenantRef::Enterprise(EB), absent.clone()),
        (ChannelA1, TenantRef::Channel(A), absent.clone()),
        (EnterpriseA, TenantRef::Enterprise(EA), Ok(())),
        (EnterpriseA, TenantRef::Enterprise(EA1), absent.clone()),
        (EnterpriseA, TenantRef::Channel(A), absent.clone()),
        (ActingInEa, TenantRef::Enterprise(EA), Ok(())),
        (ActingInEa, TenantRef::Channel(A), absent.clone()),
        (NarrowedToEa1, TenantRef::Enterprise(EA1), Ok(())),
        (NarrowedToEa1, TenantRef::Enterprise(EA), absent.clone()),
    ] {
        assert_eq!(decide(&caller(who), &Target::Relay(target), &t), expected, "{who:?} {target:?}");
    }
}
