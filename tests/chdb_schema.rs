//! Modern ClickHouse conformance: every modern migration, split by the library's
//! splitter, runs in chdb (ClickHouse 26.x in-process) through
//! `tests/chdb/run_steps.py`; the OHLC check of `tests/ohlc.rs` passes there too;
//! the depth and feature views compute what they should; and every down file, run
//! in reverse, leaves the database empty.
//!
//! Needs `ALPHAPT_CHDB_PYTHON` (a Python with chdb; `.ci/services.sh env` prints it).
//! Unset: the test prints that it was skipped and returns. Set but failing: it fails.

mod ohlc_fixture;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value as Json};

use alphapt_storage::migrate::{self, TargetKind};
use alphapt_storage::ohlc::{self, Bar, BarQuery, Timeframe};

use ohlc_fixture::*;

/// One step for the Python runner.
fn step(label: impl Into<String>, sql: impl Into<String>, capture: bool) -> Json {
    json!({"label": label.into(), "sql": sql.into(), "capture": capture})
}

/// A JSON number, or a number ClickHouse quoted (64-bit integers by default).
fn number(row: &Json, key: &str) -> f64 {
    match &row[key] {
        Json::Number(n) => n.as_f64().unwrap(),
        Json::String(s) => s.parse().unwrap_or_else(|_| panic!("{key}: {s}")),
        other => panic!("{key}: {other}"),
    }
}

fn bar_from_row(row: &Json) -> Bar {
    Bar {
        instrument_token: number(row, "instrument_token") as u32,
        start_s: number(row, "start_s") as i64,
        open: number(row, "open"),
        high: number(row, "high"),
        low: number(row, "low"),
        close: number(row, "close"),
        volume: number(row, "volume") as u64,
        turnover: number(row, "turnover"),
        tick_count: number(row, "tick_count") as u64,
    }
}

/// Runs the steps in chdb and returns the captures.
fn run_in_chdb(python: &str, steps: Vec<Json>) -> Json {
    let input = std::env::temp_dir().join(format!("alphapt_chdb_{}.json", std::process::id()));
    std::fs::write(
        &input,
        json!({"database": "alphapt", "steps": steps}).to_string(),
    )
    .unwrap();
    let output = Command::new(python)
        .arg("tests/chdb/run_steps.py")
        .arg(&input)
        .output()
        .unwrap_or_else(|e| panic!("ALPHAPT_CHDB_PYTHON={python} cannot be run: {e}"));
    let _ = std::fs::remove_file(&input);
    assert!(
        output.status.success(),
        "chdb run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the runner prints one JSON object")
}

