//! `alphapt-storage query ticks|ohlc`: recent ticks and bars of some instruments,
//! Redis first, ClickHouse for the rest ([`alphapt_storage::query`]).
//!
//! Stderr, besides errors: one line when Redis cannot be reached or fails
//! (`Redis unreachable (…); ClickHouse answered everything`), else, when Redis was
//! asked, the hit rate (`cache: H of N instruments from Redis (P%)`) after the answer.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use alphapt_storage::cache::redis::Link;
use alphapt_storage::cache::Keys;
use alphapt_storage::config::Config;
use alphapt_storage::native::Connection;
use alphapt_storage::ohlc::Timeframe;
use alphapt_storage::quality::parse_tokens;
use alphapt_storage::query::{self, BarRow, BarWindow, CacheCount, Format, TickRow, Tier};
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
    /// Bars of each instrument, oldest first: finished ones, then the current one
    /// (1m, 5m, 15m, from Redis).
    Ohlc {
        /// Instrument tokens, comma-separated.
        #[arg(long, value_name = "A,B")]
        tokens: String,
        /// Bar length: 1m, 5m, 15m, 1h or 1d.
        #[arg(long, default_value = "1m", value_name = "TF")]
        timeframe: String,
        /// The last L periods, the current one included (one without ticks has no bar).
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

/// Checks the flags, reads, prints; an error when no instrument asked for has data.
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
    let (text, found, count): (String, Vec<u32>, Option<CacheCount>) = match &what {
        What::Ticks { minutes, limit, .. } => {
            let minutes = query::parse_minutes(minutes, config.clickhouse.retention_days)
                .map_err(anyhow::Error::msg)?;
            let limit = query::parse_limit(limit).map_err(anyhow::Error::msg)?;
            let (rows, count) = ticks(config, &tokens, minutes, limit, now)?;
            let found = rows.iter().map(|r| r.instrument_token).collect();
            (query::render_ticks(&rows, format), found, count)
        }
        What::Ohlc {
            timeframe, limit, ..
        } => {
            let timeframe = query::parse_timeframe(timeframe).map_err(anyhow::Error::msg)?;
            let limit = query::parse_limit(limit).map_err(anyhow::Error::msg)?;
            let window = BarWindow::new(timeframe, limit, now.div_euclid(1000));
            let (rows, count) = ohlc(config, &tokens, timeframe, &window)?;
            let found = rows.iter().map(|r| r.bar.instrument_token).collect();
            (query::render_bars(&rows, timeframe, format), found, count)
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
    if let Some(count) = count {
        eprintln!("alphapt-storage: {}", count.line());
    }
    Ok(ExitCode::SUCCESS)
}

/// Ticks: Redis answers the instruments whose history covers the window, one
/// ClickHouse query the rest (no ClickHouse connection when none is left).
fn ticks(
    config: &Config,
    tokens: &[u32],
    minutes: u64,
    limit: u64,
    now_ms: i64,
) -> anyhow::Result<(Vec<TickRow>, Option<CacheCount>)> {
    let from_s = query::window_from_s(now_ms, minutes);
    let mut answers: Vec<Option<Vec<TickRow>>> = vec![None; tokens.len()];
    let mut count = None;
    if let Some(mut redis) = Redis::open(config) {
        let asked = redis.by_node(tokens, |conn, keys, some| {
            query::redis_ticks(conn, keys, some, from_s, limit)
        });
        match asked {
            Ok(got) => {
                for (at, answer) in got {
                    answers[at] = answer;
                }
                let hits = answers.iter().filter(|a| a.is_some()).count() as u64;
                count = Some(redis.record(tokens.len() as u64, hits));
            }
            Err(error) => redis_failed(&error.to_string()),
        }
    }
    let rest: Vec<u32> = tokens
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.is_none())
        .map(|(&token, _)| token)
        .collect();
    let mut rows: Vec<TickRow> = answers.into_iter().flatten().flatten().collect();
    if !rest.is_empty() {
        let distributed = !config.clickhouse.shards.is_empty();
        let more = query::ticks(
            &mut connect(config)?,
            &rest,
            minutes,
            limit,
            now_ms,
            distributed,
        )
        .context("reading ticks from ClickHouse")?;
        rows.extend(more);
        // Stable: each instrument's rows stay newest first, instruments ascending.
        rows.sort_by_key(|r| r.instrument_token);
    }
    Ok((rows, count))
}

/// Bars: finished ones from ClickHouse, current ones (1m, 5m, 15m) from Redis.
fn ohlc(
    config: &Config,
    tokens: &[u32],
    timeframe: Timeframe,
    window: &BarWindow,
) -> anyhow::Result<(Vec<BarRow>, Option<CacheCount>)> {
    // 1h and 1d bars are not cached: Redis is not asked.
    let mut redis = query::cached(timeframe)
        .then(|| Redis::open(config))
        .flatten();
    let mut current = Vec::new();
    if let Some(r) = redis.as_mut() {
        match r.by_node(tokens, |conn, keys, some| {
            // One list of bars per group; `by_node` hands them back whole.
            query::redis_bars(conn, keys, some, timeframe).map(|bars| vec![bars])
        }) {
            Ok(groups) => current = groups.into_iter().flat_map(|(_, bars)| bars).collect(),
            Err(error) => {
                redis_failed(&error.to_string());
                redis = None;
            }
        }
    }
    let distributed = !config.clickhouse.shards.is_empty();
    let finished = query::bars(
        &mut connect(config)?,
        tokens,
        timeframe,
        window,
        distributed,
    )
    .context("reading bars from ClickHouse")?;
    let rows = query::merge_bars(finished, &current, window);
    let count = redis.map(|mut r| {
        // At most one current bar per instrument: its rows from Redis are its hits.
        let hits = rows.iter().filter(|row| row.tier == Tier::Redis).count();
        r.record(tokens.len() as u64, hits as u64)
    });
    Ok((rows, count))
}

/// The Redis tier of one run: the appliance's key scheme and a connection (to each
/// master of a Redis Cluster, as its slots need).
struct Redis {
    /// Key names, from `[redis]`.
    keys: Keys,
    /// Opened with `redis.timeout_ms` for connect, read and write.
    link: Link,
}

impl Redis {
    /// `None` when `redis.enabled` is off (said nothing) or Redis cannot be reached
    /// (said in one line).
    fn open(config: &Config) -> Option<Redis> {
        if !config.redis.enabled {
            return None;
        }
        let timeout = Duration::from_millis(config.redis.timeout_ms);
        match Link::connect(
            &config.redis.url,
            config.redis.password.expose(),
            &config.redis.tls_settings(),
            timeout,
            config.redis.cluster,
            &[],
        ) {
            Ok(link) => Some(Redis {
                keys: Keys::from_config(&config.redis),
                link,
            }),
            Err(error) => {
                redis_failed(&error);
                None
            }
        }
    }

    /// Runs `ask` once per connection, on the tokens whose keys it serves (all of
    /// them for one server; a cluster's instrument keys share a slot through
    /// `redis.hash_tags`). Each answer comes back with its token's place in `tokens`
    /// (for `ask` returning one answer per token), or with the group's first place.
    fn by_node<T>(
        &mut self,
        tokens: &[u32],
        mut ask: impl FnMut(&mut redis::Connection, &Keys, &[u32]) -> redis::RedisResult<Vec<T>>,
    ) -> Result<Vec<(usize, T)>, String> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (at, &token) in tokens.iter().enumerate() {
            let node = self
                .link
                .node_of(self.keys.tick(token).as_bytes())
                .ok_or_else(|| format!("no Redis Cluster node owns the slot of token {token}"))?;
            match groups.iter_mut().find(|(n, _)| *n == node) {
                Some((_, places)) => places.push(at),
                None => groups.push((node, vec![at])),
            }
        }
        let mut out = Vec::with_capacity(tokens.len());
        for (node, places) in groups {
            let some: Vec<u32> = places.iter().map(|&at| tokens[at]).collect();
            let conn = self.link.conn(node)?;
            let answers = ask(conn, &self.keys, &some).map_err(|e| e.to_string())?;
            for (i, answer) in answers.into_iter().enumerate() {
                out.push((places.get(i).copied().unwrap_or(places[0]), answer));
            }
        }
        Ok(out)
    }

    /// Adds this run's hits and misses to the stats hash; a failure there costs
    /// only the count, never the answer.
    fn record(&mut self, asked: u64, hits: u64) -> CacheCount {
        let count = CacheCount { asked, hits };
        let key = format!("{}query:stats", self.keys.prefix);
        let written = self.link.conn_for_key(key.as_bytes()).and_then(|conn| {
            query::record_stats(conn, &self.keys, count).map_err(|e| e.to_string())
        });
        if let Err(error) = written {
            tracing::debug!(error = %error, "Query stats not written");
        }
        count
    }
}

/// The one line a Redis failure costs.
fn redis_failed(error: &str) {
    eprintln!("alphapt-storage: Redis unreachable ({error}); ClickHouse answered everything");
}

fn connect(config: &Config) -> anyhow::Result<Connection> {
    let options = super::clickhouse_options(config, true);
    Connection::connect(&options).with_context(|| {
        format!(
            "connecting to ClickHouse at {}:{} (is it up? `alphapt-storage health`)",
            options.host, options.port
        )
    })
}
