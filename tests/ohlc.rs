//! OHLC on the real server (18.16 in CI): ticks inserted out of order in many blocks
//! give the bars a reference computes from the raw ticks, at 1m and rolled up to 5m.

mod common;
mod ohlc_fixture;

use alphapt_storage::migrate;
use alphapt_storage::native::Connection;
use alphapt_storage::ohlc::{self, BarQuery, Timeframe};

use ohlc_fixture::*;

#[test]
fn bars_match_the_reference_across_shuffled_inserts() {
    // 10,000 ticks, 20 instruments, 30 minutes, 50 shuffled INSERTs; 1m and 5m bars.
    let db = common::TestDb::new("ohlc");
    let mut conn = db.connect(None);
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
    let ticks = ticks();
    for chunk in shuffled_chunks(&ticks) {
        conn.execute(&insert_sql(&chunk, legacy)).unwrap();
    }
    assert_eq!(
        conn.query("SELECT count() FROM market_ticks")
            .unwrap()
            .scalar(),
        Some(alphapt_storage::native::Value::UInt(ticks.len() as u64))
    );
    let query = BarQuery {
        tokens: Vec::new(),
        from_s: BASE_S,
        until_s: BASE_S + MINUTES * 60,
    };
    let minutes = ohlc::bars(&mut conn, &query, Timeframe::M1).unwrap();
    assert_bars_match("1m", &minutes, &reference(&ticks, 60));
    let fives = ohlc::bars(&mut conn, &query, Timeframe::M5).unwrap();
    assert_bars_match("5m", &fives, &reference(&ticks, 300));

    // After the parts merge the bars are the same.
    conn.execute("OPTIMIZE TABLE ohlc_1m FINAL").unwrap();
    let merged = ohlc::bars(&mut conn, &query, Timeframe::M1).unwrap();
    assert_bars_match("1m merged", &merged, &reference(&ticks, 60));
}

#[test]
fn unfinished_bars_and_other_instruments_are_left_out() {
    // until_s inside minute 10 keeps minutes 0..9; tokens filter instruments.
    let db = common::TestDb::new("ohlc_cut");
    let mut conn: Connection = db.connect(None);
    let legacy = !conn.server().is_modern();
    for m in migrate::files::load_dir("migrations/clickhouse".as_ref()).unwrap() {
        for s in migrate::statements(
            m.up_for(legacy),
            migrate::TargetKind::ClickHouse,
            RETENTION_DAYS,
        )
        .unwrap()
        {
            conn.execute(&s.text).unwrap();
        }
    }
    let ticks = ticks();
    conn.execute(&insert_sql(&ticks[..2_000], legacy)).unwrap();
    let query = BarQuery {
        tokens: vec![3, 7],
        from_s: BASE_S,
        until_s: BASE_S + 10 * 60 + 30,
    };
    let bars = ohlc::bars(&mut conn, &query, Timeframe::M1).unwrap();
    let kept: Vec<RawTick> = ticks[..2_000]
        .iter()
        .filter(|t| [3, 7].contains(&t.token) && t.ts_ms < (BASE_S + 600) * 1000)
        .copied()
        .collect();
    assert_bars_match("1m cut", &bars, &reference(&kept, 60));
}
