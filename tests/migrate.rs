//! `migrate up|status|down` against the real ClickHouse (18.16 in CI) and PostgreSQL.
//! Each test migrates its own ClickHouse database and its own PostgreSQL database,
//! both dropped afterwards; advisory locks are scoped to a PostgreSQL database, so
//! tests running in parallel never contend for the shared lock key.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use alphapt_storage::migrate::{self, Error, Settings, State, TargetKind};
use alphapt_storage::native::{Connection, Value};
use postgres::fallible_iterator::FallibleIterator;

/// A ClickHouse database name, a PostgreSQL database, and a scratch copy of the
/// migration files when a test edits them; all removed on drop.
struct Fixture {
    /// ClickHouse database (created by `migrate up`).
    clickhouse_db: String,
    /// PostgreSQL database created for this test.
    postgres_db: String,
    /// Migration directory in use.
    dir: PathBuf,
    /// Whether `dir` is a scratch copy to delete.
    scratch: bool,
}

fn admin_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn admin() -> postgres::Client {
    postgres::Client::connect(&admin_url(), postgres::NoTls)
        .expect("PostgreSQL is up (run .ci/services.sh)")
}

/// `POSTGRES_URL` with its database replaced.
fn url_for(database: &str) -> String {
    let mut url = url::Url::parse(&admin_url()).unwrap();
    url.set_path(&format!("/{database}"));
    url.to_string()
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let suffix = common::suffix();
        let postgres_db = format!("alphapt_test_{tag}_{suffix}");
        admin()
            .batch_execute(&format!("CREATE DATABASE {postgres_db}"))
            .unwrap();
        Fixture {
            clickhouse_db: format!("alphapt_test_{tag}_{suffix}"),
            postgres_db,
            dir: PathBuf::from("migrations"),
            scratch: false,
        }
    }

    /// Switches to a scratch copy of `migrations/` the test may edit.
    fn with_scratch_dir(mut self) -> Fixture {
        let dir = std::env::temp_dir().join(format!("{}_migrations", self.clickhouse_db));
        for target in ["clickhouse", "postgres"] {
            std::fs::create_dir_all(dir.join(target)).unwrap();
            for entry in std::fs::read_dir(Path::new("migrations").join(target)).unwrap() {
                let path = entry.unwrap().path();
                std::fs::copy(&path, dir.join(target).join(path.file_name().unwrap())).unwrap();
            }
        }
        self.dir = dir;
        self.scratch = true;
        self
    }

    fn settings(&self) -> Settings {
        Settings {
            clickhouse: common::options(&self.clickhouse_db, None),
            postgres_url: url_for(&self.postgres_db),
            postgres_tls: Default::default(),
            dir: self.dir.clone(),
            retention_days: 30,
            lock_key: migrate::LOCK_KEY,
            lock_wait: Duration::from_secs(30),
            replicated: false,
        }
    }

    fn file(&self, target: &str, name: &str) -> PathBuf {
        self.dir.join(target).join(name)
    }

    fn clickhouse(&self) -> Connection {
        Connection::connect(&common::options(&self.clickhouse_db, None)).unwrap()
    }

    fn postgres(&self) -> postgres::Client {
        postgres::Client::connect(&url_for(&self.postgres_db), postgres::NoTls).unwrap()
    }

    /// Table names in the ClickHouse database, sorted.
    fn clickhouse_tables(&self) -> Vec<String> {
        let result = self
            .clickhouse()
            .query(&format!(
                "SELECT name FROM system.tables WHERE database = '{}' ORDER BY name",
                self.clickhouse_db
            ))
            .unwrap();
        result.column("name").iter().map(text).collect()
    }

    /// Tables, views and functions in the PostgreSQL database's public schema.
    fn postgres_objects(&self) -> Vec<String> {
        let rows = self
            .postgres()
            .query(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public'
                 UNION ALL
                 SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'public'
                 ORDER BY 1",
                &[],
            )
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Raw `is_applied = 1` rows in ClickHouse's record table, without FINAL: a
    /// version applied twice would show twice.
    fn clickhouse_record_rows(&self) -> u64 {
        match self
            .clickhouse()
            .query("SELECT count() FROM schema_migrations WHERE is_applied = 1")
            .unwrap()
            .scalar()
        {
            Some(Value::UInt(n)) => n,
            other => panic!("count() gave {other:?}"),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(mut conn) = Connection::connect(&common::options("", None)) {
            let _ = conn.execute(&format!("DROP DATABASE IF EXISTS {}", self.clickhouse_db));
        }
        let _ = admin().batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.postgres_db
        ));
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("not a string: {other:?}"),
    }
}

