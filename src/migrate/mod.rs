//! Schema migrations for ClickHouse and PostgreSQL: `migrate up`, `status` and `down`.
//!
//! ```text
//!  migrations/clickhouse/*.sql ─┐  files: load, name check,   ┌─► plan: per version applied /
//!  migrations/postgres/*.sql  ──┴► checksum, {{placeholders}} ─┤   pending / drift / missing
//!                                                              │
//!  PostgreSQL advisory lock (one migrator at a time) ──────────┤
//!                                                              ▼
//!   up:   for each target (ClickHouse, then PostgreSQL), for each pending version in order:
//!         split ─► run statements ─► record (version, name, checksum, applied_at, duration_ms)
//!         in that database's `schema_migrations`; the first failing statement stops the run
//!   down: for each target in reverse, for each applied version above N, newest first:
//!         run its down file ─► remove the record; at N = 0 the bookkeeping table goes too
//! ```
//!
//! Refusals happen before anything runs: drift (a file changed after it was applied)
//! without `allow_drift`, a rollback file missing for any version `down` would revert.
//! PostgreSQL runs each file and its record in one transaction, so a failed file leaves
//! nothing behind; ClickHouse has no transactional DDL, so statements of a failed file
//! that ran before the failing one stay (every shipped file uses `IF [NOT] EXISTS`, so
//! running it again after the fix is safe) and its record is not written.

pub mod clickhouse;
pub mod cluster;
pub mod files;
pub mod grants;
pub mod postgres;
pub mod split;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::native;
pub use files::{FilesError, Migration, Script};
pub use split::{Dialect, SplitError, Statement};

/// Advisory-lock key guarding migrations: the bytes of "alphaptm". Both halves stay
/// below 2^31, so `pg_locks.classid/objid` show them as plain positive numbers.
pub const LOCK_KEY: i64 = 0x616c_7068_6170_746d;

/// Retention of the raw tables when the operator names none, in days.
pub const RETENTION_DAYS_DEFAULT: u32 = 90;

/// Longest retention accepted: ~27 years. `DateTime` ends in 2106, so a TTL of
/// `now + N days` must stay below it for data written today.
pub const RETENTION_DAYS_MAX: u32 = 10_000;

/// Everything a migration run needs; built by the CLI from the config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// ClickHouse connection; `database` names the database to migrate (created by `up`).
    pub clickhouse: native::Options,
    /// PostgreSQL URL; its database is the one migrated and the one the lock lives in.
    pub postgres_url: String,
    /// `postgres.tls*`.
    pub postgres_tls: crate::tls::Settings,
    /// Directory holding `clickhouse/` and `postgres/`.
    pub dir: PathBuf,
    /// Value of `{{retention_days}}` in the files, 1..=[`RETENTION_DAYS_MAX`].
    pub retention_days: u32,
    /// Advisory-lock key; [`LOCK_KEY`] unless a test isolates itself.
    pub lock_key: i64,
    /// How long a second migrator waits for the lock before giving up.
    pub lock_wait: Duration,
    /// A cluster with replicas: every `*MergeTree` table is created as its
    /// `Replicated*` twin (see [`cluster::replicated`]); the servers need ZooKeeper.
    pub replicated: bool,
}

/// Which database a migration belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// `migrations/clickhouse/`.
    ClickHouse,
    /// `migrations/postgres/`.
    Postgres,
}

