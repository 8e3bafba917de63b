//! Crashes that try to double or lose a message, on the real servers:
//!
//! - `kill -9` at five random moments while a 1,000,000-tick feed is published, each
//!   followed by a restart: in the end every published sequence is stored once;
//! - deterministic crash points (`ALPHAPT_CRASH_AT`, src/runtime/crash.rs): after an
//!   INSERT commits and before its ack, in the middle of an INSERT, after a spill sync
//!   and before its ack; the restart stores what was missing and nothing twice.
//!
//! Under the default ack policy (AckNone); `make test` runs them again under AckAll
//! (`TEST_ACK_POLICY=all`).
//!
//! "Stored once" is checked as a set: count = distinct = highest = published, lowest 1,
//! over `market_ticks` and `rejected_messages`.
//!
//! The random moments come from a seed printed by the test; `CRASH_SEED=<n>` repeats a
//! run's moments.

mod common;

use std::time::{Duration, Instant};

use alphapt_storage::model::synthetic::SplitMix64;
use common::e2e::*;
use common::proxy::Proxy;

/// No sequence stored twice so far (a crash may have left some unstored).
fn assert_no_doubles(conn: &mut alphapt_storage::native::Connection, when: &str) {
    let (count, distinct, _, _) = stored(conn);
    if count != distinct {
        panic!(
            "{when}: a sequence is stored twice ({count} rows, {distinct} distinct): {}",
            doubled(conn)
        );
    }
}

/// Which sequences are doubled, and when each copy of the lowest one was received:
/// copies seconds apart came from two runs (a replay or a redelivery), copies together
/// from one INSERT sent twice.
fn doubled(conn: &mut alphapt_storage::native::Connection) -> String {
    let q = conn
        .query(
            "SELECT toUInt64(min(s)) AS lo, toUInt64(max(s)) AS hi, toUInt64(count()) AS n FROM \
             (SELECT stream_seq AS s, count() AS c FROM market_ticks GROUP BY s HAVING c > 1)",
        )
        .unwrap();
    let get = |name: &str| q.column(name)[0].as_u64().unwrap();
    let (lo, hi, n) = (get("lo"), get("hi"), get("n"));
    let copies = conn
        .query(&format!(
            "SELECT concat(toString(received_at), '.', toString(received_at_ms)) AS at \
             FROM market_ticks WHERE stream_seq = {lo}"
        ))
        .map(|q| format!("{:?}", q.column("at")))
        .unwrap_or_else(|e| e.to_string());
    format!("{n} sequences doubled in {lo}..={hi}; copies of {lo}: {copies}")
}

#[test]
fn kill_9_at_five_random_moments_of_a_million_tick_feed_stores_each_tick_once() {
    const TICKS: u64 = 1_000_000;
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    // Printed so that a failure can be repeated (cargo shows it for a failed test).
    println!("kill moments from CRASH_SEED={seed}");
    let mut rng = SplitMix64::new(seed);
    let (db, mut conn) = tables("kill9");
    let nats = Nats::new("kill9");
    // The stream exists before the appliance looks for it.
    feed(&db, &nats, &["--count", "1", "--format", "kite"]);
    let feed = feeder(&db, &nats, TICKS - 1, 100_000, "kite");
    let settings = ["--set", "ingest.block_rows_max=8192"];
    let mut kills = Vec::new();
    for round in 0..5 {
        let run = start_run(&db, &nats, &settings);
        // 0.3 to 2.5 s of uptime: start, resume, routing, INSERTs and acks all get hit.
        let uptime = Duration::from_millis(300 + rng.below(2_200));
        std::thread::sleep(uptime);
        let said = kill(run);
        let (count, ..) = stored(&mut conn);
        kills.push((uptime, count));
        let tail: Vec<&str> = said.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        assert_no_doubles(
            &mut conn,
            &format!(
                "after kill {round} (kills so far: {kills:?}; the killed run's last lines:\n{})",
                tail.join("\n")
            ),
        );
    }
    feeder_done(feed);
    let run = start_run(&db, &nats, &settings);
    wait_stored(&mut conn, TICKS, Duration::from_secs(300));
    let summary = drain(run);
    assert_eq!(
        stored(&mut conn),
        (TICKS, TICKS, 1, TICKS),
        "kills (uptime, rows stored then): {kills:?}\n{summary}"
    );
    consumer_settled(&nats, TICKS);
    assert!(
        kills.iter().any(|&(_, count)| count > 0 && count < TICKS),
        "at least one kill must land mid-stream: {kills:?}"
    );
}

