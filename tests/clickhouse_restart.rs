//! A ClickHouse killed with SIGKILL in the middle of a stream of INSERTs: the writer
//! gets an error (not a hang) within its I/O timeout, and once the server is back the
//! self-reconnecting client inserts again. Runs in its own test binary because it
//! stops the server every other test uses.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::native::{Backoff, Client, Connection, Error, Method, Value};
use alphapt_storage::shard::{SealedBlock, TickColumns, TickSchema};
use common::{options, TestDb};

fn services(action: &str) {
    let script = std::env::var("ALPHAPT_SERVICES_SH")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/services.sh").to_string());
    let status = Command::new("bash")
        .arg(script)
        .arg(action)
        .status()
        .unwrap();
    assert!(status.success(), "services.sh {action} failed");
}

fn clickhouse_pid() -> i32 {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.run/clickhouse/clickhouse-server.pid"
    );
    std::fs::read_to_string(path)
        .expect("ClickHouse started by .ci/services.sh (pid file)")
        .trim()
        .parse()
        .unwrap()
}

/// Starts ClickHouse again even when the test fails half-way.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        services("start-clickhouse");
    }
}

fn block(
    schema: &TickSchema,
    feed: &mut SyntheticTicks,
    seq: &mut u64,
    rows: usize,
) -> SealedBlock {
    let mut columns = TickColumns::new(rows);
    for _ in 0..rows {
        *seq += 1;
        columns.append(&feed.next_tick(1_764_000_000_000 + *seq as i64, 1_764_000_000_000, *seq));
    }
    let mut sealed = SealedBlock::with_capacity(rows);
    columns.seal(schema, Some(Method::Lz4), &mut sealed);
    sealed
}

#[test]
fn killed_server_gives_an_error_then_inserts_resume_after_restart() {
    const IO_TIMEOUT: Duration = Duration::from_secs(3);
    let db = TestDb::new("restart");
    let mut setup = db.connect(Some(Method::Lz4));
    db.create_market_ticks(&mut setup);
    let schema = TickSchema::from_header(&setup.insert_header("market_ticks").unwrap()).unwrap();
    let sql = schema.insert_sql("market_ticks");
    drop(setup);

    let mut writer_options = options(&db.name, Some(Method::Lz4));
    writer_options.io_timeout = IO_TIMEOUT;
    let started = Arc::new(AtomicBool::new(false));
    let writer = {
        let (schema, sql, started) = (schema.clone(), sql.clone(), started.clone());
        std::thread::spawn(move || {
            let mut conn = Connection::connect(&writer_options).unwrap();
            let mut feed = SyntheticTicks::new(50, 5);
            let mut seq = 0;
            let mut committed = 0u64;
            // Bounded: the server dies long before this many blocks.
            for _ in 0..100_000 {
                let sealed = block(&schema, &mut feed, &mut seq, 5_000);
                match conn.insert_encoded(&sql, &schema.header(), &[&sealed.bytes]) {
                    Ok(()) => committed += u64::from(sealed.rows),
                    Err(error) => return (committed, Some((error, Instant::now()))),
                }
                started.store(true, Ordering::Release);
            }
            (committed, None)
        })
    };
    while !started.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let _restart = Restart;
    let killed_at = Instant::now();
    let status = Command::new("kill")
        .args(["-9", &clickhouse_pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let (committed, failure) = writer.join().unwrap();
    let (error, failed_at) = failure.expect("the writer noticed the dead server");
    assert!(committed > 0);
    assert!(
        matches!(error, Error::Io { .. } | Error::Timeout { .. }),
        "{error}"
    );
    assert!(error.is_retriable());
    assert!(
        failed_at.duration_since(killed_at) < IO_TIMEOUT + Duration::from_secs(2),
        "error took {:?}",
        failed_at.duration_since(killed_at)
    );

    services("start-clickhouse");
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let mut client = Client::new(
        options(&db.name, Some(Method::Lz4)),
        backoff,
        Duration::from_secs(5),
        40,
    );
    let mut feed = SyntheticTicks::new(50, 6);
    let mut seq = 10_000_000;
    let sealed = block(&schema, &mut feed, &mut seq, 1_000);
    client
        .run(|conn| conn.insert_encoded(&sql, &schema.header(), &[&sealed.bytes]))
        .unwrap();
    let after = client
        .run(|conn| conn.query("SELECT count() FROM market_ticks WHERE stream_seq > 10000000"))
        .unwrap();
    assert_eq!(after.scalar(), Some(Value::UInt(1_000)));
    let total = client
        .run(|conn| conn.query("SELECT count() FROM market_ticks"))
        .unwrap();
    // The INSERT cut by the kill has an unknown outcome; everything acknowledged is there.
    assert!(total.scalar().unwrap().as_u64().unwrap() >= committed + 1_000);
}
