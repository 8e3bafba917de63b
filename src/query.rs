//! The query path (`alphapt-storage query ticks|ohlc`): recent ticks and bars of some
//! instruments, as a table, JSON or CSV, every row labelled with the tier that answered
//! it: Redis (the hot cache the appliance keeps, see [`crate::cache`]) first, ClickHouse
//! for the rest.
//!
//! ```text
//!   query ticks, per instrument (one pipeline, one MULTI per instrument):
//!     Redis tick:{t}:history ─ ZREVRANGEBYSCORE +inf from LIMIT 0 L+1, ZRANGE 0 0 WITHSCORES
//!        answers when it returned L entries, or its oldest entry is older than `from`
//!        (the set holds every tick from its oldest entry on, so it covers the window)
//!        a tie at the L-th millisecond: ZRANGEBYSCORE T T, so ties go by stream_seq
//!        └─────────────────────────────────────────────────────► rows, tier redis ──┐
//!     the instruments Redis did not answer (all of them when Redis is away):       │
//!     ClickHouse market_ticks: newest first, LIMIT L BY instrument (one query;     │
//!        no connection when Redis answered every instrument) ─► rows, tier clickhouse ┤
//!                                                                                  │
//!   query ohlc:                                                                    │
//!     ClickHouse ohlc_1m (-Merge, via `ohlc::bars`) ─► roll-up ─► finished bars ─┐ │
//!     Redis ohlc:{t}:{1m,5m,15m} (HGETALL; 1h and 1d are not cached) ─► current  │ │
//!        bar, kept when it starts at or after the last finished bar's end and    │ │
//!        inside the window ─► `merge_bars`: per instrument, finished then current ┴─┴─► table | json | csv
//!
//!   Redis consulted: HINCRBY {prefix}query:stats hits/misses (one per instrument asked),
//!   stderr `cache: H of N instruments from Redis (P%)`
//! ```
//!
//! A Redis that cannot be reached or answers with an error is not a failed query: the
//! caller lets ClickHouse answer everything and says so in one line. The only write is
//! the pair of `HINCRBY` on the stats hash; ClickHouse is only read.
//!
//! Both tiers agree row for row: the history member carries the columns
//! `market_ticks` stores (the score as the `Float32` ClickHouse keeps), the window
//! starts at the same whole second, and ties in time are ordered by stream sequence.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use redis::Value;
use serde_json::{json, Value as Json};

use crate::cache::tick::BAR_LABELS;
use crate::cache::Keys;
use crate::model::json::iso8601_ms;
use crate::native::{self, Connection};
use crate::ohlc::{self, Bar, BarQuery, Timeframe};

/// Longest `--limit`: a query's answer is printed whole.
pub const LIMIT_MAX: u64 = 100_000;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON document.
    Json,
    /// CSV with a header row.
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Format, String> {
        match text {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(format!(
                "--format '{text}' is not a format; use table, json or csv"
            )),
        }
    }
}

/// Which store answered a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The hot cache the appliance writes (`tick:…:history`, `ohlc:…`).
    Redis,
    /// `market_ticks` and `ohlc_1m`.
    ClickHouse,
}

impl Tier {
    /// The label printed in the `tier` column: `redis` or `clickhouse`.
    pub fn label(self) -> &'static str {
        match self {
            Tier::Redis => "redis",
            Tier::ClickHouse => "clickhouse",
        }
    }
}

/// Reads `--limit`: a whole number from 1 to [`LIMIT_MAX`].
pub fn parse_limit(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if (1..=LIMIT_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "--limit '{text}' must be a whole number from 1 to {LIMIT_MAX}"
        )),
    }
}

/// Reads `--minutes` against the retention: older ticks are gone.
pub fn parse_minutes(text: &str, retention_days: u32) -> Result<u64, String> {
    let most = u64::from(retention_days) * 24 * 60;
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 1 && n <= most => Ok(n),
        Ok(n) if n > most => Err(format!(
            "--minutes {n} reaches past the retention of {retention_days} days ({most} minutes): ClickHouse no longer holds those ticks"
        )),
        _ => Err(format!(
            "--minutes '{text}' must be a whole number of minutes from 1 to {most}"
        )),
    }
}

/// Reads `--timeframe`.
pub fn parse_timeframe(text: &str) -> Result<Timeframe, String> {
    text.parse::<Timeframe>()
        .map_err(|e| format!("--timeframe: {e}"))
}

/// One stored tick as the query shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TickRow {
    /// The instrument.
    pub instrument_token: u32,
    /// Exchange time, Unix ms.
    pub timestamp_ms: i64,
    /// Last traded price.
    pub last_price: f64,
    /// Last traded quantity.
    pub last_quantity: u64,
    /// Volume traded today.
    pub volume_traded: u64,
    /// The validator's score (a `Float32` widened, as ClickHouse stores it).
    pub data_quality_score: f64,
    /// The validator's flags.
    pub validation_flags: u64,
    /// JetStream sequence.
    pub stream_seq: u64,
    /// The store that answered this row.
    pub tier: Tier,
}

/// Start of the `query ticks` window, Unix s: `minutes` before `now_ms`, on a whole
/// second (ClickHouse compares the `DateTime` column with it; Redis takes it × 1000).
pub fn window_from_s(now_ms: i64, minutes: u64) -> i64 {
    now_ms.div_euclid(1000) - (minutes * 60) as i64
}