impl TargetKind {
    /// Lower-case name, also the sub-directory.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::ClickHouse => "clickhouse",
            TargetKind::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can stop a migration run. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A migration directory is unusable.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// A file cannot be split into statements.
    #[error("{file}: {source}")]
    Split {
        /// The file.
        file: PathBuf,
        /// What is left open.
        source: SplitError,
    },
    /// ClickHouse failed outside a migration statement (connect, bookkeeping).
    #[error("ClickHouse: {op} failed: {source}")]
    ClickHouse {
        /// What we were doing.
        op: String,
        /// The client's error.
        source: native::Error,
    },
    /// PostgreSQL failed outside a migration statement (connect, lock, bookkeeping).
    #[error("PostgreSQL: {op} failed: {message}; check POSTGRES_URL and that the server is up")]
    Postgres {
        /// What we were doing.
        op: String,
        /// The server's or driver's message.
        message: String,
    },
    /// A migration statement failed; nothing was recorded for its file and nothing
    /// after it ran.
    #[error("{target} migration {file}, statement {statement} (line {line}) failed: {message}; nothing was recorded for this file and no later migration ran; fix the file and run `migrate up` again")]
    Statement {
        /// Which database.
        target: TargetKind,
        /// The file's name.
        file: String,
        /// 1-based statement number within the file.
        statement: usize,
        /// Line of the file where the statement starts.
        line: usize,
        /// The server's message.
        message: String,
    },
    /// Applied files changed on disk since they were applied.
    #[error("{target} migrations {versions:?} changed after they were applied (checksum drift); restore the files, or pass --allow-drift if the edit is deliberate and harmless")]
    Drift {
        /// Which database.
        target: TargetKind,
        /// The drifted versions.
        versions: Vec<u32>,
    },
    /// `down` would need a rollback file that does not exist.
    #[error("cannot revert {target} migration {version:03}_{name}: {reason}; write {expected} or choose a higher --to")]
    MissingDown {
        /// Which database.
        target: TargetKind,
        /// The version.
        version: u32,
        /// Its recorded name.
        name: String,
        /// Why it cannot be reverted.
        reason: &'static str,
        /// The file that would make it possible.
        expected: String,
    },
    /// Another migrator held the lock for longer than we were willing to wait.
    #[error("another migrator holds the migration lock ({holder}); waited {waited_ms} ms; try again when it finishes")]
    LockBusy {
        /// Who holds it, as PostgreSQL reports the session.
        holder: String,
        /// How long we waited.
        waited_ms: u64,
    },
    /// A setting is out of range.
    #[error("{0}")]
    BadSetting(String),
}

/// One applied migration as its database records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The version.
    pub version: u32,
    /// Its name when applied.
    pub name: String,
    /// SHA-256 of the file that was applied.
    pub checksum: String,
    /// When, Unix seconds.
    pub applied_at: i64,
    /// How long its statements took, ms.
    pub duration_ms: u64,
}

/// What `status` says about one version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Applied, and the file is unchanged.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but the file changed since.
    Drift,
    /// Applied, but no file for it exists any more.
    Missing,
}

/// One row of `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The version.
    pub version: u32,
    /// The file's name part, or the recorded one when the file is gone.
    pub name: String,
    /// The verdict.
    pub state: State,
    /// The file this server takes (legacy or not); empty when missing.
    pub file: String,
    /// The record, when applied.
    pub applied: Option<Applied>,
}

/// `status` of one database.
#[derive(Clone, Debug, Serialize)]
pub struct TargetStatus {
    /// Which database.
    pub target: TargetKind,
    /// Server version string.
    pub server: String,
    /// Whether the legacy (ClickHouse < 20.1) files apply.
    pub legacy: bool,
    /// Every version known from files or records, ascending.
    pub entries: Vec<Entry>,
}

impl TargetStatus {
    /// Versions in a state.
    pub fn versions(&self, state: State) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|e| e.state == state)
            .map(|e| e.version)
            .collect()
    }

    /// Applied versions, drifted ones included.
    pub fn total_applied(&self) -> usize {
        self.entries.iter().filter(|e| e.applied.is_some()).count()
    }
}

/// `status` of both databases.
#[derive(Clone, Debug)]
pub struct Status {
    /// ClickHouse, then PostgreSQL.
    pub targets: Vec<TargetStatus>,
}

impl Status {
    /// Whether nothing is pending and nothing drifted anywhere.
    pub fn up_to_date(&self) -> bool {
        self.targets
            .iter()
            .all(|t| t.versions(State::Pending).is_empty() && t.versions(State::Drift).is_empty())
    }

    /// The JSON `migrate status --json` prints: totals over both databases, the
    /// pending versions per database, and each database's entries.
    pub fn to_json(&self) -> serde_json::Value {
        let mut pending = serde_json::Map::new();
        let mut targets = serde_json::Map::new();
        for t in &self.targets {
            let pending_versions = t.versions(State::Pending);
            pending.insert(t.target.name().into(), pending_versions.clone().into());
            targets.insert(
                t.target.name().into(),
                serde_json::json!({
                    "server": t.server,
                    "legacy": t.legacy,
                    "total_applied": t.total_applied(),
                    "pending_count": pending_versions.len(),
                    "pending_versions": pending_versions,
                    "drift_versions": t.versions(State::Drift),
                    "missing_versions": t.versions(State::Missing),
                    "migrations": t.entries,
                }),
            );
        }
        serde_json::json!({
            "total_applied": self.targets.iter().map(TargetStatus::total_applied).sum::<usize>(),
            "pending_count": self.targets.iter().map(|t| t.versions(State::Pending).len()).sum::<usize>(),
            "pending_versions": pending,
            "drift_count": self.targets.iter().map(|t| t.versions(State::Drift).len()).sum::<usize>(),
            "up_to_date": self.up_to_date(),
            "targets": targets,
        })
    }
}

