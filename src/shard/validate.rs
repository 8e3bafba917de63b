//! Validation: sets each parsed tick's `validation_flags` and `data_quality_score`.
//! A flag never rejects a tick; it is stored with the row (DESIGN §2: bad input is
//! data). The flag bits and the score rule live in [`crate::model::quality`].
//!
//! ```text
//!   Tick + ParseInfo ──validate(now_ms)──► Tick { validation_flags, data_quality_score } ──► columns
//!                          ▲       │
//!   reference data ────────┘       └─ per-instrument state: last price, last time,
//!   (set_reference, from the slow path)   moved only by ticks without a hard flag
//! ```
//!
//! Which flag is hard, what each costs the score and which ticks feed the bars:
//! README "Data quality" and [`crate::model::quality::FLAGS_HARD`]. An absent optional
//! field flags only when it is one of `validation.expected_fields`.
//!
//! Per-instrument state lives in an open-addressing table (linear probing, Fibonacci
//! hashing as in Knuth, TAOCP vol. 3 §6.4) sized at construction for
//! `instruments_max` at ≤ 50% load. When it is full, a new instrument's ticks get the
//! stateless checks only, and [`ValidatorStats::untracked_ticks_total`] counts them.
//!
//! The table is the one random memory access per tick (a few hundred kilobytes for
//! the default 8,192 instruments, so most lookups miss L1 and many L2). A slot is
//! therefore 32 bytes, aligned: a probe touches exactly one cache line. Reference data
//! lives in a parallel array read only for instruments that have some. With the
//! 48-byte slot that held it inline, half the slots straddled two lines; the change
//! took the Kite parse+validate bench from 39.5 to 36.2 ns a tick (`benches/parse.rs`,
//! medians of four runs each, old and new binaries alternating).
//!
//! Must never: allocate after construction, read a clock (`now_ms` is an argument),
//! or fail: every tick comes out with a flag set and a score.

use crate::config::ValidationConfig;
use crate::model::quality::{
    data_quality_score, FLAGS_HARD, FLAG_CROSSED_BOOK, FLAG_DEPTH_UNSORTED, FLAG_FUTURE_TIMESTAMP,
    FLAG_MISSING_OPTIONAL, FLAG_NONPOSITIVE_PRICE, FLAG_OFF_TICK_SIZE, FLAG_OUTSIDE_CIRCUIT,
    FLAG_OUT_OF_ORDER, FLAG_PRICE_JUMP, FLAG_QUANTITY_INSANE, FLAG_STALE_TIMESTAMP,
};
use crate::model::reference::Reference;
use crate::model::{Price, Tick, DEPTH_LEVELS};
use crate::shard::parse::ParseInfo;

/// One slot of the per-instrument table: 32 bytes on a 32-byte boundary, so it never
/// straddles a cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
struct Slot {
    /// Its token.
    token: u32,
    /// [`SLOT_USED`], [`SLOT_REFERENCE`].
    state: u32,
    /// Its last positive `last_price` (0 = none yet); written by `validate`.
    last_price: i64,
    /// Its latest exchange time (`i64::MIN` = none yet); written by `validate`.
    last_timestamp_ms: i64,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 32);

/// The slot holds an instrument.
const SLOT_USED: u32 = 1;
/// The instrument has reference data (a non-default entry in `Validator::references`).
const SLOT_REFERENCE: u32 = 2;

/// Counters for the stats snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValidatorStats {
    /// Instruments in the table.
    pub instruments: usize,
    /// Ticks that got only stateless checks because the table was full.
    pub untracked_ticks_total: u64,
}

/// The validator of one shard.
pub struct Validator {
    /// Thresholds, fixed at construction.
    config: ValidationConfig,
    /// Open-addressing table, a power of two ≥ 2 × `instruments_max` slots.
    slots: Vec<Slot>,
    /// Reference data of the instrument in the slot of the same index; written by
    /// `set_reference`, read only where the slot has [`SLOT_REFERENCE`].
    references: Vec<Reference>,
    /// `64 - log2(slots.len())`: the shift of the Fibonacci hash.
    shift: u32,
    /// Counters, written by `validate` and `set_reference`.
    stats: ValidatorStats,
}

