//! A ClickHouse killed with SIGKILL in the middle of a stream of INSERTs: the writer
//! gets an error (not a hang) within its I/O timeout, and once the server is back the
//! self-reconnecting client inserts again. Runs in its own test binary because it
//! stops the server every other test uses.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::SealedBlock;
use alphapt_storage::native::{Client, Connection, Error, Method, Value};
use alphapt_storage::runtime::Backoff;
use alphapt_storage::shard::{TickColumns, TickSchema};
use common::{options, TestDb};

/// The ClickHouse process answering on the test port, found by its listening socket
/// (whoever started it: this checkout's services.sh or another's), and how to start
/// it again exactly as it was: same binary, arguments and working directory, so the
/// same data directory.
struct Server {
    pid: u32,
    argv: Vec<String>,
    cwd: std::path::PathBuf,
}

fn port() -> String {
    std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "9000".into())
}

impl Server {
    fn find() -> Server {
        let out = Command::new("ss")
            .args(["-ltnpH", &format!("sport = :{}", port())])
            .output()
            .expect("ss (iproute2) is installed");
        let text = String::from_utf8_lossy(&out.stdout);
        let pid: u32 = text
            .split("pid=")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no process listens on port {}: {text}", port()));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>();
        assert!(
            argv[0].contains("clickhouse"),
            "port {} is not ClickHouse: {argv:?}",
            port()
        );
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        Server { pid, argv, cwd }
    }

    fn kill(&self) {
        let status = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts the server again (detached from our pipes) and waits until it answers.
    /// The server outlives this test on purpose, so the child is never waited for.
    #[allow(clippy::zombie_processes)]
    fn start(&self) {
        Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ClickHouse restarts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Connection::connect(&options("", None)).is_err() {
            assert!(
                Instant::now() < deadline,
                "ClickHouse did not come back within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Starts ClickHouse again even when the test fails half-way.
struct Restart<'a>(&'a Server);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        if Connection::connect(&options("", None)).is_err() {
            self.0.start();
        }
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
    let server = Server::find();
    let _restart = Restart(&server);
    let killed_at = Instant::now();
    server.kill();

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

    server.start();
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
