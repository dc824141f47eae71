//! Site matching (PRV-1): lookups per second in an enterprise of 2,000 sites (the limit), with
//! shared public prefixes told apart by private ones, nested public prefixes and IPv6.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse_proto::SiteId;
use fleetpulse_store::{Cidr, DefaultSites, SiteEntry, SiteMatcher};

fn cidr(s: String) -> Cidr {
    s.parse().expect("a valid bench prefix")
}

/// 2,000 sites: 1,000 branch offices with a public /24 each; 500 floors behind 20 shared
/// public /28s, told apart by private /24s; 300 regions with a public /16; 200 IPv6 /48s.
fn plan() -> Vec<SiteEntry> {
    let mut entries = Vec::new();
    let mut site = 10u64;
    let mut add = |public: String, private: Option<String>| {
        site += 1;
        entries.push(SiteEntry { site: SiteId(site), public: cidr(public), private: private.map(cidr) });
    };
    for i in 0..1_000u32 {
        add(format!("20.{}.{}.0/24", i / 250, i % 250), None);
    }
    for i in 0..500u32 {
        add(
            format!("198.51.{}.{}/28", i / 16 % 2, (i % 20) * 16 % 256),
            Some(format!("10.{}.{}.0/24", i / 250, i % 250)),
        );
    }
    for i in 0..300u32 {
        add(format!("{}.{}.0.0/16", 30 + i / 200, i % 200), None);
    }
    for i in 0..200u32 {
        add(format!("2001:db8:{:x}::/48", i), None);
    }
    entries
}

/// A fixed sequence of addresses, most of them inside some site.
fn addresses(n: usize) -> Vec<(IpAddr, Option<IpAddr>)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let r = next();
            let b = |k: u32| ((r >> k) & 0xff) as u8;
            let public: IpAddr = match r % 5 {
                0 => IpAddr::from([20, b(8) % 4, b(16), b(24)]),
                1 => IpAddr::from([198, 51, b(8) % 2, b(16)]),
                2 => IpAddr::from([30 + b(8) % 2, b(16), b(24), b(32)]),
                3 => IpAddr::from([0x2001, 0xdb8, u16::from(b(8)), 0, 0, 0, 0, 1]),
                _ => IpAddr::from([b(8), b(16), b(24), b(32)]),
            };
            let private = (r % 7 != 0).then(|| IpAddr::from([10, b(40) % 2, b(48), b(56)]));
            (public, private)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let defaults = DefaultSites { internet: SiteId(1), intranet: SiteId(2) };
    let entries = plan();
    let matcher = SiteMatcher::build(defaults, entries.iter().copied()).expect("the bench plan has no conflict");
    let addrs = addresses(10_000);
    let mut group = c.benchmark_group("site_matcher");
    group.throughput(Throughput::Elements(addrs.len() as u64));
    group.bench_function("lookup_2000_sites", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for (public, private) in &addrs {
                sum = sum.wrapping_add(matcher.lookup(*public, *private).0);
            }
            black_box(sum)
        })
    });
    group.bench_function("compile_2000_sites", |b| {
        b.iter(|| black_box(SiteMatcher::build(defaults, entries.iter().copied()).expect("no conflict").entries()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
