//! The site matcher (PRV-1), sans-I/O: an enterprise's subnets compiled into longest-prefix
//! tables, and `lookup(public, private) → SiteId`.
//!
//! # The rule
//! A site's subnets are *entries* `(public prefix, private prefix or none)`: a public subnet
//! with private subnets gives one entry per private subnet, one without gives one entry whose
//! private side matches any private address (or none). For a device with public address `P` and
//! private address `Q` (maybe unknown):
//! 1. Take the public prefixes of the entries that contain `P`, longest first.
//! 2. For the first of them (the longest) that has an entry matching `Q`, the device's site is
//!    the site of the longest private prefix containing `Q` there; an entry without a private
//!    prefix matches when no private prefix there contains `Q` (and when `Q` is unknown).
//!    A public prefix none of whose entries matches `Q` is passed over for the next shorter one.
//! 3. No entry matches: the device is in **Intranet** when `P` is not a global address (RFC 1918,
//!    shared 100.64/10, loopback, link-local, `0/8`, IPv6 unique-local, link-local, `::1`, `::`):
//!    the device reached fleetpulse from inside a private network no site describes; otherwise
//!    in **Internet**.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are matched as the IPv4 address.
//!
//! # Conflicts
//! Longest-prefix matching makes a more specific prefix inside another site's prefix
//! meaningful (it wins), so nesting is allowed; only the *same entry twice* is a conflict: the
//! same public prefix with the same private prefix (or both without one) in two sites, or twice
//! in one site. [`SiteMatcher::build`] refuses it and names both sites.
//!
//! # Layout
//! One hash table per prefix length present (keys: the masked address as a `u128`), per address
//! family; a lookup probes the lengths present, longest first. Memory is linear in the entries
//! (a bit trie over IPv6 could take 128 nodes per entry) and lookups cost one probe per distinct
//! prefix length, which real site plans have few of.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use fleetpulse_proto::SiteId;
use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// An IPv4 or IPv6 network: an address with no bits set beyond its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// The network `addr/len`; [`StoreError::InvalidInput`] when the length exceeds the family's
    /// (32 or 128) or the address has host bits set (the message names the network meant).
    pub fn new(addr: IpAddr, len: u8) -> Result<Cidr> {
        let addr = addr.to_canonical();
        let max = max_len(&addr);
        if len > max {
            return Err(StoreError::InvalidInput(format!("prefix length {len} of {addr} is beyond {max}")));
        }
        let bits = bits_of(addr);
        let masked = mask(bits, len, max);
        if masked != bits {
            let network = Cidr { addr: addr_of(masked, addr.is_ipv4()), len };
            return Err(StoreError::InvalidInput(format!("{addr}/{len} has host bits set (the network is {network})")));
        }
        Ok(Cidr { addr, len })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether the prefix length is 0 (the whole family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` (canonicalised) is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(bits_of(ip), self.len, max_len(&ip)) == bits_of(self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = StoreError;

    /// `address/length`, e.g. `10.1.0.0/16` or `2001:db8::/32`.
    fn from_str(s: &str) -> Result<Cidr> {
        let s = s.trim();
        let Some((addr, len)) = s.split_once('/') else {
            return Err(StoreError::InvalidInput(format!("{s:?} is not a subnet (address/length, e.g. 10.1.0.0/16)")));
        };
        let addr: IpAddr =
            addr.parse().map_err(|_| StoreError::InvalidInput(format!("{addr:?} is not an IP address")))?;
        let len: u8 = match len.parse() {
            Ok(l) if !len.starts_with('+') => l,
            _ => return Err(StoreError::InvalidInput(format!("{len:?} is not a prefix length"))),
        };
        Cidr::new(addr, len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: StoreError| {
            serde::de::Error::custom(e.to_string().trim_start_matches("invalid input: ").to_owned())
        })
    }
}

impl schemars::JsonSchema for Cidr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An IPv4 or IPv6 network, address/length, no host bits set (10.1.0.0/16, 2001:db8::/32).",
            "examples": ["10.1.0.0/16"]
        })
    }
}

fn max_len(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn addr_of(bits: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// `bits` with everything after the first `len` of `max` bits cleared.
fn mask(bits: u128, len: u8, max: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let host = u32::from(max - len);
    (bits >> host) << host
}

/// Whether the address is not a global one: where a device "from inside" seems to come from.
pub fn is_internal_address(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private() || a.is_loopback() || a.is_link_local() || o[0] == 0 || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback() || a.is_unspecified() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// One matching entry of a site: a public prefix and a private one (none: any private address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteEntry {
    /// The site.
    pub site: SiteId,
    /// Its public prefix.
    pub public: Cidr,
    /// Its private prefix; `None` matches any private address and an unknown one.
    pub private: Option<Cidr>,
}

/// The two sites every enterprise has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultSites {
    /// Devices whose public address is global and matches no site.
    pub internet: SiteId,
    /// Devices whose public address is internal and matches no site.
    pub intranet: SiteId,
}

/// Two sites (or one, twice) hold the same entry ([`SiteMatcher::build`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryConflict {
    /// The site that held the entry first.
    pub first: SiteId,
    /// The site that brought it again.
    pub second: SiteId,
    /// The entry's public prefix.
    pub public: Cidr,
    /// The entry's private prefix.
    pub private: Option<Cidr>,
}

/// A fast hasher for the masked addresses (a multiply-xorshift; keys are not attacker-chosen
/// beyond an admin's own site plan, and the tables are bounded by the sites limit).
#[derive(Default, Clone, Copy)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u128(&mut self, v: u128) {
        let folded = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
        let x = folded.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
}

type AddrMap<V> = HashMap<u128, V, BuildHasherDefault<AddrHasher>>;

/// Longest-prefix tables of one address family: one map per prefix length present.
#[derive(Debug, Clone)]
struct Family<V> {
    max: u8,
    /// (length, masked address → value), longest first.
    tables: Vec<(u8, AddrMap<V>)>,
}

impl<V> Family<V> {
    fn new(max: u8) -> Family<V> {
        Family { max, tables: Vec::new() }
    }

    fn entry(&mut self, cidr: Cidr) -> std::collections::hash_map::Entry<'_, u128, V> {
        let pos = match self.tables.binary_search_by(|(l, _)| cidr.len.cmp(l)) {
            Ok(p) => p,
            Err(p) => {
                self.tables.insert(p, (cidr.len, AddrMap::default()));
                p
            }
        };
        self.tables[pos].1.entry(bits_of(cidr.addr))
    }

    /// The values of the prefixes containing `bits`, longest first.
    fn matches(&self, bits: u128) -> impl Iterator<Item = &V> + '_ {
        self.tables.iter().filter_map(move |(len, map)| map.get(&mask(bits, *len, self.max)))
    }
}

/// Longest-prefix tables of both families.
#[derive(Debug, Clone)]
struct Prefixes<V> {
    v4: Family<V>,
    v6: Family<V>,
}

impl<V> Prefixes<V> {
    fn new() -> Prefixes<V> {
        Prefixes { v4: Family::new(32), v6: Family::new(128) }
    }

    fn entry(&mut self, cidr: Cidr) -> std::collections::hash_map::Entry<'_, u128, V> {
        if cidr.addr.is_ipv4() { self.v4.entry(cidr) } else { self.v6.entry(cidr) }
    }

    fn matches(&self, ip: IpAddr) -> Box<dyn Iterator<Item = &V> + '_> {
        match ip.to_canonical() {
            IpAddr::V4(a) => Box::new(self.v4.matches(u128::from(u32::from(a)))),
            IpAddr::V6(a) => Box::new(self.v6.matches(u128::from(a))),
        }
    }

    fn first_match(&self, ip: IpAddr) -> Option<&V> {
        match ip.to_canonical() {
            IpAddr::V4(a) => self.v4.matches(u128::from(u32::from(a))).next(),
            IpAddr::V6(a) => self.v6.matches(u128::from(a)).next(),
        }
    }
}

/// What one public prefix leads to.
#[derive(Debug, Clone)]
struct PublicNode {
    private: Prefixes<SiteId>,
    any_private: Option<SiteId>,
}

/// An enterprise's sites compiled for matching ([`SiteMatcher::lookup`]).
#[derive(Debug, Clone)]
pub struct SiteMatcher {
    public: Prefixes<PublicNode>,
    defaults: DefaultSites,
    entries: usize,
}

impl SiteMatcher {
    /// Compiles the entries; the first entry found twice is an [`EntryConflict`].
    pub fn build(
        defaults: DefaultSites,
        entries: impl IntoIterator<Item = SiteEntry>,
    ) -> std::result::Result<SiteMatcher, EntryConflict> {
        let mut public: Prefixes<PublicNode> = Prefixes::new();
        let mut count = 0;
        for e in entries {
            count += 1;
            let node =
                public.entry(e.public).or_insert_with(|| PublicNode { private: Prefixes::new(), any_private: None });
            let conflict = |first| EntryConflict { first, second: e.site, public: e.public, private: e.private };
            match e.private {
                None => match node.any_private {
                    Some(first) => return Err(conflict(first)),
                    None => node.any_private = Some(e.site),
                },
                Some(p) => match node.private.entry(p) {
                    std::collections::hash_map::Entry::Occupied(o) => return Err(conflict(*o.get())),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(e.site);
                    }
                },
            }
        }
        Ok(SiteMatcher { public, defaults, entries: count })
    }

    /// A matcher with no entries: every device in Internet or Intranet.
    pub fn empty(defaults: DefaultSites) -> SiteMatcher {
        SiteMatcher { public: Prefixes::new(), defaults, entries: 0 }
    }

    /// The number of entries compiled.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// The default sites.
    pub fn defaults(&self) -> DefaultSites {
        self.defaults
    }

    /// The site of a device with these addresses (the rule in the module documentation).
    pub fn lookup(&self, public: IpAddr, private: Option<IpAddr>) -> SiteId {
        for node in self.public.matches(public) {
            if let Some(q) = private
                && let Some(site) = node.private.first_match(q)
            {
                return *site;
            }
            if let Some(site) = node.any_private {
                return site;
            }
        }
        if is_internal_address(public) { self.defaults.intranet } else { self.defaults.internet }
    }
}

#[cfg(test)]
mod tests;
