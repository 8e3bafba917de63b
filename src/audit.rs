//! The ingest audit: one PostgreSQL `ingest_audit` row per block made durable (which
//! table, how many rows, which stream sequences and times, how many bytes, where it
//! went, how long it took), written off the hot path.
//!
//! ```text
//!   writer w   ──after_commit: a record per block (clickhouse | spill)──► rtrb ring ─┐
//!   inserter w ──after_commit: a record per journal record (clickhouse)──► rtrb ring ─┼─► audit thread
//!   (one ring per thread, AUDIT_SLOTS records; full: the record is counted dropped)   │   multi-row INSERT,
//!                                                                                      └─► ≤ BATCH_ROWS_MAX a statement
//! ```
//!
//! Back-pressure, decided: a writer never waits for the audit. Its ring holds
//! [`AUDIT_SLOTS`] records (~1 MiB); while PostgreSQL is away the thread keeps one
//! batch and retries it with capped, jittered backoff, the rings fill, and past that
//! each new record is counted in `dropped` (never blocking, never allocating). When
//! PostgreSQL returns the thread writes what the rings kept.
//!
//! Spilled blocks are audited again as `replay` when a replay (the overflow writer's,
//! or the start's) puts them into ClickHouse or finds them there.
//!
//! Journal-first: a block is audited twice, `spill` when its journal sync made it
//! durable (and acknowledged) and `clickhouse` when the inserter's INSERT committed
//! it, so per table the `clickhouse` rows add up to what ClickHouse holds. A journal
//! record carries no exchange times or raw size: those columns are NULL there, and
//! `raw_bytes` is the stored size.
//!
//! Must never: block or allocate on a writer's side, stop ingestion, log a password.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::refdata::{slow_path_client, with_causes};
use crate::runtime::Backoff;

/// Records one writer or inserter can have waiting: 8,192 × ~96 B = ~0.8 MiB, several
/// minutes of blocks at the default flush interval, so a PostgreSQL restart loses none.
pub const AUDIT_SLOTS: usize = 8192;

/// Rows in one INSERT statement.
pub const BATCH_ROWS_MAX: usize = 512;

/// How long records may wait before a partial batch is written.
const BATCH_WAIT: Duration = Duration::from_millis(200);

/// Longest sleep before the thread looks at its rings and stop flag again.
const POLL: Duration = Duration::from_millis(20);

/// How long the thread may keep writing after the stop.
const STOP_FLUSH: Duration = Duration::from_secs(1);

/// `application_name` of the connection.
pub const APPLICATION_NAME: &str = "alphapt-storage audit";

/// Where a block went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Committed by an INSERT.
    ClickHouse,
    /// Synced into the spill journal (overflow, or journal-first's durable point).
    Spill,
    /// Taken from the spill journal into ClickHouse (an overflow writer's replay, or
    /// the start's), or found there already.
    Replay,
}

impl Destination {
    /// The `ingest_audit.destination` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::ClickHouse => "clickhouse",
            Destination::Spill => "spill",
            Destination::Replay => "replay",
        }
    }
}

/// One block, as audited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AuditRecord {
    /// `market_ticks`, `strategy_signals` or `rejected_messages`.
    pub table: &'static str,
    /// Where it went.
    pub destination: Destination,
    /// Rows.
    pub rows: u32,
    /// Stream sequences covered.
    pub seq_first: u64,
    /// Stream sequences covered.
    pub seq_last: u64,
    /// Exchange times covered, Unix ms (a journal record does not carry them).
    pub timestamp_min_ms: Option<i64>,
    /// Exchange times covered, Unix ms.
    pub timestamp_max_ms: Option<i64>,
    /// Native block size before compression.
    pub raw_bytes: u64,
    /// Bytes sent or stored.
    pub compressed_bytes: u64,
    /// From the oldest receive stamp to durable, ms.
    pub latency_ms: f64,
}

/// A writer's or inserter's end: never waits.
pub struct AuditProducer {
    ring: rtrb::Producer<AuditRecord>,
    dropped: Arc<AtomicU64>,
}

