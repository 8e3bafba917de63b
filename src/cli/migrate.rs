//! `alphapt-storage migrate up|status|down`: builds [`migrate::Settings`] from the
//! config and flags, runs the library, prints a table (or JSON for `status --json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use alphapt_storage::config::Config;
use alphapt_storage::migrate::{self, State, Status};

/// What `migrate` does.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// Apply pending migrations (creates the ClickHouse database if missing).
    Up {
        /// Stop after this version (per database); default: apply all.
        #[arg(long, value_name = "N")]
        to: Option<u32>,
        /// Run even though applied files changed since they were applied.
        #[arg(long)]
        allow_drift: bool,
        /// Days of raw data kept (`{{retention_days}}` in the files); overrides the
        /// config key `clickhouse.retention_days` (env ALPHAPT_RETENTION_DAYS).
        #[arg(long, value_name = "N")]
        retention_days: Option<u32>,
        /// With `clickhouse.shards`: also create a `Distributed` table `<table>_all`
        /// over the servers' cluster NAME (their `<remote_servers>`) on every shard,
        /// for readers (docs/scale-out.md).
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
    },
    /// Show applied, pending and drifted migrations of both databases.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the statements that give the running appliance's user (ClickHouse) and
    /// role (PostgreSQL) the least privileges `run` needs; connects to nothing.
    Grants {
        /// The user and role name.
        #[arg(long, value_name = "NAME", default_value = "alphapt_app")]
        user: String,
    },
    /// Revert applied migrations above version N, newest first (N = 0: everything).
    Down {
        /// Keep versions up to and including N.
        #[arg(long, value_name = "N")]
        to: u32,
    },
}

/// Flags every action shares.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Directory holding clickhouse/ and postgres/ migration files.
    #[arg(long, value_name = "DIR", default_value = "migrations", global = true)]
    pub dir: PathBuf,
    /// Seconds to wait for another migrator to release the lock.
    #[arg(long, value_name = "S", default_value_t = 60, global = true)]
    pub lock_wait_s: u64,
}

/// Runs one `migrate` action; errors become a one-line message and a non-zero exit.
pub fn run(config: &Config, action: Action, common: Common) -> anyhow::Result<ExitCode> {
    let retention_days = match &action {
        Action::Up {
            retention_days: Some(days),
            ..
        } => *days,
        _ => config.clickhouse.retention_days,
    };
    // A cluster: the same migrations on every server of every shard, replicas
    // included, one after another (the PostgreSQL half is applied by the first and
    // found up to date by the others).
    let shards = config.clickhouse.replicas();
    let servers: Vec<(usize, String, u16)> = shards
        .iter()
        .enumerate()
        .flat_map(|(shard, replicas)| {
            replicas
                .iter()
                .map(move |(host, port)| (shard, host.clone(), *port))
        })
        .collect();
    let sharded = !config.clickhouse.shards.is_empty();
    if let Action::Up {
        cluster: Some(name),
        ..
    } = &action
    {
        anyhow::ensure!(
            migrate::cluster::is_cluster_name(name),
            "--cluster {name:?} is not a plain name; use letters, digits and _ (not first a digit), as in the servers' <remote_servers>"
        );
        anyhow::ensure!(
            sharded,
            "--cluster {name} needs `clickhouse.shards` (each shard's servers, in the cluster's order); it is empty"
        );
    }
    if let Action::Grants { user } = &action {
        return grants(config, user);
    }
    let json = matches!(action, Action::Status { json: true });
    let mut code = ExitCode::SUCCESS;
    // `status --json` on a cluster prints one document per server, in shard order.
    for (shard, host, port) in &servers {
        if sharded && !json {
            say!(
                "ClickHouse shard {} of {} ({host}:{port}):",
                shard + 1,
                shards.len()
            );
        }
        let options = alphapt_storage::native::Options::from_config_at(config, true, host, *port);
        code = run_on(config, &action, &common, retention_days, options)?;
    }
    if let Action::Up {
        cluster: Some(name),
        ..
    } = &action
    {
        for (_, host, port) in &servers {
            let options =
                alphapt_storage::native::Options::from_config_at(config, true, host, *port);
            let created = migrate::cluster::create_distributed(&options, name)
                .with_context(|| format!("migrate up --cluster {name}"))?;
            say!(
                "distributed on {host}:{port}: {} over cluster {name}",
                created.join(", ")
            );
        }
    }
    Ok(code)
}

