//! Subcommands. Each handler loads the config the same way (file ← environment ←
//! `--set`), does its job, and returns the process exit status.

/// Command output on stdout. Like `println!` (or `print!` with `raw`), but a closed
/// pipe (`| head`, a parent gone) ends the report quietly instead of panicking: the
/// command's work is done, only the rest of its report goes unread.
macro_rules! say {
    (raw $text:expr) => {{
        use std::io::Write as _;
        let _ = std::io::stdout().lock().write_all($text.as_bytes());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod feed;
mod health;
mod migrate;
mod partitions;
mod quality;
mod query;
mod run;
mod spill;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use alphapt_storage::config::Config;
use alphapt_storage::native;

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(
    name = "alphapt-storage",
    version,
    about = "Market ticks and signals from NATS into ClickHouse"
)]
pub struct Args {
    /// TOML config file (tuning/default.toml is the reference of every key).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one key, e.g. `--set ingest.shards=2` (repeatable; wins over file and env).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the effective config (secrets as ***) and exit.
    #[arg(long, global = true)]
    print_config: bool,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check ClickHouse, NATS, Redis and PostgreSQL; exit 0 healthy, 1 degraded, 2 down.
    Health {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the appliance: NATS (or the built-in synthetic feed) into ClickHouse.
    Run(run::RunArgs),
    /// Schema migrations for ClickHouse and PostgreSQL: up, status, down.
    Migrate {
        /// up, status or down.
        #[command(subcommand)]
        action: migrate::Action,
        /// Flags all actions share.
        #[command(flatten)]
        common: migrate::Common,
    },
    /// Publish synthetic ticks to NATS (load generator); ensures the ticks stream first.
    Feed(feed::FeedArgs),
    /// The quality report of the ticks received lately: scores, completeness, flags,
    /// rejects, the worst instruments (from ClickHouse).
    Quality(quality::QualityArgs),
    /// Recent ticks or finished bars of some instruments: table, JSON or CSV.
    Query {
        /// ticks or ohlc.
        #[command(subcommand)]
        what: query::What,
    },
    /// The nats-server subject mapping that spreads instruments over N partitions, and
    /// the partition of given tokens.
    Partitions(partitions::PartitionsArgs),
    /// Read-only views of the spill journals under `spill.dir`: inspect, verify.
    Spill {
        /// inspect or verify.
        #[command(subcommand)]
        action: spill::Action,
    },
}

impl Args {
    /// Parses the process's arguments. clap keeps only the subcommand's occurrences of
    /// a global `Vec` flag when it appears on both sides of the subcommand, so
    /// `--set a=1 run --set b=2` would silently drop `a=1`; every `--set` is therefore
    /// collected again from the raw arguments, in command-line order.
    pub fn parse_all() -> Args {
        let mut args = Args::parse();
        args.set = set_values(std::env::args());
        args
    }
}

/// Every `--set` value in `raw`, in order (after a successful clap parse, so each
/// `--set` has a value). Stops at `--`, after which nothing is a flag.
fn set_values(raw: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut values = Vec::new();
    let mut raw = raw.into_iter();
    while let Some(arg) = raw.next() {
        if arg == "--" {
            break;
        }
        if arg == "--set" {
            values.extend(raw.next());
        } else if let Some(value) = arg.strip_prefix("--set=") {
            values.push(value.to_string());
        }
    }
    values
}

/// Logs go to stderr, filtered by `RUST_LOG` or else `log.level` (validated with the
/// config; a bad `RUST_LOG` is named and `log.level` used). Text gets colours only on a
/// terminal: a log file or journald gets plain `key=value` text that grep finds. JSON
/// is one object a line with the event's fields at the top level.
fn init_logging(log: &alphapt_storage::config::LogConfig) {
    use alphapt_storage::config::LogFormat;
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let (filter, bad_env) = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => match EnvFilter::builder().parse(&env) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(&log.level), Some(format!("{env:?}: {e}"))),
        },
        _ => (EnvFilter::new(&log.level), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| ScrubbedStderr)
        .with_target(false);
    match log.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    if let Some(bad) = bad_env {
        tracing::warn!(level = %log.level, "RUST_LOG {bad}; using log.level instead");
    }
}

/// Standard error through the secret scrubber: each log line is written whole, with
/// any remembered secret shown as `***` (see `config::scrub`). A line with nothing to
/// hide is written as it came, without a copy.
struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        match alphapt_storage::config::scrub(&text) {
            std::borrow::Cow::Borrowed(_) => std::io::stderr().write_all(buf)?,
            std::borrow::Cow::Owned(scrubbed) => {
                std::io::stderr().write_all(scrubbed.as_bytes())?
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Loads the layered config.
fn load_config(args: &Args) -> anyhow::Result<Config> {
    let env = |name: &str| std::env::var(name).ok();
    Config::load(args.config.as_deref(), &env, &args.set).context("invalid configuration")
}

/// ClickHouse connection options from the config.
pub fn clickhouse_options(config: &Config, with_database: bool) -> native::Options {
    native::Options::from_config(config, with_database)
}

/// Runs the chosen subcommand.
pub fn dispatch(args: Args) -> anyhow::Result<ExitCode> {
    let config = load_config(&args)?;
    alphapt_storage::config::remember(config.secrets());
    if config.nats.partitions > 0 {
        // Before any INSERT: the query ids of this process name its partitions.
        alphapt_storage::durable::stored::serve_partitions(&config.nats.partition_ids);
    }
    init_logging(&config.log);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if args.print_config {
        say!(raw config.to_toml_redacted());
        return Ok(ExitCode::SUCCESS);
    }
    match args.command {
        Command::Health { json } => health::run(&config, json),
        Command::Run(args) => run::run(&config, &args),
        Command::Migrate { action, common } => migrate::run(&config, action, common),
        Command::Feed(feed_args) => feed::run(&config, &feed_args),
        Command::Spill { action } => spill::run(&config, action),
        Command::Partitions(args) => partitions::run(&config, &args),
        Command::Quality(args) => quality::run(&config, &args),
        Command::Query { what } => query::run(&config, what),
    }
}

#[cfg(test)]
mod tests {
    use super::set_values;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn set_values_come_from_both_sides_of_the_subcommand_in_order() {
        let raw = strings(&[
            "alphapt-storage",
            "--set",
            "a=1",
            "run",
            "--set=b=2",
            "--count",
            "5",
            "--set",
            "a=3",
        ]);
        assert_eq!(set_values(raw), strings(&["a=1", "b=2", "a=3"]));
        assert_eq!(
            set_values(strings(&["x", "run", "--", "--set", "a=1"])),
            Vec::<String>::new()
        );
    }
}