impl AuditProducer {
    /// Hands `record` to the audit thread, or counts it dropped when its ring is full.
    #[inline]
    pub fn record(&mut self, record: AuditRecord) {
        if self.ring.push(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The audit record of a spilled record now in ClickHouse (a record carries no
/// exchange times or raw size; `raw_bytes` is its stored size).
pub fn replayed(
    header: &crate::spill::RecordHeader,
    stored_bytes: usize,
    now_ms: i64,
) -> AuditRecord {
    AuditRecord {
        table: header.table.name(),
        destination: Destination::Replay,
        rows: header.rows,
        seq_first: header.seq_first,
        seq_last: header.seq_last,
        timestamp_min_ms: None,
        timestamp_max_ms: None,
        raw_bytes: stored_bytes as u64,
        compressed_bytes: stored_bytes as u64,
        latency_ms: (now_ms - header.received_min_ms).max(0) as f64,
    }
}

/// The audit thread's ends of every ring, gathered from the pipelines.
#[derive(Default)]
pub struct AuditFeed {
    rings: Vec<rtrb::Consumer<AuditRecord>>,
    /// Records refused by a full ring, one counter per pipeline merged in.
    dropped: Vec<Arc<AtomicU64>>,
}

impl AuditFeed {
    /// A new ring: its producer for a writer or inserter, its consumer kept here.
    pub fn producer(&mut self) -> AuditProducer {
        if self.dropped.is_empty() {
            self.dropped.push(Arc::default());
        }
        let (ring, consumer) = rtrb::RingBuffer::new(AUDIT_SLOTS);
        self.rings.push(consumer);
        AuditProducer {
            ring,
            dropped: self.dropped[0].clone(),
        }
    }

    /// Adds another feed's rings (the signals path's to the ticks path's).
    pub fn merge(&mut self, other: AuditFeed) {
        self.rings.extend(other.rings);
        self.dropped.extend(other.dropped);
    }

    /// The full rings' counters, to read after the feed moved into the thread.
    pub fn dropped_counters(&self) -> Vec<Arc<AtomicU64>> {
        self.dropped.clone()
    }

    /// Records refused by full rings so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    fn waiting(&self) -> usize {
        self.rings.iter().map(rtrb::Consumer::slots).sum()
    }
}

/// Counters of the audit thread.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Connections made to PostgreSQL, the first included.
    pub connects_total: AtomicU64,
    /// Rows written to `ingest_audit`.
    pub written_total: AtomicU64,
    /// Records still waiting when the process stopped, or refused by PostgreSQL for
    /// their values (full rings count in [`AuditFeed::dropped`]).
    pub dropped_total: AtomicU64,
    /// Failed INSERTs or connects.
    pub errors_total: AtomicU64,
}

/// Settings of the thread.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// `postgres.url` (never logged unredacted).
    pub url: String,
    /// `postgres.connect_timeout_ms`.
    pub connect_timeout: Duration,
    /// `postgres.backoff_initial_ms`.
    pub backoff_initial: Duration,
    /// `postgres.backoff_max_ms`.
    pub backoff_max: Duration,
    /// `postgres.tls*`.
    pub tls: crate::tls::Settings,
}

impl AuditConfig {
    /// From the `[postgres]` section.
    pub fn from_config(config: &Config) -> AuditConfig {
        let p = &config.postgres;
        AuditConfig {
            url: p.url.clone(),
            connect_timeout: Duration::from_millis(p.connect_timeout_ms),
            backoff_initial: Duration::from_millis(p.backoff_initial_ms),
            backoff_max: Duration::from_millis(p.backoff_max_ms),
            tls: p.tls_settings(),
        }
    }
}

/// The audit thread.
pub struct Auditor {
    config: AuditConfig,
    feed: AuditFeed,
    stats: Arc<AuditStats>,
    stop: Arc<AtomicBool>,
    client: Option<postgres::Client>,
    batch: Vec<AuditRecord>,
}

impl Auditor {
    /// An auditor over `feed`; connects at its first batch.
    pub fn new(
        config: AuditConfig,
        feed: AuditFeed,
        stats: Arc<AuditStats>,
        stop: Arc<AtomicBool>,
    ) -> Auditor {
        Auditor {
            config,
            feed,
            stats,
            stop,
            client: None,
            batch: Vec::with_capacity(BATCH_ROWS_MAX),
        }
    }