#[test]
fn modern_migrations_views_and_ohlc_work_in_chdb() {
    // Up, OHLC at 1m and 5m against the reference, depth/feature views, then down.
    let Ok(python) = std::env::var("ALPHAPT_CHDB_PYTHON") else {
        println!("SKIPPED modern_migrations_views_and_ohlc_work_in_chdb: ALPHAPT_CHDB_PYTHON is unset (eval \"$(bash .ci/services.sh env)\" sets it)");
        return;
    };
    let migrations = migrate::files::load_dir(Path::new("migrations/clickhouse")).unwrap();
    let mut steps = Vec::new();
    for m in &migrations {
        let script = m.up_for(false);
        let statements =
            migrate::statements(script, TargetKind::ClickHouse, RETENTION_DAYS).unwrap();
        for (i, s) in statements.into_iter().enumerate() {
            steps.push(step(
                format!("{} #{}", script.file_name(), i + 1),
                s.text,
                false,
            ));
        }
    }
    let tables_sql =
        "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name";
    steps.push(step("tables_after_up", tables_sql, true));
    steps.push(step(
        "engines_after_up",
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() \
         AND name IN ('market_ticks', 'strategy_signals', 'rejected_messages') ORDER BY name",
        true,
    ));

    let ticks = ticks();
    for (i, chunk) in shuffled_chunks(&ticks).iter().enumerate() {
        steps.push(step(format!("insert {i}"), insert_sql(chunk, false), false));
    }
    let query = BarQuery {
        tokens: Vec::new(),
        from_s: BASE_S,
        until_s: BASE_S + MINUTES * 60,
        distributed: false,
    };
    steps.push(step("bars_1m", ohlc::bars_1m_sql(&query), true));

    // One tick with a two-level book on a token of its own, for the depth and feature views.
    steps.push(step(
        "depth tick",
        format!(
            "INSERT INTO market_ticks (timestamp, instrument_token, last_price, last_quantity, stream_seq, depth_buy, depth_sell)
             VALUES (fromUnixTimestamp64Milli(toInt64({}), 'UTC'), 999, 100, 4, 99999,
                     [(99.5, 10, 1), (99.0, 20, 2)], [(100.5, 5, 1)])",
            BASE_S * 1000 + 1_500
        ),
        false,
    ));
    // And a crossed one (hard flag 4): the depth and feature views must skip it.
    steps.push(step(
        "crossed depth tick",
        format!(
            "INSERT INTO market_ticks (timestamp, instrument_token, last_price, last_quantity, stream_seq, depth_buy, depth_sell, validation_flags)
             VALUES (fromUnixTimestamp64Milli(toInt64({}), 'UTC'), 999, 0.5, 4000, 99998,
                     [(101.0, 1000, 1)], [(100.0, 1000, 1)], 4)",
            BASE_S * 1000 + 1_600
        ),
        false,
    ));
    steps.push(step(
        "depth",
        "SELECT best_bid, best_ask, spread, total_bid_quantity, total_ask_quantity, imbalance, bid_levels
         FROM market_depth_snapshots WHERE instrument_token = 999",
        true,
    ));
    steps.push(step(
        "features",
        "SELECT sumMerge(spread_sum) / sumMerge(spread_count) AS mean_spread,
                sumMerge(turnover) / sumMerge(volume) AS vwap, countMerge(tick_count) AS ticks,
                sumMerge(bid_quantity) AS bid, sumMerge(ask_quantity) AS ask
         FROM ml_features WHERE instrument_token = 999",
        true,
    ));

    for m in migrations.iter().rev() {
        let script = m
            .down_for(false)
            .expect("every modern migration has a down file");
        for (i, s) in migrate::statements(script, TargetKind::ClickHouse, RETENTION_DAYS)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            steps.push(step(
                format!("{} #{}", script.file_name(), i + 1),
                s.text,
                false,
            ));
        }
    }
    steps.push(step("tables_after_down", tables_sql, true));

    let out = run_in_chdb(&python, steps);
    println!("chdb engine {}", out["engine"]);
    let captures = &out["captures"];

    let tables: Vec<&str> = captures["tables_after_up"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for table in [
        "market_ticks",
        "ohlc_1m",
        "mv_ohlc_1m",
        "ml_features",
        "market_depth_snapshots",
        "strategy_signals",
        "rejected_messages",
    ] {
        assert!(tables.contains(&table), "{table} missing from {tables:?}");
    }

    // Migration 008: the server keeps a deduplication window on every INSERT table,
    // written the way the appliance reads it at start.
    let engines = captures["engines_after_up"].as_array().unwrap();
    assert_eq!(engines.len(), 3, "{engines:?}");
    for row in engines {
        let engine = row["engine_full"].as_str().unwrap();
        assert!(
            engine.contains("non_replicated_deduplication_window = 1000"),
            "{engine}"
        );
    }

    let minutes: Vec<Bar> = captures["bars_1m"]
        .as_array()
        .unwrap()
        .iter()
        .map(bar_from_row)
        .collect();
    assert_bars_match("chdb 1m", &minutes, &reference(&ticks, 60));
    let fives = ohlc::rollup(&minutes, Timeframe::M5, query.until_s);
    assert_bars_match("chdb 5m", &fives, &reference(&ticks, 300));

    assert_eq!(
        captures["depth"].as_array().unwrap().len(),
        1,
        "the crossed tick is left out"
    );
    let depth = &captures["depth"][0];
    assert_eq!(number(depth, "best_bid"), 99.5);
    assert_eq!(number(depth, "best_ask"), 100.5);
    assert_eq!(number(depth, "spread"), 1.0);
    assert_eq!(number(depth, "total_bid_quantity"), 30.0);
    assert_eq!(number(depth, "total_ask_quantity"), 5.0);
    assert!((number(depth, "imbalance") - 25.0 / 35.0).abs() < 1e-12);
    assert_eq!(number(depth, "bid_levels"), 2.0);

    let features = &captures["features"][0];
    assert_eq!(number(features, "mean_spread"), 1.0);
    assert_eq!(number(features, "vwap"), 100.0);
    assert_eq!(number(features, "ticks"), 1.0);
    assert_eq!(
        (number(features, "bid"), number(features, "ask")),
        (30.0, 5.0)
    );

    assert_eq!(captures["tables_after_down"], json!([]));
}
