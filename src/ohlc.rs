//! Finished OHLC bars: one-minute bars read from `ohlc_1m`, rolled up to 5m, 15m,
//! 1h and 1d.
//!
//! ```text
//!  market_ticks ──mv_ohlc_1m──► ohlc_1m (aggregate states per instrument and minute)
//!                                  │ bars_1m_sql: -Merge, GROUP BY instrument, minute
//!                                  ▼
//!                               [Bar] 1m ──rollup (pure)──► [Bar] 5m / 15m / 1h / 1d
//! ```
//!
//! Open and close come from `argMin/argMax` by event time (and stream sequence on
//! ties), so they are right whatever order ticks were inserted in; high, low,
//! volume, turnover and tick count are merged sums and extremes, exact across
//! insert blocks and parts. A bar is *finished* when its end is at or before the
//! `until_s` the caller passes (time is a parameter, never read here), so a bar
//! still receiving ticks is never shown as final.

use std::collections::BTreeMap;

use crate::native::{self, Connection, QueryResult, Value};

/// Bar length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeframe {
    /// One minute, as stored.
    M1,
    /// Five minutes.
    M5,
    /// Fifteen minutes.
    M15,
    /// One hour.
    H1,
    /// One UTC day.
    D1,
}

impl Timeframe {
    /// Every timeframe, shortest first.
    pub const ALL: [Timeframe; 5] = [
        Timeframe::M1,
        Timeframe::M5,
        Timeframe::M15,
        Timeframe::H1,
        Timeframe::D1,
    ];

    /// Length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Timeframe::M1 => 60,
            Timeframe::M5 => 300,
            Timeframe::M15 => 900,
            Timeframe::H1 => 3_600,
            Timeframe::D1 => 86_400,
        }
    }

    /// The spelling the CLI takes: `1m`, `5m`, `15m`, `1h`, `1d`.
    pub fn label(self) -> &'static str {
        match self {
            Timeframe::M1 => "1m",
            Timeframe::M5 => "5m",
            Timeframe::M15 => "15m",
            Timeframe::H1 => "1h",
            Timeframe::D1 => "1d",
        }
    }
}

impl std::str::FromStr for Timeframe {
    type Err = OhlcError;

    fn from_str(text: &str) -> Result<Timeframe, OhlcError> {
        Timeframe::ALL
            .into_iter()
            .find(|t| t.label() == text)
            .ok_or_else(|| OhlcError::BadTimeframe(text.to_string()))
    }
}

/// One finished bar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    /// Instrument.
    pub instrument_token: u32,
    /// Bar start, Unix seconds (UTC, aligned to the timeframe).
    pub start_s: i64,
    /// Price of the earliest tick.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Price of the latest tick.
    pub close: f64,
    /// Traded quantity (sum of `last_quantity`).
    pub volume: u64,
    /// Sum of price × quantity; VWAP = turnover / volume.
    pub turnover: f64,
    /// Ticks in the bar.
    pub tick_count: u64,
}

impl Bar {
    /// Volume-weighted average price; `None` when nothing traded.
    pub fn vwap(&self) -> Option<f64> {
        (self.volume > 0).then(|| self.turnover / self.volume as f64)
    }
}

/// Which bars to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarQuery {
    /// Instruments; empty means all.
    pub tokens: Vec<u32>,
    /// Earliest bar start, Unix seconds.
    pub from_s: i64,
    /// Only bars that ended at or before this time, Unix seconds (usually now).
    pub until_s: i64,
    /// Read `ohlc_1m_all`, the `Distributed` table over a cluster's shards.
    pub distributed: bool,
}

