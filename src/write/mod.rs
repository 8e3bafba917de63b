//! Writers: one ClickHouse connection each, INSERTing the sealed blocks of the shards
//! assigned to them, in order, and reporting what is durable.
//!
//! ```text
//!   shard s ──sealed ring (rtrb)──► writer j (s % W == j) ──INSERT──► ClickHouse
//!           ◄──free ring (rtrb)───  (buffers go home)     ──durable_last[s]──► receiver (acks)
//! ```
//!
//! Consecutive queued blocks of one shard and table go in one INSERT (up to
//! [`BLOCKS_PER_INSERT_MAX`]). With a linger, a writer holds blocks sealed on size
//! until a full INSERT's worth is queued or their oldest message has waited the linger
//! (never past the flush interval, never while the shard is short of free blocks):
//! ClickHouse pays per part far more than per row.
//!
//! Failures, by kind ([`Error::is_retriable`]):
//! - retriable (connection, timeout, server overloaded): one capped, jittered backoff
//!   (the writer's; the client does not sleep again), on a fresh connection, holding the
//!   blocks. Before re-sending, the writer asks ClickHouse which of its blocks are
//!   already stored (an INSERT cut mid-way has stored a prefix of its blocks, and
//!   18.16's MergeTree does not deduplicate) and sends only the rest: one writer owns a
//!   shard's sequences, so the check has no race.
//! - permanent (schema mismatch, unknown table, type error): not retried. The writer
//!   holds the blocks, reports `refused` with the server's message, and acknowledges
//!   nothing past them; a restart with the schema fixed stores them (JetStream
//!   redelivers what was never acknowledged).
//!
//! ClickHouse away (a retriable failure): the batch goes into the writer's spill journal,
//! synced once for the whole batch, and counts as durable (acks go on); until the
//! backoff ends, later batches go straight there; when ClickHouse answers again the
//! writer replays one pending record per pass (`spilling`). When the spill refuses
//! (full, failing) the writer holds the batch and backs off: the sealed ring fills,
//! the shard stops, the receiver stops pulling — back-pressure, nothing acked that is
//! not durable. Every wait (backoff, a refused block) looks at the [`Alert`]: past the
//! drain deadline the writer gives up and returns the count of blocks it did not
//! store. Must never: lose a block, retry a permanent error, retry without backoff,
//! outlive the drain deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::audit::{AuditProducer, AuditRecord, Destination as AuditDestination};
use crate::durable::DurableMarks;
use crate::model::{SealedBlock, Table};
use crate::native::{Client, Connection, Error, Options};
use crate::runtime::clock::now_ms;
use crate::runtime::latency::LatencyBuckets;
use crate::runtime::sizes::{BLOCKS_PER_INSERT_MAX, POOL_BLOCKS, SEAL_GROUP_BLOCKS};
use crate::runtime::{crash, Alert, Backoff, Waiter};
use crate::spill::SharedJournal;

/// The `insert_deduplication_token` of an INSERT of `blocks` blocks of `table` spanning
/// sequences `first..=last`: one writer owns a shard's sequences, so no other INSERT
/// carries the same token.
pub fn dedup_token(table: &str, first: u64, last: u64, blocks: usize) -> String {
    format!("alphapt:{table}:{first}-{last}:{blocks}")
}

/// A ClickHouse client that makes one attempt per call, connecting lazily, and the
/// backoff its owner paces retries with (writer and inserter alike); its reconnects
/// are counted in `stats`.
fn paced_client(
    options: &Options,
    replicas: &[Options],
    initial: Duration,
    max: Duration,
    ping_after: Duration,
    stats: &WriterStats,
) -> (Client, Backoff) {
    let backoff = Backoff::new(initial, max);
    let mut client = Client::new(options.clone(), backoff.clone(), ping_after, 1)
        .with_replicas(replicas.to_vec());
    client.count_reconnects(stats.reconnects_total.clone());
    client.report_replica(stats.replica_in_use.clone());
    (client, backoff)
}

