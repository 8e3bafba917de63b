//! A full spill with ClickHouse down, in both spill modes: the writer holds its batch,
//! the shard and then the receiver stop (intake stops, acks stop where the spill
//! ended), JetStream keeps the rest; once ClickHouse is back the held batch, the
//! spilled records and the rest of the stream are all stored, each message once.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use common::proxy::Proxy;

#[test]
fn a_full_spill_stops_intake_and_nothing_is_lost_when_clickhouse_returns() {
    full_spill("spillfull", "overflow", "rows spilled");
}

/// Journal-first: a journal that fills part-way through a batch must not take the
/// batch's first blocks twice when the writer tries again (the inserter would send
/// both copies: this stored 131,072 rows for 40,000 ticks before the fix).
#[test]
fn a_full_journal_first_journal_stops_intake_and_stores_each_tick_once() {
    full_spill("jfull", "always", "journal-first: 40000 rows journaled");
}

fn full_spill(tag: &str, mode: &str, summary_says: &str) {
    const TICKS: u64 = 40_000;
    let (db, mut conn) = tables(tag);
    let nats = Nats::new(tag);
    let mode = format!("spill.mode={mode}");
    feed(&db, &nats, &["--count", "1", "--instruments", "100"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    // Two 1 MiB segments for the ticks writer (the least a journal gets): a handful of
    // 2,048-tick blocks.
    let settings = [
        "--set",
        &port,
        "--set",
        "ingest.block_rows_max=2048",
        "--set",
        "spill.segment_bytes=1048576",
        "--set",
        "spill.spill_bytes_max=2097152",
        "--set",
        &mode,
    ];
    let run = start_run(&db, &nats, &settings);
    let feed = feeder(&db, &nats, TICKS - 1, 20_000, "kite");
    wait_stored(&mut conn, 2_000, Duration::from_secs(60));
    proxy.down();
    feeder_done(feed);
    // Intake stops once the spill is full: the ack floor settles below the end.
    let mut floor = ack_floor(&nats);
    let mut still_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while still_since.elapsed() < Duration::from_secs(3) {
        assert!(Instant::now() < deadline, "acks never settled (at {floor})");
        std::thread::sleep(Duration::from_millis(200));
        let now = ack_floor(&nats);
        if now != floor {
            floor = now;
            still_since = Instant::now();
        }
    }
    // The spill took blocks (two segments a journal: at least one segment's worth),
    // then filled and refused. Acks go on while the receiver holds a delivery for
    // ring room, so the floor shows what the spill took.
    let in_clickhouse = stored(&mut conn).0;
    let said = run.output();
    assert!(
        floor < TICKS && floor > in_clickhouse,
        "the spill took some ({in_clickhouse} in ClickHouse, acked {floor}) and then refused: {said}"
    );
    assert!(said.contains("Spill refuses blocks"), "{said}");
    proxy.up();
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    assert!(summary.contains(summary_says), "{summary}");
    consumer_settled(&nats, TICKS);
}
