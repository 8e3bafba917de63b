//! `alphapt-storage quality [--json] [--since 1m|1h|1d] [--tokens A,B]`: the quality
//! report of the ticks received in the last window, from ClickHouse
//! ([`alphapt_storage::quality`]).

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use alphapt_storage::config::Config;
use alphapt_storage::native::Connection;
use alphapt_storage::quality::{self, Window};
use alphapt_storage::runtime::clock::now_ms;

/// `quality`'s flags.
#[derive(Args, Debug)]
pub struct QualityArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The window: ticks received this long ago until now (`30s`, `1m`, `1h`, `7d`).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    since: String,
    /// Only these instrument tokens, comma-separated.
    #[arg(long, value_name = "A,B")]
    tokens: Option<String>,
}

/// Checks the flags, reads the report, prints it.
pub fn run(config: &Config, args: &QualityArgs) -> anyhow::Result<ExitCode> {
    let since_s = quality::parse_since(&args.since).map_err(anyhow::Error::msg)?;
    let tokens = match &args.tokens {
        Some(text) => quality::parse_tokens(text).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let until_s = now_ms().div_euclid(1000) + 1;
    let window = Window {
        from_s: until_s - since_s as i64,
        until_s,
        tokens,
        tick_subject_prefix: quality::subject_prefix(&config.nats.subject_ticks),
        distributed: !config.clickhouse.shards.is_empty(),
    };
    let options = super::clickhouse_options(config, true);
    let mut conn = Connection::connect(&options).with_context(|| {
        format!(
            "connecting to ClickHouse at {}:{} for the quality report (is it up? `alphapt-storage health`)",
            options.host, options.port
        )
    })?;
    let report = quality::report(&mut conn, &window).context(
        "reading the quality report from ClickHouse (run `alphapt-storage migrate up` if a table is missing)",
    )?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        say!(raw report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