/// Sorts ticks as the query prints them: newest first by (exchange time, stream
/// sequence), the order of the ClickHouse query.
fn sort_newest_first(rows: &mut [TickRow]) {
    rows.sort_by_key(|r| std::cmp::Reverse((r.timestamp_ms, r.stream_seq)));
}

/// The newest `limit` ticks of each of `tokens` with an exchange time in the last
/// `minutes` before `now_ms` (from [`window_from_s`], as Redis is asked), newest first
/// per instrument, instruments in ascending order; from ClickHouse.
/// `distributed`: read `market_ticks_all` (a cluster's shards) instead.
pub fn ticks(
    conn: &mut Connection,
    tokens: &[u32],
    minutes: u64,
    limit: u64,
    now_ms: i64,
    distributed: bool,
) -> Result<Vec<TickRow>, native::Error> {
    let from_s = window_from_s(now_ms, minutes);
    let millis = if conn.server().is_modern() {
        "toUnixTimestamp64Milli(timestamp)"
    } else {
        "toInt64(toUnixTimestamp(timestamp)) * 1000 + timestamp_ms"
    };
    let list: Vec<String> = tokens.iter().map(u32::to_string).collect();
    let result = conn.query(&format!(
        "SELECT instrument_token, {millis} AS ms, last_price, toUInt64(last_quantity) AS q, \
         volume_traded, toFloat64(data_quality_score) AS score, toUInt64(validation_flags) AS flags, stream_seq \
         FROM {table} WHERE instrument_token IN ({}) AND timestamp >= toDateTime({from_s}, 'UTC') \
         ORDER BY instrument_token, ms DESC, stream_seq DESC LIMIT {limit} BY instrument_token",
        list.join(", "),
        table = crate::migrate::cluster::reader_table("market_ticks", distributed),
    ))?;
    let column = |name: &str| result.column(name);
    let (token, ms, price, quantity, volume, score, flags, seq) = (
        column("instrument_token"),
        column("ms"),
        column("last_price"),
        column("q"),
        column("volume_traded"),
        column("score"),
        column("flags"),
        column("stream_seq"),
    );
    Ok((0..token.len())
        .map(|i| TickRow {
            instrument_token: token[i].as_u64().unwrap_or(0) as u32,
            timestamp_ms: ms[i].as_i64().unwrap_or(0),
            last_price: price[i].as_f64().unwrap_or(f64::NAN),
            last_quantity: quantity[i].as_u64().unwrap_or(0),
            volume_traded: volume[i].as_u64().unwrap_or(0),
            data_quality_score: score[i].as_f64().unwrap_or(f64::NAN),
            validation_flags: flags[i].as_u64().unwrap_or(0),
            stream_seq: seq[i].as_u64().unwrap_or(0),
            tier: Tier::ClickHouse,
        })
        .collect())
}

/// One member of `tick:{token}:history`, as `cache::redis` writes it.
#[derive(serde::Deserialize)]
struct HistoryMember {
    timestamp_ms: i64,
    last_price: f64,
    last_quantity: u64,
    volume_traded: u64,
    /// Written from an `f32`; read back as one so the row equals ClickHouse's
    /// `toFloat64(Float32)` (0.9 reads as 0.8999999761581421 in both).
    data_quality_score: f32,
    validation_flags: u64,
    stream_seq: u64,
}

/// The history members of `token` as rows (tier redis), in the order given; `None`
/// when one does not parse (a writer of another format: ClickHouse answers).
fn parse_members(token: u32, members: &[Vec<u8>]) -> Option<Vec<TickRow>> {
    let mut rows = Vec::with_capacity(members.len());
    for member in members {
        let m: HistoryMember = match serde_json::from_slice(member) {
            Ok(m) => m,
            Err(error) => {
                tracing::debug!(token, error = %error, "History member does not parse; ClickHouse answers");
                return None;
            }
        };
        rows.push(TickRow {
            instrument_token: token,
            timestamp_ms: m.timestamp_ms,
            last_price: m.last_price,
            last_quantity: m.last_quantity,
            volume_traded: m.volume_traded,
            data_quality_score: f64::from(m.data_quality_score),
            validation_flags: m.validation_flags,
            stream_seq: m.stream_seq,
            tier: Tier::Redis,
        });
    }
    Some(rows)
}

/// Whether a history answers the window alone: it gave `limit` entries at or after
/// `from_ms`, or its oldest entry is older than `from_ms`. The writer keeps every
/// stored tick from the set's oldest entry on (a gap restarts the set), so in the
/// second case no tick of the window can be missing.
fn covers(returned: usize, limit: u64, oldest_ms: Option<i64>, from_ms: i64) -> bool {
    returned as u64 >= limit || oldest_ms.is_some_and(|oldest| oldest < from_ms)
}

/// What the first read of a history gives once sorted.
#[derive(Debug, PartialEq)]
enum Newest {
    /// The answer: at most `limit` rows, newest first.
    Rows(Vec<TickRow>),
    /// The `limit`-th and the next entry share the millisecond `ms`: Redis ordered
    /// that tie by member text, not by stream sequence, and may have cut it. `above`
    /// holds the rows newer than `ms`; every entry at `ms` is read next.
    Tie {
        /// The tied exchange time, Unix ms.
        ms: i64,
        /// Rows newer than `ms`, newest first.
        above: Vec<TickRow>,
    },
}

