//! The query path (`alphapt-storage query ticks|ohlc`): recent ticks and finished bars
//! of some instruments, as a table, JSON or CSV, each part labelled with the tier that
//! answered it.
//!
//! ```text
//!   query ticks ──► market_ticks: newest first, LIMIT L BY instrument ──┐
//!   query ohlc  ──► ohlc_1m (-Merge, via `ohlc::bars`) ─► roll-up ──────┼─► Answer { tier, rows } ─► table | json | csv
//! ```
//!
//! Today ClickHouse answers everything (tier `clickhouse`); the Redis hot cache of
//! issue 15 will answer the newest ticks and current bars first and name itself.
//! Read-only: never writes to a server.

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

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
#[derive(Clone, Debug, PartialEq)]
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
    /// The validator's score.
    pub data_quality_score: f64,
    /// The validator's flags.
    pub validation_flags: u64,
    /// JetStream sequence.
    pub stream_seq: u64,
}

/// Which store answered.
pub const TIER_CLICKHOUSE: &str = "clickhouse";

/// The newest `limit` ticks of each of `tokens` with an exchange time in the last
/// `minutes` before `now_ms`, newest first per instrument.
pub fn ticks(
    conn: &mut Connection,
    tokens: &[u32],
    minutes: u64,
    limit: u64,
    now_ms: i64,
) -> Result<Vec<TickRow>, native::Error> {
    let millis = if conn.server().is_modern() {
        "toUnixTimestamp64Milli(timestamp)"
    } else {
        "toInt64(toUnixTimestamp(timestamp)) * 1000 + timestamp_ms"
    };
    let from_s = now_ms.div_euclid(1000) - (minutes * 60) as i64;
    let list: Vec<String> = tokens.iter().map(u32::to_string).collect();
    let result = conn.query(&format!(
        "SELECT instrument_token, {millis} AS ms, last_price, toUInt64(last_quantity) AS q, \
         volume_traded, toFloat64(data_quality_score) AS score, toUInt64(validation_flags) AS flags, stream_seq \
         FROM market_ticks WHERE instrument_token IN ({}) AND timestamp >= toDateTime({from_s}, 'UTC') \
         ORDER BY instrument_token, ms DESC, stream_seq DESC LIMIT {limit} BY instrument_token",
        list.join(", ")
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
        })
        .collect())
}

/// The finished bars of `timeframe` of each of `tokens` in the last `limit` periods
/// before `now_s` (a period without ticks has no bar), oldest first per instrument.
pub fn bars(
    conn: &mut Connection,
    tokens: &[u32],
    timeframe: Timeframe,
    limit: u64,
    now_s: i64,
) -> Result<Vec<Bar>, ohlc::OhlcError> {
    let seconds = timeframe.seconds();
    let until_s = now_s - now_s.rem_euclid(seconds);
    let query = BarQuery {
        tokens: tokens.to_vec(),
        from_s: until_s - seconds * limit as i64,
        until_s,
    };
    ohlc::bars(conn, &query, timeframe)
}

/// Ticks in `format`, labelled with `tier`.
pub fn render_ticks(rows: &[TickRow], tier: &str, format: Format) -> String {
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
                        "tier": tier,
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
                    "{},{},{},{},{},{},{},{},{tier}",
                    r.instrument_token,
                    iso8601_ms(r.timestamp_ms),
                    r.last_price,
                    r.last_quantity,
                    r.volume_traded,
                    r.data_quality_score,
                    r.validation_flags,
                    r.stream_seq
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
                    "{:>10}  {:<24}  {:>12.2}  {:>8}  {:>12}  {:>5.2}  {:>5}  {:>12}  {tier}",
                    r.instrument_token,
                    iso8601_ms(r.timestamp_ms),
                    r.last_price,
                    r.last_quantity,
                    r.volume_traded,
                    r.data_quality_score,
                    r.validation_flags,
                    r.stream_seq
                );
            }
        }
    }
    out
}

/// Bars in `format`, labelled with `tier`.
pub fn render_bars(bars: &[Bar], timeframe: Timeframe, tier: &str, format: Format) -> String {
    let mut out = String::new();
    let tf = timeframe.label();
    match format {
        Format::Json => {
            let rows: Vec<Json> = bars
                .iter()
                .map(|b| {
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
                        "tier": tier,
                    })
                })
                .collect();
            out = json!({ "bars": rows }).to_string();
            out.push('\n');
        }
        Format::Csv => {
            out.push_str(
                "instrument_token,timeframe,start,open,high,low,close,volume,vwap,tick_count,tier\n",
            );
            for b in bars {
                let vwap = b.vwap().map_or_else(String::new, |v| v.to_string());
                let _ = writeln!(
                    out,
                    "{},{tf},{},{},{},{},{},{},{vwap},{},{tier}",
                    b.instrument_token,
                    iso8601_ms(b.start_s * 1000),
                    b.open,
                    b.high,
                    b.low,
                    b.close,
                    b.volume,
                    b.tick_count
                );
            }
        }
        Format::Table => {
            let _ = writeln!(
                out,
                "{:>10}  {:>3}  {:<24}  {:>12}  {:>12}  {:>12}  {:>12}  {:>12}  {:>6}  tier",
                "token", "tf", "start", "open", "high", "low", "close", "volume", "ticks"
            );
            for b in bars {
                let _ = writeln!(
                    out,
                    "{:>10}  {tf:>3}  {:<24}  {:>12.2}  {:>12.2}  {:>12.2}  {:>12.2}  {:>12}  {:>6}  {tier}",
                    b.instrument_token,
                    iso8601_ms(b.start_s * 1000),
                    b.open,
                    b.high,
                    b.low,
                    b.close,
                    b.volume,
                    b.tick_count
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Flag parsing and rendering; the SQL runs on the real server in `tests/query.rs`.
    use super::*;

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
    fn every_format_names_the_tier() {
        let row = TickRow {
            instrument_token: 7,
            timestamp_ms: 1_764_000_000_123,
            last_price: 101.5,
            last_quantity: 3,
            volume_traded: 900,
            data_quality_score: 1.0,
            validation_flags: 0,
            stream_seq: 42,
        };
        let json: Json = serde_json::from_str(&render_ticks(
            std::slice::from_ref(&row),
            "clickhouse",
            Format::Json,
        ))
        .unwrap();
        assert_eq!(json["ticks"][0]["timestamp"], "2025-11-24T16:00:00.123Z");
        assert_eq!(json["ticks"][0]["tier"], "clickhouse");
        let csv = render_ticks(std::slice::from_ref(&row), "clickhouse", Format::Csv);
        assert_eq!(
            csv.lines().nth(1),
            Some("7,2025-11-24T16:00:00.123Z,101.5,3,900,1,0,42,clickhouse")
        );
        assert!(render_ticks(&[row], "clickhouse", Format::Table).contains("clickhouse"));
    }
}
