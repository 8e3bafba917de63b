//! `alphapt-storage query ticks|ohlc` against the real server (18.16 in CI): ticks
//! inserted a few minutes back come out newest first and limited per instrument, bars
//! equal a reference built from the good ticks, every row names the tier that answered,
//! and bad flags get one-line errors.

mod common;
mod ohlc_fixture;

use std::process::Command;

use alphapt_storage::model::quality::FLAG_NONPOSITIVE_PRICE;
use ohlc_fixture::{insert_sql, migrate_all, reference, RawTick};
use serde_json::Value as Json;

fn query(db: &common::TestDb, args: &[&str]) -> std::process::Output {
    let port = std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "9000".into());
    Command::new(env!("CARGO_BIN_EXE_alphapt-storage"))
        .args(["--set", &format!("clickhouse.database={}", db.name)])
        .args(["--set", &format!("clickhouse.port={port}")])
        .arg("query")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout_of(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "query failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn ticks_and_bars_come_back_from_clickhouse_and_bad_flags_are_refused() {
    let db = common::TestDb::new("query");
    let mut conn = db.connect(None);
    let legacy = migrate_all(&mut conn);
    // Three finished minutes, ending at the last whole minute before now.
    let now_s = alphapt_storage::runtime::clock::now_ms() / 1000;
    let start_s = now_s - now_s.rem_euclid(60) - 180;
    let mut ticks = Vec::new();
    for token in [11u32, 12] {
        for i in 0..30i64 {
            ticks.push(RawTick {
                token,
                ts_ms: (start_s + i * 6) * 1000 + i,
                price: 100.0 + f64::from(token) + (i % 7) as f64 * 0.05,
                quantity: 1 + i as u32,
                seq: 0,
                flags: 0,
            });
        }
    }
    // A print at 0 inside the second minute: listed with its flag, not in a bar.
    ticks.push(RawTick {
        token: 11,
        ts_ms: (start_s + 61) * 1000,
        price: 0.0,
        quantity: 500,
        seq: 0,
        flags: FLAG_NONPOSITIVE_PRICE,
    });
    for (i, t) in ticks.iter_mut().enumerate() {
        t.seq = i as u64 + 1;
    }
    conn.execute(&insert_sql(&ticks, legacy)).unwrap();

    // Newest five per instrument, newest first.
    let text = stdout_of(&query(
        &db,
        &[
            "ticks",
            "--tokens",
            "12,11",
            "--minutes",
            "10",
            "--limit",
            "5",
            "--format",
            "json",
        ],
    ));
    let json: Json = serde_json::from_str(&text).unwrap();
    let got: Vec<(u64, u64, String)> = json["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["tier"], "clickhouse");
            (
                t["instrument_token"].as_u64().unwrap(),
                t["stream_seq"].as_u64().unwrap(),
                t["timestamp"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut want = Vec::new();
    for token in [11u32, 12] {
        let mut mine: Vec<&RawTick> = ticks.iter().filter(|t| t.token == token).collect();
        mine.sort_by_key(|t| std::cmp::Reverse((t.ts_ms, t.seq)));
        for t in mine.iter().take(5) {
            let mut iso = Vec::new();
            alphapt_storage::model::json::write_iso8601_ms(&mut iso, t.ts_ms);
            want.push((u64::from(token), t.seq, String::from_utf8(iso).unwrap()));
        }
    }
    assert_eq!(got, want);
    let flagged = stdout_of(&query(
        &db,
        &[
            "ticks",
            "--tokens",
            "11",
            "--minutes",
            "10",
            "--limit",
            "100",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(flagged.lines().count(), 1 + 31, "{flagged}");
    assert!(
        flagged
            .lines()
            .any(|l| l.contains(",0,500,") && l.contains(",2,")),
        "the zero print is listed with flag 2: {flagged}"
    );

    // The three finished minutes' bars, from the good ticks only.
    let csv = stdout_of(&query(
        &db,
        &[
            "ohlc",
            "--tokens",
            "11,12",
            "--timeframe",
            "1m",
            "--limit",
            "5",
            "--format",
            "csv",
        ],
    ));
    let want = reference(&ticks, 60);
    assert_eq!(want.len(), 6);
    let rows: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), want.len(), "{csv}");
    for (row, bar) in rows.iter().zip(&want) {
        assert_eq!(row[0], bar.instrument_token.to_string(), "{csv}");
        let numbers: Vec<f64> = row[3..7].iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(
            numbers,
            vec![bar.open, bar.high, bar.low, bar.close],
            "{csv}"
        );
        assert_eq!(row[7], bar.volume.to_string(), "{csv}");
        assert_eq!(row[10], "clickhouse");
    }
    // The table form: a header and the three bars of token 11.
    let table = stdout_of(&query(&db, &["ohlc", "--tokens", "11", "--limit", "5"]));
    assert_eq!(table.lines().count(), 1 + 3, "{table}");
    assert!(
        table.lines().skip(1).all(|l| l.ends_with("clickhouse")),
        "{table}"
    );

    for (args, says) in [
        (
            &["ticks", "--tokens", "11,x"][..],
            "--tokens: 'x' is not an instrument token",
        ),
        (
            &["ticks", "--tokens", "11", "--limit", "0"][..],
            "--limit '0' must be",
        ),
        (
            &["ticks", "--tokens", "11", "--limit", "-4"][..],
            "--limit '-4' must be",
        ),
        (
            &["ticks", "--tokens", "11", "--minutes", "999999999"][..],
            "past the retention",
        ),
        (
            &["ohlc", "--tokens", "11", "--timeframe", "2m"][..],
            "unknown timeframe `2m`",
        ),
        (
            &["ohlc", "--tokens", "11", "--format", "xml"][..],
            "table, json or csv",
        ),
        (
            &["ticks", "--tokens", "999"][..],
            "no data for token(s) 999",
        ),
    ] {
        let output = query(&db, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}
