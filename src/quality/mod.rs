//! The quality report: what the stored ticks' flags and the rejected messages say
//! about a window of the feed, computed in ClickHouse, read by `alphapt-storage
//! quality` and written every minute to PostgreSQL `quality_snapshots` by the running
//! appliance (`quality_snapshot`), so the history outlives ClickHouse's TTLs.
//!
//! ```text
//!   market_ticks ──── one GROUP BY over the window: counts per flag and per check ──┐
//!                └─── GROUP BY instrument: the worst, with their dominant flag ─────┼─► Report ──► text | JSON
//!   rejected_messages ── GROUP BY reason (tick subjects only) ──────────────────────┘         └─► quality_snapshots
//! ```
//!
//! Definitions (README "Data quality"), over the ticks *received* in the window
//! (`received_at`: an exchange stamp may be the thing that is wrong):
//!
//! - `ticks_received` = stored + rejected tick messages.
//! - `overall_score`: the mean `data_quality_score` of every received tick, a
//!   rejected one counting 0; `None` when nothing was received.
//! - `completeness_percentage`: received ticks stored without `missing_optional`, in
//!   percent of those received (a rejected message is not complete).
//! - `validation_failures`: stored ticks with at least one flag plus rejected messages.
//! - per check (`model::quality::CHECKS`): stored ticks failing it and the percentage
//!   of stored ticks passing it; per flag: stored ticks carrying it; per reason:
//!   rejected messages.
//! - worst instruments: those with flagged ticks, lowest mean score first, each with
//!   the flag it carries most often.
//!
//! Must never: write to ClickHouse, or touch the hot path (a CLI and a slow-path
//! thread are its only callers).

pub mod snapshot;

use std::fmt::Write as _;

use serde_json::{json, Map, Value as Json};

use crate::migrate::cluster::reader_table;
use crate::model::quality::{RejectReason, CHECKS, FLAGS};
use crate::native::{self, Connection, QueryResult};

/// Instruments in the worst list.
pub const WORST_MAX: usize = 10;

/// Longest window `--since` takes: ten years.
pub const SINCE_MAX_S: u64 = 3_650 * 86_400;

/// What to report on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Start, Unix seconds, inclusive.
    pub from_s: i64,
    /// End, Unix seconds, exclusive.
    pub until_s: i64,
    /// Only these instruments (empty: all).
    pub tokens: Vec<u32>,
    /// Subjects of tick messages start with this (rejected signals are not ticks).
    pub tick_subject_prefix: String,
    /// Read the `Distributed` `_all` tables over a cluster's shards.
    pub distributed: bool,
}

/// One instrument of the worst list.
#[derive(Clone, Debug, PartialEq)]
pub struct Worst {
    /// The instrument.
    pub instrument_token: u32,
    /// Its stored ticks in the window.
    pub ticks: u64,
    /// Those with at least one flag.
    pub flagged: u64,
    /// Their mean `data_quality_score`.
    pub mean_score: f64,
    /// The flag it carries most often (the lowest bit on a tie).
    pub dominant_flag: &'static str,
    /// Ticks carrying it.
    pub dominant_count: u64,
}

/// The report of one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// What it covers.
    pub window: Window,
    /// Ticks stored in `market_ticks`.
    pub ticks_stored: u64,
    /// Tick messages in `rejected_messages`.
    pub ticks_rejected: u64,
    /// Sum of the stored ticks' scores.
    pub score_sum: f64,
    /// Stored ticks with at least one flag.
    pub flagged: u64,
    /// Stored ticks carrying each flag, in `FLAGS` order.
    pub flags: [u64; FLAGS.len()],
    /// Stored ticks failing each check, in `CHECKS` order.
    pub checks: [u64; CHECKS.len()],
    /// Rejected messages per reason, in `RejectReason::ALL` order (other reasons, from
    /// an older or newer writer, are in `rejected_other`).
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Rejected messages whose reason this build does not know.
    pub rejected_other: u64,
    /// The worst instruments.
    pub worst: Vec<Worst>,
}