/// One migration `up` ran or `down` reverted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    /// Which database.
    pub target: TargetKind,
    /// The version.
    pub version: u32,
    /// The file that ran.
    pub file: String,
    /// How long its statements took, ms.
    pub duration_ms: u64,
}

/// What a target (database) offers the runner.
pub trait Target {
    /// Which database this is.
    fn kind(&self) -> TargetKind;
    /// Server version string.
    fn server(&self) -> String;
    /// Whether legacy files apply.
    fn legacy(&self) -> bool;
    /// Applied migrations, ascending; empty when the bookkeeping table does not exist.
    fn applied(&mut self) -> Result<Vec<Applied>, Error>;
    /// Runs one up file's statements and records it (atomically where the server can).
    /// Returns the statements' duration in ms.
    fn apply(
        &mut self,
        migration: &Migration,
        file: &str,
        checksum: &str,
        statements: &[Statement],
    ) -> Result<u64, Error>;
    /// Runs one down file's statements and removes the record.
    fn revert(
        &mut self,
        applied: &Applied,
        file: &str,
        statements: &[Statement],
    ) -> Result<u64, Error>;
    /// Drops the bookkeeping table (after `down --to 0`).
    fn drop_bookkeeping(&mut self) -> Result<(), Error>;
}

/// Pairs files with records into status entries, ascending by version.
pub fn plan(migrations: &[Migration], applied: &[Applied], legacy: bool) -> Vec<Entry> {
    let mut entries: Vec<Entry> = migrations
        .iter()
        .map(|m| {
            let script = m.up_for(legacy);
            let record = applied.iter().find(|a| a.version == m.version).cloned();
            let state = match &record {
                None => State::Pending,
                Some(a) if a.checksum == script.checksum => State::Applied,
                Some(_) => State::Drift,
            };
            Entry {
                version: m.version,
                name: m.name.clone(),
                state,
                file: script.file_name(),
                applied: record,
            }
        })
        .collect();
    for a in applied {
        if !migrations.iter().any(|m| m.version == a.version) {
            entries.push(Entry {
                version: a.version,
                name: a.name.clone(),
                state: State::Missing,
                file: String::new(),
                applied: Some(a.clone()),
            });
        }
    }
    entries.sort_by_key(|e| e.version);
    entries
}

/// Substitutes placeholders and splits a script for a target.
pub fn statements(
    script: &Script,
    kind: TargetKind,
    retention_days: u32,
) -> Result<Vec<Statement>, Error> {
    let text = files::substitute(script, retention_days)?;
    let dialect = match kind {
        TargetKind::ClickHouse => Dialect::ClickHouse,
        TargetKind::Postgres => Dialect::Postgres,
    };
    split::split(&text, dialect).map_err(|source| Error::Split {
        file: script.path.clone(),
        source,
    })
}

/// The loaded files and open connections of one run, lock held.
struct Session {
    /// PostgreSQL, which also holds the lock for the life of its connection.
    postgres: postgres::PostgresTarget,
    /// ClickHouse.
    clickhouse: clickhouse::ClickHouseTarget,
    /// Migrations under `clickhouse/`, ascending.
    clickhouse_files: Vec<Migration>,
    /// Migrations under `postgres/`, ascending.
    postgres_files: Vec<Migration>,
}