    /// Starts the thread `audit`, pinned to `core` if given.
    pub fn spawn(self, core: Option<usize>) -> std::io::Result<JoinHandle<()>> {
        crate::runtime::spawn("audit", core, move || self.run())
    }

    /// Writes batches until the stop flag rises, then what it can within
    /// [`STOP_FLUSH`] (nothing more if PostgreSQL is failing); what is left is counted
    /// dropped.
    pub fn run(mut self) {
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut oldest: Option<Instant> = None;
        let mut retry_at = Instant::now();
        let mut failing = false;
        let mut stop_deadline: Option<Instant> = None;
        loop {
            if stop_deadline.is_none() && self.stop.load(Ordering::Relaxed) {
                stop_deadline = Some(Instant::now() + STOP_FLUSH);
            }
            self.fill();
            if !self.batch.is_empty() {
                oldest.get_or_insert_with(Instant::now);
            }
            let due = self.batch.len() >= BATCH_ROWS_MAX
                || oldest.is_some_and(|t| t.elapsed() >= BATCH_WAIT)
                || (stop_deadline.is_some() && !self.batch.is_empty());
            if due && Instant::now() >= retry_at {
                match self.write() {
                    Ok(()) => {
                        self.stats
                            .written_total
                            .fetch_add(self.batch.len() as u64, Ordering::Relaxed);
                        self.batch.clear();
                        oldest = None;
                        backoff.reset();
                        if failing {
                            tracing::info!("Audit rows are written to PostgreSQL again");
                            failing = false;
                        }
                        continue;
                    }
                    Err(WriteError::Refused(message)) => {
                        self.stats.errors_total.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .dropped_total
                            .fetch_add(self.batch.len() as u64, Ordering::Relaxed);
                        tracing::error!(
                            records = self.batch.len(),
                            "Audit rows refused by PostgreSQL ({message}); dropped so the audit goes on"
                        );
                        self.batch.clear();
                        oldest = None;
                    }
                    Err(WriteError::Retry(message)) => {
                        self.client = None;
                        self.stats.errors_total.fetch_add(1, Ordering::Relaxed);
                        if !failing {
                            tracing::warn!(
                                "Audit rows not written ({message}); ingestion goes on, {AUDIT_SLOTS} records per writer are kept and retried"
                            );
                            failing = true;
                        }
                        retry_at = Instant::now() + backoff.next_delay();
                    }
                }
            }
            if let Some(deadline) = stop_deadline {
                let idle = self.batch.is_empty() && self.feed.waiting() == 0;
                // PostgreSQL already failing: no point holding the exit up for it.
                if idle || failing || Instant::now() >= deadline {
                    let left = self.batch.len() + self.feed.waiting();
                    let dropped = self.feed.dropped();
                    if dropped > 0 {
                        tracing::warn!(
                            records = dropped,
                            "Audit records dropped while their rings were full (PostgreSQL away too long)"
                        );
                    }
                    if left > 0 {
                        self.stats
                            .dropped_total
                            .fetch_add(left as u64, Ordering::Relaxed);
                        tracing::warn!(
                            records = left,
                            "Audit records not written before exit (PostgreSQL away?); counted as dropped"
                        );
                    }
                    return;
                }
            }
            // Parked, not asleep: a stop unparks the thread at once.
            std::thread::park_timeout(POLL);
        }
    }

    /// Moves waiting records into the batch, up to its size.
    fn fill(&mut self) {
        for ring in &mut self.feed.rings {
            while self.batch.len() < BATCH_ROWS_MAX {
                match ring.pop() {
                    Ok(record) => self.batch.push(record),
                    Err(_) => break,
                }
            }
        }
    }