/// Where a batch became durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durable {
    /// INSERTed.
    ClickHouse,
    /// Synced into the spill journal.
    Spill,
}

pub mod inserter;
mod spilling;

/// INSERT statement and expected header of one table.
#[derive(Clone, Debug)]
pub struct TableInsert {
    /// The table's name, for the stored-blocks check.
    pub name: &'static str,
    /// `INSERT INTO db.table (...) VALUES`.
    pub sql: String,
    /// Column names and types the server must announce.
    pub header: Vec<(String, String)>,
    /// Send `insert_deduplication_token` (the server deduplicates this table).
    pub dedup_token: bool,
}

/// The tables a writer inserts into.
#[derive(Clone, Debug)]
pub struct Tables {
    /// `market_ticks`.
    pub ticks: TableInsert,
    /// `strategy_signals`.
    pub signals: TableInsert,
    /// `rejected_messages`.
    pub rejects: TableInsert,
}

impl Tables {
    fn get(&self, table: Table) -> &TableInsert {
        match table {
            Table::Ticks => &self.ticks,
            Table::Signals => &self.signals,
            Table::Rejects => &self.rejects,
        }
    }
}

/// One shard's edge into a writer.
pub struct WriterInput {
    /// The shard's index.
    pub shard: usize,
    /// Sealed blocks from the shard.
    pub sealed: rtrb::Consumer<SealedBlock>,
    /// Emptied blocks back to the shard's pool.
    pub free: rtrb::Producer<SealedBlock>,
    /// Set by the shard after its last seal group.
    pub finished: Arc<AtomicBool>,
}

/// Counters a writer publishes once per INSERT; read by the control plane.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Rows committed.
    pub rows_total: AtomicU64,
    /// Rows committed per table: `market_ticks`, `strategy_signals`,
    /// `rejected_messages` (the order of [`crate::model::Table`]).
    pub table_rows_total: [AtomicU64; 3],
    /// Receive to durable (ClickHouse, or the journal), per message, per table.
    pub durable_latency: [LatencyBuckets; 3],
    /// Receive to committed in ClickHouse, per message, per table.
    pub committed_latency: [LatencyBuckets; 3],
    /// Receive-to-durable per message, µs: the writer's whole HDR histograms, each
    /// message from its own receive stamp and from its block's oldest, handed over
    /// when it exits (read once, after the join; never on the hot path).
    pub messages_latency: std::sync::Mutex<Option<[Histogram<u64>; 2]>>,
    /// Blocks committed.
    pub blocks_total: AtomicU64,
    /// INSERT statements committed.
    pub inserts_total: AtomicU64,
    /// Journal-first INSERTs committed as one block in table-key order
    /// (`spill.sort_inserts`).
    pub sorted_inserts_total: AtomicU64,
    /// When the last INSERT committed, Unix ms (0: none yet); the writer's inserters
    /// write it too.
    pub last_stored_ms: AtomicU64,
    /// Raw (uncompressed) block bytes committed.
    pub raw_bytes_total: AtomicU64,
    /// Bytes sent (compressed when compression is on).
    pub sent_bytes_total: AtomicU64,
    /// Failed INSERT attempts (each retried).
    pub errors_total: AtomicU64,
    /// Receive-to-durable p50 over all blocks, µs.
    pub latency_us_p50: AtomicU64,
    /// Receive-to-durable p99 over all blocks, µs.
    pub latency_us_p99: AtomicU64,
    /// Receive-to-durable p99.9 over all blocks, µs.
    pub latency_us_p999: AtomicU64,
    /// Receive-to-durable maximum, µs.
    pub latency_us_max: AtomicU64,
    /// 1 while the writer cannot reach ClickHouse.
    pub degraded: AtomicU64,
    /// 1 while a permanent error (schema, type) holds the writer's blocks.
    pub refused: AtomicU64,
    /// Connections to ClickHouse after the writer's first.
    pub reconnects_total: Arc<AtomicU64>,
    /// Index, among its ClickHouse shard's replicas, of the one it inserts into (0
    /// for one server); moved by failover.
    pub replica_in_use: Arc<AtomicU64>,
    /// Raw bytes of the blocks made durable (ClickHouse or the journal), with
    /// `encoded_bytes_total` the compression ratio.
    pub durable_raw_bytes_total: AtomicU64,
    /// Encoded (compressed when on) bytes of the blocks made durable.
    pub encoded_bytes_total: AtomicU64,
    /// Blocks found already stored before a re-send, so not sent again.
    pub resend_skipped_total: AtomicU64,
    /// The last error's text, for health and the status line (written on failure only).
    pub last_error: Mutex<String>,
    /// Rows made durable in the spill (ClickHouse away) instead of ClickHouse.
    pub spilled_rows_total: AtomicU64,
    /// Blocks made durable in the spill.
    pub spilled_blocks_total: AtomicU64,
    /// Rows replayed from the spill into ClickHouse.
    pub replayed_rows_total: AtomicU64,
    /// Records replayed (or found already stored) and marked.
    pub replayed_blocks_total: AtomicU64,
    /// Bytes of spilled records not yet replayed.
    pub spill_pending_bytes: AtomicU64,
    /// Each journal sync (`fdatasync`, one per group of blocks): how long the writer
    /// waited for the disk. When receive-to-durable's tail is long and this one too,
    /// the disk is the cause (other writers on it: `spill.dir` wants a disk of its own).
    pub spill_sync: LatencyBuckets,
    /// Journal sync p50, p99 and maximum, µs (the writer's HDR histogram, published
    /// after each sync).
    pub spill_sync_us: [AtomicU64; 3],
    /// Receive-to-durable p50 of the blocks the spill took, µs.
    pub spill_latency_us_p50: AtomicU64,
    /// Receive-to-durable p99 of the blocks the spill took, µs.
    pub spill_latency_us_p99: AtomicU64,
    /// Receive-to-durable maximum of the blocks the spill took, µs.
    pub spill_latency_us_max: AtomicU64,
    /// 1 while the spill refuses blocks (full, or failing): then the writer holds them
    /// and back-pressure stops the receiver.
    pub spill_refusing: AtomicU64,
    /// Journal faults after the append, each also logged: marks whose sync failed, and
    /// records found damaged when an inserter read them back (set aside).
    pub spill_faults_total: AtomicU64,
}