impl Session {
    /// Loads both directories, connects, takes the lock if asked, and (for `up`)
    /// creates the ClickHouse database.
    fn open(settings: &Settings, lock: bool, create: bool) -> Result<Session, Error> {
        if !(1..=RETENTION_DAYS_MAX).contains(&settings.retention_days) {
            return Err(Error::BadSetting(format!(
                "retention days {} is out of range; choose 1..={RETENTION_DAYS_MAX}",
                settings.retention_days
            )));
        }
        let clickhouse_files = files::load_dir(&settings.dir.join("clickhouse"))?;
        let postgres_files = files::load_dir(&settings.dir.join("postgres"))?;
        let mut postgres =
            postgres::PostgresTarget::connect_with(&settings.postgres_url, &settings.postgres_tls)?;
        if lock {
            postgres.lock(settings.lock_key, settings.lock_wait)?;
        }
        let clickhouse = clickhouse::ClickHouseTarget::connect(&settings.clickhouse, create)?;
        Ok(Session {
            postgres,
            clickhouse,
            clickhouse_files,
            postgres_files,
        })
    }

    /// Each target with its files, in `up` order.
    fn targets(&mut self) -> [(&mut dyn Target, &[Migration]); 2] {
        [
            (&mut self.clickhouse, &self.clickhouse_files),
            (&mut self.postgres, &self.postgres_files),
        ]
    }
}

/// Reports applied, pending, drifted and missing migrations of both databases.
/// Takes no lock and creates nothing.
pub fn status(settings: &Settings) -> Result<Status, Error> {
    let mut session = Session::open(settings, false, false)?;
    let mut targets = Vec::with_capacity(2);
    for (target, migrations) in session.targets() {
        let applied = target.applied()?;
        targets.push(TargetStatus {
            target: target.kind(),
            server: target.server(),
            legacy: target.legacy(),
            entries: plan(migrations, &applied, target.legacy()),
        });
    }
    Ok(Status { targets })
}

/// Applies pending migrations up to `to` (all when `None`), ClickHouse first.
/// Refuses drift unless `allow_drift`. Returns what ran, in order.
pub fn up(settings: &Settings, to: Option<u32>, allow_drift: bool) -> Result<Vec<Ran>, Error> {
    let mut session = Session::open(settings, true, true)?;
    // Plan both databases before running anything, so drift anywhere stops all.
    let mut work = Vec::new();
    for (target, migrations) in session.targets() {
        let entries = plan(migrations, &target.applied()?, target.legacy());
        let drift: Vec<u32> = entries
            .iter()
            .filter(|e| e.state == State::Drift)
            .map(|e| e.version)
            .collect();
        if !drift.is_empty() && !allow_drift {
            return Err(Error::Drift {
                target: target.kind(),
                versions: drift,
            });
        }
        let pending: Vec<u32> = entries
            .iter()
            .filter(|e| e.state == State::Pending && to.map_or(true, |to| e.version <= to))
            .map(|e| e.version)
            .collect();
        work.push(pending);
    }
    let mut ran = Vec::new();
    for ((target, migrations), pending) in session.targets().into_iter().zip(work) {
        for version in pending {
            let Some(migration) = migrations.iter().find(|m| m.version == version) else {
                continue;
            };
            let script = migration.up_for(target.legacy());
            let mut statements = statements(script, target.kind(), settings.retention_days)?;
            if settings.replicated && target.kind() == TargetKind::ClickHouse {
                for statement in &mut statements {
                    statement.text =
                        cluster::replicated(&statement.text, &settings.clickhouse.database);
                }
            }
            let duration_ms = target.apply(
                migration,
                &script.file_name(),
                &script.checksum,
                &statements,
            )?;
            tracing::info!(target_db = %target.kind(), file = %script.file_name(), duration_ms, "Applied migration");
            ran.push(Ran {
                target: target.kind(),
                version,
                file: script.file_name(),
                duration_ms,
            });
        }
    }
    Ok(ran)
}

