//! What a shard hands the Redis thread per instrument: the latest good tick, the
//! current 1m/5m/15m bars, and the last few ticks for the history, in one slot of a
//! [`SlotTable`].
//!
//! ```text
//!   shard: append_tick ─► TickCache::update(tick)
//!            token ──open addressing (shard-private, sized once)──► slot
//!            slot words: header │ latest good tick │ bars 1m 5m 15m │ history ring (8)
//!   Redis thread: TickSlot::read(table, slot) ─► keys tick:, tick:…:history, ohlc:
//! ```
//!
//! Rules, the same as the ClickHouse side (migrations 005 and 009):
//! - the latest tick and the bars take good ticks only (no hard flag,
//!   `model::quality::FLAGS_HARD`); the history takes every stored tick, flags shown;
//! - the latest tick is the greatest by (exchange time, stream sequence), so a late
//!   tick never hides a newer one;
//! - a bar's open and close are the prices of its least and greatest tick by (exchange
//!   time, stream sequence), high and low the extremes, volume the sum of
//!   `last_quantity`, turnover the sum of price × quantity. A tick for a bar older than
//!   the slot's current one is counted (`bars_late`) and left to ClickHouse.
//!
//! The history ring holds the last [`HISTORY_RING`] ticks; the Redis thread takes what
//! is new since its last read. When more arrived in between, the oldest were
//! overwritten: the reader sees the gap and restarts the instrument's history, so the
//! sorted set never has holes (see `cache::redis`).
//!
//! Cost per tick on the shard: one probe of the token table, ~70 relaxed stores and
//! one `fetch_or` (benches/cache.rs). No allocation after `new`.

use crate::model::quality::FLAGS_HARD;
use crate::model::{Depth, DepthLevel, Ohlc, Price, Tick, DEPTH_LEVELS};

use super::slots::{SlotTable, SlotWords};
use super::{pack_symbol, unpack_symbol};

/// Ticks each slot's history ring holds between two reads (5 ms apart by default: an
/// instrument ticking faster than ~1,600 times a second loses history entries,
/// counted, never the latest state).
pub const HISTORY_RING: usize = 8;

/// Bar lengths kept in the cache, in ms: 1m, 5m, 15m.
pub const BAR_MS: [i64; 3] = [60_000, 300_000, 900_000];

/// Labels of [`BAR_MS`], as in the `ohlc:{token}:{tf}` keys.
pub const BAR_LABELS: [&str; 3] = ["1m", "5m", "15m"];

const HEADER: usize = 0;
const TICK: usize = 1;
const TICK_WORDS: usize = 42;
const BARS: usize = TICK + TICK_WORDS;
const BAR_WORDS: usize = 12;
const HISTORY_HEAD: usize = BARS + BAR_WORDS * BAR_MS.len();
const HISTORY: usize = HISTORY_HEAD + 1;
const ENTRY_WORDS: usize = 6;

/// Words of one instrument's slot.
pub const SLOT_WORDS: usize = HISTORY + ENTRY_WORDS * HISTORY_RING;

/// Header bit: the slot holds a good tick.
const HAS_LATEST: u64 = 1 << 32;

/// Header bit: the slot belongs to an instrument.
const IN_USE: u64 = 1 << 33;

// Bar word offsets.
const B_BUCKET: usize = 0;
const B_OPEN_TS: usize = 1;
const B_OPEN_SEQ: usize = 2;
const B_OPEN: usize = 3;
const B_CLOSE_TS: usize = 4;
const B_CLOSE_SEQ: usize = 5;
const B_CLOSE: usize = 6;
const B_HIGH: usize = 7;
const B_LOW: usize = 8;
const B_VOLUME: usize = 9;
const B_TURNOVER: usize = 10;
const B_COUNT: usize = 11;

/// The shard's side: its table and the token → slot index, both sized once.
pub struct TickCache {
    table: std::sync::Arc<SlotTable>,
    /// Open addressing, power-of-two length, twice the slots: token + 1, 0 = empty.
    keys: Box<[u64]>,
    values: Box<[u32]>,
    used: usize,
    /// Ticks whose instrument found no free slot.
    pub untracked: u64,
    /// Ticks whose previous state the Redis thread had not read yet.
    pub conflated: u64,
    /// Good ticks for a bar older than the slot's current one.
    pub bars_late: u64,
}

