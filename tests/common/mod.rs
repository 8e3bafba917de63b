//! Shared helpers for the integration tests: connection options from the environment
//! `make test` exports, a throwaway database per test, and the `clickhouse-client`
//! binary as an independent reader.
#![allow(dead_code)]

pub mod e2e;
pub mod pg;
pub mod private_clickhouse;
pub mod private_redis;
pub mod private_redis_cluster;
pub mod proxy;

use std::process::Command;
use std::time::{Duration, Instant};

use alphapt_storage::native::{Connection, Method, Options};

/// Options for the test server, from CLICKHOUSE_HOST / CLICKHOUSE_PORT.
pub fn options(database: &str, compression: Option<Method>) -> Options {
    Options {
        host: std::env::var("CLICKHOUSE_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
        port: std::env::var("CLICKHOUSE_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(9000),
        database: database.into(),
        user: "default".into(),
        password: String::new(),
        compression,
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(20),
        query_id_prefix: String::new(),
        tls: None,
    }
}

/// A random suffix for database, stream and key names.
pub fn suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}_{:08x}", std::process::id(), nanos ^ rand_u32())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u32
}

/// A database that exists for the life of the value and is dropped after.
pub struct TestDb {
    /// Database name.
    pub name: String,
}

impl TestDb {
    /// Creates `alphapt_test_<suffix>`.
    pub fn new(tag: &str) -> TestDb {
        let name = format!("alphapt_test_{tag}_{}", suffix());
        let mut conn = Connection::connect(&options("", None))
            .expect("ClickHouse is up (run `make services`)");
        conn.execute(&format!("CREATE DATABASE {name}")).unwrap();
        TestDb { name }
    }

    /// The test's own spill directory (removed with the database): appliances of
    /// parallel tests must not share one (the journal locks it).
    pub fn spill_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("alphapt-spill-{}", self.name))
    }

    /// The test's own Redis key prefix (its keys are removed with the database).
    pub fn redis_prefix(&self) -> String {
        format!("{}:", self.name)
    }

    /// A connection whose default database is this one.
    pub fn connect(&self, compression: Option<Method>) -> Connection {
        Connection::connect(&options(&self.name, compression)).unwrap()
    }

    /// Creates `market_ticks` from the migration file matching the server.
    pub fn create_market_ticks(&self, conn: &mut Connection) {
        self.create_from_migration(conn, "001_market_ticks");
    }

    /// Runs one single-statement ClickHouse migration (modern or legacy form by the
    /// server's version), for tests that need a table but not the migrator.
    pub fn create_from_migration(&self, conn: &mut Connection, name: &str) {
        let suffix = if conn.server().is_modern() {
            "sql"
        } else {
            "legacy.sql"
        };
        let file = format!("migrations/clickhouse/{name}.{suffix}");
        let sql = std::fs::read_to_string(&file)
            .unwrap()
            .replace("{{retention_days}}", "90");
        let statement: String = sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        conn.execute(statement.trim().trim_end_matches(';'))
            .unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut conn) = Connection::connect(&options("", None)) {
            let _ = conn.execute(&format!("DROP DATABASE IF EXISTS {}", self.name));
        }
        let _ = std::fs::remove_dir_all(self.spill_dir());
        redis_delete_prefix(&self.redis_prefix());
    }
}

/// The Redis URL tests use.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Deletes every Redis key that starts with `prefix`.
pub fn redis_delete_prefix(prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return;
    };
    let keys: Vec<String> = match redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
    {
        Ok(keys) => keys,
        Err(_) => return,
    };
    for chunk in keys.chunks(512) {
        let _: Result<u64, _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

/// Runs `clickhouse-client --query` and returns its trimmed stdout.
pub fn clickhouse_client(query: &str) -> String {
    let port = std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "9000".into());
    let output = Command::new("clickhouse-client")
        .args(["--host", "127.0.0.1", "--port", &port, "--query", query])
        .output()
        .expect("clickhouse-client is installed");
    assert!(
        output.status.success(),
        "clickhouse-client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Waits until `done`, at most `limit`, naming `what` when it gives up.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads `value` every 200 ms until it has not changed for `quiet`, and returns it;
/// panics naming `what` if that takes longer than `limit`.
pub fn wait_settled(
    what: &str,
    quiet: Duration,
    limit: Duration,
    mut value: impl FnMut() -> u64,
) -> u64 {
    let deadline = Instant::now() + limit;
    let mut last = value();
    let mut still_since = Instant::now();
    while still_since.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "{what} never settled (at {last})"
        );
        std::thread::sleep(Duration::from_millis(200));
        let now = value();
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
    }
    last
}

/// Runs promtool (Debian's prometheus package, installed by `.ci/services.sh`) with
/// `stdin`; whether it succeeded, and what it printed.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool on PATH (bash .ci/services.sh installs Debian's prometheus package)");
    if let Some(text) = stdin {
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
