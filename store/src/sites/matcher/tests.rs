//! Tests of the site matcher: a table of site plans and lookups, parsing and conflicts, and a
//! property test against a brute-force scan of the entries.

use std::net::IpAddr;

use fleetpulse_proto::SiteId;
use proptest::prelude::*;

use super::*;

const DEFAULTS: DefaultSites = DefaultSites { internet: SiteId(100), intranet: SiteId(101) };

/// Site plans and lookups. `entry SITE PUBLIC [PRIVATE]` adds an entry to the current plan (a
/// blank line starts a new plan); `lookup PUBLIC PRIVATE|- => SITE` checks one device
/// (`internet`, `intranet` for the defaults).
const CASES: &str = "
# The guide's example: two sites share a public prefix, told apart by their private ones;
# a site without private subnets takes the rest of its public prefix.
entry 1 20.1.0.0/16 10.0.0.0/8
entry 2 20.1.0.0/16 10.33.24.0/24
entry 3 20.0.0.0/8 3.1.0.0/16
entry 4 20.0.0.0/8
lookup 20.1.9.9 10.33.24.7 => 2
lookup 20.1.9.9 10.33.25.7 => 1
lookup 20.1.9.9 10.1.1.1 => 1
lookup 20.56.31.1 3.1.200.1 => 3
lookup 20.56.31.1 192.168.1.1 => 4
lookup 20.56.31.1 - => 4
# 20.1/16 has no entry for 192.168/16 nor one without private: passed over for 20/8.
lookup 20.1.9.9 192.168.1.1 => 4
lookup 20.1.9.9 - => 4
lookup 21.0.0.1 10.0.0.1 => internet
lookup 10.9.9.9 10.0.0.1 => intranet
lookup 192.168.1.20 - => intranet
lookup 100.64.0.1 - => intranet
lookup 100.128.0.1 - => internet
lookup 169.254.1.1 - => intranet
lookup 127.0.0.1 - => intranet
# IPv4-mapped IPv6 addresses match as IPv4.
lookup ::ffff:20.1.9.9 ::ffff:10.33.24.1 => 2

# More specific public prefixes win; /32 and /0.
entry 1 0.0.0.0/0
entry 2 198.51.100.0/24
entry 3 198.51.100.7/32
lookup 198.51.100.7 - => 3
lookup 198.51.100.8 - => 2
lookup 203.0.113.1 - => 1
lookup 10.0.0.1 - => 1
lookup 2001:db8::1 - => internet

# IPv6 public and private prefixes, mixed families.
entry 1 2001:db8::/32
entry 2 2001:db8:aa::/48 fd00:1::/32
entry 3 2001:db8:aa::/48 10.1.0.0/16
lookup 2001:db8:aa::5 fd00:1::9 => 2
lookup 2001:db8:aa::5 10.1.2.3 => 3
lookup 2001:db8:aa::5 fd00:2::9 => 1
lookup 2001:db8:bb::5 fd00:1::9 => 1
lookup 2001:db9::1 - => internet
lookup fd12::1 - => intranet
lookup fe80::1 - => intranet
lookup ::1 - => intranet
lookup 2001:db8::1 ::ffff:10.1.0.1 => 1

# A site reachable only through a private prefix: unknown private addresses pass it over.
entry 1 203.0.113.0/24 10.10.0.0/16
lookup 203.0.113.9 10.10.1.1 => 1
lookup 203.0.113.9 - => internet
lookup 203.0.113.9 10.11.1.1 => internet

# Intranet is a site like any other once it has subnets; internal public addresses it does
# not list still fall back to it.
entry 101 10.0.0.0/8
entry 5 10.20.0.0/16
lookup 10.20.1.1 - => 5
lookup 10.30.1.1 - => 101
lookup 192.168.0.1 - => 101
";

fn site(s: &str) -> SiteId {
    match s {
        "internet" => DEFAULTS.internet,
        "intranet" => DEFAULTS.intranet,
        n => SiteId(n.parse().expect("a site number")),
    }
}

fn ip(s: &str) -> Option<IpAddr> {
    (s != "-").then(|| s.parse().expect("an address"))
}

#[test]
fn table() {
    let mut entries: Vec<SiteEntry> = Vec::new();
    let mut matcher = SiteMatcher::empty(DEFAULTS);
    let mut failures = Vec::new();
    let mut checked = 0;
    for line in CASES.lines().map(str::trim) {
        if line.is_empty() {
            entries.clear();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["entry", s, public, rest @ ..] => {
                entries.push(SiteEntry {
                    site: site(s),
                    public: public.parse().expect("a public prefix"),
                    private: rest.first().map(|p| p.parse().expect("a private prefix")),
                });
                matcher = SiteMatcher::build(DEFAULTS, entries.iter().copied()).expect("no conflict");
            }
            ["lookup", public, private, "=>", want] => {
                checked += 1;
                let got = matcher.lookup(ip(public).expect("a public address"), ip(private));
                if got != site(want) {
                    failures.push(format!("{line}: got {}", got.0));
                }
                let brute = brute_force(&entries, ip(public).expect("public"), ip(private));
                assert_eq!(brute, got, "brute force disagrees on {line}");
            }
            _ => panic!("bad case line {line:?}"),
        }
    }
    assert!(checked > 30);
    assert!(failures.is_empty(), "failed lookups:\n{}", failures.join("\n"));
}