/// A journaled record that [`crate::spill::Journal::read`] found damaged after it was
/// written (the disk, or a hand on the file): set aside as the scan at open would, so
/// it is neither sent nor offered again nor waited for at the drain, while the records
/// around it go on; logged and counted. Its segment is kept for `spill verify`, and
/// the next start reads the whole store so that JetStream delivers its messages again.
/// Any other read error (none is known to happen: only listed records are read) only
/// ends the claim, and says so.
pub(crate) fn set_aside_damaged(
    journal: &mut crate::spill::Journal,
    pos: crate::spill::RecordPos,
    error: &crate::spill::SpillError,
    stats: &WriterStats,
    writer: usize,
) {
    stats.spill_fault(error);
    let crate::spill::SpillError::Corrupt { reason, .. } = error else {
        let _ = journal.unclaim(pos);
        tracing::error!(writer, %error, "A journaled block cannot be read; it stays in the journal for the next start");
        return;
    };
    let outcome = journal.set_aside(pos, reason);
    tracing::error!(writer, %error, not_set_aside = ?outcome.err(),
        "A journaled block is damaged and cannot be sent; it is set aside and its segment kept (`alphapt-storage spill verify`); the next start reads the whole store so that JetStream delivers its messages again");
}

impl WriterStats {
    /// Counts a journal fault past the append and keeps its text for health.
    pub fn spill_fault(&self, error: &crate::spill::SpillError) {
        self.spill_faults_total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut text) = self.last_error.lock() {
            text.clear();
            text.push_str(&error.to_string());
        }
    }

    /// Keeps `error`'s text for health and the status line (on failure only).
    pub fn note_error(&self, error: &Error) {
        if let Ok(mut text) = self.last_error.lock() {
            text.clear();
            text.push_str(&error.to_string());
        }
    }
}