/// One `migrate` action against one ClickHouse server (and the PostgreSQL database).
fn run_on(
    config: &Config,
    action: &Action,
    common: &Common,
    retention_days: u32,
    clickhouse: alphapt_storage::native::Options,
) -> anyhow::Result<ExitCode> {
    if matches!(action, Action::Down { to: 0 }) && !config.clickhouse.shards.is_empty() {
        // The Distributed tables read the local ones: they go first.
        let dropped = migrate::cluster::drop_distributed(&clickhouse).context("migrate down")?;
        if !dropped.is_empty() {
            say!("dropped  {}", dropped.join(", "));
        }
    }
    let settings = migrate::Settings {
        clickhouse,
        postgres_url: config.postgres.url.clone(),
        postgres_tls: config.postgres.tls_settings(),
        dir: common.dir.clone(),
        retention_days,
        lock_key: migrate::LOCK_KEY,
        lock_wait: Duration::from_secs(common.lock_wait_s),
        replicated: config.clickhouse.replicas().iter().any(|r| r.len() > 1),
    };
    match *action {
        Action::Up {
            to, allow_drift, ..
        } => {
            let ran = migrate::up(&settings, to, allow_drift).context("migrate up")?;
            if ran.is_empty() {
                say!("Nothing to apply: both databases are up to date.");
            }
            for r in &ran {
                say!(
                    "applied  {:<10} {} ({} ms)",
                    r.target.name(),
                    r.file,
                    r.duration_ms
                );
            }
        }
        Action::Down { to } => {
            let ran = migrate::down(&settings, to).context("migrate down")?;
            if ran.is_empty() {
                say!("Nothing to revert above version {to}.");
            }
            for r in &ran {
                say!(
                    "reverted {:<10} {} ({} ms)",
                    r.target.name(),
                    r.file,
                    r.duration_ms
                );
            }
        }
        Action::Grants { ref user } => return grants(config, user),
        Action::Status { json } => {
            let status = migrate::status(&settings).context("migrate status")?;
            if json {
                say!("{}", serde_json::to_string_pretty(&status.to_json())?);
            } else {
                say!(raw table(&status));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `migrate grants`: the statements for `user`, for the configured databases.
fn grants(config: &Config, user: &str) -> anyhow::Result<ExitCode> {
    use alphapt_storage::migrate::grants;
    anyhow::ensure!(
        grants::is_plain_identifier(user),
        "--user {user:?} is not a plain name; use letters, digits and _ (not first a digit), at most 63 bytes"
    );
    let database = &config.clickhouse.database;
    anyhow::ensure!(
        grants::is_plain_identifier(database),
        "clickhouse.database {database:?} is not a plain name the statements can hold; quote it by hand"
    );
    let pg: postgres::Config = config
        .postgres
        .url
        .parse()
        .context("postgres.url is not a connection URL")?;
    let pg_database = pg.get_dbname().or(pg.get_user()).unwrap_or("postgres");
    anyhow::ensure!(
        grants::is_plain_identifier(pg_database),
        "the PostgreSQL database {pg_database:?} is not a plain name the statements can hold; quote it by hand"
    );
    say!(raw grants::text(user, database, pg_database));
    Ok(ExitCode::SUCCESS)
}

/// The status table: one line per version and database, then a summary line.
fn table(status: &Status) -> String {
    let mut out = format!(
        "{:<10} {:>7}  {:<8} {:<40} {:<20} {:>8}\n",
        "database", "version", "state", "file", "applied at (UTC)", "ms"
    );
    for target in &status.targets {
        for e in &target.entries {
            let state = match e.state {
                State::Applied => "applied",
                State::Pending => "pending",
                State::Drift => "DRIFT",
                State::Missing => "MISSING",
            };
            let (at, ms) = e
                .applied
                .as_ref()
                .map_or((String::new(), String::new()), |a| {
                    (format_utc(a.applied_at), a.duration_ms.to_string())
                });
            let file = if e.file.is_empty() {
                format!("({})", e.name)
            } else {
                e.file.clone()
            };
            out.push_str(&format!(
                "{:<10} {:>7}  {:<8} {:<40} {:<20} {:>8}\n",
                target.target.name(),
                format!("{:03}", e.version),
                state,
                file,
                at,
                ms
            ));
        }
    }
    let json = status.to_json();
    out.push_str(&format!(
        "{} applied, {} pending, {} drifted: {}\n",
        json["total_applied"],
        json["pending_count"],
        json["drift_count"],
        if status.up_to_date() {
            "up to date"
        } else {
            "run `alphapt-storage migrate up`"
        }
    ));
    out
}

/// `YYYY-MM-DD HH:MM:SS` for Unix seconds (UTC), by the civil-from-days algorithm of
/// Howard Hinnant's `chrono`-compatible date library.
fn format_utc(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_matches_known_dates() {
        // The epoch, a leap day, and a time late in a day.
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20");
    }
}
