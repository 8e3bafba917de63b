//! The OHLC check shared by `tests/ohlc.rs` (ClickHouse 18.16) and
//! `tests/chdb_schema.rs` (chdb, ClickHouse 26.x): 10,000 ticks for 20 instruments
//! over 30 minutes, inserted in shuffled order in 50 separate INSERTs, and the bars
//! a reference computes straight from the raw ticks. Among them are ticks with a hard
//! validation flag (a price of 0 or -5, one far outside its circuit, one stamped
//! 2099) as the shards store them: the views must leave them out of every bar.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};

use alphapt_storage::model::quality::{
    FLAGS_HARD, FLAG_FUTURE_TIMESTAMP, FLAG_NONPOSITIVE_PRICE, FLAG_OUTSIDE_CIRCUIT,
    FLAG_STALE_TIMESTAMP,
};
use alphapt_storage::model::synthetic::SplitMix64;
use alphapt_storage::ohlc::Bar;

/// Start of the data, 2023-11-14 22:00:00 UTC: aligned to the hour so 5m, 15m and
/// 1h buckets start with it.
pub const BASE_S: i64 = 1_699_999_200;
/// Minutes of data.
pub const MINUTES: i64 = 30;
/// Instruments.
pub const INSTRUMENTS: u32 = 20;
/// Ticks per instrument (20 × 500 = 10,000).
pub const TICKS_PER_INSTRUMENT: usize = 500;
/// Separate INSERT statements.
pub const INSERTS: usize = 50;
/// Retention for the modern files: the data is from 2023, so a 90-day TTL would
/// drop it on insert; 10,000 days keeps it.
pub const RETENTION_DAYS: u32 = 10_000;

/// Applies every ClickHouse migration (the `.legacy` files on 18.16) in the
/// connection's database, retention [`RETENTION_DAYS`]; returns whether the server
/// is legacy.
pub fn migrate_all(conn: &mut alphapt_storage::native::Connection) -> bool {
    use alphapt_storage::migrate;
    let legacy = !conn.server().is_modern();
    for m in migrate::files::load_dir("migrations/clickhouse".as_ref()).unwrap() {
        let script = m.up_for(legacy);
        for s in
            migrate::statements(script, migrate::TargetKind::ClickHouse, RETENTION_DAYS).unwrap()
        {
            conn.execute(&s.text)
                .unwrap_or_else(|e| panic!("{}: {e}", script.file_name()));
        }
    }
    legacy
}

/// One raw tick.
#[derive(Clone, Copy, Debug)]
pub struct RawTick {
    pub token: u32,
    pub ts_ms: i64,
    pub price: f64,
    pub quantity: u32,
    pub seq: u64,
    /// `validation_flags` as the shard set them.
    pub flags: u32,
}

/// The ticks, in time order, with distinct times per instrument (so open and close
/// have one right answer) and prices on a 0.05 grid.
pub fn ticks() -> Vec<RawTick> {
    let mut rng = SplitMix64::new(0x0c1c);
    let span_ms = (MINUTES * 60_000) as u64;
    let mut ticks = Vec::with_capacity(INSTRUMENTS as usize * TICKS_PER_INSTRUMENT);
    for token in 1..=INSTRUMENTS {
        let mut times = HashSet::with_capacity(TICKS_PER_INSTRUMENT);
        // 500 draws from 1.8 M slots rarely collide; the bound only stops a broken rng.
        for _ in 0..TICKS_PER_INSTRUMENT * 10 {
            if times.len() == TICKS_PER_INSTRUMENT {
                break;
            }
            times.insert(rng.below(span_ms) as i64);
        }
        assert_eq!(times.len(), TICKS_PER_INSTRUMENT);
        let mut times: Vec<i64> = times.into_iter().collect();
        times.sort_unstable();
        let mut cents: i64 = 10_000 + 500 * i64::from(token);
        for offset in times {
            cents = (cents + 5 * (rng.below(21) as i64 - 10)).max(5);
            ticks.push(RawTick {
                token,
                ts_ms: BASE_S * 1000 + offset,
                price: cents as f64 / 100.0,
                quantity: 1 + rng.below(100) as u32,
                seq: 0,
                flags: 0,
            });
        }
        // Bad prints the shards flag hard, on every third instrument, and one flagged
        // soft (stale) that still counts. Their times may repeat a good tick's: they
        // are out of every bar anyway.
        if token % 3 == 0 {
            let at = |rng: &mut SplitMix64| BASE_S * 1000 + rng.below(span_ms) as i64;
            for (price, quantity, flags) in [
                (0.0, 50_000, FLAG_NONPOSITIVE_PRICE),
                (-5.0, 7, FLAG_NONPOSITIVE_PRICE),
                (cents as f64, 999_999, FLAG_OUTSIDE_CIRCUIT),
            ] {
                let ts_ms = at(&mut rng);
                ticks.push(RawTick {
                    token,
                    ts_ms,
                    price,
                    quantity,
                    seq: 0,
                    flags,
                });
            }
            ticks.push(RawTick {
                token,
                ts_ms: 4_070_908_800_000,
                price: cents as f64 / 100.0,
                quantity: 3,
                seq: 0,
                flags: FLAG_FUTURE_TIMESTAMP,
            });
        }
    }
    let soft = ticks.len() / 2;
    ticks[soft].flags = FLAG_STALE_TIMESTAMP;
    ticks.sort_by_key(|t| (t.ts_ms, t.token));
    for (i, t) in ticks.iter_mut().enumerate() {
        t.seq = i as u64 + 1;
    }
    ticks
}