fn count_files(target: &str) -> usize {
    migrate::files::load_dir(&Path::new("migrations").join(target))
        .unwrap()
        .len()
}

#[test]
fn up_from_empty_then_status_then_a_second_up_does_nothing() {
    // Every file applies once, the schema is there, status is clean, re-running is a no-op.
    let fx = Fixture::new("up");
    let before = migrate::status(&fx.settings()).unwrap();
    assert!(!before.up_to_date());
    assert_eq!(before.to_json()["total_applied"], 0);

    let ran = migrate::up(&fx.settings(), None, false).unwrap();
    let (ch, pg) = (count_files("clickhouse"), count_files("postgres"));
    assert_eq!(ran.len(), ch + pg);
    assert!(ran[..ch].iter().all(|r| r.target == TargetKind::ClickHouse));

    let tables = fx.clickhouse_tables();
    for table in [
        "market_ticks",
        "strategy_signals",
        "rejected_messages",
        "ohlc_1m",
        "mv_ohlc_1m",
        "ml_features",
        "mv_ml_features",
        "market_depth_snapshots",
        "mv_market_depth_snapshots",
        "schema_migrations",
    ] {
        assert!(
            tables.contains(&table.to_string()),
            "{table} missing from {tables:?}"
        );
    }
    let objects = fx.postgres_objects();
    for object in [
        "instruments",
        "ingest_audit",
        "quality_snapshots",
        "schema_migrations",
        "instruments_notify",
    ] {
        assert!(
            objects.contains(&object.to_string()),
            "{object} missing from {objects:?}"
        );
    }

    let status = migrate::status(&fx.settings()).unwrap();
    let json = status.to_json();
    assert_eq!(json["up_to_date"], true);
    assert_eq!(json["total_applied"], ch + pg);
    assert_eq!(json["pending_count"], 0);
    let clickhouse = &status.targets[0];
    let legacy = !fx.clickhouse().server().is_modern();
    assert_eq!(clickhouse.legacy, legacy);
    assert_eq!(
        clickhouse.entries[0].file,
        if legacy {
            "001_market_ticks.legacy.sql"
        } else {
            "001_market_ticks.sql"
        }
    );
    assert!(clickhouse
        .entries
        .iter()
        .all(|e| e.applied.as_ref().is_some_and(|a| a.applied_at > 0)));

    assert!(migrate::up(&fx.settings(), None, false).unwrap().is_empty());
    assert_eq!(fx.clickhouse_record_rows(), ch as u64);
}

#[test]
fn up_to_a_version_stops_there() {
    // `--to 2` applies versions 1 and 2 in each database and leaves the rest pending.
    let fx = Fixture::new("upto");
    let ran = migrate::up(&fx.settings(), Some(2), false).unwrap();
    assert_eq!(ran.len(), 4);
    let status = migrate::status(&fx.settings()).unwrap();
    assert_eq!(status.targets[0].versions(State::Applied), [1, 2]);
    assert_eq!(status.targets[1].versions(State::Pending), [3, 4]);
}

#[test]
fn the_instruments_trigger_notifies_listeners() {
    // An INSERT into instruments sends a notification naming the token.
    let fx = Fixture::new("notify");
    migrate::up(&fx.settings(), None, false).unwrap();
    let mut listener = fx.postgres();
    listener
        .batch_execute("LISTEN instruments_changed")
        .unwrap();
    fx.postgres()
        .batch_execute(
            "INSERT INTO instruments (instrument_token, tradingsymbol, exchange, tick_size, upper_circuit_limit, lower_circuit_limit)
             VALUES (408065, 'INFY', 'NSE', 0.05, 1700, 1400)",
        )
        .unwrap();
    let mut notifications = listener.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_secs(5));
    let note = iter.next().unwrap().expect("a notification within 5 s");
    assert_eq!(note.channel(), "instruments_changed");
    assert!(note.payload().contains("408065"), "{}", note.payload());
    assert!(note.payload().contains("INSERT"), "{}", note.payload());
}