/// Sorts the (up to `limit` + 1) rows Redis gave and cuts them to `limit`.
fn newest(mut rows: Vec<TickRow>, limit: u64) -> Newest {
    debug_assert!(limit >= 1, "--limit is at least 1");
    sort_newest_first(&mut rows);
    let limit = limit as usize;
    if rows.len() > limit && rows[limit - 1].timestamp_ms == rows[limit].timestamp_ms {
        let ms = rows[limit].timestamp_ms;
        rows.retain(|r| r.timestamp_ms > ms);
        return Newest::Tie { ms, above: rows };
    }
    rows.truncate(limit);
    Newest::Rows(rows)
}

/// The rows above a tie plus every entry at the tied millisecond, cut to `limit`;
/// `None` when fewer than `limit` remain (the set was restarted in between:
/// ClickHouse answers).
fn with_tie_group(
    mut above: Vec<TickRow>,
    group: Vec<TickRow>,
    limit: u64,
) -> Option<Vec<TickRow>> {
    above.extend(group);
    sort_newest_first(&mut above);
    if (above.len() as u64) < limit {
        return None;
    }
    above.truncate(limit as usize);
    Some(above)
}

/// A Redis reply that is not the shape the command returns.
fn unexpected(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::TypeError, what))
}

/// The score of `ZRANGE key 0 0 WITHSCORES`: RESP2 `[member, score]`, RESP3
/// `[[member, score]]`, or nothing for an empty set.
fn oldest_score(reply: &Value) -> redis::RedisResult<Option<i64>> {
    let Value::Array(items) = reply else {
        return Err(unexpected("ZRANGE WITHSCORES gave no array"));
    };
    let score = match items.as_slice() {
        [] => return Ok(None),
        [Value::Array(pair)] => pair.get(1),
        [_, score] => Some(score),
        _ => None,
    };
    let score: f64 = redis::from_redis_value(
        score.ok_or_else(|| unexpected("ZRANGE WITHSCORES gave no score"))?,
    )?;
    // Scores are exchange times in ms: whole numbers well inside f64's 2^53.
    Ok(Some(score as i64))
}

/// The two replies of one instrument's `MULTI … EXEC`: window members, oldest entry.
fn exec_pair(reply: Value) -> redis::RedisResult<(Vec<Vec<u8>>, Value)> {
    let Value::Array(items) = reply else {
        return Err(unexpected("EXEC gave no array"));
    };
    let [window, oldest]: [Value; 2] = items
        .try_into()
        .map_err(|_| unexpected("EXEC gave other than two replies"))?;
    Ok((redis::from_owned_redis_value(window)?, oldest))
}

/// The newest `limit` ticks at or after `from_s` of each of `tokens` from the Redis
/// histories, one answer per token in `tokens` order: `Some(rows)` (newest first,
/// tier redis; may be empty) when the history answers the window alone, `None` when
/// ClickHouse must. An `Err` is Redis failing as a whole: the caller asks ClickHouse
/// for every token.
pub fn redis_ticks(
    conn: &mut redis::Connection,
    keys: &Keys,
    tokens: &[u32],
    from_s: i64,
    limit: u64,
) -> redis::RedisResult<Vec<Option<Vec<TickRow>>>> {
    let from_ms = from_s * 1000;
    let mut pipe = redis::pipe();
    for &token in tokens {
        // One transaction per instrument: the window and the oldest entry come from
        // one state of the set (a restart between two reads could fake a cover), and
        // each transaction touches one instrument's key (one slot with hash tags).
        let key = keys.history(token);
        pipe.cmd("MULTI").ignore();
        pipe.cmd("ZREVRANGEBYSCORE")
            .arg(&key)
            .arg("+inf")
            .arg(from_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .ignore();
        pipe.cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .ignore();
        pipe.cmd("EXEC");
    }
    let replies: Vec<Value> = pipe.query(conn)?;
    if replies.len() != tokens.len() {
        return Err(unexpected("one EXEC reply per instrument"));
    }
    let mut answers = Vec::with_capacity(tokens.len());
    let mut ties = Vec::new();
    for (&token, reply) in tokens.iter().zip(replies) {
        let (window, oldest) = exec_pair(reply)?;
        let oldest_ms = oldest_score(&oldest)?;
        let answer = parse_members(token, &window)
            .filter(|rows| covers(rows.len(), limit, oldest_ms, from_ms))
            .map(|rows| match newest(rows, limit) {
                Newest::Rows(rows) => rows,
                Newest::Tie { ms, above } => {
                    ties.push((answers.len(), ms));
                    above
                }
            });
        answers.push(answer);
    }
    if !ties.is_empty() {
        read_ties(conn, keys, tokens, limit, &ties, &mut answers)?;
    }
    Ok(answers)
}

/// Completes the answers cut inside a tie: every entry at the tied millisecond, in
/// one pipeline. Not in the first transaction: entries at one millisecond only
/// change when a late tick of that very millisecond arrives, and a restarted set
/// shows as too few rows ([`with_tie_group`]).
fn read_ties(
    conn: &mut redis::Connection,
    keys: &Keys,
    tokens: &[u32],
    limit: u64,
    ties: &[(usize, i64)],
    answers: &mut [Option<Vec<TickRow>>],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for &(index, ms) in ties {
        pipe.cmd("ZRANGEBYSCORE")
            .arg(keys.history(tokens[index]))
            .arg(ms)
            .arg(ms);
    }
    let groups: Vec<Vec<Vec<u8>>> = pipe.query(conn)?;
    if groups.len() != ties.len() {
        return Err(unexpected("one ZRANGEBYSCORE reply per tie"));
    }
    for (&(index, _), group) in ties.iter().zip(groups) {
        let token = tokens[index];
        answers[index] = answers[index].take().and_then(|above| {
            parse_members(token, &group).and_then(|group| with_tie_group(above, group, limit))
        });
    }
    Ok(())
}

/// The periods `query ohlc --limit L` covers: the current, unfinished one and the
/// L − 1 before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarWindow {
    /// Bar length, s.
    pub seconds: i64,
    /// Start of the oldest period, Unix s.
    pub from_s: i64,
    /// Start of the current period, Unix s: finished bars end at or before it.
    pub current_s: i64,
}

