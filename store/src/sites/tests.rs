//! Tests of the site rules: what a site change is refused for, and the tree helpers.

use fleetpulse_proto::{EnterpriseId, SiteId, UnixMillis};

use super::*;

fn site(id: u64, parent: Option<u64>, kind: SiteKind, name: &str, subnets: &[(&str, &[&str])]) -> Site {
    Site {
        id: SiteId(id),
        enterprise_id: EnterpriseId(1),
        parent_id: parent.map(SiteId),
        kind,
        name: name.into(),
        description: String::new(),
        location: String::new(),
        subnets: subnets
            .iter()
            .map(|(p, q)| SiteSubnet {
                public: p.parse().expect("public"),
                private: q.iter().map(|c| c.parse().expect("private")).collect(),
            })
            .collect(),
        created_at: UnixMillis(0),
        updated_at: UnixMillis(0),
    }
}

fn plan() -> Vec<Site> {
    vec![
        site(1, None, SiteKind::Internet, "Internet", &[]),
        site(2, None, SiteKind::Intranet, "Intranet", &[]),
        site(3, None, SiteKind::Custom, "HQ", &[("20.1.0.0/16", &["10.0.0.0/8"])]),
        site(4, Some(3), SiteKind::Custom, "HQ floor 2", &[("20.1.0.0/16", &["10.33.24.0/24"])]),
        site(5, Some(4), SiteKind::Custom, "HQ lab", &[]),
    ]
}

fn create(name: &str, parent: Option<u64>, subnets: &[(&str, &[&str])]) -> SiteChange {
    let s = site(0, parent, SiteKind::Custom, name, subnets);
    SiteChange::Create(NewSite {
        enterprise_id: EnterpriseId(1),
        parent_id: s.parent_id,
        name: s.name,
        description: String::new(),
        location: String::new(),
        subnets: s.subnets,
        at: UnixMillis(1),
    })
}

fn refused(change: SiteChange) -> String {
    plan_site_change(&plan(), &change).expect_err("refused").to_string()
}

#[test]
fn changes_refused_with_the_reason() {
    let cases: Vec<(SiteChange, &str)> = vec![
        (create("Branch", None, &[("20.1.0.0/16", &["10.0.0.0/8"])]), "overlaps site \"HQ\" (id 3)"),
        (create("Branch", None, &[("20.2.0.0/16", &[]), ("20.2.0.0/16", &[])]), "is given twice"),
        (create("HQ", None, &[]), "the name \"HQ\" is taken by site \"HQ\" (id 3)"),
        (create(" x", None, &[]), "no leading or trailing spaces"),
        (create("", None, &[]), "needs a name"),
        (create("Branch", Some(1), &[]), "Internet site cannot have child sites"),
        (create("Branch", Some(99), &[]), "parent site 99 does not exist"),
        (
            SiteChange::Update(
                SiteId(3),
                SiteEdit { parent_id: Some(Some(SiteId(5))), ..SiteEdit::default() },
                UnixMillis(2),
            ),
            "under its own descendant",
        ),
        (
            SiteChange::Update(
                SiteId(1),
                SiteEdit { description: Some("x".into()), ..SiteEdit::default() },
                UnixMillis(2),
            ),
            "Internet site cannot be changed",
        ),
        (
            SiteChange::Update(
                SiteId(4),
                SiteEdit { name: Some("HQ lab".into()), ..SiteEdit::default() },
                UnixMillis(2),
            ),
            "taken by site \"HQ lab\" (id 5)",
        ),
    ];
    for (change, want) in cases {
        let got = refused(change.clone());
        assert!(got.contains(want), "{change:?}: {got}");
    }
}

#[test]
fn nested_and_shared_public_subnets_are_allowed() {
    let sites = plan_site_change(
        &plan(),
        &create("Branch", Some(3), &[("20.1.0.0/16", &["10.33.0.0/16"]), ("20.1.7.0/24", &[]), ("2001:db8::/32", &[])]),
    )
    .expect("allowed");
    assert_eq!(sites.len(), 6);
    let intranet = SiteChange::Update(
        SiteId(2),
        SiteEdit { subnets: Some(plan()[2].subnets.clone()), ..SiteEdit::default() },
        UnixMillis(2),
    );
    assert!(plan_site_change(&plan(), &intranet).expect_err("same as HQ").to_string().contains("HQ"));
}

#[test]
fn the_tree_is_bounded_in_size_and_depth() {
    let mut sites = plan();
    for i in sites.len()..MAX_SITES {
        sites.push(site(100 + i as u64, None, SiteKind::Custom, &format!("s{i}"), &[]));
    }
    let err = plan_site_change(&sites, &create("one more", None, &[])).expect_err("full");
    assert!(matches!(err, StoreError::LimitExceeded(_)), "{err}");

    let mut deep = plan();
    for d in 0..MAX_SITE_DEPTH as u64 {
        deep.push(site(1000 + d, if d == 0 { None } else { Some(999 + d) }, SiteKind::Custom, &format!("d{d}"), &[]));
    }
    let err =
        plan_site_change(&deep, &create("too deep", Some(1000 + MAX_SITE_DEPTH as u64 - 1), &[])).expect_err("deep");
    assert!(err.to_string().contains("levels"), "{err}");
    // Moving HQ (3 levels) under the deepest-but-two site would also exceed the depth.
    let mv = SiteChange::Update(
        SiteId(3),
        SiteEdit { parent_id: Some(Some(SiteId(1000 + MAX_SITE_DEPTH as u64 - 3))), ..SiteEdit::default() },
        UnixMillis(2),
    );
    assert!(plan_site_change(&deep, &mv).expect_err("deep move").to_string().contains("levels"));
}

#[test]
fn delete_refusals_name_the_children() {
    let sites = plan();
    assert!(
        check_delete(&sites, SiteId(1)).expect_err("internet").to_string().contains("Internet site cannot be deleted")
    );
    assert!(
        check_delete(&sites, SiteId(2)).expect_err("intranet").to_string().contains("Intranet site cannot be deleted")
    );
    let err = check_delete(&sites, SiteId(3)).expect_err("children").to_string();
    assert!(err.contains("child sites: \"HQ floor 2\""), "{err}");
    check_delete(&sites, SiteId(5)).expect("a leaf");
    assert_eq!(subtree(&sites, SiteId(3)), vec![SiteId(3), SiteId(4), SiteId(5)]);
    assert!(subtree(&sites, SiteId(77)).is_empty());
    let mut shuffled: Vec<Site> = sites.iter().rev().cloned().collect();
    tree_order(&mut shuffled);
    let names: Vec<&str> = shuffled.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["HQ", "Internet", "Intranet", "HQ floor 2", "HQ lab"]);
}