/// Reading bars failed.
#[derive(Debug, thiserror::Error)]
pub enum OhlcError {
    /// The query failed.
    #[error("reading ohlc_1m failed: {0}; check that `alphapt-storage migrate up` has run")]
    ClickHouse(#[from] native::Error),
    /// A result column is missing or has an unexpected type.
    #[error("ohlc_1m result column `{column}` row {row} is {found}; the table does not match migrations/clickhouse/005_ohlc_1m")]
    BadValue {
        /// The column.
        column: &'static str,
        /// The row.
        row: usize,
        /// What was there.
        found: String,
    },
    /// A timeframe the helper does not know.
    #[error("unknown timeframe `{0}`; use 1m, 5m, 15m, 1h or 1d")]
    BadTimeframe(String),
}

/// The SELECT that finishes one-minute bars from `ohlc_1m`, ordered by instrument
/// and minute. Works on 18.16 and current servers alike.
pub fn bars_1m_sql(query: &BarQuery) -> String {
    let tokens = if query.tokens.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = query.tokens.iter().map(u32::to_string).collect();
        format!("instrument_token IN ({}) AND ", list.join(", "))
    };
    format!(
        "SELECT instrument_token, toInt64(toUInt32(minute)) AS start_s,
                argMinMerge(open) AS open, maxMerge(high) AS high, minMerge(low) AS low,
                argMaxMerge(close) AS close, sumMerge(volume) AS volume,
                sumMerge(turnover) AS turnover, countMerge(tick_count) AS tick_count
         FROM {table}
         WHERE {tokens}minute >= toDateTime({from}, 'UTC') AND minute <= toDateTime({last}, 'UTC')
         GROUP BY instrument_token, minute
         ORDER BY instrument_token, minute",
        table = crate::migrate::cluster::reader_table("ohlc_1m", query.distributed),
        from = query.from_s.max(0),
        // A minute bar is finished when minute + 60 <= until.
        last = (query.until_s - 60).max(-1),
    )
}

/// Decodes the result of [`bars_1m_sql`].
pub fn bars_from_result(result: &QueryResult) -> Result<Vec<Bar>, OhlcError> {
    const NAMES: [&str; 9] = [
        "instrument_token",
        "start_s",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "turnover",
        "tick_count",
    ];
    let columns = NAMES.map(|name| result.column(name));
    let rows = result.rows() as usize;
    let mut bars = Vec::with_capacity(rows);
    for row in 0..rows {
        let int = |c: usize| match columns[c].get(row) {
            Some(Value::UInt(v)) => Ok(*v as i64),
            Some(Value::Int(v)) => Ok(*v),
            other => Err(OhlcError::BadValue {
                column: NAMES[c],
                row,
                found: format!("{other:?}"),
            }),
        };
        let float = |c: usize| match columns[c].get(row) {
            Some(Value::Float(v)) => Ok(*v),
            other => Err(OhlcError::BadValue {
                column: NAMES[c],
                row,
                found: format!("{other:?}"),
            }),
        };
        bars.push(Bar {
            instrument_token: int(0)? as u32,
            start_s: int(1)?,
            open: float(2)?,
            high: float(3)?,
            low: float(4)?,
            close: float(5)?,
            volume: int(6)? as u64,
            turnover: float(7)?,
            tick_count: int(8)? as u64,
        });
    }
    Ok(bars)
}

/// Rolls bars up to `timeframe`, keeping only buckets that ended by `until_s`.
/// Input in any order; output sorted by instrument and start. Shorter bars roll into
/// the bucket their start falls in: open of the first, close of the last, extremes
/// and sums over all.
pub fn rollup(bars: &[Bar], timeframe: Timeframe, until_s: i64) -> Vec<Bar> {
    let seconds = timeframe.seconds();
    let mut sorted: Vec<&Bar> = bars.iter().collect();
    sorted.sort_by_key(|b| (b.instrument_token, b.start_s));
    let mut buckets: BTreeMap<(u32, i64), Bar> = BTreeMap::new();
    for bar in sorted {
        let start_s = bar.start_s - bar.start_s.rem_euclid(seconds);
        buckets
            .entry((bar.instrument_token, start_s))
            .and_modify(|b| {
                // Sorted input: this bar is later than everything already in `b`.
                b.high = b.high.max(bar.high);
                b.low = b.low.min(bar.low);
                b.close = bar.close;
                b.volume += bar.volume;
                b.turnover += bar.turnover;
                b.tick_count += bar.tick_count;
            })
            .or_insert(Bar { start_s, ..*bar });
    }
    buckets
        .into_values()
        .filter(|b| b.start_s + seconds <= until_s)
        .collect()
}