impl BarWindow {
    /// The window of `limit` periods of `timeframe` ending with the one `now_s` is in.
    pub fn new(timeframe: Timeframe, limit: u64, now_s: i64) -> BarWindow {
        debug_assert!(limit >= 1, "--limit is at least 1");
        let seconds = timeframe.seconds();
        let current_s = now_s - now_s.rem_euclid(seconds);
        BarWindow {
            seconds,
            from_s: current_s - seconds * (limit as i64 - 1),
            current_s,
        }
    }

    /// Whether a cached bar is shown after an instrument's finished bars ending at
    /// `finished_end_s` (`None`: it has none): it starts at or after that end (so it
    /// is never a second copy of a finished bar) and inside the window.
    fn takes(&self, bar: &Bar, finished_end_s: Option<i64>) -> bool {
        bar.start_s >= self.from_s
            && bar.start_s <= self.current_s
            && finished_end_s.map_or(true, |end_s| bar.start_s >= end_s)
    }
}

/// The finished bars of `timeframe` of each of `tokens` in `window` (a period
/// without ticks has no bar), oldest first per instrument; from ClickHouse.
/// `distributed`: read `ohlc_1m_all` (a cluster's shards) instead.
pub fn bars(
    conn: &mut Connection,
    tokens: &[u32],
    timeframe: Timeframe,
    window: &BarWindow,
    distributed: bool,
) -> Result<Vec<Bar>, ohlc::OhlcError> {
    let query = BarQuery {
        tokens: tokens.to_vec(),
        from_s: window.from_s,
        until_s: window.current_s,
        distributed,
    };
    ohlc::bars(conn, &query, timeframe)
}

/// Whether the appliance keeps current bars of `timeframe` in Redis (1m, 5m, 15m).
pub fn cached(timeframe: Timeframe) -> bool {
    BAR_LABELS.contains(&timeframe.label())
}

/// The bar in `ohlc:{token}:{tf}` as `cache::redis` writes it; `None` when a field is
/// missing or malformed, the bar has no tick, or its length is not `timeframe`'s.
pub fn cached_bar(
    token: u32,
    timeframe: Timeframe,
    fields: &HashMap<String, String>,
) -> Option<Bar> {
    let int = |name: &str| fields.get(name)?.parse::<i64>().ok();
    let uint = |name: &str| fields.get(name)?.parse::<u64>().ok();
    let float = |name: &str| fields.get(name)?.parse::<f64>().ok();
    let start_ms = int("start_ms")?;
    if int("end_ms")? - start_ms != timeframe.seconds() * 1000 {
        return None;
    }
    let tick_count = uint("ticks").filter(|&n| n > 0)?;
    Some(Bar {
        instrument_token: token,
        start_s: start_ms.div_euclid(1000),
        open: float("open")?,
        high: float("high")?,
        low: float("low")?,
        close: float("close")?,
        volume: uint("volume")?,
        turnover: float("turnover")?,
        tick_count,
    })
}

/// The current bars of `timeframe` of `tokens` that Redis holds (one `HGETALL` per
/// instrument, one pipeline); nothing for a timeframe it does not keep.
pub fn redis_bars(
    conn: &mut redis::Connection,
    keys: &Keys,
    tokens: &[u32],
    timeframe: Timeframe,
) -> redis::RedisResult<Vec<Bar>> {
    if !cached(timeframe) {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for &token in tokens {
        pipe.cmd("HGETALL").arg(keys.ohlc(token, timeframe.label()));
    }
    let hashes: Vec<HashMap<String, String>> = pipe.query(conn)?;
    if hashes.len() != tokens.len() {
        return Err(unexpected("one HGETALL reply per instrument"));
    }
    Ok(tokens
        .iter()
        .zip(&hashes)
        .filter_map(|(&token, fields)| cached_bar(token, timeframe, fields))
        .collect())
}

/// One bar as the query shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BarRow {
    /// The bar.
    pub bar: Bar,
    /// The store that answered it.
    pub tier: Tier,
}