/// Crash at `point`, then restart plainly: every tick stored once.
fn crash_then_restart(tag: &str, point: &str) {
    const TICKS: u64 = 40_000;
    let (db, mut conn) = tables(tag);
    let nats = Nats::new(tag);
    feed(
        &db,
        &nats,
        &[
            "--count",
            "40000",
            "--instruments",
            "200",
            "--format",
            "kite",
        ],
    );
    // The feed is preloaded, so a slow machine builds a backlog and each INSERT takes
    // the most blocks it may (BLOCKS_PER_INSERT_MAX = 8). With 1,024-row blocks even
    // three full INSERTs hold 24,576 rows: the third pass of any point lands mid-stream.
    // The writer's INSERT and spill paths (journal-first: tests/journal_first.rs).
    let small = [
        "--set",
        "ingest.block_rows_max=1024",
        "--set",
        "spill.mode=overflow",
    ];
    let run = start_run_env(&db, &nats, &small, &[("ALPHAPT_CRASH_AT", point)]);
    let text = run_until_crash(run);
    // The server may still be writing what it took before the kill.
    std::thread::sleep(Duration::from_millis(500));
    let after_crash = stored(&mut conn);
    assert!(
        after_crash.0 < TICKS,
        "the crash landed mid-stream: {after_crash:?}"
    );
    assert_no_doubles(&mut conn, "after the crash");
    if point.starts_with("insert_committed") && consumer_ack_policy(&nats) == "all" {
        // The window the point exists for: rows stored, not acknowledged (AckNone: not
        // yet in the local mark, which is written at most once a second).
        assert!(
            after_crash.3 > ack_floor(&nats),
            "rows past the ack floor are stored: {after_crash:?}, floor {}\n{text}",
            ack_floor(&nats)
        );
    }
    let run = start_run(&db, &nats, &small);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    consumer_settled(&nats, TICKS);
}

#[test]
fn a_crash_after_an_insert_commits_and_before_its_ack_stores_nothing_twice() {
    crash_then_restart("ccommit", "insert_committed:3");
}

#[test]
fn a_crash_in_the_middle_of_an_insert_stores_nothing_twice() {
    crash_then_restart("cmid", "mid_insert:3");
}

#[test]
fn a_crash_after_a_spill_sync_and_before_its_ack_stores_nothing_twice() {
    const TICKS: u64 = 30_000;
    let (db, mut conn) = tables("cspill");
    let nats = Nats::new("cspill");
    feed(&db, &nats, &["--count", "1", "--format", "kite"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let settings = [
        "--set",
        &port,
        "--set",
        "ingest.block_rows_max=2048",
        "--set",
        "spill.mode=overflow",
    ];
    let run = start_run_env(
        &db,
        &nats,
        &settings,
        &[("ALPHAPT_CRASH_AT", "spill_synced:2")],
    );
    let feed = feeder(&db, &nats, TICKS - 1, 20_000, "kite");
    wait_stored(&mut conn, 3_000, Duration::from_secs(60));
    proxy.down();
    let started = Instant::now();
    let text = run_until_crash(run);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the spill took batches: {text}"
    );
    proxy.up();
    feeder_done(feed);
    assert_no_doubles(&mut conn, "after the crash");
    // The synced record is replayed at start; the resume point skips what it held.
    let run = start_run(&db, &nats, &settings);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    consumer_settled(&nats, TICKS);
}

#[test]
fn a_bad_crash_point_is_refused_with_what_to_do() {
    let (db, _conn) = tables("cbad");
    let nats = Nats::new("cbad");
    feed(&db, &nats, &["--count", "1", "--format", "kite"]);
    let run = start_run_env(&db, &nats, &[], &[("ALPHAPT_CRASH_AT", "after_lunch:1")]);
    let (status, text) = run.exit_within(Duration::from_secs(30), "refuse the crash point");
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(
        text.contains("unknown point \"after_lunch\"") && text.contains("insert_committed"),
        "{text}"
    );
}
