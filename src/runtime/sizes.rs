//! Sizes and routing every stage agrees on, written once: how a token picks its shard,
//! how many blocks one INSERT carries, how many sealed blocks a shard's pool holds and
//! how many reference updates a shard takes per pass. (A ring slot's size is the
//! ring's own: `ring::RING_SLOT_BYTES`.)

/// Most blocks one INSERT carries: a few full blocks are ~50–100 MB, one server
/// round trip amortised over all of them.
pub const BLOCKS_PER_INSERT_MAX: usize = 8;

/// Sealed blocks per shard pool: the sum of everything that can hold one at once.
pub const POOL_BLOCKS: usize = SEAL_GROUP_BLOCKS // the group the shard is filling
    + BLOCKS_PER_INSERT_MAX // the writer's batch, in flight to ClickHouse or the spill
    + SEAL_GROUP_BLOCKS; // one more sealed group queued behind that batch

/// Blocks one seal sends at once: ticks, signals and rejects.
pub const SEAL_GROUP_BLOCKS: usize = 3;

const _: () = assert!(
    POOL_BLOCKS == 14,
    "pool sizing changed: check max_ack_pending"
);

/// Which shard owns an instrument: tokens spread evenly by a multiplicative hash
/// (Knuth), so sparse token numbering does not crowd one shard.
#[inline]
pub fn shard_of(token: u32, shards: usize) -> usize {
    ((u64::from(token).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % shards as u64) as usize
}

/// ClickHouse's SQL function `intHash64`: the key XORed with a fixed salt, then the
/// 64-bit finalizer of MurmurHash3 (checked against ClickHouse 18.16 and 26.x:
/// `intHash64(toUInt64(1))` is 0x92CA4BA4F369E030).
#[inline]
pub fn int_hash64(key: u64) -> u64 {
    let mut x = key ^ 0x4cf2_d2ba_ae6d_a887;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The ClickHouse shard (0-based) that holds an instrument's rows in a cluster of
/// `targets` equally weighted shards: what a `Distributed` table with sharding key
/// `intHash64(instrument_token)` picks, so readers and writers agree.
#[inline]
pub fn clickhouse_shard_of(token: u32, targets: usize) -> usize {
    (int_hash64(u64::from(token)) % targets as u64) as usize
}

/// How instruments spread over a path's pipeline shards when the store is a cluster
/// of `targets` ClickHouse shards (DESIGN §8): pipeline shard `s` writes to ClickHouse
/// shard `s % targets` only, so its blocks are sealed for one target and never split.
///
/// ```text
///   token ──intHash64 % targets──► target t ──shard_of(token, shards / targets)──► k
///   pipeline shard = t + targets × k        (writer w = s % writers serves target w % targets)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sharding {
    shards: usize,
    targets: usize,
}

impl Sharding {
    /// `shards` pipeline shards over `targets` ClickHouse shards; when `targets` does
    /// not divide `shards` (a path config validation does not hold to it, such as the
    /// one-shard signals path), instruments spread as if there were one target.
    pub fn new(shards: usize, targets: usize) -> Sharding {
        let shards = shards.max(1);
        let targets = if targets > 1 && shards % targets == 0 {
            targets
        } else {
            1
        };
        Sharding { shards, targets }
    }

    /// Pipeline shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The pipeline shard of an instrument.
    #[inline]
    pub fn shard_of(&self, token: u32) -> usize {
        if self.targets == 1 {
            return shard_of(token, self.shards);
        }
        let target = clickhouse_shard_of(token, self.targets);
        target + self.targets * shard_of(token, self.shards / self.targets)
    }
}

/// Reference-data updates a shard applies between two frame passes: at ~50 ns a
/// `set_reference`, at most ~50 µs of delay for the frames behind them.
pub const REFERENCE_UPDATES_PER_PASS: usize = 1024;

#[cfg(test)]
mod sharding_tests {
    use super::*;

    #[test]
    fn int_hash64_is_clickhouses() {
        // `SELECT hex(intHash64(toUInt64(n)))` on ClickHouse 18.16 and chdb 26.9; the
        // cluster test checks the shard of every stored row against the server too.
        assert_eq!(int_hash64(0), 0x4213_1ede_3a74_3632);
        assert_eq!(int_hash64(1), 0x92ca_4ba4_f369_e030);
    }

    #[test]
    fn each_pipeline_shard_holds_one_clickhouse_shards_instruments() {
        for (shards, targets) in [(2, 2), (4, 2), (6, 3), (4, 4), (8, 2)] {
            let sharding = Sharding::new(shards, targets);
            let mut used = vec![0u32; shards];
            for token in (1..20_000u32).map(|i| i * 7 + 256_000) {
                let shard = sharding.shard_of(token);
                assert!(shard < shards);
                assert_eq!(shard % targets, clickhouse_shard_of(token, targets));
                used[shard] += 1;
            }
            // Every shard takes a fair share (within a third of the mean).
            let mean = 20_000 / shards as u32;
            assert!(used.iter().all(|&n| n > mean * 2 / 3), "{used:?}");
        }
    }

    #[test]
    fn one_target_or_an_uneven_split_routes_as_before() {
        for token in [1u32, 256_265, 738_561, u32::MAX] {
            assert_eq!(Sharding::new(3, 1).shard_of(token), shard_of(token, 3));
            assert_eq!(Sharding::new(3, 2).shard_of(token), shard_of(token, 3));
            assert_eq!(Sharding::new(1, 2).shard_of(token), 0);
        }
    }
}
