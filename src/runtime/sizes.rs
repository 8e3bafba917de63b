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

/// Reference-data updates a shard applies between two frame passes: at ~50 ns a
/// `set_reference`, at most ~50 µs of delay for the frames behind them.
pub const REFERENCE_UPDATES_PER_PASS: usize = 1024;