impl Report {
    /// Stored plus rejected.
    pub fn ticks_received(&self) -> u64 {
        self.ticks_stored + self.ticks_rejected
    }

    /// Mean score of every received tick, rejected ones counting 0.
    pub fn overall_score(&self) -> Option<f64> {
        let received = self.ticks_received();
        (received > 0).then(|| self.score_sum / received as f64)
    }

    /// Received ticks stored complete, in percent.
    pub fn completeness_percentage(&self) -> Option<f64> {
        let received = self.ticks_received();
        let incomplete = self.checks[0];
        (received > 0).then(|| 100.0 * (self.ticks_stored - incomplete) as f64 / received as f64)
    }

    /// Flagged stored ticks plus rejected messages.
    pub fn validation_failures(&self) -> u64 {
        self.flagged + self.ticks_rejected
    }

    /// The report as JSON, with the platform's field names.
    pub fn to_json(&self) -> Json {
        let pct = |failed: u64| {
            (self.ticks_stored > 0)
                .then(|| 100.0 * (self.ticks_stored - failed) as f64 / self.ticks_stored as f64)
        };
        let checks: Map<String, Json> = CHECKS
            .iter()
            .zip(self.checks)
            .map(|((name, _), failed)| {
                (
                    (*name).to_owned(),
                    json!({ "failed": failed, "passed_percentage": pct(failed) }),
                )
            })
            .collect();
        let flags: Map<String, Json> = FLAGS
            .iter()
            .zip(self.flags)
            .map(|((_, name, _), count)| ((*name).to_owned(), json!(count)))
            .collect();
        let mut rejected: Map<String, Json> = RejectReason::ALL
            .iter()
            .zip(self.rejected)
            .map(|(reason, count)| (reason.as_str().to_owned(), json!(count)))
            .collect();
        if self.rejected_other > 0 {
            rejected.insert("other".to_owned(), json!(self.rejected_other));
        }
        let worst: Vec<Json> = self
            .worst
            .iter()
            .map(|w| {
                json!({
                    "instrument_token": w.instrument_token,
                    "ticks": w.ticks,
                    "flagged": w.flagged,
                    "mean_score": w.mean_score,
                    "dominant_flag": w.dominant_flag,
                    "dominant_count": w.dominant_count,
                })
            })
            .collect();
        let w = &self.window;
        json!({
            "window": {
                "from": iso(w.from_s),
                "until": iso(w.until_s),
                "seconds": w.until_s - w.from_s,
                "tokens": (!w.tokens.is_empty()).then(|| w.tokens.clone()),
            },
            "ticks_received": self.ticks_received(),
            "ticks_stored": self.ticks_stored,
            "ticks_rejected": self.ticks_rejected,
            "overall_score": self.overall_score(),
            "completeness_percentage": self.completeness_percentage(),
            "validation_failures": self.validation_failures(),
            "checks": checks,
            "flags": flags,
            "rejected": rejected,
            "worst_instruments": worst,
        })
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let w = &self.window;
        let or_dash = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
        };
        let _ = writeln!(
            out,
            "window {} .. {} ({} s){}",
            iso(w.from_s),
            iso(w.until_s),
            w.until_s - w.from_s,
            if w.tokens.is_empty() {
                String::new()
            } else {
                format!(", tokens {:?}", w.tokens)
            }
        );
        let _ = writeln!(
            out,
            "ticks received {}: stored {}, rejected {}",
            self.ticks_received(),
            self.ticks_stored,
            self.ticks_rejected
        );
        let _ = writeln!(
            out,
            "overall score {}  completeness {} %  validation failures {}",
            or_dash(self.overall_score(), 4),
            or_dash(self.completeness_percentage(), 2),
            self.validation_failures()
        );
        let _ = writeln!(out, "checks (stored ticks failing):");
        for ((name, _), failed) in CHECKS.iter().zip(self.checks) {
            let _ = writeln!(out, "  {name:<14} {failed}");
        }
        let _ = writeln!(out, "flags:");
        for ((_, name, _), count) in FLAGS.iter().zip(self.flags) {
            if count > 0 {
                let _ = writeln!(out, "  {name:<18} {count}");
            }
        }
        let _ = writeln!(out, "rejected:");
        for (reason, count) in RejectReason::ALL.iter().zip(self.rejected) {
            if count > 0 {
                let _ = writeln!(out, "  {:<22} {count}", reason.as_str());
            }
        }
        if self.rejected_other > 0 {
            let _ = writeln!(out, "  {:<22} {}", "other", self.rejected_other);
        }
        let _ = writeln!(out, "worst instruments:");
        for w in &self.worst {
            let _ = writeln!(
                out,
                "  {:>10}  score {:.4}  flagged {}/{}  mostly {} ({})",
                w.instrument_token,
                w.mean_score,
                w.flagged,
                w.ticks,
                w.dominant_flag,
                w.dominant_count
            );
        }
        out
    }
}

