//! OHLC on the real server (18.16 in CI): ticks inserted out of order in many blocks
//! give the bars a reference computes from the raw ticks, at 1m and rolled up to 5m.

mod common;
mod ohlc_fixture;

use alphapt_storage::native::Connection;
use alphapt_storage::ohlc::{self, BarQuery, Timeframe};

use ohlc_fixture::*;

#[test]
fn bars_match_the_reference_across_shuffled_inserts() {
    // 10,000 ticks, 20 instruments, 30 minutes, 50 shuffled INSERTs; 1m and 5m bars.
    let db = common::TestDb::new("ohlc");
    let mut conn = db.connect(None);
    let legacy = migrate_all(&mut conn);
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
        distributed: false,
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
    let legacy = migrate_all(&mut conn);
    let ticks = ticks();
    conn.execute(&insert_sql(&ticks[..2_000], legacy)).unwrap();
    let query = BarQuery {
        tokens: vec![3, 7],
        from_s: BASE_S,
        until_s: BASE_S + 10 * 60 + 30,
        distributed: false,
    };
    let bars = ohlc::bars(&mut conn, &query, Timeframe::M1).unwrap();
    let kept: Vec<RawTick> = ticks[..2_000]
        .iter()
        .filter(|t| [3, 7].contains(&t.token) && t.ts_ms < (BASE_S + 600) * 1000)
        .copied()
        .collect();
    assert_bars_match("1m cut", &bars, &reference(&kept, 60));
}

#[test]
fn hard_flagged_ticks_stay_out_of_depth_snapshots_and_features() {
    // Two ticks with a book on one instrument; the second is crossed (hard flag 4) and
    // priced 0.5 for 4,000: neither the depth view nor the feature view may see it.
    let db = common::TestDb::new("ohlc_hard");
    let mut conn: Connection = db.connect(None);
    let legacy = migrate_all(&mut conn);
    // 18.16 stores the depth columns as Nested: one array per tuple element.
    let (columns, time, depth_columns, depth) = if legacy {
        (
            "timestamp, timestamp_ms",
            "toDateTime(t.1, 'UTC'), t.2",
            "`depth_buy.1`, `depth_buy.2`, `depth_buy.3`, `depth_sell.1`, `depth_sell.2`, `depth_sell.3`",
            "arrayMap(d -> d.1, t.6), arrayMap(d -> toUInt32(d.2), t.6), arrayMap(d -> toUInt16(d.3), t.6), \
             arrayMap(d -> d.1, t.7), arrayMap(d -> toUInt32(d.2), t.7), arrayMap(d -> toUInt16(d.3), t.7)",
        )
    } else {
        (
            "timestamp",
            "fromUnixTimestamp64Milli(toInt64(t.1 * 1000 + t.2), 'UTC')",
            "depth_buy, depth_sell",
            "t.6, t.7",
        )
    };
    let s = BASE_S;
    conn.execute(&format!(
        "INSERT INTO market_ticks ({columns}, instrument_token, last_price, last_quantity, stream_seq, {depth_columns}, validation_flags) \
         SELECT {time}, 999, t.3, t.4, t.5, {depth}, t.8 FROM (SELECT arrayJoin([\
           ({s}, 500, 100., 4, 1, [(99.5, 10, 1), (99.0, 20, 2)], [(100.5, 5, 1)], 0), \
           ({s}, 600, 0.5, 4000, 2, [(101.0, 1000, 1)], [(100.0, 1000, 1)], 4)]) AS t)"
    ))
    .unwrap();
    let row = |conn: &mut Connection, sql: &str| {
        let q = conn.query(sql).unwrap();
        assert_eq!(q.rows(), 1, "{sql}");
        let block = q.blocks.iter().find(|b| b.rows > 0).unwrap();
        block
            .columns
            .iter()
            .map(|c| c.values.get(0).as_f64().unwrap())
            .collect::<Vec<f64>>()
    };
    assert_eq!(
        row(
            &mut conn,
            "SELECT count(), min(best_bid), max(best_ask), sum(total_bid_quantity) FROM market_depth_snapshots"
        ),
        vec![1.0, 99.5, 100.5, 30.0]
    );
    assert_eq!(
        row(
            &mut conn,
            "SELECT toFloat64(countMerge(tick_count)), sumMerge(turnover) / sumMerge(volume), toFloat64(sumMerge(bid_quantity)) FROM ml_features"
        ),
        vec![1.0, 100.0, 30.0]
    );
    assert_eq!(
        row(
            &mut conn,
            "SELECT minMerge(low), toFloat64(sumMerge(volume)) FROM ohlc_1m"
        ),
        vec![100.0, 4.0]
    );
}
