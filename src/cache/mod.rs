//! The Redis hot cache: the shards hand the latest state per instrument to one slow-path
//! thread through conflating slot tables; that thread writes it to Redis in pipelines
//! every `redis.flush_interval_ms`.
//!
//! ```text
//!   shard[i] ── TickCache::update (seqlock slot + dirty bit, never waits) ──┐
//!            └─ history entry of every tick (SPSC queue, dropped when full) ─┤
//!   signals shard ── SignalCache::update ────────────────────────────────────┤ SlotTables (sized once)
//!   refdata thread ── instrument rows (bounded channel, latest wins) ───────┤
//!                                                                           ▼
//!   redis thread: drain the history queues into per-instrument pending entries;
//!                 every flush_interval_ms take the dirty slots and pending
//!                 histories ─► RESP pipeline ─► Redis
//!       tick:{token}  tick:{token}:history  ohlc:{token}:{1m,5m,15m}  signal:{strategy}:{token}  instrument:{token}
//!       failure: slots marked dirty again, reconnect with capped full-jitter backoff;
//!       on return the latest state is written (not a replay of what was conflated away)
//! ```
//!
//! Memory is bounded. Fixed at start, per shard: `redis.instruments_max` tick slots of
//! [`tick::SLOT_WORDS`] words (640 B), `redis.signals_max` signal slots and a history
//! queue of [`tick::HISTORY_QUEUE`] records (8 MiB). Grown by the Redis thread as
//! instruments tick: their pending history entries, at most `redis.history_len` an
//! instrument and [`redis::PENDING_MAX`] in all (12 MiB). A Redis outage costs no
//! more: changes overwrite their slot, history entries beyond those bounds are
//! discarded (the histories restart). Figures: lag (age of the
//! oldest change not yet written), changes conflated away, write latency (HDR), keys
//! written; see [`redis::CacheStats`].

pub mod cluster;
pub mod keys;
pub mod redis;
pub mod resp;
pub mod signal;
pub mod slots;
pub mod tick;

use std::sync::Arc;

use crate::config::Config;
use crate::model::Symbol;

pub use keys::Keys;
pub use signal::SignalCache;
pub use slots::SlotTable;
pub use tick::TickCache;

/// A shard's writing ends.
pub struct ShardCache {
    /// Latest ticks, bars and history per instrument.
    pub ticks: TickCache,
    /// Latest signal per (strategy, instrument).
    pub signals: SignalCache,
}

/// The Redis thread's reading ends: one tick and one signal table per shard.
#[derive(Default)]
pub struct CacheFeed {
    /// Tick tables, one per shard.
    pub ticks: Vec<Arc<SlotTable>>,
    /// History queues, one per shard, in the order of `ticks`.
    pub histories: Vec<rtrb::Consumer<tick::HistoryRecord>>,
    /// Signal tables, one per shard.
    pub signals: Vec<Arc<SlotTable>>,
}

impl CacheFeed {
    /// A shard's pair of tables, sized from `[redis]`; the feed keeps the reading ends.
    /// Both tables exist on every shard (a shard handles whatever its subject brings);
    /// the signal table is small: 4,096 pairs × 152 B by default.
    pub fn add_shard(&mut self, config: &Config) -> ShardCache {
        let ticks = Arc::new(TickCache::table(config.redis.instruments_max as usize));
        let signals = Arc::new(SignalCache::table(config.redis.signals_max as usize));
        let (history, history_reader) = tick::history_queue();
        self.ticks.push(ticks.clone());
        self.histories.push(history_reader);
        self.signals.push(signals.clone());
        ShardCache {
            ticks: TickCache::new(ticks, history),
            signals: SignalCache::new(signals),
        }
    }

    /// Adds another pipeline's tables.
    pub fn merge(&mut self, other: CacheFeed) {
        self.ticks.extend(other.ticks);
        self.histories.extend(other.histories);
        self.signals.extend(other.signals);
    }
}

/// A symbol from its four words in a slot (see `Symbol::to_words`).
pub(crate) fn symbol_at(words: &[u64], at: usize) -> Symbol {
    Symbol::from_words([words[at], words[at + 1], words[at + 2], words[at + 3]])
}
