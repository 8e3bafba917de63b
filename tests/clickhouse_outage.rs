//! A long ClickHouse outage under a real feed (DESIGN §2, "ClickHouse down or slow"):
//! ClickHouse is cut off (every connection refused, through a TCP proxy) for 20 s of a
//! 50,000 ticks/s JetStream feed. Ingestion must go on into the spill journal (acks
//! keep passing what ClickHouse holds), and once ClickHouse is back the spill drains:
//! every published tick stored exactly once. Alone in its binary: it loads both cores.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use common::proxy::Proxy;

#[test]
fn twenty_seconds_without_clickhouse_at_50k_ticks_per_s_are_carried_by_the_spill() {
    const RATE: u64 = 50_000;
    const OUTAGE: Duration = Duration::from_secs(20);
    // 1 s before the cut, the outage, 3 s after it.
    const TICKS: u64 = RATE * 24;
    let (db, mut conn) = tables("outage");
    let nats = Nats::new("outage");
    feed(&db, &nats, &["--count", "1", "--format", "kite"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let settings = [
        "--set",
        &port,
        "--set",
        "ingest.block_rows_max=16384",
        "--set",
        "ingest.flush_interval_ms=100",
        // The writer's own spill path (journal-first: tests/journal_first.rs).
        "--set",
        "spill.mode=overflow",
    ];
    let run = start_run(&db, &nats, &settings);
    let addr = control_addr(&run);
    let feed = feeder(&db, &nats, TICKS - 1, RATE, "kite");
    wait_stored(&mut conn, 20_000, Duration::from_secs(60));
    proxy.down();
    let cut = Instant::now();
    // The server may still be writing what it took before the cut.
    std::thread::sleep(Duration::from_millis(1000));
    let in_clickhouse = stored(&mut conn).0;
    // The durable point (AckAll: the ack floor) goes on past what ClickHouse holds: the
    // spill carries the stream now.
    let mut acked = Vec::new();
    while cut.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_secs(4));
        acked.push(durable_point(&nats, addr));
    }
    assert_eq!(stored(&mut conn).0, in_clickhouse, "ClickHouse was away");
    let last = *acked.last().unwrap();
    assert!(
        last > in_clickhouse + 10 * RATE,
        "at least 10 s of the feed acknowledged while ClickHouse was away: acked {acked:?}, ClickHouse held {in_clickhouse}"
    );
    assert!(
        acked.windows(2).all(|w| w[1] > w[0]),
        "acks kept moving through the outage: {acked:?}"
    );
    proxy.up();
    feeder_done(feed);
    wait_stored(&mut conn, TICKS, Duration::from_secs(180));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    assert!(summary.contains("rows spilled"), "{summary}");
    consumer_settled(&nats, TICKS);
}
