//! The latest strategy signal per (strategy, instrument), handed from the signals
//! shard to the Redis thread in a [`SlotTable`] like the ticks (`cache::tick`).
//!
//! ```text
//!   signals shard: append ─► SignalCache::update ─(strategy, token)─► slot ─► signal:{strategy}:{token}
//! ```
//!
//! "Latest" is the greatest by (the strategy's timestamp, stream sequence), as a
//! reader of `strategy_signals` would pick it. Signals are a trickle beside the ticks,
//! so the index is a `HashMap` reserved once at `signals_max` pairs; pairs past that
//! are counted, not cached.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{Price, Symbol};
use crate::shard::signals::{Signal, StrategyType};

use super::slots::SlotTable;

/// Words of one signal slot.
pub const SLOT_WORDS: usize = 19;

/// The shard's side.
pub struct SignalCache {
    table: Arc<SlotTable>,
    index: HashMap<(u32, Symbol), u32>,
    /// Signals whose pair found no free slot.
    pub untracked: u64,
}

impl SignalCache {
    /// A cache over `table` (from [`SignalCache::table`]).
    pub fn new(table: Arc<SlotTable>) -> SignalCache {
        assert_eq!(table.words_per_slot(), SLOT_WORDS, "a signal slot table");
        SignalCache {
            index: HashMap::with_capacity(table.slots()),
            table,
            untracked: 0,
        }
    }

    /// A table sized for `slots` pairs.
    pub fn table(slots: usize) -> SlotTable {
        SlotTable::new(slots, SLOT_WORDS)
    }

    /// Hands a stored signal to the Redis thread.
    pub fn update(&mut self, signal: &Signal) {
        let key = (signal.instrument_token, signal.strategy_id);
        let slot = match self.index.get(&key) {
            Some(slot) => *slot as usize,
            None if self.index.len() < self.table.slots() => {
                let slot = self.index.len();
                self.index.insert(key, slot as u32);
                self.table.set_used(slot + 1);
                slot
            }
            None => {
                self.untracked += 1;
                return;
            }
        };
        self.table.publish::<SLOT_WORDS>(slot, |w| {
            let present = w.get(0) != 0;
            if present && (signal.timestamp_ms, signal.stream_seq) < (w.get(1) as i64, w.get(3)) {
                return;
            }
            w.set_all(0, &pack(signal));
        });
    }
}

fn pack(s: &Signal) -> [u64; SLOT_WORDS] {
    let mut w = [0u64; SLOT_WORDS];
    w[0] = 1;
    w[1] = s.timestamp_ms as u64;
    w[2] = s.received_at_ms as u64;
    w[3] = s.stream_seq;
    w[4] = u64::from(s.instrument_token) | u64::from(s.quantity) << 32;
    w[5..9].copy_from_slice(&s.strategy_id.to_words());
    w[9..13].copy_from_slice(&s.tradingsymbol.to_words());
    w[13..17].copy_from_slice(&s.signal_type.to_words());
    w[17] = u64::from(s.strength.to_bits()) | u64::from(s.confidence.to_bits()) << 32;
    w[18] = s.price.0 as u64 & 0x00ff_ffff_ffff_ffff | (s.strategy_type as u64) << 56;
    w
}

/// Reads `slot` of `table`: the signal and its sequence; `None` when not readable now
/// (the shard kept rewriting it), `Some((None, seq))` when empty.
pub fn read(
    table: &SlotTable,
    slot: usize,
    words: &mut [u64; SLOT_WORDS],
) -> Option<(Option<Signal>, u64)> {
    let seq = table.read(slot, words)?;
    if words[0] == 0 {
        return Some((None, seq));
    }
    let w = words;
    // The price's top byte carries the strategy type; prices fit in 56 bits
    // (7.2e8 at 8 decimals), so sign-extend back from bit 55.
    let price = ((w[18] << 8) as i64) >> 8;
    let signal = Signal {
        timestamp_ms: w[1] as i64,
        received_at_ms: w[2] as i64,
        stream_seq: w[3],
        instrument_token: w[4] as u32,
        quantity: (w[4] >> 32) as u32,
        strategy_id: super::symbol_at(w, 5),
        tradingsymbol: super::symbol_at(w, 9),
        signal_type: super::symbol_at(w, 13),
        strength: f32::from_bits(w[17] as u32),
        confidence: f32::from_bits((w[17] >> 32) as u32),
        price: Price(price),
        strategy_type: StrategyType::ALL
            .get((w[18] >> 56) as usize)
            .copied()
            .unwrap_or_default(),
    };
    Some((Some(signal), seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(strategy: &str, token: u32, ts: i64, seq: u64, price: f64) -> Signal {
        Signal {
            timestamp_ms: ts,
            received_at_ms: ts + 1,
            stream_seq: seq,
            strategy_id: Symbol::new(strategy.as_bytes()).unwrap(),
            strategy_type: StrategyType::Hybrid,
            instrument_token: token,
            tradingsymbol: Symbol::new(b"INFY").unwrap(),
            signal_type: Symbol::new(b"BUY").unwrap(),
            strength: 0.5,
            confidence: -0.25,
            price: Price::from_f64(price).unwrap(),
            quantity: 12,
        }
    }

    #[test]
    fn latest_per_pair_round_trips_and_a_late_one_is_ignored() {
        let table = Arc::new(SignalCache::table(2));
        let mut cache = SignalCache::new(table.clone());
        let newest = signal("mom", 7, 2_000, 5, -3.5);
        cache.update(&signal("mom", 7, 1_000, 4, 10.0));
        cache.update(&newest);
        cache.update(&signal("mom", 7, 1_500, 6, 11.0)); // older time
        cache.update(&signal("rev", 7, 1_000, 7, 10.0));
        cache.update(&signal("x", 8, 1_000, 8, 10.0));
        assert_eq!(cache.untracked, 1);
        let mut words = [0; SLOT_WORDS];
        assert_eq!(read(&table, 0, &mut words), Some((Some(newest), 6)));
        let (rev, _) = read(&table, 1, &mut words).unwrap();
        assert_eq!(rev.unwrap().strategy_id.as_bytes(), b"rev");
    }
}