    /// One multi-row INSERT of the batch.
    fn write(&mut self) -> Result<(), WriteError> {
        if !matches!(&self.client, Some(client) if !client.is_closed()) {
            self.client = Some(
                slow_path_client(
                    &self.config.url,
                    &self.config.tls,
                    self.config.connect_timeout,
                    APPLICATION_NAME,
                )
                .map_err(WriteError::Retry)?,
            );
            self.stats.connects_total.fetch_add(1, Ordering::Relaxed);
        }
        let client = self.client.as_mut().expect("connected above");
        let sql = insert_sql(&self.batch);
        client.batch_execute(&sql).map_err(|e| {
            let message = format!(
                "PostgreSQL: {}; run `alphapt-storage migrate up` if ingest_audit is missing",
                with_causes(&e)
            );
            // A data or constraint error (SQLSTATE class 22 or 23) would refuse the
            // same batch forever and stop the audit behind it.
            match e.code().map(|state| &state.code()[..2]) {
                Some("22" | "23") => WriteError::Refused(message),
                _ => WriteError::Retry(message),
            }
        })
    }
}

/// Why a batch was not written.
enum WriteError {
    /// PostgreSQL away, or a table missing: retried.
    Retry(String),
    /// PostgreSQL refused these rows' values: dropped and counted.
    Refused(String),
}

/// The batch as one INSERT. Every value is a number or one of our own table and
/// destination names, so the literals need no escaping. A row whose block (table,
/// destination, sequence range) is already recorded is left out: a connection cut
/// after PostgreSQL committed but before the reply came makes the thread send the
/// batch again, and that retry must not count the blocks twice.
fn insert_sql(batch: &[AuditRecord]) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(512 + batch.len() * 160);
    sql.push_str(
        "INSERT INTO ingest_audit (table_name, destination, rows, stream_seq_first, stream_seq_last, \
         timestamp_min, timestamp_max, raw_bytes, compressed_bytes, latency_ms) \
         SELECT v.t, v.d, v.r, v.f, v.l, v.tmin::timestamptz, v.tmax::timestamptz, v.raw, v.comp, v.lat \
         FROM (VALUES ",
    );
    let time = |ms: Option<i64>| {
        ms.map_or_else(
            || "NULL".to_owned(),
            |ms| format!("to_timestamp({})", ms as f64 / 1000.0),
        )
    };
    for (i, r) in batch.iter().enumerate() {
        let _ = write!(
            sql,
            "{}('{}', '{}', {}, {}, {}, {}, {}, {}, {}, {})",
            if i == 0 { "" } else { ", " },
            r.table,
            r.destination.as_str(),
            r.rows,
            r.seq_first.min(i64::MAX as u64),
            r.seq_last.min(i64::MAX as u64),
            time(r.timestamp_min_ms),
            time(r.timestamp_max_ms),
            r.raw_bytes.min(i64::MAX as u64),
            r.compressed_bytes.min(i64::MAX as u64),
            if r.latency_ms.is_finite() {
                r.latency_ms
            } else {
                0.0
            }
        );
    }
    sql.push_str(
        ") AS v(t, d, r, f, l, tmin, tmax, raw, comp, lat) WHERE NOT EXISTS \
         (SELECT 1 FROM ingest_audit a WHERE a.stream_seq_last = v.l AND a.stream_seq_first = v.f \
         AND a.table_name = v.t AND a.destination = v.d)",
    );
    sql
}

#[cfg(test)]
mod tests {
    //! The ring's bound and the statement; the writes run against the real server in
    //! `tests/audit.rs`.
    use super::*;

    fn record(seq: u64) -> AuditRecord {
        AuditRecord {
            table: "market_ticks",
            destination: Destination::Spill,
            rows: 10,
            seq_first: seq,
            seq_last: seq + 9,
            timestamp_min_ms: Some(1_764_000_000_000),
            timestamp_max_ms: None,
            raw_bytes: 3000,
            compressed_bytes: 1200,
            latency_ms: 1.5,
        }
    }

    #[test]
    fn a_full_ring_counts_drops_and_never_waits() {
        let mut feed = AuditFeed::default();
        let mut producer = feed.producer();
        for seq in 0..AUDIT_SLOTS as u64 + 5 {
            producer.record(record(seq));
        }
        assert_eq!(feed.waiting(), AUDIT_SLOTS);
        assert_eq!(feed.dropped(), 5);
    }

    #[test]
    fn the_statement_holds_every_record() {
        let sql = insert_sql(&[record(1), record(11)]);
        assert!(sql.contains("('market_ticks', 'spill', 10, 1, 10, to_timestamp(1764000000), NULL, 3000, 1200, 1.5), ('market_ticks', 'spill', 10, 11, 20,"), "{sql}");
    }
}