/// Writer settings.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Index, for the thread name and logs.
    pub index: usize,
    /// ClickHouse connection.
    pub options: Options,
    /// Every replica of its ClickHouse shard, `options` first, for failover; empty
    /// for one server.
    pub replicas: Vec<Options>,
    /// Reconnect pacing.
    pub backoff_initial: Duration,
    /// Reconnect pacing ceiling.
    pub backoff_max: Duration,
    /// Ping an idle connection after this long.
    pub ping_after: Duration,
    /// Hold sealed blocks up to this long (from their oldest message) to INSERT more
    /// of them at once.
    pub insert_linger: Duration,
    /// Journal-first (`spill.mode = "always"`): every batch is appended to the journal
    /// and synced, and counts as durable then; the writer never INSERTs (its inserter
    /// does, from the journal).
    pub journal_first: bool,
}

/// A writer thread's state.
pub struct Writer {
    /// Settings, fixed at start.
    config: WriterConfig,
    /// The ClickHouse connection, reconnected after failures.
    client: Client,
    /// Pacing of retries of the current batch; reset after a commit.
    backoff: Backoff,
    /// INSERT statements and expected headers per table.
    tables: Arc<Tables>,
    /// The shards this writer serves, in fixed order.
    inputs: Vec<WriterInput>,
    /// Where committed seal groups are reported (read by the receiver).
    marks: Arc<DurableMarks>,
    /// Counters for the control plane, published once per INSERT.
    stats: Arc<WriterStats>,
    /// How the writer waits when every input is empty.
    waiter: Waiter,
    /// The stop-and-deadline signal.
    alert: Arc<Alert>,
    /// Receive-to-durable per block, µs.
    histogram: Histogram<u64>,
    /// Receive-to-durable per message (each from its own receive stamp, to the ms),
    /// µs: the exit report's.
    messages: Histogram<u64>,
    /// The same messages each counted with its block's oldest wait, µs: the upper
    /// bound the exit report shows beside.
    messages_oldest: Histogram<u64>,
    /// Receive-to-durable of the blocks the spill took, µs (a subset of `histogram`).
    spill_histogram: Histogram<u64>,
    /// Journal sync times, µs.
    sync_histogram: Histogram<u64>,
    /// Blocks of the INSERT being assembled; capacity reserved once.
    batch: Vec<SealedBlock>,
    /// This writer's spill journal (`<spill.dir>/writer-<index>`), if any; shared with
    /// the inserter when journal-first.
    spill: Option<SharedJournal>,
    /// Set after a failed INSERT: until then ClickHouse counts as away, and batches go
    /// straight to the spill (when it has room) instead of waiting.
    retry_at: Option<Instant>,
    /// Set when replay met a permanent error: the spilled blocks stay until a restart.
    replay_blocked: bool,
    /// Pending records replay cannot take (another schema or compression, left by an
    /// earlier run): the replay step scans again only when more are pending.
    replay_unreplayable: u64,
    /// One `ingest_audit` record per block made durable.
    audit: AuditProducer,
}