#[test]
fn parsing_refuses_host_bits_and_bad_lengths() {
    let err = |s: &str| s.parse::<Cidr>().expect_err(s).to_string();
    assert!(err("20.56.31.0/8").contains("host bits set (the network is 20.0.0.0/8)"), "{}", err("20.56.31.0/8"));
    assert!(err("10.0.0.0/33").contains("beyond 32"));
    assert!(err("2001:db8::/129").contains("beyond 128"));
    assert!(err("2001:db8::1/64").contains("2001:db8::/64"));
    assert!(err("10.0.0.0").contains("address/length"));
    assert!(err("10.0.0/8").contains("not an IP address"));
    assert!(err("10.0.0.0/+8").contains("not a prefix length"));
    assert!(err("10.0.0.0/-1").contains("not a prefix length"));
    assert!(err("10.0.0.0/").contains("not a prefix length"));
    let ok: Cidr = " 10.0.0.0/8 ".parse().expect("valid");
    assert_eq!(ok.to_string(), "10.0.0.0/8");
    assert_eq!("0.0.0.0/0".parse::<Cidr>().expect("all").to_string(), "0.0.0.0/0");
    assert_eq!("::/0".parse::<Cidr>().expect("all v6").to_string(), "::/0");
    assert_eq!("::ffff:10.0.0.0/8".parse::<Cidr>().map(|c| c.to_string()).ok(), Some("10.0.0.0/8".into()));
    assert_eq!(serde_json::to_string(&ok).expect("json"), "\"10.0.0.0/8\"");
}

#[test]
fn the_same_entry_twice_is_a_conflict_naming_both_sites() {
    let e = |site, public: &str, private: Option<&str>| SiteEntry {
        site: SiteId(site),
        public: public.parse().expect("public"),
        private: private.map(|p| p.parse().expect("private")),
    };
    let conflict = SiteMatcher::build(DEFAULTS, [e(1, "20.1.0.0/16", None), e(2, "20.1.0.0/16", None)])
        .expect_err("same public, both without private");
    assert_eq!((conflict.first, conflict.second), (SiteId(1), SiteId(2)));
    let conflict = SiteMatcher::build(
        DEFAULTS,
        [e(1, "20.1.0.0/16", Some("10.0.0.0/8")), e(3, "20.1.0.0/16", Some("10.0.0.0/8"))],
    )
    .expect_err("same pair");
    assert_eq!(
        (conflict.first, conflict.second, conflict.private.map(|p| p.to_string())),
        (SiteId(1), SiteId(3), Some("10.0.0.0/8".into()))
    );
    SiteMatcher::build(
        DEFAULTS,
        [
            e(1, "20.1.0.0/16", None),
            e(2, "20.1.0.0/16", Some("10.0.0.0/8")),
            e(3, "20.1.1.0/24", None),
            e(4, "20.1.0.0/16", Some("10.0.0.0/9")),
        ],
    )
    .expect("nested and distinct entries are allowed");
}

/// The rule of the module documentation, stated as a scan over every entry.
fn brute_force(entries: &[SiteEntry], public: IpAddr, private: Option<IpAddr>) -> SiteId {
    let mut lengths: Vec<u8> = entries.iter().filter(|e| e.public.contains(public)).map(|e| e.public.len()).collect();
    lengths.sort_unstable_by(|a, b| b.cmp(a));
    lengths.dedup();
    for len in lengths {
        let here: Vec<&SiteEntry> =
            entries.iter().filter(|e| e.public.len() == len && e.public.contains(public)).collect();
        let best_private = here
            .iter()
            .filter_map(|e| match (e.private, private) {
                (Some(p), Some(q)) if p.contains(q) => Some((p.len(), e.site)),
                _ => None,
            })
            .max_by_key(|(l, _)| *l);
        if let Some((_, site)) = best_private {
            return site;
        }
        if let Some(e) = here.iter().find(|e| e.private.is_none()) {
            return e.site;
        }
    }
    if is_internal_address(public) { DEFAULTS.intranet } else { DEFAULTS.internet }
}

/// Addresses from a few small pools, so that random prefixes and addresses meet often.
fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (prop::sample::select(vec![10u8, 20, 192, 203]), 0u8..4, any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| IpAddr::from([a, b, c, d])),
        (0u16..3, 0u16..4, any::<u16>()).prop_map(|(a, b, c)| IpAddr::from([0x2001, 0xdb8, a, b, 0, 0, 0, c])),
    ]
}

fn arb_cidr() -> impl Strategy<Value = Cidr> {
    (arb_ip(), 0u8..=128).prop_map(|(ip, len)| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = len % (max + 1);
        let bits = mask(bits_of(ip), len, max);
        Cidr::new(addr_of(bits, ip.is_ipv4()), len).expect("masked")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_a_brute_force_scan(
        raw in prop::collection::vec((1u64..40, arb_cidr(), prop::option::of(arb_cidr())), 0..60),
        lookups in prop::collection::vec((arb_ip(), prop::option::of(arb_ip())), 1..40),
    ) {
        // Drop repeated entries (a conflict, tested on its own) keeping the first.
        let mut entries: Vec<SiteEntry> = Vec::new();
        for (site, public, private) in raw {
            if !entries.iter().any(|e| e.public == public && e.private == private) {
                entries.push(SiteEntry { site: SiteId(site), public, private });
            }
        }
        let matcher = SiteMatcher::build(DEFAULTS, entries.iter().copied()).expect("no repeated entry");
        prop_assert_eq!(matcher.entries(), entries.len());
        for (public, private) in lookups {
            prop_assert_eq!(matcher.lookup(public, private), brute_force(&entries, public, private));
        }
    }
}
