//! Exactly-once under the operator's failure paths, each a reproduction that doubled
//! or lost messages before the store decided the resume point:
//!
//! - kill -9 mid-stream, then a start with other config (ack wait, shards, ring size):
//!   the consumer is recreated at the store's position, nothing is stored twice;
//! - messages deleted from the stream, and a purge while the appliance is down: the
//!   gaps are stepped over and logged, delivery goes on, acks reach the end;
//! - the stream deleted and created again while the appliance is down: the old rows'
//!   sequences do not hide the new stream's messages;
//! - SIGTERM while ClickHouse is down and the spill refuses the blocks exits within the
//!   drain timeout, and a restart with ClickHouse back stores everything once;
//! - ClickHouse away mid-feed: the spill carries the stream (acks go on), and drains
//!   into ClickHouse when it is back;
//! - kill -9 with blocks only in the spill: the next start replays them, once;
//! - a spilled record damaged on disk, at rest (kill -9) or while the run waits for
//!   ClickHouse: counted and set aside, the rest replayed, and what it held delivered
//!   again by JetStream after a restart;
//! - a replayed spill record whose mark cannot be synced (an injected EIO): the replay
//!   stops, ingestion goes on, and the restart stores every tick once;
//! - an INSERT cut mid-way and retried stores no block twice;
//! - a schema ClickHouse refuses mid-run: the blocks are held, not retried, and a
//!   restart with the schema fixed stores them once;
//! - a durable name too long for JetStream's ack subjects is refused at start;
//! - SIGTERM just after a nats-server restart, with what was routed before it not yet
//!   durable: the drain pulls those again (passed over) and acks them, so the consumer
//!   is settled at the end and the stop is clean.
//!
//! "ClickHouse down" and "cut mid-INSERT" are a TCP proxy in front of the shared
//! server (tests/common/proxy.rs), so the other tests' server is never touched.
//!
//! Under the default ack policy (AckNone) but for the last, which is AckAll's; `make
//! test` runs them again under AckAll (`TEST_ACK_POLICY=all`).
//!
//! Each test has its own database, streams and durable, removed afterwards.

mod common;

use std::time::{Duration, Instant};

use alphapt_storage::receive::nats::{JetStream, NatsConn};
use common::e2e::*;
use common::proxy::Proxy;

/// Total rows and distinct sequences in `market_ticks` + `rejected_messages`.
fn rows(conn: &mut alphapt_storage::native::Connection, filter: &str) -> (u64, u64) {
    let q = conn
        .query(&format!(
            "SELECT count() AS c, uniqExact(s) AS u FROM \
             (SELECT stream_seq AS s FROM market_ticks WHERE {filter} \
              UNION ALL SELECT stream_seq AS s FROM rejected_messages WHERE {filter})"
        ))
        .unwrap();
    (
        q.column("c")[0].as_u64().unwrap(),
        q.column("u")[0].as_u64().unwrap(),
    )
}

fn js() -> (NatsConn, JetStream) {
    (
        NatsConn::connect(&Nats::url(), Duration::from_secs(2)).unwrap(),
        JetStream::new(Duration::from_secs(2)),
    )
}

#[test]
fn a_config_change_after_an_unclean_stop_stores_nothing_twice() {
    const TICKS: u64 = 60_000;
    let (db, mut conn) = tables("cfg");
    let nats = Nats::new("cfg");
    let published = feed(&db, &nats, &["--count", "60000", "--instruments", "200"]);
    assert!(published.contains("acked 60000 errors 0"), "{published}");
    // Overflow INSERTs block by block, so the kill lands mid-stream (journal-first
    // sends the preloaded backlog in one INSERT); the restarts below switch to
    // journal-first, one more config change after an unclean stop.
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            "ingest.block_rows_max=4096",
            "--set",
            "spill.mode=overflow",
        ],
    );
    // Polled tightly: at full speed the 60,000 go in well under a second, and a
    // coarser poll once let the whole stream in before the kill.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while stored(&mut conn).0 < 8_000 {
        assert!(std::time::Instant::now() < deadline, "8,000 never stored");
        std::thread::sleep(Duration::from_millis(5));
    }
    kill(run);
    let before = stored(&mut conn);
    assert!(
        before.0 < TICKS,
        "the kill must land mid-stream: {before:?}"
    );
    assert_eq!(before.0, before.1, "nothing doubled yet: {before:?}");

    // Every setting that used to recreate the consumer with `deliver_policy: all`.
    let changed = [
        "--set",
        "nats.ack_wait_ms=45000",
        "--set",
        "ingest.shards=2",
        "--set",
        "ingest.ring_slots=8192",
        "--set",
        "ingest.block_rows_max=16384",
    ];
    let run = start_run(&db, &nats, &changed);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    consumer_settled(&nats, TICKS);

    // A clean stop, then yet another config and more messages.
    feed(&db, &nats, &["--count", "5000", "--instruments", "200"]);
    let run = start_run(&db, &nats, &["--set", "nats.ack_wait_ms=7000"]);
    wait_stored(&mut conn, TICKS + 5_000, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(
        stored(&mut conn),
        (TICKS + 5_000, TICKS + 5_000, 1, TICKS + 5_000),
        "{summary}"
    );
    consumer_settled(&nats, TICKS + 5_000);
}

