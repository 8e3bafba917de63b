//! `alphapt-storage query ticks|ohlc` against the real servers (ClickHouse 18.16 in CI,
//! Redis on loopback): ticks inserted a few minutes back come out newest first and
//! limited per instrument, bars equal a reference built from the good ticks, every row
//! names the tier that answered, and bad flags get one-line errors. Redis answers the
//! instruments whose history covers the window (and the current bar), ClickHouse the
//! rest with the same rows, and a Redis that is away costs one stderr line, not the
//! query. Each test has its own database and Redis key prefix.

mod common;
mod ohlc_fixture;

use std::collections::BTreeMap;
use std::process::Command;

use alphapt_storage::cache::Keys;
use alphapt_storage::model::quality::FLAG_NONPOSITIVE_PRICE;
use ohlc_fixture::{insert_sql, migrate_all, reference, RawTick};
use serde_json::Value as Json;

/// Runs `query ARGS` on the test's database and Redis key prefix, with `sets` (each a
/// `key=value`) after them.
fn query_with(db: &common::TestDb, sets: &[&str], args: &[&str]) -> std::process::Output {
    let port = std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "9000".into());
    let mut command = Command::new(env!("CARGO_BIN_EXE_alphapt-storage"));
    command
        .args(["--set", &format!("clickhouse.database={}", db.name)])
        .args(["--set", &format!("clickhouse.port={port}")])
        .args(["--set", &format!("redis.url={}", common::redis_url())])
        .args(["--set", &format!("redis.key_prefix={}", db.redis_prefix())]);
    for set in sets {
        command.args(["--set", set]);
    }
    command
        .arg("query")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn query(db: &common::TestDb, args: &[&str]) -> std::process::Output {
    query_with(db, &[], args)
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
    let mut ticks = three_minutes(&[11, 12], start_s);
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

/// A connection to the test Redis.
fn redis_conn() -> redis::Connection {
    redis::Client::open(common::redis_url())
        .unwrap()
        .get_connection_with_timeout(std::time::Duration::from_secs(2))
        .expect("Redis is up (run `bash .ci/services.sh all`)")
}

/// A history member exactly as the appliance's Redis thread writes it (the fixture
/// inserts no volume and no score: both are 0 in ClickHouse too).
fn member(t: &RawTick) -> String {
    format!(
        "{{\"timestamp_ms\":{},\"last_price\":{},\"last_quantity\":{},\"volume_traded\":0,\"data_quality_score\":0,\"validation_flags\":{},\"stream_seq\":{}}}",
        t.ts_ms, t.price, t.quantity, t.flags, t.seq
    )
}

/// Writes the newest `count` of `token`'s ticks into its history, as the appliance does.
fn fill_history(
    r: &mut redis::Connection,
    keys: &Keys,
    ticks: &[RawTick],
    token: u32,
    count: usize,
) {
    let mut mine: Vec<&RawTick> = ticks.iter().filter(|t| t.token == token).collect();
    mine.sort_by_key(|t| (t.ts_ms, t.seq));
    for t in &mine[mine.len().saturating_sub(count)..] {
        let _: i64 = redis::cmd("ZADD")
            .arg(keys.history(token))
            .arg(t.ts_ms)
            .arg(member(t))
            .query(r)
            .unwrap();
    }
}

/// 30 good ticks per token, 6 s apart, over the three minutes from `start_s`.
fn three_minutes(tokens: &[u32], start_s: i64) -> Vec<RawTick> {
    let mut ticks = Vec::new();
    for &token in tokens {
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
    for (i, t) in ticks.iter_mut().enumerate() {
        t.seq = i as u64 + 1;
    }
    ticks
}

/// The `ticks` (or `bars`) array of a JSON answer, and stderr.
fn json_rows(output: &std::process::Output, field: &str) -> (Vec<Json>, String) {
    let json: Json = serde_json::from_str(&stdout_of(output)).unwrap();
    (
        json[field].as_array().unwrap().clone(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Per instrument, the tiers its rows name.
fn tiers(rows: &[Json]) -> BTreeMap<u64, Vec<String>> {
    let mut tiers: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for row in rows {
        let list = tiers
            .entry(row["instrument_token"].as_u64().unwrap())
            .or_default();
        let tier = row["tier"].as_str().unwrap().to_owned();
        if !list.contains(&tier) {
            list.push(tier);
        }
    }
    tiers
}

/// The rows without their tier.
fn untiered(rows: &[Json]) -> Vec<Json> {
    rows.iter()
        .map(|row| {
            let mut row = row.clone();
            row.as_object_mut().unwrap().remove("tier");
            row
        })
        .collect()
}

/// `hits` and `misses` of the query stats hash.
fn stats(r: &mut redis::Connection, keys: &Keys) -> (i64, i64) {
    let fields: BTreeMap<String, i64> = redis::cmd("HGETALL")
        .arg(alphapt_storage::query::stats_key(keys))
        .query(r)
        .unwrap();
    (fields["hits"], fields["misses"])
}

#[test]
fn redis_answers_the_instruments_it_covers_and_clickhouse_gives_the_same_rows() {
    let db = common::TestDb::new("query_redis");
    let mut conn = db.connect(None);
    let legacy = migrate_all(&mut conn);
    let now_ms = alphapt_storage::runtime::clock::now_ms();
    let start_ms = now_ms - now_ms.rem_euclid(1000) - 240_000;
    let mut ticks = Vec::new();
    for token in [21u32, 22, 23] {
        // One tick 20 minutes back: outside the 10-minute window, in the history.
        ticks.push(RawTick {
            token,
            ts_ms: now_ms - 1_200_000,
            price: 50.0,
            quantity: 1,
            seq: 0,
            flags: 0,
        });
        for i in 0..12i64 {
            ticks.push(RawTick {
                token,
                ts_ms: start_ms + i * 10_000 + i64::from(token),
                price: 100.0 + i as f64 * 0.05,
                quantity: 1 + i as u32,
                seq: 0,
                flags: 0,
            });
        }
        // A second tick in the millisecond of the fifth newest, with the higher
        // sequence: `--limit 5` cuts between the two and ClickHouse keeps this one,
        // while its member text ("last_price":100,) sorts below the other's.
        ticks.push(RawTick {
            token,
            ts_ms: start_ms + 7 * 10_000 + i64::from(token),
            price: 100.0,
            quantity: 9,
            seq: 0,
            flags: 0,
        });
    }
    for (i, t) in ticks.iter_mut().enumerate() {
        t.seq = i as u64 + 1;
    }
    conn.execute(&insert_sql(&ticks, legacy)).unwrap();
    // Hash tags on, to follow the key scheme both ways.
    let keys = Keys {
        prefix: db.redis_prefix(),
        hash_tags: true,
    };
    let sets = ["redis.hash_tags=true"];
    let mut r = redis_conn();
    // 21: its whole history; 22: the newest three only (they do not reach back to the
    // window's start); 23: none.
    fill_history(&mut r, &keys, &ticks, 21, usize::MAX);
    fill_history(&mut r, &keys, &ticks, 22, 3);

    let from_ms = (now_ms / 1000 - 600) * 1000;
    let want = |limit: usize| -> Vec<(u64, u64)> {
        let mut want = Vec::new();
        for token in [21u32, 22, 23] {
            let mut mine: Vec<&RawTick> = ticks
                .iter()
                .filter(|t| t.token == token && t.ts_ms >= from_ms)
                .collect();
            mine.sort_by_key(|t| std::cmp::Reverse((t.ts_ms, t.seq)));
            want.extend(mine.iter().take(limit).map(|t| (u64::from(token), t.seq)));
        }
        want
    };
    let keys_of = |rows: &[Json]| -> Vec<(u64, u64)> {
        rows.iter()
            .map(|t| {
                (
                    t["instrument_token"].as_u64().unwrap(),
                    t["stream_seq"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let ticks_json = |sets: &[&str], limit: &str| {
        json_rows(
            &query_with(
                &db,
                sets,
                &[
                    "ticks",
                    "--tokens",
                    "21,22,23",
                    "--minutes",
                    "10",
                    "--limit",
                    limit,
                    "--format",
                    "json",
                ],
            ),
            "ticks",
        )
    };
    let redis_only = vec!["redis".to_owned()];
    let clickhouse_only = vec!["clickhouse".to_owned()];

    // --limit 5: 21 gave five entries (the tie settled by sequence); 22 gave three.
    let (five, stderr) = ticks_json(&sets, "5");
    assert_eq!(keys_of(&five), want(5));
    let by_tier = tiers(&five);
    assert_eq!(by_tier[&21], redis_only, "{five:?}");
    assert_eq!(by_tier[&22], clickhouse_only);
    assert_eq!(by_tier[&23], clickhouse_only);
    assert!(
        stderr.contains("cache: 1 of 3 instruments from Redis (33%)"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // --limit 100: 21 has 13 in the window, fewer than 100, but its history reaches
    // back past the window's start, so it covers the window.
    let (all, _) = ticks_json(&sets, "100");
    assert_eq!(keys_of(&all), want(100));
    assert_eq!(tiers(&all)[&21], redis_only);
    assert_eq!(tiers(&all)[&22], clickhouse_only);
    assert_eq!(
        stats(&mut r, &keys),
        (2, 4),
        "hits and misses add up over runs"
    );

    // Redis emptied: ClickHouse answers every instrument, row for row the same.
    for token in [21, 22] {
        let _: i64 = redis::cmd("DEL")
            .arg(keys.history(token))
            .query(&mut r)
            .unwrap();
    }
    let (five_ch, stderr) = ticks_json(&sets, "5");
    assert!(tiers(&five_ch).values().all(|t| *t == clickhouse_only));
    assert_eq!(untiered(&five_ch), untiered(&five));
    assert!(
        stderr.contains("cache: 0 of 3 instruments from Redis (0%)"),
        "{stderr}"
    );
    let (all_ch, _) = ticks_json(&sets, "100");
    assert_eq!(untiered(&all_ch), untiered(&all));
    assert_eq!(stats(&mut r, &keys), (2, 10));

    // `redis.enabled = false`: Redis is not asked, even when it holds the window.
    fill_history(&mut r, &keys, &ticks, 21, usize::MAX);
    let (off, stderr) = ticks_json(&["redis.hash_tags=true", "redis.enabled=false"], "5");
    assert!(tiers(&off).values().all(|t| *t == clickhouse_only));
    assert_eq!(untiered(&off), untiered(&five));
    assert!(stderr.trim().is_empty(), "{stderr}");
    assert_eq!(stats(&mut r, &keys), (2, 10));
}

#[test]
fn the_current_bar_comes_from_redis_after_the_finished_ones() {
    let db = common::TestDb::new("query_bar");
    let mut conn = db.connect(None);
    let legacy = migrate_all(&mut conn);
    let now_s = alphapt_storage::runtime::clock::now_ms() / 1000;
    let current_s = now_s - now_s.rem_euclid(60);
    let start_s = current_s - 180;
    let ticks = three_minutes(&[31, 32], start_s);
    conn.execute(&insert_sql(&ticks, legacy)).unwrap();
    let keys = Keys {
        prefix: db.redis_prefix(),
        hash_tags: false,
    };
    let mut r = redis_conn();
    // 31: the current minute. 32: a bar ClickHouse already has finished (the appliance
    // has not seen a tick since): never shown twice.
    for (token, bar_s, open) in [(31u32, current_s, 555.5), (32, start_s + 120, 777.5)] {
        let _: i64 = redis::cmd("HSET")
            .arg(keys.ohlc(token, "1m"))
            .arg(&[
                ("instrument_token", token.to_string()),
                ("timeframe", "1m".to_owned()),
                ("start_ms", (bar_s * 1000).to_string()),
                ("end_ms", (bar_s * 1000 + 60_000).to_string()),
                ("open", open.to_string()),
                ("high", "556".to_owned()),
                ("low", "555".to_owned()),
                ("close", "555.75".to_owned()),
                ("volume", "12".to_owned()),
                ("turnover", "6666".to_owned()),
                ("ticks", "3".to_owned()),
            ])
            .query(&mut r)
            .unwrap();
    }
    let output = query(
        &db,
        &[
            "ohlc",
            "--tokens",
            "31,32",
            "--timeframe",
            "1m",
            "--limit",
            "5",
            "--format",
            "json",
        ],
    );
    let (bars, stderr) = json_rows(&output, "bars");
    let got: Vec<(u64, String, String)> = bars
        .iter()
        .map(|b| {
            (
                b["instrument_token"].as_u64().unwrap(),
                b["start"].as_str().unwrap().to_owned(),
                b["tier"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let iso = |s: i64| alphapt_storage::model::json::iso8601_ms(s * 1000);
    let mut want = Vec::new();
    for token in [31u64, 32] {
        for m in 0..3 {
            want.push((token, iso(start_s + 60 * m), "clickhouse".to_owned()));
        }
        if token == 31 {
            want.push((token, iso(current_s), "redis".to_owned()));
        }
    }
    assert_eq!(got, want, "{stderr}");
    let current = &bars[3];
    assert_eq!(current["open"], 555.5);
    assert_eq!(current["close"], 555.75);
    assert_eq!(current["volume"], 12);
    assert_eq!(current["tick_count"], 3);
    assert_eq!(current["vwap"], 555.5);
    assert!(
        stderr.contains("cache: 1 of 2 instruments from Redis (50%)"),
        "{stderr}"
    );
    assert_eq!(stats(&mut r, &keys), (1, 1));
    // The table form ends the instrument with the Redis row.
    let table = stdout_of(&query(&db, &["ohlc", "--tokens", "31", "--limit", "5"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + 4, "{table}");
    assert!(lines[4].ends_with("  redis"), "{table}");
}

#[test]
fn redis_away_costs_one_line_and_clickhouse_answers_everything() {
    let db = common::TestDb::new("query_noredis");
    let mut conn = db.connect(None);
    let legacy = migrate_all(&mut conn);
    let now_s = alphapt_storage::runtime::clock::now_ms() / 1000;
    let ticks = three_minutes(&[41, 42], now_s - now_s.rem_euclid(60) - 180);
    conn.execute(&insert_sql(&ticks, legacy)).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "redis.url=redis://127.0.0.1:{}",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let sets = [url.as_str(), "redis.timeout_ms=300"];
    for (args, field, rows) in [
        (
            &[
                "ticks",
                "--tokens",
                "41,42",
                "--minutes",
                "10",
                "--limit",
                "5",
            ][..],
            "ticks",
            10,
        ),
        (
            &[
                "ohlc",
                "--tokens",
                "41,42",
                "--timeframe",
                "1m",
                "--limit",
                "5",
            ][..],
            "bars",
            6,
        ),
    ] {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let output = query_with(&db, &sets, &args);
        assert!(output.status.success(), "{args:?}");
        let (got, stderr) = json_rows(&output, field);
        assert_eq!(got.len(), rows, "{args:?}");
        assert!(
            got.iter().all(|row| row["tier"] == "clickhouse"),
            "{args:?}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("Redis unreachable ("), "{args:?}: {stderr}");
        assert!(
            stderr.contains("; ClickHouse answered everything"),
            "{args:?}: {stderr}"
        );
    }
}