/// Reads finished bars of `timeframe` for `query` from `ohlc_1m` on `conn`.
pub fn bars(
    conn: &mut Connection,
    query: &BarQuery,
    timeframe: Timeframe,
) -> Result<Vec<Bar>, OhlcError> {
    // Read from the start of the first bucket so it is complete.
    let aligned = BarQuery {
        from_s: query.from_s - query.from_s.rem_euclid(timeframe.seconds()),
        ..query.clone()
    };
    let minutes = bars_from_result(&conn.query(&bars_1m_sql(&aligned))?)?;
    Ok(match timeframe {
        Timeframe::M1 => minutes,
        longer => rollup(&minutes, longer, query.until_s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(token: u32, start_s: i64, o: f64, h: f64, l: f64, c: f64, volume: u64) -> Bar {
        Bar {
            instrument_token: token,
            start_s,
            open: o,
            high: h,
            low: l,
            close: c,
            volume,
            turnover: c * volume as f64,
            tick_count: 2,
        }
    }

    #[test]
    fn rollup_takes_first_open_last_close_extremes_and_sums() {
        // Five 1m bars given out of order roll into one 5m bar.
        let minutes = [
            bar(1, 180, 13.0, 14.0, 12.0, 13.5, 3),
            bar(1, 0, 10.0, 11.0, 9.0, 10.5, 1),
            bar(1, 240, 13.5, 13.6, 13.1, 13.2, 4),
            bar(1, 60, 10.5, 12.0, 10.0, 11.0, 2),
            bar(1, 120, 11.0, 11.5, 8.5, 13.0, 5),
        ];
        let got = rollup(&minutes, Timeframe::M5, 300);
        assert_eq!(got.len(), 1);
        let b = got[0];
        assert_eq!((b.start_s, b.open, b.close), (0, 10.0, 13.2));
        assert_eq!((b.high, b.low), (14.0, 8.5));
        assert_eq!((b.volume, b.tick_count), (15, 10));
        let turnover: f64 = minutes.iter().map(|m| m.turnover).sum();
        assert!((b.turnover - turnover).abs() < 1e-9);
    }

    #[test]
    fn rollup_keeps_instruments_apart_and_drops_unfinished_buckets() {
        // Two instruments; the bucket 300..600 is not finished at 500.
        let minutes = [
            bar(2, 0, 1.0, 1.0, 1.0, 1.0, 1),
            bar(1, 0, 5.0, 5.0, 5.0, 5.0, 1),
            bar(1, 300, 6.0, 6.0, 6.0, 6.0, 1),
        ];
        let got = rollup(&minutes, Timeframe::M5, 500);
        let keys: Vec<(u32, i64)> = got
            .iter()
            .map(|b| (b.instrument_token, b.start_s))
            .collect();
        assert_eq!(keys, [(1, 0), (2, 0)]);
    }

    #[test]
    fn days_align_to_utc_midnight_and_negative_times_floor() {
        // rem_euclid floors, so bars before the epoch still land in their own day.
        let got = rollup(
            &[
                bar(1, 86_400 + 3_600, 1.0, 1.0, 1.0, 1.0, 1),
                bar(1, -60, 2.0, 2.0, 2.0, 2.0, 1),
            ],
            Timeframe::D1,
            3 * 86_400,
        );
        let starts: Vec<i64> = got.iter().map(|b| b.start_s).collect();
        assert_eq!(starts, [-86_400, 86_400]);
    }

    #[test]
    fn timeframes_parse_from_their_labels() {
        // Every label round-trips; anything else is refused by name.
        for t in Timeframe::ALL {
            assert_eq!(t.label().parse::<Timeframe>().unwrap(), t);
        }
        assert!("2m"
            .parse::<Timeframe>()
            .unwrap_err()
            .to_string()
            .contains("`2m`"));
    }

    #[test]
    fn vwap_is_turnover_over_volume() {
        // No volume, no VWAP.
        let mut b = bar(1, 0, 1.0, 1.0, 1.0, 2.0, 4);
        assert_eq!(b.vwap(), Some(2.0));
        b.volume = 0;
        assert_eq!(b.vwap(), None);
    }

    #[test]
    fn the_query_filters_tokens_and_unfinished_minutes() {
        // Tokens go into an IN list; the last minute allowed ends at until.
        let sql = bars_1m_sql(&BarQuery {
            tokens: vec![3, 5],
            from_s: 120,
            until_s: 600,
            distributed: false,
        });
        assert!(sql.contains("instrument_token IN (3, 5)"));
        assert!(sql.contains("minute <= toDateTime(540, 'UTC')"));
    }
}
