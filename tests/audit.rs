//! The ingest audit on the real servers: after a feed through JetStream, the
//! `ingest_audit` rows of each table add up to what ClickHouse holds (journal-first:
//! once as `spill` when journaled, once as `clickhouse` when inserted; overflow mode:
//! `clickhouse` only), their sequence ranges cover every stored message once; and with
//! PostgreSQL unreachable the run stores everything all the same and says so.

mod common;

use std::time::Duration;

use common::e2e::*;
use common::pg::PgDb;

const TICKS: u64 = 20_000;

fn count(conn: &mut alphapt_storage::native::Connection, sql: &str) -> i64 {
    conn.query(sql).unwrap().scalar().unwrap().as_i64().unwrap()
}

/// Feeds `TICKS` (1% bad), runs the appliance with `extra` until all are stored, drains.
fn feed_and_run(
    tag: &str,
    extra: &[&str],
) -> (common::TestDb, alphapt_storage::native::Connection, String) {
    let (db, mut conn) = tables(tag);
    let nats = Nats::new(tag);
    feed_all(&db, &nats, TICKS, "0.01", "50");
    let run = start_run(&db, &nats, extra);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    (db, conn, summary)
}

fn audited(pg: &PgDb, table: &str, destination: &str) -> (i64, i64) {
    let row = pg
        .client()
        .query_one(
            "SELECT coalesce(sum(rows), 0)::bigint, coalesce(sum(stream_seq_last - stream_seq_first + 1), 0)::bigint \
             FROM ingest_audit WHERE table_name = $1 AND destination = $2",
            &[&table, &destination],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn audit_rows_add_up_to_clickhouse_per_table_in_both_spill_modes() {
    for (tag, mode, destinations) in [
        ("audit_jf", "always", &["clickhouse", "spill"][..]),
        ("audit_of", "overflow", &["clickhouse"][..]),
    ] {
        let pg = PgDb::new();
        let url = format!("postgres.url={}", pg.url());
        let mode = format!("spill.mode={mode}");
        let (_db, mut conn, summary) = feed_and_run(tag, &["--set", &url, "--set", &mode]);
        // The summary counts what the audit wrote, after its last batch.
        let rows: i64 = pg
            .client()
            .query_one("SELECT count(*) FROM ingest_audit", &[])
            .unwrap()
            .get(0);
        assert!(
            summary.contains(&format!("audit: {rows} rows written to PostgreSQL")),
            "{rows} rows: {summary}"
        );
        for table in ["market_ticks", "rejected_messages"] {
            let rows = count(&mut conn, &format!("SELECT count() FROM {table}"));
            assert!(rows > 0, "{table} is empty");
            for destination in destinations {
                let (audited_rows, seqs) = audited(&pg, table, destination);
                assert_eq!(audited_rows, rows, "{mode}: {table} {destination}");
                // JSON ticks are one row per message: the ranges cover each once.
                assert!(seqs >= rows, "{mode}: {table} {destination} ranges {seqs}");
            }
        }
        let spilled = audited(&pg, "market_ticks", "spill").0;
        if mode.ends_with("overflow") {
            assert_eq!(spilled, 0, "nothing spilled with ClickHouse up");
        }
    }
}

#[test]
fn postgres_unreachable_stores_every_tick_and_says_the_audit_is_not_written() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres.url=postgres://postgres@127.0.0.1:{port}/postgres");
    let (_db, _conn, summary) = feed_and_run("audit_down", &["--set", &url]);
    assert!(summary.contains("Audit rows not written"), "{summary}");
    assert!(
        summary.contains("audit: 0 rows written to PostgreSQL, ")
            && summary.contains("records dropped")
            && summary.contains("failed writes"),
        "{summary}"
    );
}

#[test]
fn spilled_and_replayed_blocks_are_audited_once_each() {
    spill_then_replay("audit_replay", false);
}

#[test]
fn blocks_replayed_by_the_next_start_are_audited() {
    spill_then_replay("audit_restart", true);
}

/// Overflow mode, ClickHouse cut while ticks arrive: the blocks go to the spill
/// (`spill`) and come back (`replay`) when it returns, or, with `kill`, when the
/// next start replays the journal the killed run left; per table the `clickhouse`
/// and `replay` rows add up to what ClickHouse holds.
fn spill_then_replay(tag: &str, kill: bool) {
    use common::proxy::Proxy;
    use std::time::Instant;
    let (db, mut conn) = tables(tag);
    let nats = Nats::new(tag);
    feed(&db, &nats, &["--count", "1", "--instruments", "5"]);
    let pg = PgDb::new();
    let url = format!("postgres.url={}", pg.url());
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let settings = [
        "--set",
        &url,
        "--set",
        &port,
        "--set",
        "spill.mode=overflow",
        "--set",
        "ingest.flush_interval_ms=50",
    ];
    let mut run = start_run(&db, &nats, &settings);
    wait_stored(&mut conn, 1, Duration::from_secs(60));
    proxy.down();
    let published = feed(&db, &nats, &["--count", "5000", "--instruments", "20"]);
    assert!(published.contains("acked 5000 errors 0"), "{published}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while audited(&pg, "market_ticks", "spill").0 < 5000 {
        assert!(Instant::now() < deadline, "the spill never took the feed");
        std::thread::sleep(Duration::from_millis(200));
    }
    if kill {
        common::e2e::kill(run);
        proxy.up();
        run = start_run(&db, &nats, &settings);
    } else {
        proxy.up();
    }
    wait_stored(&mut conn, 5001, Duration::from_secs(120));
    drain(run);
    let rows = count(&mut conn, "SELECT count() FROM market_ticks");
    assert_eq!(rows, 5001);
    let (inserted, _) = audited(&pg, "market_ticks", "clickhouse");
    let (replayed, _) = audited(&pg, "market_ticks", "replay");
    let (spilled, _) = audited(&pg, "market_ticks", "spill");
    assert!(replayed >= 5000, "replayed {replayed}");
    assert_eq!(spilled, replayed, "each spilled block replayed once");
    assert_eq!(inserted + replayed, rows);
}

#[test]
fn rows_postgres_refuses_are_dropped_and_the_audit_goes_on() {
    // A constraint refuses every row for a while (a data error, SQLSTATE 23): those
    // batches are dropped with an error line instead of blocking the audit, and the
    // rows after the constraint is gone are written.
    let (db, mut conn) = tables("audit_refused");
    let nats = Nats::new("audit_refused");
    let pg = PgDb::new();
    pg.execute("ALTER TABLE ingest_audit ADD CONSTRAINT refuse_all CHECK (rows < 0)");
    let url = format!("postgres.url={}", pg.url());
    let run = start_run(&db, &nats, &["--set", &url]);
    let published = feed(&db, &nats, &["--count", "2000", "--instruments", "10"]);
    assert!(published.contains("acked 2000 errors 0"), "{published}");
    wait_stored(&mut conn, 2000, Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !run.output().contains("Audit rows refused by PostgreSQL") {
        assert!(std::time::Instant::now() < deadline, "{}", run.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.execute("ALTER TABLE ingest_audit DROP CONSTRAINT refuse_all");
    let published = feed(&db, &nats, &["--count", "2000", "--instruments", "10"]);
    assert!(published.contains("acked 2000 errors 0"), "{published}");
    wait_stored(&mut conn, 4000, Duration::from_secs(60));
    drain(run);
    let (spilled, _) = audited(&pg, "market_ticks", "spill");
    assert!(
        (1..4000).contains(&spilled),
        "the second feed's blocks are audited, the refused ones are not: {spilled}"
    );
}

/// Journal-first, JSON logs at debug: every `market_ticks` block sealed is logged by its
/// id, then journaled (`Block durable`), then inserted from the journal, and its two
/// `ingest_audit` rows carry the same id: one block can be followed end to end.
#[test]
fn each_block_is_followed_by_its_id_from_seal_to_the_audit_in_json_logs() {
    const N: u64 = 6_000;
    let (db, mut conn) = tables("audit_trace");
    let nats = Nats::new("audit_trace");
    feed_all(&db, &nats, N, "0", "20");
    let pg = PgDb::new();
    let url = format!("postgres.url={}", pg.url());
    let settings = [
        "--set",
        &url,
        "--set",
        "log.format=json",
        "--set",
        "log.level=info,alphapt_storage=debug",
        "--set",
        "ingest.block_rows_max=1024",
    ];
    // An empty RUST_LOG counts as unset: `log.level` decides.
    let run = start_run_env(&db, &nats, &settings, &[("RUST_LOG", "")]);
    wait_stored(&mut conn, N, Duration::from_secs(120));
    let log = drain(run);
    // stderr is all JSON; stdout (the summary) is the rest.
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "Appliance running; Ctrl-C drains"),
        "{log}"
    );
    let ids = |message: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["message"] == message)
            .filter_map(|e| e["block"].as_str())
            .filter(|id| id.starts_with("market_ticks/"))
            .map(str::to_owned)
            .collect()
    };
    let sealed = ids("Block sealed");
    let rows: u64 = events
        .iter()
        .filter(|e| e["message"] == "Block sealed")
        .filter(|e| {
            e["block"]
                .as_str()
                .is_some_and(|b| b.starts_with("market_ticks/"))
        })
        .map(|e| e["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, N, "{sealed:?}");
    assert!(sealed.len() >= 6, "{sealed:?}");
    let (journaled, inserted) = (ids("Block durable"), ids("Journaled block inserted"));
    let mut client = pg.client();
    for id in &sealed {
        assert!(journaled.contains(id), "{id} never journaled");
        assert!(inserted.contains(id), "{id} never inserted");
        let mut destinations: Vec<String> = client
            .query(
                "SELECT destination FROM ingest_audit WHERE block_id = $1",
                &[id],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        destinations.sort();
        assert_eq!(destinations, ["clickhouse", "spill"], "{id}");
    }
}
