//! The PostgreSQL side of migrations: the advisory lock that admits one migrator at a
//! time (for both databases), the `schema_migrations` table, and running each file
//! with its record in one transaction.
//!
//! ```text
//!  connect (application_name "alphapt-storage migrate")
//!    └─► pg_try_advisory_lock(key) ─busy─► log who holds it ─► pg_advisory_lock(key)
//!                                                              under lock_timeout
//!  apply:  BEGIN ─► statements ─► INSERT record ─► COMMIT   (any failure: ROLLBACK)
//!  revert: BEGIN ─► statements ─► DELETE record ─► COMMIT
//! ```
//!
//! The lock is a session lock: it is released when the connection closes, so a
//! killed migrator never leaves it behind.

use std::time::{Duration, Instant};

use super::{Applied, Error, Migration, Statement, Target, TargetKind};

/// The record table.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms bigint      NOT NULL
)";

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL as a migration target and lock holder.
pub struct PostgresTarget {
    /// The session; holds the advisory lock once taken.
    client: postgres::Client,
    /// `SHOW server_version`.
    server: String,
}

/// The server's message for a failed call: SQLSTATE and text when the server
/// answered, the driver's description otherwise.
pub fn message(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

fn pg_error(op: impl Into<String>) -> impl FnOnce(postgres::Error) -> Error {
    let op = op.into();
    move |error| Error::Postgres {
        op,
        message: message(&error),
    }
}

impl PostgresTarget {
    /// Connects to the database named in `url`, in plaintext.
    pub fn connect(url: &str) -> Result<PostgresTarget, Error> {
        Self::connect_with(url, &crate::tls::Settings::default())
    }

    /// Connects to the database named in `url`, over TLS when `tls` says so.
    pub fn connect_with(url: &str, tls: &crate::tls::Settings) -> Result<PostgresTarget, Error> {
        let mut config: postgres::Config = url.parse().map_err(pg_error("parsing POSTGRES_URL"))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("alphapt-storage migrate");
        // `IF NOT EXISTS` notices ("already exists, skipping") are expected on every run.
        config.options("-c client_min_messages=warning");
        let mut client =
            crate::tls::connect_postgres(&mut config, tls).map_err(|error| Error::Postgres {
                op: "connect".to_owned(),
                message: match error {
                    crate::tls::ConnectError::Postgres(error) => message(&error),
                    other => other.to_string(),
                },
            })?;
        let server: String = client
            .query_one("SHOW server_version", &[])
            .map_err(pg_error("SHOW server_version"))?
            .get(0);
        Ok(PostgresTarget { client, server })
    }

    /// Takes the advisory lock `key`, waiting at most `wait`; says who holds it
    /// while waiting, and in the error when the wait runs out.
    pub fn lock(&mut self, key: i64, wait: Duration) -> Result<(), Error> {
        let taken: bool = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .map_err(pg_error("pg_try_advisory_lock"))?
            .get(0);
        if taken {
            return Ok(());
        }
        let holder = self.holder(key);
        tracing::warn!(holder = %holder, wait_ms = wait.as_millis() as u64, "Migration lock is held; waiting");
        let started = Instant::now();
        // lock_timeout bounds the wait of pg_advisory_lock like any other lock wait.
        self.client
            .batch_execute(&format!("SET lock_timeout = {}", wait.as_millis().max(1)))
            .map_err(pg_error("SET lock_timeout"))?;
        let outcome = self.client.execute("SELECT pg_advisory_lock($1)", &[&key]);
        let waited_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(_) => self
                .client
                .batch_execute("RESET lock_timeout")
                .map_err(pg_error("RESET lock_timeout")),
            Err(error) if error.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                Err(Error::LockBusy {
                    holder: self.holder(key),
                    waited_ms,
                })
            }
            Err(error) => Err(pg_error("pg_advisory_lock")(error)),
        }
    }

    /// Who holds advisory lock `key` in this database, as far as the server says.
    fn holder(&mut self, key: i64) -> String {
        // A bigint key shows in pg_locks as classid = high half, objid = low half.
        let (high, low) = (key >> 32, key & 0xffff_ffff);
        let row = self.client.query_opt(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local'),
                    coalesce(to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ'), '')
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND l.classid::bigint = $1 AND l.objid::bigint = $2
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             LIMIT 1",
            &[&high, &low],
        );
        match row {
            Ok(Some(row)) => format!(
                "pid {} application `{}` from {} since {}",
                row.get::<_, i32>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2),
                row.get::<_, String>(3)
            ),
            Ok(None) => "holder already gone".to_string(),
            Err(error) => format!("holder unknown: {}", message(&error)),
        }
    }

    /// Runs statements inside `tx`; the first failure names its number and line.
    fn run(
        tx: &mut postgres::Transaction<'_>,
        file: &str,
        statements: &[Statement],
    ) -> Result<u64, Error> {
        let started = Instant::now();
        for (index, statement) in statements.iter().enumerate() {
            tx.batch_execute(&statement.text)
                .map_err(|e| Error::Statement {
                    target: TargetKind::Postgres,
                    file: file.to_string(),
                    statement: index + 1,
                    line: statement.line,
                    message: message(&e),
                })?;
        }
        Ok(started.elapsed().as_millis() as u64)
    }
}