#[test]
fn down_to_zero_leaves_nothing_behind() {
    // A partial down keeps lower versions; down to 0 removes every table, view,
    // function and the record tables themselves.
    let fx = Fixture::new("down");
    migrate::up(&fx.settings(), None, false).unwrap();
    let ran = migrate::down(&fx.settings(), 3).unwrap();
    assert!(ran.iter().all(|r| r.version > 3));
    let status = migrate::status(&fx.settings()).unwrap();
    assert_eq!(status.targets[0].versions(State::Applied), [1, 2, 3]);
    assert!(!fx.clickhouse_tables().contains(&"ohlc_1m".to_string()));
    assert_eq!(status.targets[1].versions(State::Applied), [1, 2, 3]);

    migrate::down(&fx.settings(), 0).unwrap();
    assert_eq!(fx.clickhouse_tables(), Vec::<String>::new());
    assert_eq!(fx.postgres_objects(), Vec::<String>::new());
    assert_eq!(
        migrate::status(&fx.settings()).unwrap().to_json()["total_applied"],
        0
    );

    // And the schema comes back whole.
    migrate::up(&fx.settings(), None, false).unwrap();
    assert!(migrate::status(&fx.settings()).unwrap().up_to_date());
}

#[test]
fn down_refuses_before_running_anything_when_a_down_file_is_missing() {
    // Version 4 has no down file: `down --to 0` names it and reverts nothing.
    let fx = Fixture::new("nodown").with_scratch_dir();
    migrate::up(&fx.settings(), None, false).unwrap();
    std::fs::remove_file(fx.file("clickhouse", "004_rejected_messages.down.sql")).unwrap();
    let err = migrate::down(&fx.settings(), 0).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingDown {
                version: 4,
                target: TargetKind::ClickHouse,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("004_rejected_messages.down.sql"),
        "{err}"
    );
    assert!(migrate::status(&fx.settings()).unwrap().up_to_date());
    // Above the gap it works.
    migrate::down(&fx.settings(), 4).unwrap();
}

#[test]
fn drift_is_reported_and_refused_unless_allowed() {
    // Editing an applied file shows as drift in status; up refuses it, then allows it.
    let fx = Fixture::new("drift").with_scratch_dir();
    migrate::up(&fx.settings(), Some(2), false).unwrap();
    let legacy = !fx.clickhouse().server().is_modern();
    let edited = fx.file(
        "clickhouse",
        if legacy {
            "001_market_ticks.legacy.sql"
        } else {
            "001_market_ticks.sql"
        },
    );
    let mut text = std::fs::read_to_string(&edited).unwrap();
    text.push_str("\n-- edited after apply\n");
    std::fs::write(&edited, text).unwrap();

    let status = migrate::status(&fx.settings()).unwrap();
    assert_eq!(status.targets[0].versions(State::Drift), [1]);
    assert_eq!(status.to_json()["drift_count"], 1);
    assert_eq!(status.to_json()["up_to_date"], false);

    let err = migrate::up(&fx.settings(), None, false).unwrap_err();
    assert!(
        matches!(&err, Error::Drift { versions, .. } if versions == &[1]),
        "{err}"
    );
    assert!(err.to_string().contains("--allow-drift"), "{err}");
    // Refused before anything ran: version 3 is still pending.
    let status = migrate::status(&fx.settings()).unwrap();
    assert_eq!(status.targets[0].versions(State::Pending)[0], 3);

    migrate::up(&fx.settings(), None, true).unwrap();
    let status = migrate::status(&fx.settings()).unwrap();
    assert!(status.targets[0].versions(State::Pending).is_empty());
    assert_eq!(status.targets[0].versions(State::Drift), [1]);
}