/// Reverts applied migrations above `to`, newest first, PostgreSQL first. Refuses,
/// before running anything, when a rollback file is missing. At `to == 0` the
/// bookkeeping tables are dropped too, so nothing is left behind.
pub fn down(settings: &Settings, to: u32) -> Result<Vec<Ran>, Error> {
    let mut session = Session::open(settings, true, false)?;
    let mut work = Vec::new();
    for (target, migrations) in session.targets() {
        let mut steps = Vec::new();
        for applied in target
            .applied()?
            .into_iter()
            .rev()
            .filter(|a| a.version > to)
        {
            let migration = migrations.iter().find(|m| m.version == applied.version);
            let expected = format!("{:03}_{}.down.sql", applied.version, applied.name);
            let missing = |reason| Error::MissingDown {
                target: target.kind(),
                version: applied.version,
                name: applied.name.clone(),
                reason,
                expected: expected.clone(),
            };
            let migration = migration.ok_or_else(|| missing("its files are gone"))?;
            let script = migration
                .down_for(target.legacy())
                .ok_or_else(|| missing("it has no down file"))?;
            steps.push((applied, script.clone()));
        }
        work.push(steps);
    }
    let mut ran = Vec::new();
    for ((target, _), steps) in session.targets().into_iter().zip(work).rev() {
        for (applied, script) in steps {
            let statements = statements(&script, target.kind(), settings.retention_days)?;
            let duration_ms = target.revert(&applied, &script.file_name(), &statements)?;
            tracing::info!(target_db = %target.kind(), file = %script.file_name(), duration_ms, "Reverted migration");
            ran.push(Ran {
                target: target.kind(),
                version: applied.version,
                file: script.file_name(),
                duration_ms,
            });
        }
        if to == 0 {
            target.drop_bookkeeping()?;
        }
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(version: u32, text: &str) -> Migration {
        Migration {
            version,
            name: format!("m{version}"),
            up: Script::new(format!("{version:03}_m{version}.sql").into(), text.into()),
            down: None,
            legacy_up: Some(Script::new(
                format!("{version:03}_m{version}.legacy.sql").into(),
                format!("legacy {text}"),
            )),
            legacy_down: None,
        }
    }

    fn applied(m: &Migration, legacy: bool) -> Applied {
        Applied {
            version: m.version,
            name: m.name.clone(),
            checksum: m.up_for(legacy).checksum.clone(),
            applied_at: 0,
            duration_ms: 1,
        }
    }

    #[test]
    fn plan_marks_applied_pending_drift_and_missing() {
        // 1 applied as is, 2 applied then edited, 3 never applied, 9 applied but gone.
        let files = [migration(1, "a"), migration(2, "b"), migration(3, "c")];
        let mut edited = applied(&files[1], false);
        edited.checksum = files::checksum(b"old b");
        let gone = Applied {
            version: 9,
            name: "old".into(),
            checksum: String::new(),
            applied_at: 0,
            duration_ms: 0,
        };
        let records = [applied(&files[0], false), edited, gone];
        let states: Vec<(u32, State)> = plan(&files, &records, false)
            .iter()
            .map(|e| (e.version, e.state))
            .collect();
        assert_eq!(
            states,
            [
                (1, State::Applied),
                (2, State::Drift),
                (3, State::Pending),
                (9, State::Missing)
            ]
        );
    }

    #[test]
    fn plan_compares_against_the_file_the_server_takes() {
        // A record of the legacy file is not drift on a legacy server, but is on a modern one.
        let files = [migration(1, "a")];
        let records = [applied(&files[0], true)];
        assert_eq!(plan(&files, &records, true)[0].state, State::Applied);
        assert_eq!(plan(&files, &records, false)[0].state, State::Drift);
        assert_eq!(plan(&files, &records, true)[0].file, "001_m1.legacy.sql");
    }

    #[test]
    fn status_json_carries_the_totals() {
        // Two targets: one fully applied, one with a pending version.
        let files = [migration(1, "a"), migration(2, "b")];
        let records = [applied(&files[0], false)];
        let target = |kind, records: &[Applied]| TargetStatus {
            target: kind,
            server: "x".into(),
            legacy: false,
            entries: plan(&files, records, false),
        };
        let all = [applied(&files[0], false), applied(&files[1], false)];
        let status = Status {
            targets: vec![
                target(TargetKind::ClickHouse, &all),
                target(TargetKind::Postgres, &records),
            ],
        };
        let json = status.to_json();
        assert_eq!(json["total_applied"], 3);
        assert_eq!(json["pending_count"], 1);
        assert_eq!(json["pending_versions"]["postgres"], serde_json::json!([2]));
        assert_eq!(json["up_to_date"], false);
    }

    #[test]
    fn statements_substitute_then_split() {
        // The placeholder is replaced and the file split at its semicolon.
        let script = Script::new(
            "001_a.sql".into(),
            "SELECT {{retention_days}}; SELECT ';'".into(),
        );
        let got = statements(&script, TargetKind::ClickHouse, 7).unwrap();
        assert_eq!(got[0].text, "SELECT 7");
        assert_eq!(got[1].text, "SELECT ';'");
    }
}
