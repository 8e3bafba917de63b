//! What a shard hands the Redis thread per instrument: the latest good tick and the
//! current 1m/5m/15m bars in one slot of a [`SlotTable`] (conflating: only the latest
//! state matters), and every tick's history entry through a queue (not conflating:
//! the history is every tick).
//!
//! ```text
//!   shard: append_tick ─► TickCache::update(tick)
//!            token ──open addressing (shard-private, sized once)──► slot
//!            slot words: header │ latest good tick │ bars 1m 5m 15m      (good ticks)
//!            history queue (rtrb, HISTORY_QUEUE records): slot, n, entry  (every tick)
//!   Redis thread: TickSlot::read(table, slot) ─► keys tick:, ohlc:
//!                 history queue ─► per-instrument pending entries ─► tick:…:history
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
//! The history used to be a ring of 8 entries in each slot. Under a flat-out load the
//! Redis thread's flush takes tens of milliseconds, an instrument ticking a few hundred
//! times a second overran its ring between two reads, and the history was restarted
//! at nearly every flush: 61% of a million ticks never reached it in `perf/e2e.sh`,
//! and DELs took ~15% of Redis's command time. The queue holds
//! [`HISTORY_QUEUE`] entries of the whole shard (~0.6 s at 200k ticks/s), whatever
//! the instruments' shares; each record carries its instrument's running count `n`,
//! so when the queue was full and an entry was dropped, the reader sees the gap and
//! restarts that instrument's history: the sorted set never has holes (see
//! `cache::redis`).
//!
//! Cost per tick on the shard: one probe of the token table, one 64-byte record
//! pushed (a store of the queue's tail, no atomic read-modify-write), and for a good
//! tick ~60 plain stores in the slot (benches/cache.rs). No allocation after `new`.

use crate::model::quality::FLAGS_HARD;
use crate::model::{Depth, DepthLevel, Ohlc, Price, Tick, DEPTH_LEVELS};

use super::slots::{SlotTable, SlotWords};
use super::symbol_at;

/// History records one shard's queue holds between two drains by the Redis thread:
/// 8 MiB, about 0.6 s of a shard at 200,000 ticks/s, and 0.3 s of one catching up at
/// twice that. The thread drains it before each flush and between its pipelined
/// requests, so only a round trip longer than that drops entries; they are counted
/// and the histories concerned restart. Half this size dropped 1,296 of a million
/// Kite ticks in one of three flat-out `perf/e2e.sh` runs (Redis round trips up to
/// 140 ms on the shared 2-core box).
pub const HISTORY_QUEUE: usize = 1 << 17;

/// Bar lengths kept in the cache, in ms: 1m, 5m, 15m.
pub const BAR_MS: [i64; 3] = [60_000, 300_000, 900_000];

/// Labels of [`BAR_MS`], as in the `ohlc:{token}:{tf}` keys.
pub const BAR_LABELS: [&str; 3] = ["1m", "5m", "15m"];

// Slot layout, in words, by cache line (8 words); a good tick writes them:
//   0      header, (spare), the tick's hot scalars              every good tick
//   1..4   more scalars, both depth sides                       every good tick
//   4      exchange, tradingsymbol                              compared, written on change
//   5      day OHLC, 1m bar's open                               every good tick / new bar
//   6..9   each bar's hot words (bucket|count, close, high, low, volume, turnover)
//   9      5m and 15m bars' open
const HEADER: usize = 0;
const T_TS: usize = 2;
const T_RECEIVED: usize = 3;
const T_SEQ: usize = 4;
const T_TOKEN_QTY: usize = 5;
const T_PRICE: usize = 6;
const T_VOLUME: usize = 7;
const T_AVERAGE: usize = 8;
const T_OI: usize = 9;
const T_SCORE_FLAGS: usize = 10;
const T_DEPTH_LENS: usize = 11;
const T_BUY: usize = 12;
const T_SELL: usize = T_BUY + 2 * DEPTH_LEVELS;
const T_EXCHANGE: usize = 32;
const T_SYMBOL: usize = 36;
const T_DAY_OHLC: usize = 40;
/// Each bar: its hot line, then its three open words.
const BAR_HOT: [usize; 3] = [48, 56, 64];
const BAR_OPEN: [usize; 3] = [44, 72, 75];