#[test]
fn a_failing_statement_stops_the_run_and_records_nothing_for_its_file() {
    // ClickHouse 090 fails at statement 2: 091 and PostgreSQL never run; then
    // PostgreSQL 004 fails and its transaction leaves no table and no record.
    let fx = Fixture::new("broken").with_scratch_dir();
    let broken = "CREATE TABLE IF NOT EXISTS before_failure (x UInt8) ENGINE = Memory;\n\
                  -- a comment; with a semicolon\n\
                  SELECT 'a;b', no_such_function(1);\n\
                  CREATE TABLE after_failure (x UInt8) ENGINE = Memory;\n";
    for name in ["090_broken.sql", "090_broken.legacy.sql"] {
        std::fs::write(fx.file("clickhouse", name), broken).unwrap();
    }
    std::fs::write(
        fx.file("clickhouse", "091_after.sql"),
        "CREATE TABLE never_created (x UInt8) ENGINE = Memory;",
    )
    .unwrap();

    let err = migrate::up(&fx.settings(), None, false).unwrap_err();
    match &err {
        Error::Statement {
            target,
            file,
            statement,
            line,
            message,
        } => {
            assert_eq!(*target, TargetKind::ClickHouse);
            assert!(file.starts_with("090_broken"), "{file}");
            assert_eq!((*statement, *line), (2, 3));
            assert!(message.contains("no_such_function"), "{message}");
        }
        other => panic!("expected a statement error, got {other}"),
    }
    assert!(err.to_string().contains("statement 2"), "{err}");
    let status = migrate::status(&fx.settings()).unwrap();
    assert_eq!(status.targets[0].versions(State::Pending), [90, 91]);
    assert_eq!(status.targets[1].versions(State::Pending), [1, 2, 3, 4]);
    let tables = fx.clickhouse_tables();
    assert!(!tables.contains(&"after_failure".to_string()));
    assert!(!tables.contains(&"never_created".to_string()));

    // Fix ClickHouse; break PostgreSQL 005 at its second statement.
    for name in ["090_broken.sql", "090_broken.legacy.sql", "091_after.sql"] {
        std::fs::remove_file(fx.file("clickhouse", name)).unwrap();
    }
    std::fs::write(
        fx.file("postgres", "005_broken.sql"),
        "CREATE TABLE pg_before_failure (x int);\nSELECT 'a;b' FROM no_such_table;\n",
    )
    .unwrap();
    let err = migrate::up(&fx.settings(), None, false).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Statement {
                target: TargetKind::Postgres,
                statement: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no_such_table"), "{err}");
    let status = migrate::status(&fx.settings()).unwrap();
    assert_eq!(status.targets[1].versions(State::Applied), [1, 2, 3, 4]);
    assert_eq!(status.targets[1].versions(State::Pending), [5]);
    assert!(!fx
        .postgres_objects()
        .contains(&"pg_before_failure".to_string()));
}

#[test]
fn concurrent_ups_apply_each_migration_once() {
    // Two migrators start together; the lock serialises them and the second finds
    // nothing left to do.
    let fx = Fixture::new("race");
    let settings = fx.settings();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let settings = settings.clone();
            std::thread::spawn(move || migrate::up(&settings, None, false))
        })
        .collect();
    let ran: usize = runs
        .into_iter()
        .map(|h| h.join().unwrap().unwrap().len())
        .sum();
    let (ch, pg) = (count_files("clickhouse"), count_files("postgres"));
    assert_eq!(ran, ch + pg);
    assert_eq!(fx.clickhouse_record_rows(), ch as u64);
    let rows: i64 = fx
        .postgres()
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, pg as i64);
}

#[test]
fn a_held_lock_makes_the_second_migrator_say_who_holds_it() {
    // A session holding the key: `up` waits its lock_wait, then names the holder's pid.
    let fx = Fixture::new("lock");
    let mut holder = fx.postgres();
    holder
        .batch_execute(&format!(
            "SET application_name = 'lock-holder-test'; SELECT pg_advisory_lock({})",
            migrate::LOCK_KEY
        ))
        .unwrap();
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let settings = Settings {
        lock_wait: Duration::from_millis(300),
        ..fx.settings()
    };
    let err = migrate::up(&settings, None, false).unwrap_err();
    match &err {
        Error::LockBusy { holder, waited_ms } => {
            assert!(holder.contains(&format!("pid {pid}")), "{holder}");
            assert!(holder.contains("lock-holder-test"), "{holder}");
            assert!(*waited_ms >= 250, "{waited_ms}");
        }
        other => panic!("expected LockBusy, got {other}"),
    }
    assert_eq!(
        migrate::status(&settings).unwrap().to_json()["total_applied"],
        0
    );
    drop(holder);
    migrate::up(&settings, None, false).unwrap();
}

/// Runs the binary with the fixture's databases in its environment.
fn cli(fx: &Fixture, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_alphapt-storage"))
        .args(args)
        .env("CLICKHOUSE_DATABASE", &fx.clickhouse_db)
        .env("POSTGRES_URL", url_for(&fx.postgres_db))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn the_cli_migrates_reports_json_and_fails_with_one_line() {
    // `migrate up`, `status --json` and `down --to 0` through the binary; a bad
    // directory exits non-zero with a one-line error naming it.
    let fx = Fixture::new("cli");
    let up = cli(&fx, &["migrate", "up", "--retention-days", "7"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status = cli(&fx, &["migrate", "status", "--json"]);
    assert!(status.status.success());
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["up_to_date"], true);
    assert_eq!(json["pending_count"], 0);
    assert_eq!(
        json["total_applied"],
        count_files("clickhouse") + count_files("postgres")
    );
    let table = cli(&fx, &["migrate", "status"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("up to date"));
    assert!(cli(&fx, &["migrate", "down", "--to", "0"]).status.success());
    assert!(fx.clickhouse_tables().is_empty());

    let bad = cli(&fx, &["migrate", "up", "--dir", "/nonexistent/migrations"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/migrations"), "{stderr}");
}