#[test]
fn deleted_messages_and_a_purge_while_down_are_stepped_over() {
    let (db, mut conn) = tables("gap");
    let nats = Nats::new("gap");
    feed(&db, &nats, &["--count", "3000", "--instruments", "50"]);
    let (mut nc, js) = js();
    for seq in [100, 101, 2000] {
        assert!(js.delete_message(&mut nc, &nats.stream, seq).unwrap());
    }
    let run = start_run(&db, &nats, &[]);
    wait_stored(&mut conn, 2_997, Duration::from_secs(60));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (2_997, 2_997, 1, 3_000), "{summary}");
    assert!(
        summary.contains("Gap in the stream"),
        "the gap is logged: {summary}"
    );
    consumer_settled(&nats, 3_000);

    // While the appliance is down: 1,000 more, a purge, then 500 more.
    feed(&db, &nats, &["--count", "1000", "--instruments", "50"]);
    js.purge_stream(&mut nc, &nats.stream).unwrap();
    feed(&db, &nats, &["--count", "500", "--instruments", "50"]);
    let run = start_run(&db, &nats, &[]);
    wait_stored(&mut conn, 3_497, Duration::from_secs(60));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (3_497, 3_497, 1, 4_500), "{summary}");
    assert_eq!(rows(&mut conn, "stream_seq BETWEEN 3001 AND 4000"), (0, 0));
    consumer_settled(&nats, 4_500);
}

