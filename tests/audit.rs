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
    let published = feed(
        &db,
        &nats,
        &[
            "--count",
            &TICKS.to_string(),
            "--bad-ratio",
            "0.01",
            "--instruments",
            "50",
        ],
    );
    assert!(
        published.contains(&format!("acked {TICKS} errors 0")),
        "{published}"
    );
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
        let (_db, mut conn, _) = feed_and_run(tag, &["--set", &url, "--set", &mode]);
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
}
