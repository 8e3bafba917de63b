//! The quality snapshot thread: every `postgres.quality_snapshot_interval_ms` it reads
//! the quality report of the ticks received since its last row from ClickHouse and
//! writes it to PostgreSQL `quality_snapshots`.
//!
//! ```text
//!   every interval:  window [last until, now - lag) ──report──► ClickHouse (3 SELECTs)
//!                                                      │
//!                     quality_snapshots row ◄──INSERT──┘ PostgreSQL; then last until = until
//! ```
//!
//! This is the slow path: a thread of its own (`quality`, on `threads.slow_core`), with
//! its own connections; nothing on the hot path waits for it or shares a lock with it.
//!
//! - The lag: a tick received at t lands in ClickHouse up to a flush, a linger and a
//!   journal-first insert interval later, so the window ends that much (plus
//!   [`LAG_MARGIN`]) before now and a row counts what is there to count.
//! - ClickHouse or PostgreSQL away: the thread warns once per outage and keeps the
//!   window's start, so the next row covers the gap: windows follow each other
//!   without holes or overlaps. Connections are dropped after an
//!   error and made again at the next interval (that interval is the backoff).
//! - Stop: noticed within [`POLL`] while waiting; a query in flight is bounded by the
//!   ClickHouse timeouts and PostgreSQL's connect and statement timeouts, and `run`
//!   does not wait for it past its join deadline.
//!
//! Must never: stop or slow ingestion, write to ClickHouse, log a password.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::native::{Connection, Options};
use crate::refdata::{slow_path_client, with_causes};
use crate::runtime::clock::now_ms;

use super::{report, subject_prefix, Report, Window};

/// Added to the ingest delays in the lag: the INSERT itself and clock steps.
pub const LAG_MARGIN: Duration = Duration::from_secs(5);

/// Longest sleep before the thread looks at its stop flag again.
const POLL: Duration = Duration::from_millis(100);

/// `application_name` of the connection.
pub const APPLICATION_NAME: &str = "alphapt-storage quality";

const INSERT: &str = "INSERT INTO quality_snapshots (window_from, window_until, \
    ticks_received, ticks_stored, ticks_rejected, overall_score, completeness_percentage, \
    validation_failures, report) VALUES (to_timestamp($1::float8), to_timestamp($2::float8), \
    $3, $4, $5, $6, $7, $8, $9::text::jsonb)";

/// Settings of the thread.
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    /// Time between rows.
    pub interval: Duration,
    /// How far behind now a window ends.
    pub lag: Duration,
    /// ClickHouse, with the database.
    pub options: Options,
    /// `postgres.url` (never logged unredacted).
    pub pg_url: String,
    /// `postgres.tls*`.
    pub pg_tls: crate::tls::Settings,
    /// `postgres.connect_timeout_ms`.
    pub pg_connect_timeout: Duration,
    /// Literal start of tick subjects (for rejected messages).
    pub tick_subject_prefix: String,
    /// A cluster (`clickhouse.shards`): read the `Distributed` `_all` tables.
    pub distributed: bool,
}

impl SnapshotConfig {
    /// The settings from the config; `None` when snapshots are off.
    pub fn from_config(config: &Config, options: Options) -> Option<SnapshotConfig> {
        let every = config.postgres.quality_snapshot_interval_ms;
        if every == 0 {
            return None;
        }
        let ingest_delay_ms = config.ingest.flush_interval_ms
            + config.ingest.insert_linger_ms
            + if config.spill.mode == crate::config::SpillMode::Always {
                config.spill.insert_interval_ms
            } else {
                0
            };
        Some(SnapshotConfig {
            interval: Duration::from_millis(every),
            lag: Duration::from_millis(ingest_delay_ms) + LAG_MARGIN,
            options,
            pg_url: config.postgres.url.clone(),
            pg_tls: config.postgres.tls_settings(),
            pg_connect_timeout: Duration::from_millis(config.postgres.connect_timeout_ms),
            tick_subject_prefix: subject_prefix(&config.nats.subject_ticks),
            distributed: !config.clickhouse.shards.is_empty(),
        })
    }
}