/// Reads `--since`: a whole number and a unit, `s`, `m`, `h` or `d` (`90s`, `1m`,
/// `1h`, `7d`), into seconds.
pub fn parse_since(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "--since '{text}' is not a duration: write a whole number and a unit s, m, h or d, like 1m, 1h or 7d"
        )
    };
    let text = text.trim();
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let unit_s: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_s))
        .ok_or_else(bad)?;
    if seconds == 0 || seconds > SINCE_MAX_S {
        return Err(format!(
            "--since '{text}' must be at least 1s and at most 3650d"
        ));
    }
    Ok(seconds)
}

/// Reads `--tokens`: comma-separated instrument tokens (`256265,738561`).
pub fn parse_tokens(text: &str) -> Result<Vec<u32>, String> {
    let mut tokens = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        match part.parse::<u32>() {
            Ok(token) if !part.starts_with('+') => tokens.push(token),
            _ => {
                return Err(format!(
                    "--tokens: '{part}' is not an instrument token; write comma-separated whole numbers up to 4294967295, like 256265,738561"
                ))
            }
        }
    }
    tokens.sort_unstable();
    tokens.dedup();
    Ok(tokens)
}

/// The literal start of a subject pattern, up to its first wildcard token
/// (`market.ticks.>` gives `market.ticks.`): every tick subject starts with it.
pub fn subject_prefix(pattern: &str) -> String {
    let mut prefix = String::new();
    for token in pattern.split('.') {
        if token == "*" || token == ">" {
            break;
        }
        prefix.push_str(token);
        prefix.push('.');
    }
    prefix
}