impl Writer {
    /// A writer over its inputs; connects lazily.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: WriterConfig,
        tables: Tables,
        inputs: Vec<WriterInput>,
        marks: Arc<DurableMarks>,
        stats: Arc<WriterStats>,
        waiter: Waiter,
        alert: Arc<Alert>,
        spill: Option<SharedJournal>,
        audit: AuditProducer,
    ) -> Writer {
        let (client, backoff) = paced_client(
            &config.options,
            &config.replicas,
            config.backoff_initial,
            config.backoff_max,
            config.ping_after,
            &stats,
        );
        Writer {
            config,
            client,
            backoff,
            tables: Arc::new(tables),
            inputs,
            marks,
            stats,
            waiter,
            alert,
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            messages: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            messages_oldest: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            spill_histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            sync_histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            batch: Vec::with_capacity(BLOCKS_PER_INSERT_MAX),
            spill,
            retry_at: None,
            replay_blocked: false,
            replay_unreplayable: 0,
            audit,
        }
    }

    /// The writer's main loop: until every input shard has finished and its ring is
    /// empty, or the drain deadline passed. Returns the number of blocks it did not
    /// store (0 on a clean drain); those were never acknowledged.
    pub fn run(mut self) -> usize {
        let left = self.serve();
        // Handed over once, at exit: `run --latency-report` merges every writer's.
        if let Ok(mut slot) = self.stats.messages_latency.lock() {
            let take = |h: &mut Histogram<u64>| {
                std::mem::replace(h, Histogram::new(1).expect("valid histogram"))
            };
            *slot = Some([take(&mut self.messages), take(&mut self.messages_oldest)]);
        }
        left
    }

    fn serve(&mut self) -> usize {
        loop {
            let draining = self.alert.stopping();
            let mut worked = false;
            for index in 0..self.inputs.len() {
                if !self.due(index, draining) {
                    continue;
                }
                if self.collect(index) {
                    worked = true;
                    if let Err(abandoned) = self.insert_batch(index) {
                        return abandoned + self.queued_blocks();
                    }
                }
            }
            // One spilled record per pass, so replay keeps up under load too.
            let replayed = self.replay_step();
            if worked || replayed {
                self.waiter.reset();
                continue;
            }
            let all_done = self
                .inputs
                .iter()
                .all(|i| i.finished.load(Ordering::Acquire) && i.sealed.is_empty());
            if all_done {
                return 0;
            }
            if self.alert.expired() {
                let queued = self.queued_blocks();
                if queued > 0 {
                    tracing::error!(writer = self.config.index, blocks = queued,
                        "Drain deadline passed; blocks not stored are left unacknowledged for redelivery");
                }
                return queued;
            }
            self.waiter.idle();
        }
    }

    /// Whether input `index`'s queued blocks should be INSERTed now rather than held
    /// for more: always without a linger; otherwise once a full INSERT's worth is
    /// queued, the oldest queued message has waited the linger, the shard is short of
    /// free blocks (it would stall on us), or the appliance is draining or finished.
    fn due(&self, index: usize, draining: bool) -> bool {
        let input = &self.inputs[index];
        let Ok(first) = input.sealed.peek() else {
            return false;
        };
        if self.config.insert_linger.is_zero() || self.config.journal_first || draining {
            return true;
        }
        let queued = input.sealed.slots();
        // Blocks in the free ring = the pool less what is queued or in our batch.
        let free = POOL_BLOCKS.saturating_sub(queued + self.batch.len());
        queued >= BLOCKS_PER_INSERT_MAX
            || free < SEAL_GROUP_BLOCKS
            || input.finished.load(Ordering::Acquire)
            || now_ms() - first.received_min_ms >= self.config.insert_linger.as_millis() as i64
    }

    fn queued_blocks(&self) -> usize {
        self.inputs.iter().map(|i| i.sealed.slots()).sum()
    }

    /// Moves consecutive queued blocks of one table from input `index` into the batch.
    fn collect(&mut self, index: usize) -> bool {
        let input = &mut self.inputs[index];
        while self.batch.len() < BLOCKS_PER_INSERT_MAX {
            let same_table = match (input.sealed.peek(), self.batch.first()) {
                (Ok(next), Some(first)) => next.table == first.table,
                (Ok(_), None) => true,
                (Err(_), _) => false,
            };
            if !same_table {
                break;
            }
            let block = input.sealed.pop().expect("peeked above");
            self.batch.push(block);
        }
        !self.batch.is_empty()
    }

    /// INSERTs the batch: retriable failures with backoff (re-sending only the blocks
    /// not already stored), a permanent one held without retrying. On success records
    /// durability and returns the buffers. `Err(blocks)` when the drain deadline passed
    /// first.
    fn insert_batch(&mut self, index: usize) -> Result<(), usize> {
        if self.config.journal_first {
            return self.journal_batch(index);
        }
        // An Arc, not a copy of the statement and header: no allocation per INSERT.
        let tables = self.tables.clone();
        let table = tables.get(self.batch[0].table);
        let started = Instant::now();
        // Blocks known stored (by an attempt cut mid-way): never sent again.
        let mut stored = [false; BLOCKS_PER_INSERT_MAX];
        // While ClickHouse is away, the spill takes the batch at once.
        // A copy of the marks each time: see `spill_batch` on a refusal part-way.
        if self.clickhouse_away() && self.spill_batch(&mut { stored }) {
            crash::reached(crash::Point::SpillSynced);
            self.after_commit(index, Durable::Spill);
            return Ok(());
        }
        let mut failed = false;
        // Bound: each pass ends in a commit, a deadline, or a backoff sleep.
        loop {
            let outcome = if failed {
                self.find_stored(table, &mut stored)
                    .and_then(|()| self.send(table, &stored))
            } else {
                self.send(table, &stored)
            };
            match outcome {
                Ok(()) => {
                    crash::reached(crash::Point::InsertCommitted);
                    break;
                }
                Err(error) if !error.is_retriable() => return self.hold_refused(&error),
                Err(error) => self.after_failure(&error),
            }
            failed = true;
            let delay = self.backoff.next_delay();
            self.retry_at = Some(Instant::now() + delay);
            if self.spill_batch(&mut { stored }) {
                crash::reached(crash::Point::SpillSynced);
                self.after_commit(index, Durable::Spill);
                return Ok(());
            }
            if !self.alert.sleep(delay, false) {
                return Err(self.give_up());
            }
        }
        self.retry_at = None;
        self.backoff.reset();
        self.stats.degraded.store(0, Ordering::Relaxed);
        tracing::debug!(
            writer = self.config.index,
            table = table.name,
            blocks = self.batch.len(),
            rows = self.batch.iter().map(|b| u64::from(b.rows)).sum::<u64>(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "INSERT committed"
        );
        self.after_commit(index, Durable::ClickHouse);
        Ok(())
    }

    /// Journal-first: the batch into the journal, one sync, durable then. A refusing
    /// journal (full: ClickHouse is behind; failing) holds the batch with backoff, so
    /// back-pressure stops intake. `Err(blocks)` when the drain deadline passed first.
    fn journal_batch(&mut self, index: usize) -> Result<(), usize> {
        // Blocks appended by an earlier, refused attempt are not appended again.
        let mut appended = [false; BLOCKS_PER_INSERT_MAX];
        // Bound: each pass ends in a sync, a deadline, or a backoff sleep.
        loop {
            if self.spill_batch(&mut appended) {
                crash::reached(crash::Point::SpillSynced);
                self.backoff.reset();
                self.after_commit(index, Durable::Spill);
                return Ok(());
            }
            if !self.alert.sleep(self.backoff.next_delay(), false) {
                return Err(self.give_up());
            }
        }
    }

    /// One INSERT of the batch's blocks not marked stored (none left: nothing to send).
    fn send(&mut self, table: &TableInsert, stored: &[bool]) -> Result<(), Error> {
        // On the stack: a batch holds at most BLOCKS_PER_INSERT_MAX blocks.
        let mut slots: [&[u8]; BLOCKS_PER_INSERT_MAX] = [&[]; BLOCKS_PER_INSERT_MAX];
        let mut count = 0;
        for (block, _) in self.batch.iter().zip(stored).filter(|(_, &done)| !done) {
            slots[count] = block.bytes.as_slice();
            count += 1;
        }
        let packets = &slots[..count];
        if packets.is_empty() {
            return Ok(());
        }
        if !table.dedup_token {
            return self.client.run(|conn: &mut Connection| {
                conn.insert_encoded(&table.sql, &table.header, packets)
            });
        }
        // The same blocks give the same token, so a resend of an INSERT that did commit
        // is dropped by the server; a resend of fewer blocks (some found stored) gets
        // another token, and the stored-block check has already kept the rest out.
        let mut range: Option<(u64, u64)> = None;
        for (block, _) in self.batch.iter().zip(stored).filter(|(_, &done)| !done) {
            range = Some(range.map_or((block.seq_min, block.seq_max), |(first, _)| {
                (first, block.seq_max)
            }));
        }
        let (first, last) = range.unwrap_or_default();
        let token = dedup_token(table.name, first, last, packets.len());
        let settings = [("insert_deduplication_token", token.as_str())];
        self.client.run(|conn: &mut Connection| {
            conn.insert_encoded_with(&table.sql, &table.header, packets, &settings)
        })
    }

    /// Marks the blocks of the batch ClickHouse already holds: a block is stored when a
    /// row with its last sequence is (a block is one part, written whole, and only this
    /// writer writes its shard's sequences).
    fn find_stored(&mut self, table: &TableInsert, stored: &mut [bool]) -> Result<(), Error> {
        let seqs: Vec<u64> = self.batch.iter().map(|b| b.seq_max).collect();
        let found = self.client.run(|conn: &mut Connection| {
            crate::spill::replay::stored_last_seqs(conn, table.name, &seqs)
        })?;
        let mut skipped = 0u64;
        for (block, done) in self.batch.iter().zip(stored.iter_mut()) {
            if !*done && found.contains(&block.seq_max) {
                *done = true;
                skipped += 1;
            }
        }
        if skipped > 0 {
            self.stats
                .resend_skipped_total
                .fetch_add(skipped, Ordering::Relaxed);
            tracing::warn!(
                writer = self.config.index,
                table = table.name,
                blocks = skipped,
                "Blocks of a cut INSERT are already stored; re-sending only the rest"
            );
        }
        Ok(())
    }

    /// A permanent error: the blocks are held, not retried, until a drain is asked for
    /// (the operator's restart with the schema fixed gets them again from JetStream).
    fn hold_refused(&mut self, error: &Error) -> Result<(), usize> {
        self.stats.errors_total.fetch_add(1, Ordering::Relaxed);
        self.stats.refused.store(1, Ordering::Relaxed);
        self.note_error(error);
        tracing::error!(writer = self.config.index, error = %error, blocks = self.batch.len(),
            "ClickHouse refused the blocks (not retriable); holding them unacknowledged: fix the schema and restart");
        // Bound: a drain request (nothing will change the answer before it). Nothing
        // past the held blocks is acknowledged.
        while self.alert.sleep(Duration::from_secs(1), true) {}
        Err(self.give_up())
    }

    /// The batch is given up at the drain deadline; its blocks are never acknowledged.
    fn give_up(&mut self) -> usize {
        tracing::error!(
            writer = self.config.index,
            blocks = self.batch.len(),
            "Drain deadline passed; blocks not stored are left unacknowledged for redelivery"
        );
        self.batch.len()
    }

    fn note_error(&self, error: &Error) {
        self.stats.note_error(error);
    }

    fn after_failure(&mut self, error: &Error) {
        self.stats.errors_total.fetch_add(1, Ordering::Relaxed);
        self.stats.degraded.store(1, Ordering::Relaxed);
        self.note_error(error);
        // Rate-limited by the backoff itself: at most one line per attempt.
        tracing::warn!(writer = self.config.index, error = %error, attempt = self.backoff.attempts() + 1, "INSERT failed; retrying");
    }

    fn after_commit(&mut self, index: usize, durable: Durable) {
        let now = now_ms();
        let input = &mut self.inputs[index];
        let (mut rows, mut raw, mut sent) = (0u64, 0u64, 0u64);
        let mut table_rows = [0u64; 3];
        let blocks = self.batch.len() as u64;
        for block in self.batch.drain(..) {
            rows += u64::from(block.rows);
            table_rows[block.table as usize] += u64::from(block.rows);
            raw += block.raw_bytes as u64;
            sent += block.bytes.len() as u64;
            let latency_us = (now - block.received_min_ms).max(0) as u64 * 1000;
            let table = block.table as usize;
            for (after_ms, rows) in block.waits() {
                let wait_us = (now - block.received_min_ms - after_ms).max(0) as u64 * 1000;
                self.stats.durable_latency[table].observe(wait_us, u64::from(rows));
                if durable == Durable::ClickHouse {
                    self.stats.committed_latency[table].observe(wait_us, u64::from(rows));
                }
                let _ = self
                    .messages
                    .record_n(wait_us.clamp(1, 3_600_000_000), u64::from(rows));
            }
            self.audit.record(AuditRecord {
                table: spilling::record_table(block.table).name(),
                destination: match durable {
                    Durable::Spill => AuditDestination::Spill,
                    Durable::ClickHouse => AuditDestination::ClickHouse,
                },
                rows: block.rows,
                seq_first: block.seq_min,
                seq_last: block.seq_max,
                timestamp_min_ms: Some(block.timestamp_min_ms),
                timestamp_max_ms: Some(block.timestamp_max_ms),
                raw_bytes: block.raw_bytes as u64,
                compressed_bytes: block.bytes.len() as u64,
                latency_ms: latency_us as f64 / 1000.0,
            });
            tracing::debug!(writer = self.config.index, block = %block.id(), rows = block.rows,
                durable = match durable { Durable::Spill => "spill", Durable::ClickHouse => "clickhouse" },
                latency_ms = latency_us / 1000, "Block durable");
            self.histogram.saturating_record(latency_us.max(1));
            let _ = self
                .messages_oldest
                .record_n(latency_us.clamp(1, 3_600_000_000), u64::from(block.rows));
            if durable == Durable::Spill {
                self.spill_histogram.saturating_record(latency_us.max(1));
            }
            if let Some(through) = block.durable_through {
                self.marks.commit(input.shard, through);
            }
            // The free ring holds the whole pool, so it always has room.
            if input.free.push(block).is_err() {
                panic!(
                    "free ring of shard {} overflowed: pool accounting is broken",
                    input.shard
                );
            }
        }
        let s = &self.stats;
        s.durable_raw_bytes_total.fetch_add(raw, Ordering::Relaxed);
        s.encoded_bytes_total.fetch_add(sent, Ordering::Relaxed);
        if durable == Durable::Spill {
            s.spilled_rows_total.fetch_add(rows, Ordering::Relaxed);
            s.spilled_blocks_total.fetch_add(blocks, Ordering::Relaxed);
            s.spill_latency_us_p50.store(
                self.spill_histogram.value_at_quantile(0.5),
                Ordering::Relaxed,
            );
            s.spill_latency_us_p99.store(
                self.spill_histogram.value_at_quantile(0.99),
                Ordering::Relaxed,
            );
            s.spill_latency_us_max
                .store(self.spill_histogram.max(), Ordering::Relaxed);
        } else {
            s.rows_total.fetch_add(rows, Ordering::Relaxed);
            for (total, rows) in s.table_rows_total.iter().zip(table_rows) {
                total.fetch_add(rows, Ordering::Relaxed);
            }
            s.blocks_total.fetch_add(blocks, Ordering::Relaxed);
            s.inserts_total.fetch_add(1, Ordering::Relaxed);
            s.last_stored_ms
                .fetch_max(now.max(0) as u64, Ordering::Relaxed);
            s.raw_bytes_total.fetch_add(raw, Ordering::Relaxed);
            s.sent_bytes_total.fetch_add(sent, Ordering::Relaxed);
        }
        s.latency_us_p50
            .store(self.histogram.value_at_quantile(0.5), Ordering::Relaxed);
        s.latency_us_p99
            .store(self.histogram.value_at_quantile(0.99), Ordering::Relaxed);
        s.latency_us_p999
            .store(self.histogram.value_at_quantile(0.999), Ordering::Relaxed);
        s.latency_us_max
            .store(self.histogram.max(), Ordering::Relaxed);
    }
}
