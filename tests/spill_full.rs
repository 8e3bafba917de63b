//! A full spill with ClickHouse down, in both spill modes: the writer holds its batch,
//! the shard and then the receiver stop (intake stops once the pull window above the
//! durable point is full; the durable point, under AckAll the ack floor, stops where
//! the spill ended), JetStream keeps the rest; once ClickHouse is back the held batch,
//! the spilled records and the rest of the stream are all stored, each message once.
//! Under the default ack policy (AckNone); `make test` runs them again under AckAll.

mod common;

use std::time::Duration;

use common::e2e::*;
use common::proxy::Proxy;
use common::{wait_settled, wait_until};

#[test]
fn a_full_spill_stops_intake_and_nothing_is_lost_when_clickhouse_returns() {
    // Two 1 MiB segments for the ticks writer (the least a journal gets): a handful of
    // 2,048-tick blocks.
    full_spill(&Full {
        tag: "spillfull",
        mode: "overflow",
        summary_says: "rows spilled",
        ticks: 40_000,
        rate: 20_000,
        segment_bytes: 1 << 20,
    });
}

/// Journal-first: a journal that fills part-way through a batch must not take the
/// batch's first blocks twice when the writer tries again (the inserter would send
/// both copies: this stored 131,072 rows for 40,000 ticks before the fix).
#[test]
fn a_full_journal_first_journal_stops_intake_and_stores_each_tick_once() {
    // Journal-first needs a segment that holds the largest block any table can seal
    // (a reject block: ~4.6 MB), so two 6 MiB segments: ~50 Kite blocks.
    full_spill(&Full {
        tag: "jfull",
        mode: "always",
        summary_says: "journal-first: 200000 rows journaled",
        ticks: 200_000,
        rate: 50_000,
        segment_bytes: 6 << 20,
    });
}

struct Full {
    tag: &'static str,
    mode: &'static str,
    summary_says: &'static str,
    ticks: u64,
    rate: u64,
    /// The spill holds two segments a journal: `spill_bytes_max` is twice this.
    segment_bytes: u64,
}

fn full_spill(full: &Full) {
    let (tag, ticks) = (full.tag, full.ticks);
    let (db, mut conn) = tables(tag);
    let nats = Nats::new(tag);
    let mode = format!("spill.mode={}", full.mode);
    feed(&db, &nats, &["--count", "1", "--instruments", "100"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let segment = format!("spill.segment_bytes={}", full.segment_bytes);
    let most = format!("spill.spill_bytes_max={}", 2 * full.segment_bytes);
    let settings = [
        "--set",
        &port,
        "--set",
        "ingest.block_rows_max=2048",
        "--set",
        &segment,
        "--set",
        &most,
        "--set",
        &mode,
    ];
    let run = start_run(&db, &nats, &settings);
    let addr = control_addr(&run);
    let feed = feeder(&db, &nats, ticks - 1, full.rate, "kite");
    wait_stored(&mut conn, 2_000, Duration::from_secs(60));
    proxy.down();
    feeder_done(feed);
    // Intake stops once the spill is full: the durable point (AckAll: the ack floor)
    // settles below the end.
    let floor = wait_settled(
        "the durable point",
        Duration::from_secs(3),
        Duration::from_secs(60),
        || durable_point(&nats, addr),
    );
    // The spill took blocks (two segments a journal: at least one segment's worth),
    // then filled and refused. Acks go on while the receiver holds a delivery for
    // ring room, so the floor shows what the spill took.
    let in_clickhouse = stored(&mut conn).0;
    let said = run.output();
    assert!(
        floor < ticks && floor > in_clickhouse,
        "the spill took some ({in_clickhouse} in ClickHouse, acked {floor}) and then refused: {said}"
    );
    assert!(said.contains("Spill refuses blocks"), "{said}");
    // Nothing can be stored now: the control endpoint says down, and why.
    let health: serde_json::Value = serde_json::from_str(&get(addr, "/health").1).unwrap();
    assert_eq!(health["overall_status"], "down", "{health}");
    assert_eq!(health["components"]["spill"]["healthy"], false, "{health}");
    assert_eq!(
        health["components"]["clickhouse"]["healthy"], false,
        "{health}"
    );
    proxy.up();
    wait_stored(&mut conn, ticks, Duration::from_secs(120));
    wait_until("health to recover", Duration::from_secs(30), || {
        let health: serde_json::Value = serde_json::from_str(&get(addr, "/health").1).unwrap();
        health["overall_status"] != "down"
    });
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (ticks, ticks, 1, ticks), "{summary}");
    assert!(summary.contains(full.summary_says), "{summary}");
    consumer_settled(&nats, ticks);
}