impl Validator {
    /// A validator with its whole table allocated now.
    ///
    /// # Panics
    /// When `config` fails [`ValidationConfig::check`] (the loader refuses it first).
    pub fn new(config: ValidationConfig) -> Validator {
        if let Err(error) = config.check() {
            panic!("{error}");
        }
        let slots = (config.instruments_max * 2).next_power_of_two().max(2);
        Validator {
            config,
            slots: vec![Slot::default(); slots],
            references: vec![Reference::default(); slots],
            shift: 64 - slots.trailing_zeros(),
            stats: ValidatorStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> ValidatorStats {
        self.stats
    }

    /// Sets `token`'s reference data; `false` when the table is full and the
    /// instrument is new (its reference checks then stay off). An all-zero
    /// `reference` clears: it never takes a slot for an instrument not yet tracked,
    /// so deleting instruments cannot fill the table.
    pub fn set_reference(&mut self, token: u32, reference: Reference) -> bool {
        let index = if reference == Reference::default() {
            match self.find(token) {
                Some(index) => index,
                None => return true,
            }
        } else {
            match self.slot(token) {
                Some(index) => index,
                None => return false,
            }
        };
        self.references[index] = reference;
        if reference == Reference::default() {
            self.slots[index].state &= !SLOT_REFERENCE;
        } else {
            self.slots[index].state |= SLOT_REFERENCE;
        }
        true
    }

    /// The slot of `token` when it is tracked; never inserts.
    fn find(&self, token: u32) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let hash = (u64::from(token).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize;
        // Linear probing keeps a tracked token before the first free slot of its run.
        for probe in 0..self.slots.len() {
            let slot = &self.slots[(hash + probe) & mask];
            if slot.state & SLOT_USED == 0 {
                return None;
            }
            if slot.token == token {
                return Some((hash + probe) & mask);
            }
        }
        None
    }

    /// The slot of `token`, inserted if new; `None` when the table is full.
    #[inline]
    fn slot(&mut self, token: u32) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let hash = (u64::from(token).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize;
        // At ≤ 50% load a probe ends at a free slot long before the bound.
        for probe in 0..self.slots.len() {
            let index = (hash + probe) & mask;
            let slot = &mut self.slots[index];
            let used = slot.state & SLOT_USED != 0;
            if used && slot.token == token {
                return Some(index);
            }
            if !used {
                if self.stats.instruments == self.config.instruments_max {
                    return None;
                }
                *slot = Slot {
                    token,
                    state: SLOT_USED,
                    last_price: 0,
                    last_timestamp_ms: i64::MIN,
                };
                self.stats.instruments += 1;
                return Some(index);
            }
        }
        None
    }

    /// Sets `tick.validation_flags` and `tick.data_quality_score`, and records the
    /// tick's price and time as its instrument's latest.
    pub fn validate(&mut self, tick: &mut Tick, info: ParseInfo, now_ms: i64) {
        let mut flags = stateless_flags(&self.config, tick, info, now_ms);
        match self.slot(tick.instrument_token) {
            Some(index) => flags |= self.stateful_flags(index, tick, flags),
            None => self.stats.untracked_ticks_total += 1,
        }
        tick.validation_flags = flags;
        tick.data_quality_score = data_quality_score(flags);
        debug_assert!((0.0..=1.0).contains(&tick.data_quality_score));
    }

    /// Checks against the instrument's history and reference data, then moves the
    /// history on, unless the tick (with `flags`, the stateless checks' result) has a
    /// hard flag: one tick stamped 2099 or priced 0 must not make every later tick of
    /// its instrument out of order or a jump.
    #[inline]
    fn stateful_flags(&mut self, index: usize, tick: &Tick, mut flags: u32) -> u32 {
        let band_pct = i128::from(self.config.price_jump_band_pct);
        let slot = &mut self.slots[index];
        debug_assert_eq!(slot.token, tick.instrument_token);
        let price = tick.last_price.0;
        if slot.state & SLOT_REFERENCE != 0 {
            flags |= reference_flags(&self.references[index], price);
        }
        let mut history = 0;
        if tick.timestamp_ms < slot.last_timestamp_ms {
            history |= FLAG_OUT_OF_ORDER;
        }
        if slot.last_price > 0 && price > 0 {
            let moved = (i128::from(price) - i128::from(slot.last_price)).abs();
            if moved * 100 > i128::from(slot.last_price) * band_pct {
                history |= FLAG_PRICE_JUMP;
            }
        }
        if flags & FLAGS_HARD == 0 {
            slot.last_timestamp_ms = slot.last_timestamp_ms.max(tick.timestamp_ms);
            // A jump moves the reference too: a genuine move flags once, not forever.
            slot.last_price = price;
        }
        history | (flags & (FLAG_OFF_TICK_SIZE | FLAG_OUTSIDE_CIRCUIT))
    }
}

/// [`FLAG_OFF_TICK_SIZE`] and [`FLAG_OUTSIDE_CIRCUIT`] of `price` against the
/// instrument's reference data (a zero field disables its check).
#[inline]
fn reference_flags(reference: &Reference, price: i64) -> u32 {
    let mut flags = 0;
    if reference.tick_size.0 > 0 && price % reference.tick_size.0 != 0 {
        flags |= FLAG_OFF_TICK_SIZE;
    }
    if reference.circuit_upper.0 > 0
        && (price > reference.circuit_upper.0 || price < reference.circuit_lower.0)
    {
        flags |= FLAG_OUTSIDE_CIRCUIT;
    }
    flags
}

/// Checks that need only the tick, the config and the clock.
#[inline]
fn stateless_flags(config: &ValidationConfig, tick: &Tick, info: ParseInfo, now_ms: i64) -> u32 {
    let (buy, sell) = (&tick.depth_buy, &tick.depth_sell);
    debug_assert!(buy.len as usize <= DEPTH_LEVELS);
    debug_assert!(sell.len as usize <= DEPTH_LEVELS);
    let mut flags = 0;
    if info.missing() & config.expected_fields.0 != 0 {
        flags |= FLAG_MISSING_OPTIONAL;
    }
    // One pass over each side for the three level checks.
    let mut nonpositive = tick.last_price.0 <= 0;
    let mut insane = tick.last_quantity > config.quantity_max;
    let mut unsorted = false;
    for (side, bids) in [(buy, true), (sell, false)] {
        let mut previous: Option<Price> = None;
        for level in side.as_slice() {
            nonpositive |= level.price.0 <= 0;
            insane |= level.quantity > config.quantity_max;
            if let Some(p) = previous {
                unsorted |= if bids {
                    level.price > p
                } else {
                    level.price < p
                };
            }
            previous = Some(level.price);
        }
    }
    if nonpositive {
        flags |= FLAG_NONPOSITIVE_PRICE;
    }
    if let (Some(bid), Some(ask)) = (buy.as_slice().first(), sell.as_slice().first()) {
        if bid.price > ask.price {
            flags |= FLAG_CROSSED_BOOK;
        }
    }
    if unsorted {
        flags |= FLAG_DEPTH_UNSORTED;
    }
    if insane {
        flags |= FLAG_QUANTITY_INSANE;
    }
    if tick.timestamp_ms > now_ms.saturating_add(config.future_skew_ms) {
        flags |= FLAG_FUTURE_TIMESTAMP;
    }
    if tick.timestamp_ms < now_ms.saturating_sub(config.stale_window_ms) {
        flags |= FLAG_STALE_TIMESTAMP;
    }
    flags
}

#[cfg(test)]
mod tests {
    //! Each check fires on its own case and not on a clean tick; the table stops
    //! tracking at `instruments_max` and counts what it skips.
    use super::*;
    use crate::model::quality::{FLAG_OUT_OF_ORDER, FLAG_PRICE_JUMP};
    use crate::model::synthetic::SyntheticTicks;
    use crate::shard::parse::json::JSON_FIELDS_EXPECTED;

    const NOW: i64 = 1_764_000_000_000;
    const FULL: ParseInfo = ParseInfo {
        present: JSON_FIELDS_EXPECTED,
        expected: JSON_FIELDS_EXPECTED,
    };

    fn clean() -> Tick {
        SyntheticTicks::new(1, 1).next_tick(NOW, NOW, 1)
    }

    #[test]
    fn clean_tick_scores_one() {
        let mut v = Validator::new(ValidationConfig::default());
        let mut t = clean();
        v.validate(&mut t, FULL, NOW);
        assert_eq!(t.validation_flags, 0);
        assert_eq!(t.data_quality_score, 1.0);
    }

    #[test]
    fn history_flags_out_of_order_and_jumps() {
        let mut v = Validator::new(ValidationConfig::default());
        let mut t = clean();
        v.validate(&mut t, FULL, NOW);
        let mut earlier = clean();
        earlier.timestamp_ms -= 1;
        v.validate(&mut earlier, FULL, NOW);
        assert_eq!(earlier.validation_flags, FLAG_OUT_OF_ORDER);
        let mut jump = clean();
        jump.last_price = Price(jump.last_price.0 * 2);
        v.validate(&mut jump, FULL, NOW);
        assert_eq!(jump.validation_flags, FLAG_PRICE_JUMP);
    }

    #[test]
    fn a_hard_flagged_tick_moves_no_history() {
        let mut v = Validator::new(ValidationConfig::default());
        let mut t = clean();
        v.validate(&mut t, FULL, NOW);
        // Stamped 2099: future, and must not become the instrument's latest time.
        let mut future = clean();
        future.timestamp_ms = 4_070_908_800_000;
        v.validate(&mut future, FULL, NOW);
        assert_eq!(future.validation_flags, FLAG_FUTURE_TIMESTAMP);
        // Priced 0: must not become the jump reference.
        let mut zero = clean();
        zero.timestamp_ms += 1;
        zero.last_price = Price(0);
        v.validate(&mut zero, FULL, NOW);
        assert_eq!(zero.validation_flags, FLAG_NONPOSITIVE_PRICE);
        for step in 2..10 {
            let mut next = clean();
            next.timestamp_ms += step;
            v.validate(&mut next, FULL, NOW);
            assert_eq!(next.validation_flags, 0, "tick {step} after the bad ones");
        }
        // A soft flag still moves it: a genuine jump flags once.
        let mut jump = clean();
        jump.timestamp_ms += 20;
        jump.last_price = Price(jump.last_price.0 * 2);
        v.validate(&mut jump, FULL, NOW);
        assert_eq!(jump.validation_flags, FLAG_PRICE_JUMP);
        jump.timestamp_ms += 1;
        v.validate(&mut jump, FULL, NOW);
        assert_eq!(jump.validation_flags, 0);
    }

    #[test]
    fn only_expected_fields_flag_when_absent() {
        use crate::config::FieldSet;
        use crate::shard::parse::{FIELD_OHLC, FIELD_OI, FIELD_VOLUME};
        let without = |fields: u16| ParseInfo {
            present: JSON_FIELDS_EXPECTED & !fields,
            expected: JSON_FIELDS_EXPECTED,
        };
        let mut v = Validator::new(ValidationConfig::default());
        let mut t = clean();
        v.validate(&mut t, without(FIELD_OI | FIELD_OHLC), NOW);
        assert_eq!(t.validation_flags, 0, "oi and ohlc are not the platform's");
        assert_eq!(t.data_quality_score, 1.0);
        t.timestamp_ms += 1;
        v.validate(&mut t, without(FIELD_VOLUME), NOW);
        assert_eq!(t.validation_flags, FLAG_MISSING_OPTIONAL);
        let strict = ValidationConfig {
            expected_fields: FieldSet(FIELD_OI),
            ..ValidationConfig::default()
        };
        let mut v = Validator::new(strict);
        let mut t = clean();
        v.validate(&mut t, without(FIELD_OI), NOW);
        assert_eq!(t.validation_flags, FLAG_MISSING_OPTIONAL);
    }

    #[test]
    fn full_table_counts_untracked_ticks() {
        let config = ValidationConfig {
            instruments_max: 2,
            ..ValidationConfig::default()
        };
        let mut v = Validator::new(config);
        let mut t = clean();
        for token in [1, 2, 3, 3, 1] {
            t.instrument_token = token;
            v.validate(&mut t, FULL, NOW);
        }
        assert_eq!(v.stats().instruments, 2);
        assert_eq!(v.stats().untracked_ticks_total, 2);
        let known = Reference {
            tick_size: Price(5_000_000),
            ..Reference::default()
        };
        assert!(!v.set_reference(4, known));
        assert!(v.set_reference(2, known));
        // Clearing an untracked instrument succeeds without taking a slot.
        assert!(v.set_reference(4, Reference::default()));
        assert_eq!(v.stats().instruments, 2);
    }

    #[test]
    fn reference_data_flags_off_grid_and_outside_circuit_until_cleared() {
        let mut v = Validator::new(ValidationConfig::default());
        let mut t = clean();
        let price = t.last_price.0;
        let reference = Reference {
            tick_size: Price(price + 1),
            circuit_lower: Price(price / 2),
            circuit_upper: Price(price - 1),
        };
        assert!(v.set_reference(t.instrument_token, reference));
        v.validate(&mut t, FULL, NOW);
        assert_eq!(
            t.validation_flags,
            FLAG_OFF_TICK_SIZE | FLAG_OUTSIDE_CIRCUIT
        );
        assert!(v.set_reference(t.instrument_token, Reference::default()));
        let mut t = clean();
        v.validate(&mut t, FULL, NOW);
        assert_eq!(t.validation_flags, 0);
    }

    #[test]
    fn config_check_names_the_key() {
        let bad = ValidationConfig {
            instruments_max: 0,
            ..ValidationConfig::default()
        };
        assert_eq!(bad.check().unwrap_err().key, "instruments_max");
        let bad = ValidationConfig {
            quantity_max: 0,
            ..ValidationConfig::default()
        };
        let error = bad.check().unwrap_err();
        assert_eq!(error.key, "quantity_max");
        assert!(error.to_string().contains("10000000"), "{error}");
        assert!(ValidationConfig::default().check().is_ok());
    }
}