impl Target for PostgresTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Postgres
    }

    fn server(&self) -> String {
        self.server.clone()
    }

    fn legacy(&self) -> bool {
        false
    }

    fn applied(&mut self) -> Result<Vec<Applied>, Error> {
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
            .map_err(pg_error("looking for schema_migrations"))?
            .get(0);
        if !exists {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query(
                "SELECT version, name, checksum, extract(epoch FROM applied_at)::bigint, duration_ms
                 FROM schema_migrations ORDER BY version",
                &[],
            )
            .map_err(pg_error("reading schema_migrations"))?;
        Ok(rows
            .iter()
            .map(|row| Applied {
                version: row.get::<_, i32>(0) as u32,
                name: row.get(1),
                checksum: row.get(2),
                applied_at: row.get(3),
                duration_ms: row.get::<_, i64>(4) as u64,
            })
            .collect())
    }

    fn apply(
        &mut self,
        migration: &Migration,
        file: &str,
        checksum: &str,
        statements: &[Statement],
    ) -> Result<u64, Error> {
        let mut tx = self.client.transaction().map_err(pg_error("BEGIN"))?;
        tx.batch_execute(CREATE_TABLE)
            .map_err(pg_error("creating schema_migrations"))?;
        let duration_ms = Self::run(&mut tx, file, statements)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)",
            &[&(migration.version as i32), &migration.name, &checksum, &(duration_ms as i64)],
        )
        .map_err(pg_error(format!("recording migration {}", migration.version)))?;
        tx.commit().map_err(pg_error("COMMIT"))?;
        Ok(duration_ms)
    }

    fn revert(
        &mut self,
        applied: &Applied,
        file: &str,
        statements: &[Statement],
    ) -> Result<u64, Error> {
        let mut tx = self.client.transaction().map_err(pg_error("BEGIN"))?;
        let duration_ms = Self::run(&mut tx, file, statements)?;
        tx.execute(
            "DELETE FROM schema_migrations WHERE version = $1",
            &[&(applied.version as i32)],
        )
        .map_err(pg_error(format!(
            "removing the record of migration {}",
            applied.version
        )))?;
        tx.commit().map_err(pg_error("COMMIT"))?;
        Ok(duration_ms)
    }

    fn drop_bookkeeping(&mut self) -> Result<(), Error> {
        self.client
            .batch_execute("DROP TABLE IF EXISTS schema_migrations")
            .map_err(pg_error("dropping schema_migrations"))
    }
}
