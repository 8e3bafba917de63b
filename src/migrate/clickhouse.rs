//! The ClickHouse side of migrations: database creation, the `schema_migrations`
//! record table, and running statements on a connection whose default database is
//! the configured one (files use unqualified table names).
//!
//! ```text
//!  connect without a database ─► database exists? ─no─► CREATE DATABASE (up only)
//!        │                                   │
//!        ▼                                   ▼
//!  reconnect with it as default ─► schema_migrations FINAL ─► applied versions
//!  statements one by one ─► INSERT .. SELECT a record (is_applied 1 up, 0 down)
//! ```
//!
//! Why `ReplacingMergeTree(revision)` with an `is_applied` flag: on 18.16
//! `ALTER TABLE .. DELETE` is an asynchronous mutation, so a deleted record could
//! still be read right after `down`. Instead every change appends a row with a
//! higher `revision` and readers take the newest row per version with `FINAL`,
//! which is synchronous on every server. Rows are written with `INSERT .. SELECT`,
//! executed wholly by the server, so no client-side data block is needed.

use std::time::Instant;

use super::{Applied, Error, Migration, Statement, Target, TargetKind};
use crate::native::{self, Connection, Value};

/// The record table; one definition for 18.16 and current servers.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations
(
    version     UInt32,
    name        String,
    checksum    String,
    applied_at  DateTime('UTC'),
    duration_ms UInt64,
    is_applied  UInt8,
    revision    UInt64
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY version";

/// ClickHouse as a migration target.
pub struct ClickHouseTarget {
    /// Open connection; its default database is the migrated one when it exists.
    conn: Connection,
    /// The database migrated (`clickhouse.database`).
    database: String,
    /// Whether the database exists (false only for `status` before the first `up`).
    database_exists: bool,
}

/// Whether `name` is a plain identifier we can put in DDL unquoted.
fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A ClickHouse string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn ch_error(op: impl Into<String>) -> impl FnOnce(native::Error) -> Error {
    let op = op.into();
    move |source| Error::ClickHouse { op, source }
}

impl ClickHouseTarget {
    /// Connects; creates the database when `create` and it is missing.
    pub fn connect(options: &native::Options, create: bool) -> Result<ClickHouseTarget, Error> {
        let database = options.database.clone();
        if !is_identifier(&database) {
            return Err(Error::BadSetting(format!(
                "ClickHouse database name `{database}` is not a plain identifier; use [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
        let mut bare = options.clone();
        bare.database = String::new();
        let mut conn = Connection::connect(&bare).map_err(ch_error("connect"))?;
        let exists = conn
            .query(&format!(
                "SELECT count() FROM system.databases WHERE name = {}",
                quote(&database)
            ))
            .map_err(ch_error("listing databases"))?
            .scalar()
            == Some(Value::UInt(1));
        if !exists && create {
            conn.execute(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
                .map_err(ch_error(format!("CREATE DATABASE {database}")))?;
        }
        let database_exists = exists || create;
        if database_exists {
            conn = Connection::connect(options)
                .map_err(ch_error(format!("connect to database {database}")))?;
        }
        Ok(ClickHouseTarget {
            conn,
            database,
            database_exists,
        })
    }

    /// Whether the record table exists.
    fn has_table(&mut self) -> Result<bool, Error> {
        if !self.database_exists {
            return Ok(false);
        }
        let sql = format!(
            "SELECT count() FROM system.tables WHERE database = {} AND name = 'schema_migrations'",
            quote(&self.database)
        );
        let result = self
            .conn
            .query(&sql)
            .map_err(ch_error("looking for schema_migrations"))?;
        Ok(result.scalar() == Some(Value::UInt(1)))
    }

    /// Appends a record row with the next revision.
    fn record(&mut self, applied: &Applied, is_applied: u8) -> Result<(), Error> {
        self.conn
            .execute(CREATE_TABLE)
            .map_err(ch_error("creating schema_migrations"))?;
        let sql = format!(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at, duration_ms, is_applied, revision)
             SELECT toUInt32({}), {}, {}, toDateTime({}, 'UTC'), toUInt64({}), toUInt8({is_applied}),
                    (SELECT max(revision) + 1 FROM schema_migrations)",
            applied.version,
            quote(&applied.name),
            quote(&applied.checksum),
            applied.applied_at,
            applied.duration_ms,
        );
        self.conn
            .execute(&sql)
            .map_err(ch_error(format!("recording migration {}", applied.version)))
    }

    /// Runs statements in order; the first failure names its number and line.
    fn run(&mut self, file: &str, statements: &[Statement]) -> Result<u64, Error> {
        let started = Instant::now();
        for (index, statement) in statements.iter().enumerate() {
            self.conn
                .execute(&statement.text)
                .map_err(|e| Error::Statement {
                    target: TargetKind::ClickHouse,
                    file: file.to_string(),
                    statement: index + 1,
                    line: statement.line,
                    message: match e {
                        native::Error::Server(exception) => exception.to_string(),
                        other => other.to_string(),
                    },
                })?;
        }
        Ok(started.elapsed().as_millis() as u64)
    }
}

/// Seconds since the Unix epoch, for `applied_at`.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Target for ClickHouseTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::ClickHouse
    }

    fn server(&self) -> String {
        self.conn.server().version()
    }

    fn legacy(&self) -> bool {
        !self.conn.server().is_modern()
    }

    fn applied(&mut self) -> Result<Vec<Applied>, Error> {
        if !self.has_table()? {
            return Ok(Vec::new());
        }
        let result = self
            .conn
            .query(
                "SELECT version, name, checksum, toInt64(toUInt32(applied_at)) AS applied_at, duration_ms
                 FROM schema_migrations FINAL WHERE is_applied = 1 ORDER BY version",
            )
            .map_err(ch_error("reading schema_migrations"))?;
        let text = |v: Option<&Value>| match v {
            Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        };
        let number = |v: Option<&Value>| match v {
            Some(Value::UInt(n)) => *n as i64,
            Some(Value::Int(n)) => *n,
            _ => 0,
        };
        let columns =
            ["version", "name", "checksum", "applied_at", "duration_ms"].map(|c| result.column(c));
        Ok((0..result.rows() as usize)
            .map(|row| Applied {
                version: number(columns[0].get(row)) as u32,
                name: text(columns[1].get(row)),
                checksum: text(columns[2].get(row)),
                applied_at: number(columns[3].get(row)),
                duration_ms: number(columns[4].get(row)) as u64,
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
        // The record table first: a fresh database then shows `schema_migrations`
        // even when the first file fails, which is where an operator looks.
        self.conn
            .execute(CREATE_TABLE)
            .map_err(ch_error("creating schema_migrations"))?;
        let duration_ms = self.run(file, statements)?;
        let applied = Applied {
            version: migration.version,
            name: migration.name.clone(),
            checksum: checksum.to_string(),
            applied_at: unix_now(),
            duration_ms,
        };
        self.record(&applied, 1)?;
        Ok(duration_ms)
    }

    fn revert(
        &mut self,
        applied: &Applied,
        file: &str,
        statements: &[Statement],
    ) -> Result<u64, Error> {
        let duration_ms = self.run(file, statements)?;
        let record = Applied {
            applied_at: unix_now(),
            duration_ms,
            ..applied.clone()
        };
        self.record(&record, 0)?;
        Ok(duration_ms)
    }

    fn drop_bookkeeping(&mut self) -> Result<(), Error> {
        if !self.database_exists {
            return Ok(());
        }
        self.conn
            .execute("DROP TABLE IF EXISTS schema_migrations")
            .map_err(ch_error("dropping schema_migrations"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_quotes() {
        // Database names are plain identifiers; literals escape quotes and backslashes.
        assert!(is_identifier("alphapt"));
        assert!(is_identifier("_t1"));
        assert!(!is_identifier("1db"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier(""));
        assert_eq!(quote(r"it's \ ok"), r"'it\'s \\ ok'");
    }
}