/// The thread's state.
pub struct Snapshotter {
    config: SnapshotConfig,
    stop: Arc<AtomicBool>,
    clickhouse: Option<Connection>,
    postgres: Option<postgres::Client>,
}

impl Snapshotter {
    /// A snapshotter; nothing connects before the first interval ends.
    pub fn new(config: SnapshotConfig, stop: Arc<AtomicBool>) -> Snapshotter {
        Snapshotter {
            config,
            stop,
            clickhouse: None,
            postgres: None,
        }
    }

    /// Starts the thread `quality`, pinned to `core` if given.
    pub fn spawn(self, core: Option<usize>) -> std::io::Result<JoinHandle<()>> {
        crate::runtime::spawn("quality", core, move || self.run())
    }

    /// Writes a row per interval until the stop flag rises.
    pub fn run(mut self) {
        let lag_ms = self.config.lag.as_millis() as i64;
        let mut from_s = (now_ms() - lag_ms).div_euclid(1000);
        let mut next = Instant::now() + self.config.interval;
        let mut failing = false;
        loop {
            while Instant::now() < next {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                // Parked, not asleep: a stop unparks the thread at once.
                std::thread::park_timeout(POLL.min(next.saturating_duration_since(Instant::now())));
            }
            // A slow snapshot can leave `next` behind: the loop above then never looks.
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            next += self.config.interval;
            let until_s = (now_ms() - lag_ms).div_euclid(1000);
            if until_s <= from_s {
                continue;
            }
            match self.take(from_s, until_s) {
                Ok(report) => {
                    from_s = until_s;
                    if failing {
                        tracing::info!("Quality snapshots are written again");
                        failing = false;
                    }
                    tracing::debug!(
                        received = report.ticks_received(),
                        "Quality snapshot written"
                    );
                }
                Err(message) => {
                    if !failing {
                        tracing::warn!(
                            "Quality snapshot not written ({message}); ingestion goes on, and the next snapshot covers this window too"
                        );
                        failing = true;
                    }
                }
            }
        }
    }

    /// Reads the window's report and writes its row.
    fn take(&mut self, from_s: i64, until_s: i64) -> Result<Report, String> {
        let window = Window {
            from_s,
            until_s,
            tokens: Vec::new(),
            tick_subject_prefix: self.config.tick_subject_prefix.clone(),
            distributed: self.config.distributed,
        };
        let report = self.read(&window).inspect_err(|_| self.clickhouse = None)?;
        self.write(&report).inspect_err(|_| self.postgres = None)?;
        Ok(report)
    }

    fn read(&mut self, window: &Window) -> Result<Report, String> {
        let conn = match &mut self.clickhouse {
            Some(conn) if !conn.is_broken() => conn,
            slot => slot.insert(
                Connection::connect(&self.config.options)
                    .map_err(|e| format!("ClickHouse: {e}"))?,
            ),
        };
        report(conn, window).map_err(|e| format!("ClickHouse: {e}"))
    }

    fn write(&mut self, report: &Report) -> Result<(), String> {
        let usable = matches!(&self.postgres, Some(client) if !client.is_closed());
        if !usable {
            self.postgres = Some(slow_path_client(
                &self.config.pg_url,
                &self.config.pg_tls,
                self.config.pg_connect_timeout,
                APPLICATION_NAME,
            )?);
        }
        let client = self.postgres.as_mut().expect("connected above");
        let w = &report.window;
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        client
            .execute(
                INSERT,
                &[
                    &(w.from_s as f64),
                    &(w.until_s as f64),
                    &as_i64(report.ticks_received()),
                    &as_i64(report.ticks_stored),
                    &as_i64(report.ticks_rejected),
                    &report.overall_score(),
                    &report.completeness_percentage(),
                    &as_i64(report.validation_failures()),
                    &report.to_json().to_string(),
                ],
            )
            .map_err(|e| {
                format!(
                    "PostgreSQL: {}; run `alphapt-storage migrate up` if quality_snapshots is missing",
                    with_causes(&e)
                )
            })?;
        Ok(())
    }
}