/// Computes the report of `window` from ClickHouse (three SELECTs).
pub fn report(conn: &mut Connection, window: &Window) -> Result<Report, native::Error> {
    let ticks_where = ticks_where(window);
    let ticks_table = reader_table("market_ticks", window.distributed);
    let mut flag_columns = String::new();
    for (i, (bit, _, _)) in FLAGS.iter().enumerate() {
        let _ = write!(
            flag_columns,
            ", countIf(bitAnd(validation_flags, {bit}) != 0) AS f{i}"
        );
    }
    let mut check_columns = String::new();
    for (i, (_, mask)) in CHECKS.iter().enumerate() {
        let _ = write!(
            check_columns,
            ", countIf(bitAnd(validation_flags, {mask}) != 0) AS c{i}"
        );
    }
    let totals = conn.query(&format!(
        "SELECT count() AS ticks, sum(toFloat64(data_quality_score)) AS score_sum, \
         countIf(validation_flags != 0) AS flagged{flag_columns}{check_columns} \
         FROM {ticks_table} WHERE {ticks_where}"
    ))?;
    let mut report = Report {
        window: window.clone(),
        ticks_stored: uint(&totals, "ticks", 0),
        ticks_rejected: 0,
        score_sum: float(&totals, "score_sum", 0),
        flagged: uint(&totals, "flagged", 0),
        flags: [0; FLAGS.len()],
        checks: [0; CHECKS.len()],
        rejected: [0; RejectReason::ALL.len()],
        rejected_other: 0,
        worst: Vec::new(),
    };
    for (i, count) in report.flags.iter_mut().enumerate() {
        *count = uint(&totals, &format!("f{i}"), 0);
    }
    for (i, count) in report.checks.iter_mut().enumerate() {
        *count = uint(&totals, &format!("c{i}"), 0);
    }

    let worst = conn.query(&format!(
        "SELECT instrument_token, count() AS ticks, countIf(validation_flags != 0) AS flagged, \
         avg(toFloat64(data_quality_score)) AS score{flag_columns} \
         FROM {ticks_table} WHERE {ticks_where} GROUP BY instrument_token HAVING flagged > 0 \
         ORDER BY score ASC, flagged DESC, instrument_token ASC LIMIT {WORST_MAX}"
    ))?;
    for row in 0..worst.rows() as usize {
        let counts: Vec<u64> = (0..FLAGS.len())
            .map(|i| uint(&worst, &format!("f{i}"), row))
            .collect();
        // The first maximum: the lowest bit wins a tie.
        let (dominant, dominant_count) =
            counts.iter().enumerate().fold(
                (0, 0),
                |best, (i, &c)| if c > best.1 { (i, c) } else { best },
            );
        report.worst.push(Worst {
            instrument_token: uint(&worst, "instrument_token", row) as u32,
            ticks: uint(&worst, "ticks", row),
            flagged: uint(&worst, "flagged", row),
            mean_score: float(&worst, "score", row),
            dominant_flag: FLAGS[dominant].1,
            dominant_count,
        });
    }

    let rejected = conn.query(&format!(
        "SELECT reason, count() AS n FROM {} WHERE {} GROUP BY reason",
        reader_table("rejected_messages", window.distributed),
        rejected_where(window)
    ))?;
    let reasons = rejected.column("reason");
    let counts = rejected.column("n");
    for (reason, count) in reasons.iter().zip(&counts) {
        let count = count.as_u64().unwrap_or(0);
        report.ticks_rejected += count;
        match RejectReason::ALL
            .iter()
            .position(|r| Some(r.as_str()) == reason.as_str())
        {
            Some(i) => report.rejected[i] += count,
            None => report.rejected_other += count,
        }
    }
    Ok(report)
}

/// The window's condition on `market_ticks`.
fn ticks_where(window: &Window) -> String {
    let mut sql = time_where(window);
    if !window.tokens.is_empty() {
        let _ = write!(sql, " AND instrument_token IN ({})", list(&window.tokens));
    }
    sql
}

/// The window's condition on `rejected_messages`: tick subjects, and the token that
/// ends the subject (`market.ticks.<exchange>.<token>`) when tokens are asked for.
fn rejected_where(window: &Window) -> String {
    let prefix = &window.tick_subject_prefix;
    let mut sql = format!(
        "{} AND substring(subject, 1, {}) = '{}'",
        time_where(window),
        prefix.len(),
        escape(prefix)
    );
    if !window.tokens.is_empty() {
        let _ = write!(
            sql,
            " AND toUInt64OrZero(extract(subject, '[0-9]+$')) IN ({})",
            list(&window.tokens)
        );
    }
    sql
}

/// `received_at` within the window; a DateTime (18.16) or DateTime64 (current)
/// column compares with `toDateTime` on both.
fn time_where(window: &Window) -> String {
    format!(
        "received_at >= toDateTime({}, 'UTC') AND received_at < toDateTime({}, 'UTC')",
        window.from_s, window.until_s
    )
}