/// Words of one instrument's slot (a whole number of cache lines).
pub const SLOT_WORDS: usize = 80;

const _: () = assert!(T_SELL + 2 * DEPTH_LEVELS <= T_EXCHANGE && SLOT_WORDS % 8 == 0);
const _: () = assert!(BAR_OPEN[2] + 3 <= SLOT_WORDS);

/// Header bit: the slot holds a good tick.
const HAS_LATEST: u64 = 1 << 32;

/// Header bit: the slot belongs to an instrument.
const IN_USE: u64 = 1 << 33;

// A bar's hot words, from `BAR_HOT[b]`.
const B_START_COUNT: usize = 0; // start minute (high 32 bits) | good ticks (low 32)
const B_CLOSE_TS: usize = 1;
const B_CLOSE_SEQ: usize = 2;
const B_CLOSE: usize = 3;
const B_HIGH: usize = 4;
const B_LOW: usize = 5;
const B_VOLUME: usize = 6;
const B_TURNOVER: usize = 7;
// A bar's open words, from `BAR_OPEN[b]`.
const B_OPEN_TS: usize = 0;
const B_OPEN_SEQ: usize = 1;
const B_OPEN: usize = 2;

/// One tick's history entry on its way to the Redis thread.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HistoryRecord {
    /// The instrument's slot in the shard's table.
    pub slot: u32,
    /// The instrument.
    pub token: u32,
    /// The instrument's history entries before this one (wrapping): consecutive per
    /// slot, so a gap says the queue was full and entries were dropped.
    pub n: u32,
    /// The entry.
    pub entry: HistoryEntry,
}

/// The queue from a shard to the Redis thread, [`HISTORY_QUEUE`] records.
pub fn history_queue() -> (rtrb::Producer<HistoryRecord>, rtrb::Consumer<HistoryRecord>) {
    rtrb::RingBuffer::new(HISTORY_QUEUE)
}

/// The shard's side: its table and the token → slot index, both sized once.
pub struct TickCache {
    table: std::sync::Arc<SlotTable>,
    history: rtrb::Producer<HistoryRecord>,
    /// Per slot: history entries so far (the next record's `n`).
    history_counts: Box<[u32]>,
    /// Open addressing, power-of-two length, twice the slots; each entry is the
    /// token (high half) and slot + 1 (low half), 0 = empty: one load per probe.
    index: Box<[u64]>,
    used: usize,
    /// Ticks whose instrument found no free slot.
    pub untracked: u64,
    /// Good ticks for a bar older than the slot's current one.
    pub bars_late: u64,
}