impl TickCache {
    /// A cache of `slots` instruments over a table shared with the Redis thread.
    pub fn new(table: std::sync::Arc<SlotTable>) -> TickCache {
        assert_eq!(table.words_per_slot(), SLOT_WORDS, "a tick slot table");
        let len = (table.slots() * 2).next_power_of_two();
        TickCache {
            table,
            keys: vec![0; len].into_boxed_slice(),
            values: vec![0; len].into_boxed_slice(),
            used: 0,
            untracked: 0,
            conflated: 0,
            bars_late: 0,
        }
    }

    /// A table sized for `slots` instruments.
    pub fn table(slots: usize) -> SlotTable {
        SlotTable::new(slots, SLOT_WORDS)
    }

    /// The slot of `token`, taking a free one on first sight; `None` when full.
    #[inline]
    fn slot_of(&mut self, token: u32) -> Option<usize> {
        let mask = self.keys.len() - 1;
        let key = u64::from(token) + 1;
        let mut i = (u64::from(token).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & mask;
        loop {
            match self.keys[i] {
                k if k == key => return Some(self.values[i] as usize),
                0 => {
                    if self.used == self.table.slots() {
                        return None;
                    }
                    self.keys[i] = key;
                    self.values[i] = self.used as u32;
                    self.used += 1;
                    return Some(self.used - 1);
                }
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Hands `tick` (validated, about to be stored) to the Redis thread.
    #[inline]
    pub fn update(&mut self, tick: &Tick) {
        let Some(slot) = self.slot_of(tick.instrument_token) else {
            self.untracked += 1;
            return;
        };
        let good = tick.validation_flags & FLAGS_HARD == 0;
        let mut late = 0;
        let conflated = self.table.publish(slot, tick.received_at_ms, |w| {
            let header = w.get(HEADER);
            let has_latest = header & HAS_LATEST != 0;
            // The history takes every stored tick.
            let head = w.get(HISTORY_HEAD);
            let entry = HISTORY + (head as usize % HISTORY_RING) * ENTRY_WORDS;
            w.set_all(entry, &history_entry(tick));
            w.set(HISTORY_HEAD, head + 1);
            if !good {
                if !has_latest {
                    w.set(HEADER, u64::from(tick.instrument_token) | IN_USE);
                }
                return;
            }
            let newer = !has_latest
                || (tick.timestamp_ms, tick.stream_seq) >= (w.get(TICK) as i64, w.get(TICK + 2));
            if newer {
                w.set_all(TICK, &pack_tick(tick));
                w.set(
                    HEADER,
                    u64::from(tick.instrument_token) | IN_USE | HAS_LATEST,
                );
            }
            for (b, tf) in BAR_MS.iter().enumerate() {
                if !update_bar(w, BARS + b * BAR_WORDS, *tf, tick) {
                    late += 1;
                }
            }
        });
        self.conflated += u64::from(conflated);
        self.bars_late += late;
    }
}

/// Adds a good tick to the bar at `at`; false when the tick is for an older bar.
#[inline]
fn update_bar(w: &SlotWords<'_>, at: usize, tf_ms: i64, tick: &Tick) -> bool {
    let ts = tick.timestamp_ms;
    let bucket = ts - ts.rem_euclid(tf_ms);
    let price = tick.last_price.0 as u64;
    let quantity = u64::from(tick.last_quantity);
    let turnover = tick.last_price.to_f64() * tick.last_quantity as f64;
    let count = w.get(at + B_COUNT);
    let current = w.get(at + B_BUCKET) as i64;
    if count == 0 || bucket > current {
        w.set_all(
            at,
            &[
                bucket as u64,
                ts as u64,
                tick.stream_seq,
                price,
                ts as u64,
                tick.stream_seq,
                price,
                price,
                price,
                quantity,
                turnover.to_bits(),
                1,
            ],
        );
        return true;
    }
    if bucket < current {
        return false;
    }
    let key = (ts, tick.stream_seq);
    if key < (w.get(at + B_OPEN_TS) as i64, w.get(at + B_OPEN_SEQ)) {
        w.set_all(at + B_OPEN_TS, &[ts as u64, tick.stream_seq, price]);
    }
    if key >= (w.get(at + B_CLOSE_TS) as i64, w.get(at + B_CLOSE_SEQ)) {
        w.set_all(at + B_CLOSE_TS, &[ts as u64, tick.stream_seq, price]);
    }
    let p = tick.last_price.0;
    if p > w.get(at + B_HIGH) as i64 {
        w.set(at + B_HIGH, price);
    }
    if p < w.get(at + B_LOW) as i64 {
        w.set(at + B_LOW, price);
    }
    w.set(at + B_VOLUME, w.get(at + B_VOLUME) + quantity);
    let sum = f64::from_bits(w.get(at + B_TURNOVER)) + turnover;
    w.set(at + B_TURNOVER, sum.to_bits());
    w.set(at + B_COUNT, count + 1);
    true
}

#[inline]
fn history_entry(tick: &Tick) -> [u64; ENTRY_WORDS] {
    [
        tick.timestamp_ms as u64,
        tick.stream_seq,
        tick.last_price.0 as u64,
        tick.volume_traded,
        u64::from(tick.last_quantity) | u64::from(tick.validation_flags) << 32,
        u64::from(tick.data_quality_score.to_bits()),
    ]
}

#[inline]
fn pack_tick(t: &Tick) -> [u64; TICK_WORDS] {
    let mut w = [0u64; TICK_WORDS];
    w[0] = t.timestamp_ms as u64;
    w[1] = t.received_at_ms as u64;
    w[2] = t.stream_seq;
    w[3] = u64::from(t.instrument_token) | u64::from(t.last_quantity) << 32;
    w[4..8].copy_from_slice(&pack_symbol(&t.exchange));
    w[8..12].copy_from_slice(&pack_symbol(&t.tradingsymbol));
    w[12] = t.last_price.0 as u64;
    w[13] = t.average_price.0 as u64;
    w[14] = t.volume_traded;
    w[15] = t.ohlc.open.0 as u64;
    w[16] = t.ohlc.high.0 as u64;
    w[17] = t.ohlc.low.0 as u64;
    w[18] = t.ohlc.close.0 as u64;
    w[19] = t.oi;
    w[20] = u64::from(t.data_quality_score.to_bits()) | u64::from(t.validation_flags) << 32;
    w[21] = u64::from(t.depth_buy.len) | u64::from(t.depth_sell.len) << 8;
    for (side, depth) in [(22, &t.depth_buy), (22 + 2 * DEPTH_LEVELS, &t.depth_sell)] {
        for (i, level) in depth.levels.iter().enumerate() {
            w[side + 2 * i] = level.price.0 as u64;
            w[side + 2 * i + 1] = u64::from(level.quantity) | u64::from(level.orders) << 32;
        }
    }
    w
}

fn unpack_tick(w: &[u64]) -> Tick {
    let depth = |side: usize, len: u64| {
        let mut levels = [DepthLevel::default(); DEPTH_LEVELS];
        for (i, level) in levels.iter_mut().enumerate() {
            *level = DepthLevel {
                price: Price(w[side + 2 * i] as i64),
                quantity: w[side + 2 * i + 1] as u32,
                orders: (w[side + 2 * i + 1] >> 32) as u16,
            };
        }
        Depth {
            len: (len as u8).min(DEPTH_LEVELS as u8),
            levels,
        }
    };
    Tick {
        timestamp_ms: w[0] as i64,
        received_at_ms: w[1] as i64,
        stream_seq: w[2],
        instrument_token: w[3] as u32,
        last_quantity: (w[3] >> 32) as u32,
        exchange: unpack_symbol(&w[4..8]),
        tradingsymbol: unpack_symbol(&w[8..12]),
        last_price: Price(w[12] as i64),
        average_price: Price(w[13] as i64),
        volume_traded: w[14],
        ohlc: Ohlc {
            open: Price(w[15] as i64),
            high: Price(w[16] as i64),
            low: Price(w[17] as i64),
            close: Price(w[18] as i64),
        },
        oi: w[19],
        data_quality_score: f32::from_bits(w[20] as u32),
        validation_flags: (w[20] >> 32) as u32,
        depth_buy: depth(22, w[21] & 0xff),
        depth_sell: depth(22 + 2 * DEPTH_LEVELS, (w[21] >> 8) & 0xff),
    }
}

/// One bar as the cache holds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CachedBar {
    /// Start of the bar, Unix ms.
    pub start_ms: i64,
    /// First price by (exchange time, sequence).
    pub open: Price,
    /// Highest price.
    pub high: Price,
    /// Lowest price.
    pub low: Price,
    /// Last price by (exchange time, sequence).
    pub close: Price,
    /// Sum of `last_quantity`.
    pub volume: u64,
    /// Sum of price × quantity.
    pub turnover: f64,
    /// Good ticks in the bar.
    pub ticks: u64,
}

/// A history entry: the fields `query ticks` prints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistoryEntry {
    /// Exchange time, Unix ms.
    pub timestamp_ms: i64,
    /// JetStream sequence.
    pub stream_seq: u64,
    /// Last traded price.
    pub last_price: Price,
    /// Volume traded today.
    pub volume_traded: u64,
    /// Last traded quantity.
    pub last_quantity: u32,
    /// Validation flags.
    pub validation_flags: u32,
    /// Quality score.
    pub data_quality_score: f32,
}

/// One slot, read by the Redis thread.
#[derive(Clone, Debug)]
pub struct TickSlot {
    /// The slot belongs to an instrument (else the rest is empty).
    pub in_use: bool,
    /// The instrument.
    pub token: u32,
    /// The latest good tick, if any yet.
    pub latest: Option<Tick>,
    /// Current 1m, 5m and 15m bars ([`BAR_MS`] order), if any.
    pub bars: [Option<CachedBar>; 3],
    /// Ticks ever put in the history ring.
    pub history_head: u64,
    words: Vec<u64>,
}

impl TickSlot {
    /// An empty reader buffer.
    pub fn new() -> TickSlot {
        TickSlot {
            in_use: false,
            token: 0,
            latest: None,
            bars: [None; 3],
            history_head: 0,
            words: vec![0; SLOT_WORDS],
        }
    }

    /// Reads `slot` of `table`; false when it could not be read consistently.
    pub fn read(&mut self, table: &SlotTable, slot: usize) -> bool {
        if !table.read(slot, &mut self.words) {
            return false;
        }
        let w = &self.words;
        self.in_use = w[HEADER] & IN_USE != 0;
        self.token = w[HEADER] as u32;
        self.latest = (w[HEADER] & HAS_LATEST != 0).then(|| unpack_tick(&w[TICK..BARS]));
        for (b, bar) in self.bars.iter_mut().enumerate() {
            let at = BARS + b * BAR_WORDS;
            *bar = (w[at + B_COUNT] > 0).then(|| CachedBar {
                start_ms: w[at + B_BUCKET] as i64,
                open: Price(w[at + B_OPEN] as i64),
                high: Price(w[at + B_HIGH] as i64),
                low: Price(w[at + B_LOW] as i64),
                close: Price(w[at + B_CLOSE] as i64),
                volume: w[at + B_VOLUME],
                turnover: f64::from_bits(w[at + B_TURNOVER]),
                ticks: w[at + B_COUNT],
            });
        }
        self.history_head = w[HISTORY_HEAD];
        true
    }

    /// The history entry with index `n` (0 = first ever), if still in the ring.
    pub fn history(&self, n: u64) -> Option<HistoryEntry> {
        if n >= self.history_head || self.history_head - n > HISTORY_RING as u64 {
            return None;
        }
        let at = HISTORY + (n as usize % HISTORY_RING) * ENTRY_WORDS;
        let e = &self.words[at..at + ENTRY_WORDS];
        Some(HistoryEntry {
            timestamp_ms: e[0] as i64,
            stream_seq: e[1],
            last_price: Price(e[2] as i64),
            volume_traded: e[3],
            last_quantity: e[4] as u32,
            validation_flags: (e[4] >> 32) as u32,
            data_quality_score: f32::from_bits(e[5] as u32),
        })
    }
}

impl Default for TickSlot {
    fn default() -> Self {
        TickSlot::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::quality::FLAG_NONPOSITIVE_PRICE;
    use crate::model::Symbol;
    use std::sync::Arc;

    fn tick(token: u32, ts: i64, seq: u64, price: f64, qty: u32) -> Tick {
        let mut t = Tick {
            timestamp_ms: ts,
            received_at_ms: ts + 3,
            stream_seq: seq,
            instrument_token: token,
            exchange: Symbol::new(b"NSE").unwrap(),
            tradingsymbol: Symbol::new(b"A-VERY-LONG-SYMBOL-NAME-31-BYTE").unwrap(),
            last_price: Price::from_f64(price).unwrap(),
            last_quantity: qty,
            volume_traded: seq * 10,
            oi: 7,
            data_quality_score: 0.75,
            validation_flags: 0,
            ..Tick::default()
        };
        t.depth_buy.len = 5;
        t.depth_sell.len = 3;
        for i in 0..DEPTH_LEVELS {
            t.depth_buy.levels[i] = DepthLevel {
                price: Price::from_f64(price - i as f64).unwrap(),
                quantity: 100 + i as u32,
                orders: 3,
            };
        }
        t
    }

    fn read(table: &SlotTable, slot: usize) -> TickSlot {
        let mut s = TickSlot::new();
        assert!(s.read(table, slot));
        s
    }

    #[test]
    fn the_slot_round_trips_the_whole_tick() {
        let table = Arc::new(TickCache::table(4));
        let mut cache = TickCache::new(table.clone());
        let t = tick(256_265, 1_700_000_000_123, 9, 1234.05, 10);
        cache.update(&t);
        let s = read(&table, 0);
        assert_eq!(s.token, 256_265);
        assert_eq!(s.latest, Some(t));
        assert_eq!(s.history(0).unwrap().last_price, t.last_price);
    }

    #[test]
    fn bars_follow_the_clickhouse_rules() {
        let table = Arc::new(TickCache::table(4));
        let mut cache = TickCache::new(table.clone());
        let m = 1_700_000_100_000; // a 15-minute boundary
        cache.update(&tick(1, m + 30_000, 2, 101.0, 5));
        cache.update(&tick(1, m + 10_000, 3, 100.0, 1)); // earlier time, later seq: the open
        cache.update(&tick(1, m + 50_000, 4, 99.0, 2));
        cache.update(&tick(1, m + 50_000, 1, 120.0, 1)); // same time, lower seq: not the close
        let mut bad = tick(1, m + 55_000, 5, 0.01, 1000);
        bad.validation_flags = FLAG_NONPOSITIVE_PRICE;
        cache.update(&bad); // hard-flagged: no bar, no latest, but in the history
        let s = read(&table, 0);
        let bar = s.bars[0].unwrap();
        assert_eq!(bar.start_ms, m);
        assert_eq!(bar.open, Price::from_f64(100.0).unwrap());
        assert_eq!(bar.close, Price::from_f64(99.0).unwrap());
        assert_eq!(bar.high, Price::from_f64(120.0).unwrap());
        assert_eq!(bar.low, Price::from_f64(99.0).unwrap());
        assert_eq!((bar.volume, bar.ticks), (9, 4));
        assert_eq!(bar.turnover, 505.0 + 100.0 + 198.0 + 120.0);
        assert_eq!(
            s.latest.unwrap().stream_seq,
            4,
            "(time, seq) greatest good tick"
        );
        assert_eq!(s.history_head, 5);
        assert_eq!(
            s.history(4).unwrap().validation_flags,
            FLAG_NONPOSITIVE_PRICE
        );
        // The next minute starts a new 1m bar; a tick for the old one is late.
        cache.update(&tick(1, m + 61_000, 6, 98.0, 1));
        cache.update(&tick(1, m + 20_000, 7, 50.0, 1));
        assert_eq!(cache.bars_late, 1, "late for 1m only: 5m and 15m hold both");
        let s = read(&table, 0);
        assert_eq!(s.bars[0].unwrap().start_ms, m + 60_000);
        assert_eq!(s.bars[0].unwrap().ticks, 1);
    }

    #[test]
    fn the_ring_keeps_the_last_entries_and_a_full_table_counts() {
        let table = Arc::new(TickCache::table(2));
        let mut cache = TickCache::new(table.clone());
        for seq in 1..=20 {
            cache.update(&tick(5, 1_000 * seq as i64, seq, 10.0, 1));
        }
        cache.update(&tick(6, 1, 1, 10.0, 1));
        cache.update(&tick(7, 1, 1, 10.0, 1));
        assert_eq!(cache.untracked, 1);
        assert_eq!(cache.conflated, 19);
        let s = read(&table, 0);
        assert_eq!(s.history_head, 20);
        assert!(s.history(11).is_none(), "overwritten");
        for n in 12..20 {
            assert_eq!(s.history(n).unwrap().stream_seq, n + 1);
        }
        assert!(s.history(20).is_none());
    }
}