/// The finished bars (tier clickhouse) and, after each instrument's, its current
/// bar from Redis when [`BarWindow`] takes it (tier redis); by instrument, then start.
pub fn merge_bars(finished: Vec<Bar>, current: &[Bar], window: &BarWindow) -> Vec<BarRow> {
    let mut finished_end_s: BTreeMap<u32, i64> = BTreeMap::new();
    for bar in &finished {
        let end_s = finished_end_s
            .entry(bar.instrument_token)
            .or_insert(i64::MIN);
        *end_s = (*end_s).max(bar.start_s + window.seconds);
    }
    let mut rows: Vec<BarRow> = finished
        .into_iter()
        .map(|bar| BarRow {
            bar,
            tier: Tier::ClickHouse,
        })
        .collect();
    for bar in current {
        if window.takes(bar, finished_end_s.get(&bar.instrument_token).copied()) {
            rows.push(BarRow {
                bar: *bar,
                tier: Tier::Redis,
            });
        }
    }
    // Stable, and a current bar starts after its instrument's finished ones.
    rows.sort_by_key(|r| (r.bar.instrument_token, r.bar.start_s));
    rows
}

/// How many of the instruments asked Redis answered in one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheCount {
    /// Instruments asked.
    pub asked: u64,
    /// Of those, answered by Redis (ticks: the whole window; ohlc: the current bar).
    pub hits: u64,
}

impl CacheCount {
    /// The stderr line: `cache: 2 of 3 instruments from Redis (67%)`.
    pub fn line(&self) -> String {
        debug_assert!(self.hits <= self.asked, "hits are among the asked");
        // Rounded to the nearest percent; 0 of 0 (never asked) reads 0%.
        let percent = (self.hits * 100 + self.asked / 2)
            .checked_div(self.asked)
            .unwrap_or(0);
        format!(
            "cache: {} of {} instruments from Redis ({percent}%)",
            self.hits, self.asked
        )
    }
}

/// The hash that sums hits and misses over every `query` run: `{prefix}query:stats`.
pub fn stats_key(keys: &Keys) -> String {
    format!("{}query:stats", keys.prefix)
}

/// Adds `count` to [`stats_key`]: `hits` and `misses` (instruments Redis did not
/// answer), so the hit rate is cumulative across runs.
pub fn record_stats(
    conn: &mut redis::Connection,
    keys: &Keys,
    count: CacheCount,
) -> redis::RedisResult<()> {
    let key = stats_key(keys);
    redis::pipe()
        .cmd("HINCRBY")
        .arg(&key)
        .arg("hits")
        .arg(count.hits)
        .ignore()
        .cmd("HINCRBY")
        .arg(&key)
        .arg("misses")
        .arg(count.asked - count.hits)
        .ignore()
        .query(conn)
}

/// Ticks in `format`, each with its tier.
pub fn render_ticks(rows: &[TickRow], format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Json => {
            let ticks: Vec<Json> = rows
                .iter()
                .map(|r| {
                    json!({
                        "instrument_token": r.instrument_token,
                        "timestamp": iso8601_ms(r.timestamp_ms),
                        "last_price": r.last_price,
                        "last_quantity": r.last_quantity,
                        "volume_traded": r.volume_traded,
                        "data_quality_score": r.data_quality_score,
                        "validation_flags": r.validation_flags,
                        "stream_seq": r.stream_seq,
                        "tier": r.tier.label(),
                    })
                })
                .collect();
            out = json!({ "ticks": ticks }).to_string();
            out.push('\n');
        }
        Format::Csv => {
            out.push_str("instrument_token,timestamp,last_price,last_quantity,volume_traded,data_quality_score,validation_flags,stream_seq,tier\n");
            for r in rows {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{}",
                    r.instrument_token,
                    iso8601_ms(r.timestamp_ms),
                    r.last_price,
                    r.last_quantity,
                    r.volume_traded,
                    r.data_quality_score,
                    r.validation_flags,
                    r.stream_seq,
                    r.tier.label()
                );
            }
        }
        Format::Table => {
            let _ = writeln!(
                out,
                "{:>10}  {:<24}  {:>12}  {:>8}  {:>12}  {:>5}  {:>5}  {:>12}  tier",
                "token", "timestamp", "price", "qty", "volume", "score", "flags", "stream_seq"
            );
            for r in rows {
                let _ = writeln!(
                    out,
                    "{:>10}  {:<24}  {:>12.2}  {:>8}  {:>12}  {:>5.2}  {:>5}  {:>12}  {}",
                    r.instrument_token,
                    iso8601_ms(r.timestamp_ms),
                    r.last_price,
                    r.last_quantity,
                    r.volume_traded,
                    r.data_quality_score,
                    r.validation_flags,
                    r.stream_seq,
                    r.tier.label()
                );
            }
        }
    }
    out
}