#[test]
fn a_stream_recreated_while_down_has_every_new_message_stored() {
    let (db, mut conn) = tables("recreate");
    let nats = Nats::new("recreate");
    feed(&db, &nats, &["--count", "2000", "--instruments", "50"]);
    let run = start_run(&db, &nats, &[]);
    wait_stored(&mut conn, 2_000, Duration::from_secs(60));
    drain(run);

    // The new stream's sequences 1..3000 overlap the stored 1..2000 of the old one.
    let (mut nc, js) = js();
    assert!(js.delete_stream(&mut nc, &nats.stream).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    feed(&db, &nats, &["--count", "3000", "--instruments", "50"]);
    let run = start_run(&db, &nats, &[]);
    wait_stored(&mut conn, 5_000, Duration::from_secs(60));
    let summary = drain(run);
    assert_eq!(rows(&mut conn, "1"), (5_000, 3_000), "{summary}");
    assert_eq!(rows(&mut conn, "stream_seq <= 2000"), (4_000, 2_000));
    consumer_settled(&nats, 3_000);
}

#[test]
fn a_durable_too_long_for_ack_subjects_is_refused_at_start() {
    let db = common::TestDb::new("durable");
    let nats = Nats::new("durable");
    let mut args = sets(&db, &nats);
    args.extend([
        "--set".to_string(),
        format!("nats.durable={}", "d".repeat(200)),
    ]);
    args.extend(["run", "--quiet"].map(String::from));
    let output = binary(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("nats.durable"), "{stderr}");
    assert!(stderr.contains("acknowledged"), "{stderr}");
}

/// CI saw the consumer left 44,000 messages behind the store: a drain right after a
/// reconnect waited for acks that only redeliveries could carry, and pulled none.
/// AckAll's own path (AckNone acknowledges nothing, and its drain pulls nothing more).
#[test]
fn a_drain_right_after_a_nats_restart_acks_what_was_routed_before_it() {
    const TICKS: u64 = 20_000;
    let (db, mut conn) = tables("catchup");
    let mut server = PrivateNats::start();
    let nats = Nats::new("catchup");
    let url = format!("nats.url={}", server.url());
    let publish = |count: &str| {
        let out = feed(
            &db,
            &nats,
            &["--set", &url, "--count", count, "--instruments", "100"],
        );
        assert!(out.contains("errors 0"), "{out}");
    };
    publish("2000");
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    // While ClickHouse is away nothing routed becomes durable, so nothing above the
    // floor is acked.
    let settings = [
        &ACK_ALL[..],
        &[
            "--set",
            &url,
            "--set",
            &port,
            "--set",
            "ingest.drain_timeout_ms=20000",
            "--set",
            "ingest.block_rows_max=2048",
        ],
        &SPILL_HOLDS_NO_BLOCK,
    ]
    .concat();
    let run = start_run(&db, &nats, &settings);
    let addr = control_addr(&run);
    wait_stored(&mut conn, 2_000, Duration::from_secs(60));
    proxy.down();
    publish("18000");
    let metric = |name: &str| {
        let (_, text) = get(addr, "/metrics");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0) as u64
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric("alphapt_storage_ticks_received_total ") < TICKS {
        assert!(Instant::now() < deadline, "not everything was routed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let floor_before = ack_floor_at(&server.url(), &nats);
    assert!(
        floor_before < TICKS,
        "acked {floor_before} with ClickHouse away"
    );
    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    server.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric("alphapt_reconnects_total{server=\"nats\"} ") < 1
        || metric("alphapt_nats_up ") != 1
    {
        assert!(Instant::now() < deadline, "never reconnected");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Signalled at once: the redeliveries of what was routed have not come yet.
    run.terminate();
    std::thread::sleep(Duration::from_millis(300));
    proxy.up();
    let (status, text) = run.exit_within(Duration::from_secs(60), "drain");
    assert!(status.success(), "run exited {status}: {text}");
    assert!(!text.contains("Drain timeout"), "{text}");
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{text}");
    consumer_settled_at(&server.url(), &nats, TICKS);
}

#[test]
fn sigterm_with_clickhouse_down_exits_within_the_drain_timeout_and_loses_nothing() {
    const TICKS: u64 = 20_000;
    const DRAIN_MS: u64 = 3_000;
    let (db, mut conn) = tables("down");
    let nats = Nats::new("down");
    feed(&db, &nats, &["--count", "1", "--instruments", "100"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let drain_ms = format!("ingest.drain_timeout_ms={DRAIN_MS}");
    // A spill too small for one block: it refuses, the writer holds (overflow: a
    // journal-first writer could not journal a block this spill cannot hold, so
    // nothing would be stored before the signal).
    let settings = [
        &[
            "--set",
            &port,
            "--set",
            &drain_ms,
            "--set",
            "ingest.block_rows_max=2048",
        ][..],
        &SPILL_HOLDS_NO_BLOCK,
    ]
    .concat();
    let run = start_run(&db, &nats, &settings);
    let feeder = feeder(&db, &nats, 19999, 5000, "json");
    wait_stored(&mut conn, 2_000, Duration::from_secs(60));
    proxy.down();
    std::thread::sleep(Duration::from_millis(1500));
    let signalled = Instant::now();
    run.terminate();
    let (status, text) = run.exit_within(Duration::from_secs(60), "exit after SIGTERM");
    let took = signalled.elapsed();
    // The budget is the drain timeout plus a second; a loaded 2-core CI gets more.
    assert!(
        took < Duration::from_millis(DRAIN_MS + 2_500),
        "exit took {took:?}: {text}"
    );
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("drain incomplete"), "{text}");
    let mid = stored(&mut conn);
    assert_eq!(mid.0, mid.1, "nothing doubled: {mid:?}");
    assert!(feeder.wait_with_output().unwrap().status.success());

    proxy.up();
    let run = start_run(&db, &nats, &["--set", &port]);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    consumer_settled(&nats, TICKS);
}

#[test]
fn an_insert_cut_mid_way_is_retried_without_doubling_a_block() {
    const TICKS: u64 = 40_000;
    let (db, mut conn) = tables("cut");
    let nats = Nats::new("cut");
    feed(&db, &nats, &["--count", "40000", "--instruments", "100"]);
    let proxy = Proxy::start(clickhouse_port());
    // Past the start-up queries, inside the first multi-block INSERT (blocks of 2,048
    // ticks are ~150-250 KB on the wire, up to 8 in one INSERT).
    proxy.cut_after(600_000);
    let port = format!("clickhouse.port={}", proxy.port);
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            &port,
            "--set",
            "ingest.block_rows_max=2048",
            "--set",
            "ingest.flush_interval_ms=1000",
            "--set",
            "ingest.insert_linger_ms=1000",
            // The writer's INSERT (journal-first's inserter: tests/journal_first.rs).
            "--set",
            "spill.mode=overflow",
        ],
    );
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(proxy.cuts(), 1, "{summary}");
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    eprintln!(
        "cut INSERT: {}",
        if summary.contains("already stored") {
            "part of it was stored and not sent again"
        } else {
            "nothing of it was stored"
        }
    );
}

#[test]
fn blocks_clickhouse_refuses_are_held_not_retried_and_stored_after_a_fixed_restart() {
    let (db, mut conn) = tables("refused");
    let nats = Nats::new("refused");
    feed(&db, &nats, &["--count", "5000", "--instruments", "50"]);
    let drain_ms = "ingest.drain_timeout_ms=3000";
    // The writer's hold (journal-first's inserter: tests/journal_first.rs).
    let overflow = ["--set", "spill.mode=overflow"];
    let run = start_run(&db, &nats, &["--set", drain_ms, overflow[0], overflow[1]]);
    wait_stored(&mut conn, 5_000, Duration::from_secs(60));
    // A schema change the running writers cannot follow: a permanent error.
    conn.execute("ALTER TABLE market_ticks DROP COLUMN oi")
        .unwrap();
    feed(&db, &nats, &["--count", "3000", "--instruments", "50"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        stored(&mut conn).0,
        5_000,
        "nothing stored past the refusal"
    );
    run.terminate();
    let (status, text) = run.exit_within(Duration::from_secs(60), "exit after SIGTERM");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("ClickHouse refused the blocks"), "{text}");
    assert_eq!(
        text.matches("ClickHouse refused the blocks").count(),
        1,
        "a permanent error is not retried: {text}"
    );
    assert!(text.contains("drain incomplete"), "{text}");

    conn.execute("ALTER TABLE market_ticks ADD COLUMN oi UInt64 AFTER close")
        .unwrap();
    let run = start_run(&db, &nats, &[]);
    wait_stored(&mut conn, 8_000, Duration::from_secs(60));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (8_000, 8_000, 1, 8_000), "{summary}");
    consumer_settled(&nats, 8_000);
}

#[test]
fn clickhouse_away_mid_feed_the_spill_carries_the_stream_and_drains_after() {
    const TICKS: u64 = 60_000;
    let (db, mut conn) = tables("away");
    let nats = Nats::new("away");
    feed(&db, &nats, &["--count", "1", "--instruments", "100"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            &port,
            "--set",
            "ingest.block_rows_max=4096",
            // The writer's overflow into the spill (journal-first: tests/journal_first.rs).
            "--set",
            "spill.mode=overflow",
        ],
    );
    let feeder = feeder(&db, &nats, 59999, 20000, "json");
    wait_stored(&mut conn, 5_000, Duration::from_secs(60));
    proxy.down();
    // The server may still be writing what it received before the cut.
    std::thread::sleep(Duration::from_millis(1000));
    let in_clickhouse = stored(&mut conn).0;
    // Ingestion goes on into the spill: acks pass what ClickHouse holds.
    wait_durable(&nats, &run, in_clickhouse + 10_000, Duration::from_secs(60));
    assert_eq!(stored(&mut conn).0, in_clickhouse, "ClickHouse is away");
    assert!(feeder.wait_with_output().unwrap().status.success());
    proxy.up();
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    assert!(summary.contains("rows spilled"), "{summary}");
    consumer_settled(&nats, TICKS);
}

#[test]
fn blocks_only_in_the_spill_survive_kill_9_and_are_replayed_once_at_start() {
    const TICKS: u64 = 20_000;
    let (db, mut conn) = tables("replay");
    let nats = Nats::new("replay");
    feed(&db, &nats, &["--count", "1", "--instruments", "100"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let run = start_run(
        &db,
        &nats,
        &["--set", &port, "--set", "ingest.block_rows_max=2048"],
    );
    // Published while the run goes, so that ClickHouse leaves before it has them all.
    let feed = feeder(&db, &nats, TICKS - 1, 10_000, "kite");
    wait_stored(&mut conn, 2_000, Duration::from_secs(60));
    proxy.down();
    feeder_done(feed);
    // Every block from here on goes to the spill and is acked.
    wait_durable(&nats, &run, TICKS, Duration::from_secs(60));
    let in_clickhouse = stored(&mut conn).0;
    assert!(in_clickhouse < TICKS, "the rest is only in the spill");
    kill(run);
    proxy.up();
    let run = start_run(
        &db,
        &nats,
        &["--set", &port, "--set", "ingest.block_rows_max=2048"],
    );
    wait_stored(&mut conn, TICKS, Duration::from_secs(60));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    consumer_settled(&nats, TICKS);
}

/// Flips one payload byte of a pending record in the middle of a journal and leaves a
/// torn record after the last one; returns the damaged record's sequence range.
fn damage_spill(root: &std::path::Path) -> (u64, u64) {
    use alphapt_storage::spill::Journal;
    use std::io::{Seek, SeekFrom, Write};
    let (victim, dir) = flip_pending_record(root, 3);
    // A record cut short after the newest one: its magic and a few header bytes.
    let scan = Journal::scan_read_only(&dir).unwrap();
    let last = scan.segments.last().unwrap();
    let mut tail = std::fs::OpenOptions::new()
        .write(true)
        .open(&last.file)
        .unwrap();
    tail.seek(SeekFrom::Start(last.bytes_written)).unwrap();
    tail.write_all(b"APSR\x01\x00\x01\x00\x00\x00\x00\x00\x10\x00")
        .unwrap();
    tail.sync_all().unwrap();
    (victim.header.seq_first, victim.header.seq_last)
}

#[test]
fn a_damaged_spill_is_counted_its_intact_records_replayed_and_the_damaged_refetched() {
    const TICKS: u64 = 20_000;
    let (db, mut conn) = tables("damage");
    let nats = Nats::new("damage");
    feed(&db, &nats, &["--count", "1", "--instruments", "100"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let settings = ["--set", &port, "--set", "ingest.block_rows_max=1024"];
    let run = start_run(&db, &nats, &settings);
    let feed = feeder(&db, &nats, TICKS - 1, 10_000, "kite");
    wait_stored(&mut conn, 2_000, Duration::from_secs(60));
    proxy.down();
    feeder_done(feed);
    // Everything acknowledged; what ClickHouse lacks is only in the spill.
    wait_durable(&nats, &run, TICKS, Duration::from_secs(60));
    kill(run);
    let (first, last) = damage_spill(&db.spill_dir());
    proxy.up();
    let run = start_run(&db, &nats, &settings);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(
        stored(&mut conn),
        (TICKS, TICKS, 1, TICKS),
        "the damaged record held {first}..={last}\n{summary}"
    );
    assert!(summary.contains("corrupt record"), "{summary}");
    assert!(summary.contains("torn"), "{summary}");
    assert!(summary.contains("reading the whole store"), "{summary}");
    consumer_settled(&nats, TICKS);
}

/// What [`spilled_through_an_outage`] leaves for the test to go on with.
struct Outage {
    db: common::TestDb,
    conn: alphapt_storage::native::Connection,
    nats: Nats,
    proxy: Proxy,
    settings: Vec<String>,
    run: Running,
}

/// An overflow-spill run (1,024-row blocks) with `env`: one tick stored, then ClickHouse
/// cut off (a proxy) and 19,999 more published; returns once all 20,000 are durable,
/// all but the first only in the spill.
fn spilled_through_an_outage(tag: &str, env: &[(&str, &str)]) -> Outage {
    let (db, mut conn) = tables(tag);
    let nats = Nats::new(tag);
    feed(&db, &nats, &["--count", "1", "--instruments", "100"]);
    let proxy = Proxy::start(clickhouse_port());
    let settings: Vec<String> = [
        "--set".into(),
        format!("clickhouse.port={}", proxy.port),
        "--set".into(),
        "ingest.block_rows_max=1024".into(),
        "--set".into(),
        "spill.mode=overflow".into(),
    ]
    .into();
    let run = start_run_env(&db, &nats, &strs(&settings), env);
    wait_stored(&mut conn, 1, Duration::from_secs(60));
    proxy.down();
    feed(&db, &nats, &["--count", "19999", "--format", "kite"]);
    wait_durable(&nats, &run, 20_000, Duration::from_secs(60));
    Outage {
        db,
        conn,
        nats,
        proxy,
        settings,
        run,
    }
}

#[test]
fn a_spilled_record_damaged_while_clickhouse_is_away_is_set_aside_then_refetched_after_a_restart() {
    // The spill carries the stream through an outage; one of its records is damaged on
    // disk meanwhile. Once ClickHouse is back the writer's replay stores the rest, sets
    // the damaged one aside with an error naming it, and the drain does not wait on it.
    // The restart reads the whole store and JetStream delivers what it held again.
    const TICKS: u64 = 20_000;
    let Outage {
        db,
        mut conn,
        nats,
        proxy,
        settings,
        run,
    } = spilled_through_an_outage("damagelive", &[]);
    let (victim, _) = flip_pending_record(&db.spill_dir(), 3);
    let rows = u64::from(victim.header.rows);
    proxy.up();
    wait_stored(&mut conn, TICKS - rows, Duration::from_secs(60));
    drain_with_one_set_aside(&mut conn, run, TICKS, rows);
    let run = start_run(&db, &nats, &strs(&settings));
    let summary = drain_stored_once(&mut conn, run, &nats, TICKS);
    assert!(summary.contains("reading the whole store"), "{summary}");
}

#[test]
fn a_replayed_record_whose_mark_cannot_be_synced_stops_the_replay_and_the_restart_stores_it_once() {
    // The overflow spill carries an outage; once ClickHouse is back the writer replays
    // the first record and its mark's sync fails (an injected EIO). The replay stops
    // there, said once, instead of asking ClickHouse about that record again and again;
    // ingestion goes on, the rest stays in the spill, and the restart's replay finds the
    // first record stored and the others not: every tick once.
    const TICKS: u64 = 20_000;
    let Outage {
        db,
        mut conn,
        nats,
        proxy,
        settings,
        run,
    } = spilled_through_an_outage("marksync", &[("ALPHAPT_CRASH_AT", "marks_sync_error:1")]);
    proxy.up();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.output().contains("replay stops") {
        assert!(
            Instant::now() < deadline,
            "no replay stop: {}",
            run.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few passes more: none may replay.
    std::thread::sleep(Duration::from_secs(1));
    let (count, distinct, _, _) = stored(&mut conn);
    assert_eq!(count, distinct, "nothing doubled");
    assert!(
        1 < count && count < TICKS,
        "one record replayed, the rest waits in the spill: {count}"
    );
    let summary = drain(run);
    assert_eq!(summary.matches("replay stops").count(), 1, "{summary}");
    assert!(summary.contains("Input/output error"), "{summary}");
    assert!(
        summary.contains("bytes in the spill for the next start"),
        "the rest kept for the next start: {summary}"
    );
    let run = start_run(&db, &nats, &strs(&settings));
    drain_stored_once(&mut conn, run, &nats, TICKS);
}

#[test]
fn a_second_appliance_on_the_same_durable_is_refused_and_the_first_goes_on() {
    const TICKS: u64 = 30_000;
    let (db, mut conn) = tables("twice");
    let nats = Nats::new("twice");
    feed(&db, &nats, &["--count", "1", "--instruments", "100"]);
    let first = start_run(&db, &nats, &[]);
    wait_stored(&mut conn, 1, Duration::from_secs(60));
    // Another host's appliance: its own spill directory, the same durable.
    let other_spill = std::env::temp_dir().join(format!("alphapt-spill-other-{}", db.name));
    let spill = format!("spill.dir={}", other_spill.display());
    let second = start_run(&db, &nats, &["--set", &spill]);
    let (status, text) =
        second.exit_within(Duration::from_secs(30), "refuse to start beside the first");
    let _ = std::fs::remove_dir_all(&other_spill);
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("another client is pulling from durable"),
        "{text}"
    );
    // The first never noticed.
    let feed = feeder(&db, &nats, TICKS - 1, 20_000, "kite");
    feeder_done(feed);
    wait_stored(&mut conn, TICKS, Duration::from_secs(60));
    let summary = drain(first);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    consumer_settled(&nats, TICKS);
}
