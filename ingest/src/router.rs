//! Stable shard routing (ING-5): a device always lands on the same shard.
//!
//! The hash is the SplitMix64 finalizer of the device id: fixed constants, independent of the
//! process, the platform and std's randomized hasher, so routing is the same on every node and
//! after every restart.

use fleetpulse_proto::DeviceId;

/// Maps devices to one of `shards` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRouter {
    shards: u64,
}

/// SplitMix64 finalizer: a bijective, well-mixing 64-bit hash.
pub fn stable_hash(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl ShardRouter {
    /// A router over `shards` shards (at least one).
    pub fn new(shards: usize) -> ShardRouter {
        ShardRouter { shards: shards.max(1) as u64 }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards as usize
    }

    /// The shard of a device.
    pub fn shard_for(&self, device: DeviceId) -> usize {
        (stable_hash(device.0) % self.shards) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_stable_across_processes() {
        // Fixed expectations: changing the hash would move every device to another shard.
        assert_eq!(stable_hash(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(stable_hash(1), 0x910a_2dec_8902_5cc1);
        let r = ShardRouter::new(8);
        assert_eq!(r.shard_for(DeviceId(1)), (0x910a_2dec_8902_5cc1u64 % 8) as usize);
    }

    #[test]
    fn sequential_ids_spread_evenly() {
        let r = ShardRouter::new(8);
        let mut counts = [0u32; 8];
        for id in 1..=80_000 {
            counts[r.shard_for(DeviceId(id))] += 1;
        }
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
        assert_eq!(ShardRouter::new(0).shards(), 1);
    }
}
