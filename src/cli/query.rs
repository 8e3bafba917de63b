//! `alphapt-storage query ticks|ohlc`: recent ticks and finished bars of some
//! instruments ([`alphapt_storage::query`]).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use alphapt_storage::config::Config;
use alphapt_storage::native::Connection;
use alphapt_storage::quality::parse_tokens;
use alphapt_storage::query::{self, Format, TIER_CLICKHOUSE};
use alphapt_storage::runtime::clock::now_ms;

/// What `query` reads.
#[derive(Subcommand, Debug)]
pub enum What {
    /// The newest ticks of each instrument, newest first.
    Ticks {
        /// Instrument tokens, comma-separated.
        #[arg(long, value_name = "A,B")]
        tokens: String,
        /// Ticks with an exchange time in the last M minutes.
        #[arg(
            long,
            default_value = "5",
            value_name = "M",
            allow_hyphen_values = true
        )]
        minutes: String,
        /// At most L ticks per instrument.
        #[arg(
            long,
            default_value = "20",
            value_name = "L",
            allow_hyphen_values = true
        )]
        limit: String,
        #[command(flatten)]
        output: Output,
    },
    /// Finished bars of each instrument, oldest first.
    Ohlc {
        /// Instrument tokens, comma-separated.
        #[arg(long, value_name = "A,B")]
        tokens: String,
        /// Bar length: 1m, 5m, 15m, 1h or 1d.
        #[arg(long, default_value = "1m", value_name = "TF")]
        timeframe: String,
        /// The last L periods (one without ticks has no bar).
        #[arg(
            long,
            default_value = "20",
            value_name = "L",
            allow_hyphen_values = true
        )]
        limit: String,
        #[command(flatten)]
        output: Output,
    },
}

/// The output flag both share.
#[derive(Args, Debug)]
pub struct Output {
    /// table, json or csv.
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: String,
}

/// Checks the flags, reads, prints; exit 1 when no instrument asked for has data.
pub fn run(config: &Config, what: What) -> anyhow::Result<ExitCode> {
    let (tokens, format) = match &what {
        What::Ticks { tokens, output, .. } | What::Ohlc { tokens, output, .. } => (
            parse_tokens(tokens).map_err(anyhow::Error::msg)?,
            output
                .format
                .parse::<Format>()
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let now = now_ms();
    let (text, found): (String, Vec<u32>) = match &what {
        What::Ticks { minutes, limit, .. } => {
            let minutes = query::parse_minutes(minutes, config.clickhouse.retention_days)
                .map_err(anyhow::Error::msg)?;
            let limit = query::parse_limit(limit).map_err(anyhow::Error::msg)?;
            let rows = query::ticks(&mut connect(config)?, &tokens, minutes, limit, now)
                .context("reading ticks from ClickHouse")?;
            let found = rows.iter().map(|r| r.instrument_token).collect();
            (query::render_ticks(&rows, TIER_CLICKHOUSE, format), found)
        }
        What::Ohlc {
            timeframe, limit, ..
        } => {
            let timeframe = query::parse_timeframe(timeframe).map_err(anyhow::Error::msg)?;
            let limit = query::parse_limit(limit).map_err(anyhow::Error::msg)?;
            let bars = query::bars(
                &mut connect(config)?,
                &tokens,
                timeframe,
                limit,
                now.div_euclid(1000),
            )
            .context("reading bars from ClickHouse")?;
            let found = bars.iter().map(|b| b.instrument_token).collect();
            (
                query::render_bars(&bars, timeframe, TIER_CLICKHOUSE, format),
                found,
            )
        }
    };
    let missing: Vec<String> = tokens
        .iter()
        .filter(|t| !found.contains(t))
        .map(u32::to_string)
        .collect();
    if missing.len() == tokens.len() {
        anyhow::bail!(
            "no data for token(s) {} in that window: check the tokens (instrument_token values), or widen --minutes / --limit",
            missing.join(",")
        );
    }
    say!(raw text);
    if !missing.is_empty() {
        eprintln!(
            "alphapt-storage: no data for token(s) {} in that window",
            missing.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn connect(config: &Config) -> anyhow::Result<Connection> {
    Connection::connect(&super::clickhouse_options(config, true)).with_context(|| {
        format!(
            "connecting to ClickHouse at {}:{} (is it up? `alphapt-storage health`)",
            config.clickhouse.host, config.clickhouse.port
        )
    })
}