fn list(tokens: &[u32]) -> String {
    let parts: Vec<String> = tokens.iter().map(u32::to_string).collect();
    parts.join(", ")
}

/// A ClickHouse string literal's body.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

fn uint(result: &QueryResult, column: &str, row: usize) -> u64 {
    result
        .column(column)
        .get(row)
        .and_then(native::Value::as_u64)
        .unwrap_or(0)
}

fn float(result: &QueryResult, column: &str, row: usize) -> f64 {
    result
        .column(column)
        .get(row)
        .and_then(native::Value::as_f64)
        .unwrap_or(0.0)
}

/// `2026-12-03T18:00:00Z`.
fn iso(unix_s: i64) -> String {
    crate::model::json::iso8601_ms(unix_s.saturating_mul(1000)).replace(".000Z", "Z")
}

#[cfg(test)]
mod tests {
    //! The flags' parsing and the derived figures; the SQL runs against the real
    //! server in `tests/quality.rs`.
    use super::*;

    #[test]
    fn since_takes_a_number_and_a_unit_and_refuses_the_rest() {
        assert_eq!(parse_since("1m"), Ok(60));
        assert_eq!(parse_since("1h"), Ok(3_600));
        assert_eq!(parse_since("1d"), Ok(86_400));
        assert_eq!(parse_since("90s"), Ok(90));
        for bad in [
            "7x",
            "m",
            "",
            "1.5h",
            "-1h",
            "1 h",
            "h1",
            "99999999999999999999d",
        ] {
            let error = parse_since(bad).unwrap_err();
            assert!(error.contains("--since"), "{bad}: {error}");
        }
        assert!(parse_since("0m").unwrap_err().contains("at least 1s"));
        assert!(parse_since("3651d").unwrap_err().contains("3650d"));
    }

    #[test]
    fn subject_prefix_stops_at_the_first_wildcard() {
        assert_eq!(subject_prefix("market.ticks.>"), "market.ticks.");
        assert_eq!(subject_prefix("a.*.ticks.>"), "a.");
        assert_eq!(subject_prefix("feed.ticks"), "feed.ticks.");
    }

    #[test]
    fn tokens_are_whole_numbers() {
        assert_eq!(
            parse_tokens("738561, 256265,256265"),
            Ok(vec![256_265, 738_561])
        );
        for bad in ["", "abc", "1,,2", "-1", "+5", "4294967296", "1.5"] {
            let error = parse_tokens(bad).unwrap_err();
            assert!(error.contains("--tokens"), "{bad}: {error}");
        }
    }

    #[test]
    fn derived_figures_count_rejects_as_received() {
        let mut report = Report {
            window: Window {
                from_s: 0,
                until_s: 60,
                tokens: Vec::new(),
                tick_subject_prefix: "market.ticks.".into(),
                distributed: false,
            },
            ticks_stored: 8,
            ticks_rejected: 2,
            score_sum: 7.5,
            flagged: 1,
            flags: [0; FLAGS.len()],
            checks: [0; CHECKS.len()],
            rejected: [0; RejectReason::ALL.len()],
            rejected_other: 0,
            worst: Vec::new(),
        };
        report.checks[0] = 1;
        assert_eq!(report.ticks_received(), 10);
        assert_eq!(report.overall_score(), Some(0.75));
        assert_eq!(report.completeness_percentage(), Some(70.0));
        assert_eq!(report.validation_failures(), 3);
        let json = report.to_json();
        assert_eq!(json["checks"]["completeness"]["passed_percentage"], 87.5);
        assert_eq!(json["window"]["from"], "1970-01-01T00:00:00Z");
        assert_eq!(json["rejected"]["malformed_json"], 0);
        report.ticks_stored = 0;
        report.ticks_rejected = 0;
        assert_eq!(report.overall_score(), None);
        assert_eq!(
            report.to_json()["checks"]["accuracy"]["passed_percentage"],
            Json::Null
        );
    }
}