/// Bars in `format`, each with its tier.
pub fn render_bars(rows: &[BarRow], timeframe: Timeframe, format: Format) -> String {
    let mut out = String::new();
    let tf = timeframe.label();
    match format {
        Format::Json => {
            let bars: Vec<Json> = rows
                .iter()
                .map(|BarRow { bar: b, tier }| {
                    json!({
                        "instrument_token": b.instrument_token,
                        "timeframe": tf,
                        "start": iso8601_ms(b.start_s * 1000),
                        "open": b.open,
                        "high": b.high,
                        "low": b.low,
                        "close": b.close,
                        "volume": b.volume,
                        "vwap": b.vwap(),
                        "tick_count": b.tick_count,
                        "tier": tier.label(),
                    })
                })
                .collect();
            out = json!({ "bars": bars }).to_string();
            out.push('\n');
        }
        Format::Csv => {
            out.push_str(
                "instrument_token,timeframe,start,open,high,low,close,volume,vwap,tick_count,tier\n",
            );
            for BarRow { bar: b, tier } in rows {
                let vwap = b.vwap().map_or_else(String::new, |v| v.to_string());
                let _ = writeln!(
                    out,
                    "{},{tf},{},{},{},{},{},{},{vwap},{},{}",
                    b.instrument_token,
                    iso8601_ms(b.start_s * 1000),
                    b.open,
                    b.high,
                    b.low,
                    b.close,
                    b.volume,
                    b.tick_count,
                    tier.label()
                );
            }
        }
        Format::Table => {
            let _ = writeln!(
                out,
                "{:>10}  {:>3}  {:<24}  {:>12}  {:>12}  {:>12}  {:>12}  {:>12}  {:>6}  tier",
                "token", "tf", "start", "open", "high", "low", "close", "volume", "ticks"
            );
            for BarRow { bar: b, tier } in rows {
                let _ = writeln!(
                    out,
                    "{:>10}  {tf:>3}  {:<24}  {:>12.2}  {:>12.2}  {:>12.2}  {:>12.2}  {:>12}  {:>6}  {}",
                    b.instrument_token,
                    iso8601_ms(b.start_s * 1000),
                    b.open,
                    b.high,
                    b.low,
                    b.close,
                    b.volume,
                    b.tick_count,
                    tier.label()
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Flag parsing, rendering and the Redis tier's decisions as pure functions (the
    //! tie rule against a brute-force oracle); the SQL and the Redis commands run on
    //! the real servers in `tests/query.rs`.
    use super::*;
    use crate::model::synthetic::SplitMix64;

    fn row(token: u32, timestamp_ms: i64, stream_seq: u64, tier: Tier) -> TickRow {
        TickRow {
            instrument_token: token,
            timestamp_ms,
            last_price: 101.5,
            last_quantity: 3,
            volume_traded: 900,
            data_quality_score: 1.0,
            validation_flags: 0,
            stream_seq,
            tier,
        }
    }

    /// A history member exactly as `cache::redis` formats it.
    fn member(r: &TickRow) -> Vec<u8> {
        format!(
            "{{\"timestamp_ms\":{},\"last_price\":{},\"last_quantity\":{},\"volume_traded\":{},\"data_quality_score\":{},\"validation_flags\":{},\"stream_seq\":{}}}",
            r.timestamp_ms,
            r.last_price,
            r.last_quantity,
            r.volume_traded,
            r.data_quality_score as f32,
            r.validation_flags,
            r.stream_seq
        )
        .into_bytes()
    }

    fn bar(token: u32, start_s: i64) -> Bar {
        Bar {
            instrument_token: token,
            start_s,
            open: 10.0,
            high: 11.0,
            low: 9.0,
            close: 10.5,
            volume: 4,
            turnover: 41.0,
            tick_count: 2,
        }
    }

    #[test]
    fn bad_flags_are_refused_with_the_fix() {
        assert_eq!(parse_limit("10"), Ok(10));
        for bad in ["0", "-1", "x", "100001", ""] {
            assert!(parse_limit(bad).unwrap_err().contains("--limit"), "{bad}");
        }
        assert_eq!(parse_minutes("5", 90), Ok(5));
        assert!(parse_minutes("129601", 90)
            .unwrap_err()
            .contains("retention of 90 days"));
        assert!(parse_minutes("0", 90).unwrap_err().contains("--minutes"));
        assert!(parse_minutes("-3", 90).unwrap_err().contains("--minutes"));
        assert_eq!(parse_timeframe("15m"), Ok(Timeframe::M15));
        assert!(parse_timeframe("2m")
            .unwrap_err()
            .contains("use 1m, 5m, 15m, 1h or 1d"));
        assert!("xml"
            .parse::<Format>()
            .unwrap_err()
            .contains("table, json or csv"));
    }

    #[test]
    fn every_format_names_each_rows_tier() {
        let rows = [
            row(7, 1_764_000_000_123, 42, Tier::Redis),
            row(8, 1_764_000_000_123, 43, Tier::ClickHouse),
        ];
        let json: Json = serde_json::from_str(&render_ticks(&rows, Format::Json)).unwrap();
        assert_eq!(json["ticks"][0]["timestamp"], "2025-11-24T16:00:00.123Z");
        assert_eq!(json["ticks"][0]["tier"], "redis");
        assert_eq!(json["ticks"][1]["tier"], "clickhouse");
        let csv = render_ticks(&rows, Format::Csv);
        assert!(csv.lines().next().unwrap().ends_with(",tier"));
        assert_eq!(
            csv.lines().nth(1),
            Some("7,2025-11-24T16:00:00.123Z,101.5,3,900,1,0,42,redis")
        );
        assert!(csv.lines().nth(2).unwrap().ends_with(",43,clickhouse"));
        let table = render_ticks(&rows, Format::Table);
        assert!(table.lines().nth(1).unwrap().ends_with("  redis"));
        assert!(table.lines().nth(2).unwrap().ends_with("  clickhouse"));

        let bars = [
            BarRow {
                bar: bar(7, 1_764_000_000),
                tier: Tier::ClickHouse,
            },
            BarRow {
                bar: bar(7, 1_764_000_060),
                tier: Tier::Redis,
            },
        ];
        let json: Json =
            serde_json::from_str(&render_bars(&bars, Timeframe::M1, Format::Json)).unwrap();
        assert_eq!(json["bars"][0]["tier"], "clickhouse");
        assert_eq!(json["bars"][1]["tier"], "redis");
        assert_eq!(json["bars"][1]["start"], "2025-11-24T16:01:00.000Z");
        let csv = render_bars(&bars, Timeframe::M1, Format::Csv);
        assert!(csv.lines().nth(1).unwrap().ends_with(",2,clickhouse"));
        assert!(csv.lines().nth(2).unwrap().ends_with(",2,redis"));
        let table = render_bars(&bars, Timeframe::M1, Format::Table);
        assert!(table.lines().nth(2).unwrap().ends_with("  redis"));
    }

    #[test]
    fn a_history_member_reads_as_clickhouse_shows_the_row() {
        // The writer's format, a Float32 score of 0.9 and a hard flag.
        let mut want = row(5, 1_700_000_000_123, 77, Tier::Redis);
        want.data_quality_score = f64::from(0.9f32);
        want.validation_flags = 2;
        want.last_price = 1234.05;
        let text = member(&want);
        assert!(
            String::from_utf8_lossy(&text).contains("\"data_quality_score\":0.9,"),
            "the writer prints the f32"
        );
        assert_eq!(parse_members(5, &[text]), Some(vec![want]));
        assert_eq!(parse_members(5, &[b"{\"timestamp_ms\":1}".to_vec()]), None);
        assert_eq!(parse_members(5, &[b"not json".to_vec()]), None);
        assert_eq!(parse_members(5, &[]), Some(Vec::new()));
    }

    #[test]
    fn a_history_answers_with_l_entries_or_an_oldest_entry_before_the_window() {
        let from = 1_000_000;
        assert!(covers(5, 5, Some(from + 10), from), "L entries");
        assert!(covers(6, 5, None, from), "L + 1 entries");
        assert!(
            covers(2, 5, Some(from - 1), from),
            "the set reaches past the start"
        );
        assert!(
            covers(0, 5, Some(from - 1), from),
            "quiet instrument, nothing in the window"
        );
        assert!(
            !covers(2, 5, Some(from), from),
            "oldest at the start: trimmed ties possible"
        );
        assert!(
            !covers(2, 5, Some(from + 1), from),
            "the set starts inside the window"
        );
        assert!(!covers(0, 5, None, from), "no set");
    }

    #[test]
    fn the_oldest_score_reads_in_resp2_and_resp3_shapes() {
        let member = Value::BulkString(b"{}".to_vec());
        let resp2 = Value::Array(vec![
            member.clone(),
            Value::BulkString(b"1700000000123".to_vec()),
        ]);
        let resp3 = Value::Array(vec![Value::Array(vec![
            member,
            Value::Double(1_700_000_000_123.0),
        ])]);
        assert_eq!(oldest_score(&resp2).unwrap(), Some(1_700_000_000_123));
        assert_eq!(oldest_score(&resp3).unwrap(), Some(1_700_000_000_123));
        assert_eq!(oldest_score(&Value::Array(Vec::new())).unwrap(), None);
        assert!(oldest_score(&Value::Nil).is_err());
    }

    /// What Redis hands back for the window: entries at or after `from_ms` by score
    /// descending, ties by member text descending (`ZREVRANGEBYSCORE`), `count` at most.
    fn redis_window(set: &[TickRow], from_ms: i64, count: usize) -> Vec<Vec<u8>> {
        let mut entries: Vec<(i64, Vec<u8>)> = set
            .iter()
            .filter(|r| r.timestamp_ms >= from_ms)
            .map(|r| (r.timestamp_ms, member(r)))
            .collect();
        entries.sort_by(|a, b| b.cmp(a));
        entries.into_iter().take(count).map(|(_, m)| m).collect()
    }

    #[test]
    fn ties_at_the_limit_go_by_stream_sequence_like_clickhouse() {
        // Random histories crowded into few milliseconds; the two Redis reads (window
        // with L + 1, then the tied millisecond) must give exactly what ClickHouse's
        // ORDER BY ms DESC, stream_seq DESC LIMIT L gives.
        let mut rng = SplitMix64::new(0x71e5);
        for round in 0..2_000 {
            let len = 1 + rng.below(30) as usize;
            let mut set: Vec<TickRow> = (0..len)
                .map(|i| {
                    let mut r = row(9, 1_000 + rng.below(8) as i64, 0, Tier::Redis);
                    // Sequences in a random order, so member text order says nothing.
                    r.stream_seq = rng.below(1_000_000) * 64 + i as u64;
                    r.last_price = 100.0 + rng.below(50) as f64;
                    r
                })
                .collect();
            let from_ms = 1_000 + rng.below(4) as i64;
            let limit = 1 + rng.below(12);
            let first = parse_members(9, &redis_window(&set, from_ms, limit as usize + 1)).unwrap();
            let got = match newest(first, limit) {
                Newest::Rows(rows) => rows,
                Newest::Tie { ms, above } => {
                    let group: Vec<Vec<u8>> = set
                        .iter()
                        .filter(|r| r.timestamp_ms == ms)
                        .map(member)
                        .collect();
                    with_tie_group(above, parse_members(9, &group).unwrap(), limit).unwrap()
                }
            };
            set.retain(|r| r.timestamp_ms >= from_ms);
            sort_newest_first(&mut set);
            set.truncate(limit as usize);
            assert_eq!(got, set, "round {round}");
        }
    }

    #[test]
    fn a_tie_group_that_shrank_leaves_the_instrument_to_clickhouse() {
        let above = vec![row(1, 20, 1, Tier::Redis)];
        assert_eq!(
            with_tie_group(above.clone(), vec![row(1, 10, 2, Tier::Redis)], 3),
            None
        );
        let group = vec![row(1, 10, 2, Tier::Redis), row(1, 10, 3, Tier::Redis)];
        let got = with_tie_group(above, group, 2).unwrap();
        assert_eq!(got.iter().map(|r| r.stream_seq).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn the_bar_window_holds_the_current_period_and_l_minus_one_before() {
        let now_s = 1_700_000_130; // 30 s into the minute that starts at 1_700_000_100
        let w = BarWindow::new(Timeframe::M1, 5, now_s);
        assert_eq!(w.current_s, 1_700_000_100);
        assert_eq!(w.from_s, 1_700_000_100 - 4 * 60);
        assert_eq!(w.seconds, 60);
        let w = BarWindow::new(Timeframe::M15, 1, now_s);
        assert_eq!(w.current_s, now_s - now_s.rem_euclid(900));
        assert_eq!(w.from_s, w.current_s, "--limit 1: the current period only");
    }

    #[test]
    fn a_cached_bar_reads_the_writers_fields() {
        let fields = |start_ms: i64, end_ms: i64, ticks: &str| -> HashMap<String, String> {
            [
                ("instrument_token", "5".to_owned()),
                ("timeframe", "1m".to_owned()),
                ("start", iso8601_ms(start_ms)),
                ("start_ms", start_ms.to_string()),
                ("end_ms", end_ms.to_string()),
                ("open", "10".to_owned()),
                ("high", "11".to_owned()),
                ("low", "9".to_owned()),
                ("close", "10.5".to_owned()),
                ("volume", "4".to_owned()),
                ("turnover", "41".to_owned()),
                ("ticks", ticks.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
        };
        let start_ms = 1_700_000_100_000;
        let got = cached_bar(5, Timeframe::M1, &fields(start_ms, start_ms + 60_000, "2"));
        assert_eq!(got, Some(bar(5, 1_700_000_100)));
        assert_eq!(
            cached_bar(5, Timeframe::M5, &fields(start_ms, start_ms + 60_000, "2")),
            None,
            "a 1m bar is not a 5m bar"
        );
        assert_eq!(
            cached_bar(5, Timeframe::M1, &fields(start_ms, start_ms + 60_000, "0")),
            None
        );
        assert_eq!(
            cached_bar(5, Timeframe::M1, &fields(start_ms, start_ms + 60_000, "x")),
            None
        );
        assert_eq!(
            cached_bar(5, Timeframe::M1, &HashMap::new()),
            None,
            "no key"
        );
        assert!(cached(Timeframe::M15));
        assert!(!cached(Timeframe::H1));
        assert!(!cached(Timeframe::D1));
    }

    #[test]
    fn the_current_bar_comes_last_and_only_after_the_finished_ones() {
        let w = BarWindow::new(Timeframe::M1, 3, 1_000_000_150); // periods 020, 080, 140 (+1e9)
        let base = 1_000_000_000;
        let finished = vec![bar(1, base + 20), bar(1, base + 80), bar(3, base + 80)];
        let current = [
            bar(1, base + 140), // the current minute: appended
            bar(2, base + 80),  // ClickHouse has no bar yet: shown, it is in the window
            bar(3, base + 20),  // older than token 3's last finished bar: left out
            bar(4, base + 200), // after the current period (a clock ahead): left out
            bar(5, base - 40),  // before the window: left out
        ];
        let rows = merge_bars(finished, &current, &w);
        let got: Vec<(u32, i64, Tier)> = rows
            .iter()
            .map(|r| (r.bar.instrument_token, r.bar.start_s - base, r.tier))
            .collect();
        assert_eq!(
            got,
            [
                (1, 20, Tier::ClickHouse),
                (1, 80, Tier::ClickHouse),
                (1, 140, Tier::Redis),
                (2, 80, Tier::Redis),
                (3, 80, Tier::ClickHouse),
            ]
        );
        let same = merge_bars(vec![bar(1, base + 80)], &[bar(1, base + 80)], &w);
        assert_eq!(same.len(), 1, "never a second copy of a finished bar");
    }

    #[test]
    fn the_cache_line_rounds_the_hit_rate() {
        let line = |hits, asked| CacheCount { asked, hits }.line();
        assert_eq!(line(2, 3), "cache: 2 of 3 instruments from Redis (67%)");
        assert_eq!(line(1, 3), "cache: 1 of 3 instruments from Redis (33%)");
        assert_eq!(line(0, 2), "cache: 0 of 2 instruments from Redis (0%)");
        assert_eq!(line(4, 4), "cache: 4 of 4 instruments from Redis (100%)");
        assert_eq!(
            stats_key(&Keys {
                prefix: "t1:".into(),
                hash_tags: true
            }),
            "t1:query:stats"
        );
    }
}
