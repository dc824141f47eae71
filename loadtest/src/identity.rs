//! Device identities of one run: MAC addresses made of a random run prefix and the device index.

use fleetpulse_proto::Mac;
use rand::Rng;

/// Hands out MAC addresses unique within a run and, with high probability, across runs:
/// a random 24-bit run prefix followed by the 24-bit device index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacPlan {
    prefix: u32,
}

impl MacPlan {
    /// How many distinct devices one plan can name (the index has 24 bits).
    pub const MAX_DEVICES: u32 = 1 << 24;

    /// A plan with the given prefix; only its low 24 bits are used.
    pub fn new(prefix: u32) -> Self {
        MacPlan { prefix: prefix & (Self::MAX_DEVICES - 1) }
    }

    /// A plan with a random prefix.
    pub fn random(rng: &mut impl Rng) -> Self {
        MacPlan::new(rng.random())
    }

    /// The run prefix (24 bits).
    pub fn prefix(&self) -> u32 {
        self.prefix
    }

    /// The seed of the fleet's traits (models, firmware, boot uptimes): a function of the prefix,
    /// so a fleet named again by `--mac-prefix` reconnects with the traits the server knows.
    pub fn traits_seed(&self) -> u64 {
        (u64::from(self.prefix) ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9)
    }

    /// The MAC of device `index`; indices must be below [`MacPlan::MAX_DEVICES`] (the run
    /// configuration checks this) and are taken modulo it otherwise.
    pub fn mac(&self, index: u32) -> Mac {
        let value = (u64::from(self.prefix) << 24) | u64::from(index & (Self::MAX_DEVICES - 1));
        Mac::parse(&format!("{value:012x}")).expect("12 lowercase hex digits are a valid MAC")
    }
}

/// The prefix as 6 lowercase hex digits, as `--mac-prefix` takes it.
impl std::fmt::Display for MacPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:06x}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn macs_are_prefix_then_index() {
        let plan = MacPlan::new(0x00ab_cdef);
        assert_eq!(plan.mac(0).as_str(), "abcdef000000");
        assert_eq!(plan.mac(0x12_3456).as_str(), "abcdef123456");
        assert_eq!(plan.mac(MacPlan::MAX_DEVICES - 1).as_str(), "abcdefffffff");
        assert_eq!(MacPlan::new(0xff00_0001).prefix(), 1, "only 24 bits of prefix");
        assert_eq!(MacPlan::new(1).mac(2).as_str(), "000001000002", "leading zeros are kept");
    }

    #[test]
    fn a_fleet_named_again_draws_the_same_traits() {
        assert_eq!(MacPlan::new(0xabcdef).traits_seed(), MacPlan::new(0xabcdef).traits_seed());
        let seeds: HashSet<u64> = (0..10_000).map(|p| MacPlan::new(p).traits_seed()).collect();
        assert_eq!(seeds.len(), 10_000, "distinct fleets draw distinct traits");
    }

    #[test]
    fn macs_are_unique_within_a_run() {
        let plan = MacPlan::random(&mut rand::rng());
        let macs: HashSet<Mac> = (0..200_000).map(|i| plan.mac(i)).collect();
        assert_eq!(macs.len(), 200_000);
        assert!(macs.iter().all(|m| Mac::parse(m.as_str()).is_ok()));
    }
}