impl TickCache {
    /// A cache over a table and a history queue shared with the Redis thread.
    pub fn new(
        table: std::sync::Arc<SlotTable>,
        history: rtrb::Producer<HistoryRecord>,
    ) -> TickCache {
        assert_eq!(table.words_per_slot(), SLOT_WORDS, "a tick slot table");
        let len = (table.slots() * 2).next_power_of_two();
        TickCache {
            history_counts: vec![0; table.slots()].into_boxed_slice(),
            history,
            table,
            index: vec![0; len].into_boxed_slice(),
            used: 0,
            untracked: 0,
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
        let mask = self.index.len() - 1;
        let mut i = (u64::from(token).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & mask;
        loop {
            let entry = self.index[i];
            if entry == 0 {
                if self.used == self.table.slots() {
                    return None;
                }
                self.index[i] = u64::from(token) << 32 | (self.used as u64 + 1);
                self.used += 1;
                self.table.set_used(self.used);
                return Some(self.used - 1);
            }
            if (entry >> 32) as u32 == token {
                return Some((entry & 0xffff_ffff) as usize - 1);
            }
            i = (i + 1) & mask;
        }
    }

    /// Hands `tick` (validated, about to be stored) to the Redis thread.
    #[inline]
    pub fn update(&mut self, tick: &Tick) {
        let Some(slot) = self.slot_of(tick.instrument_token) else {
            self.untracked += 1;
            return;
        };
        // The history takes every stored tick. A full queue drops the entry: the
        // count still moves on, so the reader sees the gap.
        let n = self.history_counts[slot];
        self.history_counts[slot] = n.wrapping_add(1);
        let _ = self.history.push(HistoryRecord {
            slot: slot as u32,
            token: tick.instrument_token,
            n,
            entry: HistoryEntry::of(tick),
        });
        // A hard-flagged tick changes neither the latest tick nor a bar.
        if tick.validation_flags & FLAGS_HARD != 0 {
            return;
        }
        let mut late = 0;
        self.table.publish(slot, |w| {
            let has_latest = w.get(HEADER) & HAS_LATEST != 0;
            let newer = !has_latest
                || (tick.timestamp_ms, tick.stream_seq) >= (w.get(T_TS) as i64, w.get(T_SEQ));
            if newer {
                write_tick(w, tick);
                if !has_latest {
                    w.set(
                        HEADER,
                        u64::from(tick.instrument_token) | IN_USE | HAS_LATEST,
                    );
                }
            }
            // Once for the three bars.
            let turnover = tick.last_price.to_f64() * f64::from(tick.last_quantity);
            for (b, tf) in BAR_MS.iter().enumerate() {
                if !update_bar(w, b, *tf, tick, turnover) {
                    late += 1;
                }
            }
        });
        self.bars_late += late;
    }
}

/// Adds a good tick to bar `b`; false when the tick is for an older bar.
#[inline]
fn update_bar(
    w: &SlotWords<'_, SLOT_WORDS>,
    b: usize,
    tf_ms: i64,
    tick: &Tick,
    turnover: f64,
) -> bool {
    let (hot, open) = (BAR_HOT[b], BAR_OPEN[b]);
    let ts = tick.timestamp_ms;
    let price = tick.last_price.0 as u64;
    let quantity = u64::from(tick.last_quantity);
    let start_count = w.get(hot + B_START_COUNT);
    let count = start_count & 0xffff_ffff;
    // Bars start on whole minutes, so the start fits 32 bits as minutes since 1970.
    let current = (start_count >> 32) as i64 * 60_000;
    // Most ticks fall in the current bar: two compares, no division.
    let bucket = if count > 0 && ts >= current && ts - current < tf_ms {
        current
    } else {
        ts - ts.rem_euclid(tf_ms)
    };
    if count == 0 || bucket > current {
        let start = ((bucket / 60_000) as u64) << 32;
        let close = [ts as u64, tick.stream_seq, price, price, price, quantity];
        w.set(hot + B_START_COUNT, start | 1);
        w.set_all(hot + B_CLOSE_TS, &close);
        w.set(hot + B_TURNOVER, turnover.to_bits());
        w.set_all(open, &[ts as u64, tick.stream_seq, price]);
        return true;
    }
    if bucket < current {
        return false;
    }
    let key = (ts, tick.stream_seq);
    if key < (w.get(open + B_OPEN_TS) as i64, w.get(open + B_OPEN_SEQ)) {
        w.set_all(open, &[ts as u64, tick.stream_seq, price]);
    }
    if key >= (w.get(hot + B_CLOSE_TS) as i64, w.get(hot + B_CLOSE_SEQ)) {
        w.set_all(hot + B_CLOSE_TS, &[ts as u64, tick.stream_seq, price]);
    }
    let p = tick.last_price.0;
    if p > w.get(hot + B_HIGH) as i64 {
        w.set(hot + B_HIGH, price);
    }
    if p < w.get(hot + B_LOW) as i64 {
        w.set(hot + B_LOW, price);
    }
    w.set(hot + B_VOLUME, w.get(hot + B_VOLUME) + quantity);
    let sum = f64::from_bits(w.get(hot + B_TURNOVER)) + turnover;
    w.set(hot + B_TURNOVER, sum.to_bits());
    w.set(hot + B_START_COUNT, start_count + 1);
    true
}

/// Writes the tick's words in place; the symbols only when they changed.
#[inline]
fn write_tick(w: &SlotWords<'_, SLOT_WORDS>, t: &Tick) {
    w.set(T_TS, t.timestamp_ms as u64);
    w.set(T_RECEIVED, t.received_at_ms as u64);
    w.set(T_SEQ, t.stream_seq);
    w.set(
        T_TOKEN_QTY,
        u64::from(t.instrument_token) | u64::from(t.last_quantity) << 32,
    );
    w.set(T_PRICE, t.last_price.0 as u64);
    w.set(T_VOLUME, t.volume_traded);
    w.set(T_AVERAGE, t.average_price.0 as u64);
    w.set(T_OI, t.oi);
    w.set(
        T_SCORE_FLAGS,
        u64::from(t.data_quality_score.to_bits()) | u64::from(t.validation_flags) << 32,
    );
    w.set(
        T_DEPTH_LENS,
        u64::from(t.depth_buy.len) | u64::from(t.depth_sell.len) << 8,
    );
    for (side, depth) in [(T_BUY, &t.depth_buy), (T_SELL, &t.depth_sell)] {
        for (i, level) in depth.levels.iter().enumerate() {
            w.set(side + 2 * i, level.price.0 as u64);
            w.set(
                side + 2 * i + 1,
                u64::from(level.quantity) | u64::from(level.orders) << 32,
            );
        }
    }
    for (at, symbol) in [(T_EXCHANGE, &t.exchange), (T_SYMBOL, &t.tradingsymbol)] {
        let packed = symbol.to_words();
        if (0..4).any(|i| w.get(at + i) != packed[i]) {
            w.set_all(at, &packed);
        }
    }
    w.set_all(
        T_DAY_OHLC,
        &[
            t.ohlc.open.0 as u64,
            t.ohlc.high.0 as u64,
            t.ohlc.low.0 as u64,
            t.ohlc.close.0 as u64,
        ],
    );
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
        timestamp_ms: w[T_TS] as i64,
        received_at_ms: w[T_RECEIVED] as i64,
        stream_seq: w[T_SEQ],
        instrument_token: w[T_TOKEN_QTY] as u32,
        last_quantity: (w[T_TOKEN_QTY] >> 32) as u32,
        exchange: symbol_at(w, T_EXCHANGE),
        tradingsymbol: symbol_at(w, T_SYMBOL),
        last_price: Price(w[T_PRICE] as i64),
        average_price: Price(w[T_AVERAGE] as i64),
        volume_traded: w[T_VOLUME],
        ohlc: Ohlc {
            open: Price(w[T_DAY_OHLC] as i64),
            high: Price(w[T_DAY_OHLC + 1] as i64),
            low: Price(w[T_DAY_OHLC + 2] as i64),
            close: Price(w[T_DAY_OHLC + 3] as i64),
        },
        oi: w[T_OI],
        data_quality_score: f32::from_bits(w[T_SCORE_FLAGS] as u32),
        validation_flags: (w[T_SCORE_FLAGS] >> 32) as u32,
        depth_buy: depth(T_BUY, w[T_DEPTH_LENS] & 0xff),
        depth_sell: depth(T_SELL, (w[T_DEPTH_LENS] >> 8) & 0xff),
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
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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

impl HistoryEntry {
    /// The entry of `tick`.
    #[inline]
    pub fn of(tick: &Tick) -> HistoryEntry {
        HistoryEntry {
            timestamp_ms: tick.timestamp_ms,
            stream_seq: tick.stream_seq,
            last_price: tick.last_price,
            volume_traded: tick.volume_traded,
            last_quantity: tick.last_quantity,
            validation_flags: tick.validation_flags,
            data_quality_score: tick.data_quality_score,
        }
    }
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
            words: vec![0; SLOT_WORDS],
        }
    }

    /// Reads `slot` of `table`; its sequence, or `None` when it could not be read
    /// consistently (the shard kept rewriting it).
    pub fn read(&mut self, table: &SlotTable, slot: usize) -> Option<u64> {
        let seq = table.read(slot, &mut self.words)?;
        let w = &self.words;
        self.in_use = w[HEADER] & IN_USE != 0;
        self.token = w[HEADER] as u32;
        self.latest = (w[HEADER] & HAS_LATEST != 0).then(|| unpack_tick(w));
        for (b, bar) in self.bars.iter_mut().enumerate() {
            let (hot, open) = (BAR_HOT[b], BAR_OPEN[b]);
            let start_count = w[hot + B_START_COUNT];
            *bar = (start_count & 0xffff_ffff > 0).then(|| CachedBar {
                start_ms: (start_count >> 32) as i64 * 60_000,
                open: Price(w[open + B_OPEN] as i64),
                high: Price(w[hot + B_HIGH] as i64),
                low: Price(w[hot + B_LOW] as i64),
                close: Price(w[hot + B_CLOSE] as i64),
                volume: w[hot + B_VOLUME],
                turnover: f64::from_bits(w[hot + B_TURNOVER]),
                ticks: start_count & 0xffff_ffff,
            });
        }
        Some(seq)
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
        assert!(s.read(table, slot).is_some());
        s
    }

    #[test]
    fn the_slot_round_trips_the_whole_tick() {
        let table = Arc::new(TickCache::table(4));
        let (tx, mut history) = history_queue();
        let mut cache = TickCache::new(table.clone(), tx);
        let t = tick(256_265, 1_700_000_000_123, 9, 1234.05, 10);
        cache.update(&t);
        let s = read(&table, 0);
        assert_eq!(s.token, 256_265);
        assert_eq!(s.latest, Some(t));
        let record = history.pop().unwrap();
        assert_eq!((record.slot, record.token, record.n), (0, 256_265, 0));
        assert_eq!(record.entry, HistoryEntry::of(&t));
        assert_eq!(record.entry.last_price, t.last_price);
    }

    #[test]
    fn bars_follow_the_clickhouse_rules() {
        let table = Arc::new(TickCache::table(4));
        let (tx, mut history) = history_queue();
        let mut cache = TickCache::new(table.clone(), tx);
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
        let entries: Vec<HistoryRecord> = std::iter::from_fn(|| history.pop().ok()).collect();
        assert_eq!(entries.len(), 5, "every tick, the hard-flagged one too");
        assert_eq!(entries[4].n, 4);
        assert_eq!(entries[4].entry.validation_flags, FLAG_NONPOSITIVE_PRICE);
        // The next minute starts a new 1m bar; a tick for the old one is late.
        cache.update(&tick(1, m + 61_000, 6, 98.0, 1));
        cache.update(&tick(1, m + 20_000, 7, 50.0, 1));
        assert_eq!(cache.bars_late, 1, "late for 1m only: 5m and 15m hold both");
        let s = read(&table, 0);
        assert_eq!(s.bars[0].unwrap().start_ms, m + 60_000);
        assert_eq!(s.bars[0].unwrap().ticks, 1);
    }

    #[test]
    fn a_full_queue_leaves_a_gap_in_n_and_a_full_table_counts() {
        let table = Arc::new(TickCache::table(2));
        let (tx, mut history) = rtrb::RingBuffer::new(4);
        let mut cache = TickCache::new(table.clone(), tx);
        for seq in 1..=6 {
            cache.update(&tick(5, 1_000 * seq as i64, seq, 10.0, 1));
        }
        let first: Vec<u32> = std::iter::from_fn(|| history.pop().ok().map(|r| r.n)).collect();
        assert_eq!(first, [0, 1, 2, 3], "the queue took four, dropped two");
        cache.update(&tick(5, 7_000, 7, 10.0, 1));
        let next = history.pop().unwrap();
        assert_eq!((next.n, next.entry.stream_seq), (6, 7), "n 4 and 5 missing");
        cache.update(&tick(6, 1, 1, 10.0, 1));
        cache.update(&tick(7, 1, 1, 10.0, 1));
        assert_eq!(cache.untracked, 1);
        assert_eq!(table.seq(0), 14, "7 changes");
        assert_eq!(history.pop().unwrap().slot, 1);
        assert!(
            history.pop().is_err(),
            "an untracked instrument has no history"
        );
    }
}