/// The ticks shuffled (Fisher–Yates) and cut into [`INSERTS`] chunks.
pub fn shuffled_chunks(ticks: &[RawTick]) -> Vec<Vec<RawTick>> {
    let mut shuffled = ticks.to_vec();
    let mut rng = SplitMix64::new(0x5eed);
    for i in (1..shuffled.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        shuffled.swap(i, j);
    }
    let per = shuffled.len().div_ceil(INSERTS);
    shuffled.chunks(per).map(<[RawTick]>::to_vec).collect()
}

/// One INSERT of a chunk, as `INSERT .. SELECT` over literal tuples so the whole
/// chunk is one block on the server (one materialized-view run per INSERT).
pub fn insert_sql(chunk: &[RawTick], legacy: bool) -> String {
    let tuples: Vec<String> = chunk
        .iter()
        .map(|t| {
            format!(
                "({}, {}, {}, {:?}, {}, {}, {})",
                t.ts_ms.div_euclid(1000),
                t.ts_ms.rem_euclid(1000),
                t.token,
                t.price,
                t.quantity,
                t.seq,
                t.flags
            )
        })
        .collect();
    let (columns, time) = if legacy {
        ("timestamp, timestamp_ms", "toDateTime(t.1, 'UTC'), t.2")
    } else {
        (
            "timestamp",
            "fromUnixTimestamp64Milli(toInt64(t.1 * 1000 + t.2), 'UTC')",
        )
    };
    format!(
        "INSERT INTO market_ticks ({columns}, instrument_token, last_price, last_quantity, stream_seq, validation_flags) \
         SELECT {time}, t.3, t.4, t.5, t.6, t.7 FROM (SELECT arrayJoin([{}]) AS t)",
        tuples.join(", ")
    )
}

/// Bars of `seconds` computed from the raw ticks without a hard flag, sorted by
/// instrument and start.
pub fn reference(ticks: &[RawTick], seconds: i64) -> Vec<Bar> {
    let mut groups: BTreeMap<(u32, i64), Vec<RawTick>> = BTreeMap::new();
    for t in ticks.iter().filter(|t| t.flags & FLAGS_HARD == 0) {
        let start = t.ts_ms.div_euclid(1000).div_euclid(seconds) * seconds;
        groups.entry((t.token, start)).or_default().push(*t);
    }
    groups
        .into_iter()
        .map(|((token, start_s), mut group)| {
            group.sort_by_key(|t| (t.ts_ms, t.seq));
            Bar {
                instrument_token: token,
                start_s,
                open: group[0].price,
                high: group.iter().map(|t| t.price).fold(f64::MIN, f64::max),
                low: group.iter().map(|t| t.price).fold(f64::MAX, f64::min),
                close: group[group.len() - 1].price,
                volume: group.iter().map(|t| u64::from(t.quantity)).sum(),
                turnover: group.iter().map(|t| t.price * f64::from(t.quantity)).sum(),
                tick_count: group.len() as u64,
            }
        })
        .collect()
}

/// Asserts bar by bar: open, high, low, close, volume and tick count exactly;
/// turnover (a float sum whose order differs) to 1e-9 relative.
pub fn assert_bars_match(label: &str, got: &[Bar], want: &[Bar]) {
    assert_eq!(got.len(), want.len(), "{label}: bar count");
    for (g, w) in got.iter().zip(want) {
        let key = (w.instrument_token, w.start_s);
        assert_eq!((g.instrument_token, g.start_s), key, "{label}: bar order");
        assert_eq!(g.open, w.open, "{label} {key:?}: open");
        assert_eq!(g.high, w.high, "{label} {key:?}: high");
        assert_eq!(g.low, w.low, "{label} {key:?}: low");
        assert_eq!(g.close, w.close, "{label} {key:?}: close");
        assert_eq!(g.volume, w.volume, "{label} {key:?}: volume");
        assert_eq!(g.tick_count, w.tick_count, "{label} {key:?}: tick count");
        assert!(
            (g.turnover - w.turnover).abs() <= 1e-9 * w.turnover.abs(),
            "{label} {key:?}: turnover {} vs {}",
            g.turnover,
            w.turnover
        );
    }
}
