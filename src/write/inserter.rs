//! Journal-first inserts (`spill.mode = "always"`): the writer appends every sealed
//! block to its journal and acknowledges it once synced; this thread sends the journal
//! on to ClickHouse in large INSERTs, so receive-to-durable is one fdatasync whatever
//! ClickHouse does, and ClickHouse gets about one part per table per interval instead
//! of one per sealed block.
//!
//! ```text
//!   writer w ──append, fdatasync (group commit)──► journal writer-<w> ──► marks (acks)
//!                                                       │ lock: oldest unclaimed records
//!                                                       │ of one table claimed; then copied
//!                                                       ▼ out, 1 MiB per hold of the lock
//!   inserter w.k ── one INSERT (no lock held) ──► ClickHouse ──► marks (lock), then
//!   (k < spill.inserters, each its own connection)        their sync and trims (no lock)
//! ```
//!
//! When: the oldest pending record has waited `spill.insert_interval_ms`, or its table
//! has `spill.insert_rows` rows pending, or a quarter of the journal's room is pending
//! (so the writer never meets a full journal while ClickHouse keeps up), or the
//! appliance is draining. The rows rule makes the INSERTs self-clocking under a
//! burst: each starts as soon as the last has committed, holding what came in
//! meanwhile, so ClickHouse works from the first ~0.4 s of a flat-out run instead of
//! idling through the first interval and taking half the run's rows after the source
//! ended (`perf/e2e.sh SOURCE=synthetic`, 1,000,000 ticks: without the rule they went
//! in 2 INSERTs, the second one 1.8 s of the 3.75 s run; with it in 3–5, and the ratio
//! to clickhouse-client went from a median 0.66 of five runs to 0.79 of seven, cores
//! busy 72–80% → 78–88%). Below `insert_rows` rows a second the interval decides, so
//! a steady 100k ticks/s still makes one INSERT a second. What: every pending record of
//! the oldest one's table (and compression and schema), in order, up to
//! [`RECORDS_PER_INSERT_MAX`] records or [`INSERT_BYTES_MAX`] bytes.
//!
//! Sorted (`spill.sort_inserts`, on by default): a `market_ticks` INSERT goes as one
//! block in table-key order, raw, made by [`SortedMerge`] from the batch's records (at
//! most [`SORTED_ROWS_MAX`] rows). ClickHouse skips its sort of a sorted block; sorted
//! runs end to end are not sorted, so the shards sorting their own blocks would not
//! do. The records' LZ4 is undone, not redone: compressing the merged block again
//! would cost about what the server saves. A record that does not merge sends its
//! batch as journaled (logged once a run); signals and rejects always go so.
//!
//! Several at once (`spill.inserters`): ClickHouse runs an INSERT, its views
//! included, on one thread, so one inserter leaves a backlog going in at one core's
//! pace (a million ticks flat out with ClickHouse stalled 2.5 s mid-run: 6.7-7.0 s
//! with one inserter, 5.6-6.0 s with two; perf/README.md). An inserter claims the
//! records it takes (in memory, under the journal lock) and the others choose among
//! the unclaimed ones. Beside an INSERT under way another starts only on a backlog,
//! twice `insert_rows` unclaimed; each takes its share of the table's pending rows
//! (at least `insert_rows`) and leaves the rest to the others. Short of that, the
//! next INSERT waits for the one under way and takes all that came meanwhile, as
//! with one inserter: a steady feed makes one INSERT per interval. At the drain the
//! inserters split what is left evenly and send it at once.
//!
//! Exactly once: only the inserter that claimed a record sends and marks it, and only
//! after its INSERT committed; a restart forgets the claims and replays what is
//! pending. An INSERT whose outcome is unknown (a cut connection, a timeout)
//! is followed by a look at which records' last sequences ClickHouse holds (as the
//! writer does, `spill::replay::stored_last_seqs`); those are marked, the rest sent.
//! The look is by rows' sequences, not blocks, so it holds for a sorted INSERT too,
//! which carries the same records under the same deduplication token.
//! A crash between commit and mark leaves the records pending; the replay at the next
//! start finds them stored. So does a mark whose sync fails: the batch is done, its
//! records marked in memory, and the failure logged and counted
//! (`alphapt_spill_faults_total`). A record found damaged when copied out (a disk, or
//! a hand on the file) is set aside as the scan at open would: logged, counted, never
//! offered again nor waited for at the drain; its segment is kept, and the next start
//! reads the whole store so that JetStream delivers its messages again.
//!
//! A permanent error (schema) stops this thread's INSERTs: the blocks are safe in the
//! journal, health shows the server's message, and the journal fills until
//! back-pressure stops intake; a restart with the schema fixed replays them.
//!
//! Shutdown: when the writer has finished (or a drain is asked for) the inserter sends
//! what is pending until the journal is empty or the drain deadline passes; what is
//! left stays in the journal, durable and acknowledged, for the next start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditProducer, AuditRecord, Destination as AuditDestination};
use crate::native::merge::SortedMerge;
use crate::native::protocol::write_data_prefix;
use crate::native::{BlockFormat, Client, Connection, Error, Options};
use crate::runtime::clock::now_ms;
use crate::runtime::{crash, Alert, Backoff};
use crate::spill::replay::{stored_last_seqs, Target};
use crate::spill::{self, RecordPos, RecordTable, SharedJournal};

use super::{dedup_token, set_aside_damaged, Tables, WriterStats};

/// Most records one INSERT carries.
pub const RECORDS_PER_INSERT_MAX: usize = 1024;
/// Most payload bytes one INSERT carries (ClickHouse squashes the blocks into parts of
/// up to a million rows; 256 MiB is ~900k ticks uncompressed).
pub const INSERT_BYTES_MAX: usize = 256 << 20;
/// Record bytes an inserter copies out of the journal per hold of its lock: ~0.1-0.3 ms
/// of copying and CRC, so a writer that needs the lock to append never waits longer.
/// Copying a whole INSERT under one hold took 13-28 ms at 100k ticks/s, and the writer
/// waited up to 32 ms behind it with every block of its next group commit (perf/README).
const COPY_BYTES_PER_HOLD: u64 = 1 << 20;
/// Most rows of a sorted INSERT (`spill.sort_inserts`): ClickHouse's own
/// `max_insert_block_size`, one part per INSERT. Bounds the merge's memory: ~300 B a
/// row pushed, ~300 MiB, and one column on its way out (the block is streamed).
pub const SORTED_ROWS_MAX: u64 = 1 << 20;
/// The `market_ticks` key (both migrations' ORDER BY; 18.16 adds `timestamp_ms`).
pub const TICKS_KEY: [&str; 3] = ["instrument_token", "timestamp", "timestamp_ms"];
/// How often an idle inserter looks at the journal.
const POLL: Duration = Duration::from_millis(10);

/// Inserter settings.
#[derive(Clone, Debug)]
pub struct InserterConfig {
    /// The writer's index (the journal `writer-<index>`), for the thread name and logs.
    pub index: usize,
    /// The oldest pending record waits at most this long.
    pub interval: Duration,
    /// This inserter's number among its journal's inserters (0 first).
    pub slot: usize,
    /// Inserters sharing the journal (`spill.inserters`).
    pub inserters: usize,
    /// Pending bytes that make an INSERT due at once.
    pub flush_bytes: u64,
    /// Pending rows of one table that make its INSERT due at once.
    pub flush_rows: u64,
    /// ClickHouse connection (its compression is the writer's, so the records' too).
    pub options: Options,
    /// Every replica of its ClickHouse shard, `options` first, for failover; empty
    /// for one server.
    pub replicas: Vec<Options>,
    /// Retry pacing.
    pub backoff_initial: Duration,
    /// Retry pacing ceiling.
    pub backoff_max: Duration,
    /// Ping an idle connection after this long.
    pub ping_after: Duration,
    /// Send each `market_ticks` INSERT as one block in key order, raw.
    pub sort_inserts: bool,
}

/// One INSERT being assembled: records of one table, copied out of the journal.
#[derive(Default)]
struct Batch {
    /// Index into the inserter's targets (no copy of the statement per INSERT).
    target: Option<usize>,
    positions: Vec<RecordPos>,
    seq_first: Vec<u64>,
    seq_last: Vec<u64>,
    rows: Vec<u32>,
    received_min_ms: Vec<i64>,
    /// One buffer per record, reused across INSERTs (capacity kept).
    payloads: Vec<Vec<u8>>,
    /// Records marked stored by the check after a failure: not sent again.
    stored: Vec<bool>,
}

impl Batch {
    fn clear(&mut self) {
        self.target = None;
        self.positions.clear();
        self.seq_first.clear();
        self.seq_last.clear();
        self.rows.clear();
        self.received_min_ms.clear();
        self.stored.clear();
    }

    fn len(&self) -> usize {
        self.positions.len()
    }
}

/// The inserter thread of one journal-first writer.
pub struct Inserter {
    config: InserterConfig,
    client: Client,
    backoff: Backoff,
    journal: SharedJournal,
    targets: Vec<(Target, bool)>,
    stats: Arc<WriterStats>,
    alert: Arc<Alert>,
    writer_done: Arc<AtomicBool>,
    batch: Batch,
    /// The records the next INSERT claimed, and the bytes each occupies, before they
    /// are copied into `batch` (kept across INSERTs: no allocation per INSERT).
    claimed: Vec<RecordPos>,
    claimed_bytes: Vec<u64>,
    /// Set after an INSERT failed: its outcome is unknown until ClickHouse is asked.
    uncertain: bool,
    /// One `ingest_audit` record per journal record committed to ClickHouse.
    audit: AuditProducer,
    /// The ticks table's merge into one sorted block, when `sort_inserts` is on.
    sorting: Option<Sorting>,
}

/// The sorted INSERT of one target: its records merged into one block in key order.
struct Sorting {
    target: usize,
    merge: SortedMerge,
    /// One piece of the merged block (a column) on its way out; kept across INSERTs.
    piece: Vec<u8>,
    /// Bytes the last INSERT streamed sorted; 0 when it went as journaled.
    sent_bytes: u64,
    /// A record did not merge once already (said once a run, not once an INSERT).
    warned: bool,
}

impl Inserter {
    /// An inserter over `journal`, with a ClickHouse connection of its own (one attempt
    /// per call: the inserter paces its retries); connects lazily.
    pub fn new(
        config: InserterConfig,
        journal: SharedJournal,
        tables: &Tables,
        stats: Arc<WriterStats>,
        alert: Arc<Alert>,
        writer_done: Arc<AtomicBool>,
        audit: AuditProducer,
    ) -> Inserter {
        let targets: Vec<(Target, bool)> = [&tables.ticks, &tables.signals, &tables.rejects]
            .into_iter()
            .zip(tables.targets())
            .map(|(insert, target)| (target, insert.dedup_token))
            .collect();
        let sorting = if config.sort_inserts {
            sorting_of(&targets, config.index)
        } else {
            None
        };
        let (client, backoff) = super::paced_client(
            &config.options,
            &config.replicas,
            config.backoff_initial,
            config.backoff_max,
            config.ping_after,
            &stats,
        );
        Inserter {
            config,
            client,
            backoff,
            journal,
            targets,
            stats,
            alert,
            writer_done,
            batch: Batch::default(),
            claimed: Vec::new(),
            claimed_bytes: Vec::new(),
            uncertain: false,
            audit,
            sorting,
        }
    }

    /// Runs until the writer has finished and the journal is empty, or the drain
    /// deadline passes. Returns the records left pending (durable in the journal).
    pub fn run(mut self) -> u64 {
        loop {
            if self.stats.refused.load(Ordering::Acquire) != 0 {
                // Another inserter of this journal was refused: the same schema would
                // refuse this one's records too.
                return self.hold();
            }
            let done = self.writer_done.load(Ordering::Acquire);
            let force = done || self.alert.stopping();
            if !self.take_due(force) {
                if !force {
                    self.prepare_spare();
                }
                let pending = self.usable_pending();
                if done && pending == 0 {
                    return 0;
                }
                if self.alert.expired() {
                    return self.left(pending);
                }
                std::thread::sleep(POLL);
                continue;
            }
            match self.insert() {
                Ok(()) => self.after_commit(),
                Err(error) if error.is_retriable() => {
                    self.after_failure(&error);
                    let delay = self.backoff.next_delay();
                    if !self.alert.sleep(delay, false) {
                        let pending = self.usable_pending();
                        return self.left(pending);
                    }
                }
                Err(error) => return self.hold_refused(&error),
            }
        }
    }

    /// Between INSERTs: the journal's next segment file, zero-filled ahead (once per
    /// segment; `spill::journal::spare`), so the writer's syncs never write into
    /// unwritten extents. A drain stops it.
    fn prepare_spare(&self) {
        let job = spill::lock(&self.journal).spare_job();
        if let Some(job) = job {
            let outcome =
                job.run(|| !self.alert.stopping() && !self.writer_done.load(Ordering::Acquire));
            spill::lock(&self.journal).spare_prepared(outcome);
        }
    }

    fn left(&self, pending: u64) -> u64 {
        // The journal's first inserter speaks for it; the others would repeat it.
        if pending > 0 && self.config.slot == 0 {
            tracing::warn!(
                writer = self.config.index,
                records = pending,
                "Drain deadline passed; journaled blocks not yet in ClickHouse stay in the spill for the next start"
            );
        }
        pending
    }

    fn target_of(&self, table: RecordTable, schema_hash: u64) -> Option<usize> {
        self.targets
            .iter()
            .position(|(t, _)| t.table == table && t.schema_hash == schema_hash)
    }

    /// Pending records this inserter can send (not another schema or compression).
    fn usable_pending(&self) -> u64 {
        let journal = spill::lock(&self.journal);
        journal
            .pending_headers()
            .filter(|(_, h)| {
                h.lz4 == self.config.options.compression.is_some()
                    && self.target_of(h.table, h.schema_hash).is_some()
            })
            .count() as u64
    }

    /// Fills the batch when an INSERT is due (see the module doc) and claims its
    /// records. Records left from an earlier failed attempt are kept as they are
    /// (still claimed).
    fn take_due(&mut self, force: bool) -> bool {
        if self.batch.len() > 0 {
            return true;
        }
        let mut journal = spill::lock(&self.journal);
        let lz4 = self.config.options.compression.is_some();
        // The oldest unclaimed record picks the table; count that table's rows and
        // every unclaimed byte (what this inserter could still send).
        let mut first = None;
        let (mut rows, mut bytes_free) = (0u64, 0u64);
        for (_, header, bytes) in journal.unclaimed_headers() {
            if header.lz4 != lz4 {
                continue;
            }
            bytes_free += bytes;
            match first {
                None => {
                    if let Some(target) = self.target_of(header.table, header.schema_hash) {
                        first = Some((target, header.received_min_ms));
                        rows = u64::from(header.rows);
                    }
                }
                Some((target, _)) => {
                    let t = &self.targets[target].0;
                    if header.table == t.table && header.schema_hash == t.schema_hash {
                        rows += u64::from(header.rows);
                    }
                }
            }
        }
        let Some((target, received_min_ms)) = first else {
            return false;
        };
        let (table, hash) = (
            self.targets[target].0.table,
            self.targets[target].0.schema_hash,
        );
        // The table's rows pending, claimed ones included: more than the unclaimed
        // means another inserter's INSERT of this table is in flight.
        let pending: u64 = journal
            .pending_headers()
            .filter(|(_, h)| h.table == table && h.schema_hash == hash && h.lz4 == lz4)
            .map(|(_, h)| u64::from(h.rows))
            .sum();
        let waited = now_ms() - received_min_ms >= self.config.interval.as_millis() as i64;
        let due = if pending > rows {
            // Beside an INSERT in flight only a backlog goes: starting at `flush_rows`
            // would halve every INSERT of a flat-out run (twice the parts, and ~40%
            // more ClickHouse CPU here, for no more rows a second) where waiting for
            // the one in flight lets the next take all that came meanwhile. At the
            // drain nothing comes after: what is left goes now.
            force || rows >= 2 * self.config.flush_rows || bytes_free >= self.config.flush_bytes
        } else {
            force
                || waited
                || rows >= self.config.flush_rows
                || bytes_free >= self.config.flush_bytes
        };
        if !due {
            return false;
        }
        // A backlog is shared out: this INSERT takes its share of the table's pending
        // rows (at least `flush_rows`, so parts stay large; at the drain no floor, one
        // part more per inserter at shutdown) and the journal's other inserters start
        // on the rest now instead of after this one commits. ClickHouse runs each
        // INSERT, views included, on one thread; two at once keep two cores busy. The
        // share is of everything pending, claimed records included, so the last
        // inserter to start takes all that is left rather than halving it again.
        let share = match self.config.inserters {
            0 | 1 => u64::MAX,
            n if force => pending.div_ceil(n as u64),
            n => pending.div_ceil(n as u64).max(self.config.flush_rows),
        };
        // Choose and claim under this hold, from the headers alone; copy after it, a
        // megabyte per hold (`COPY_BYTES_PER_HOLD`), so the writer's appends and group
        // commits never wait for a whole INSERT's copy. Claimed records stay where they
        // are meanwhile: only a mark after a commit lets a segment go.
        self.claimed.clear();
        self.claimed_bytes.clear();
        let (mut bytes, mut taken_rows) = (0u64, 0u64);
        let rows_max = match &self.sorting {
            Some(sorting) if sorting.target == target => SORTED_ROWS_MAX,
            _ => u64::MAX,
        };
        for (pos, header, occupied) in journal.unclaimed_headers() {
            if header.table != table || header.schema_hash != hash || header.lz4 != lz4 {
                continue;
            }
            if !self.claimed.is_empty()
                && (self.claimed.len() >= RECORDS_PER_INSERT_MAX
                    || bytes + occupied > INSERT_BYTES_MAX as u64
                    || taken_rows >= share
                    || taken_rows + u64::from(header.rows) > rows_max)
            {
                break;
            }
            bytes += occupied;
            taken_rows += u64::from(header.rows);
            self.claimed.push(pos);
            self.claimed_bytes.push(occupied);
        }
        if let Err(error) = journal.claim_all(&self.claimed) {
            // The positions were just listed under this lock, so this cannot happen;
            // were it to, another inserter could send the same records: send nothing.
            tracing::error!(writer = self.config.index, %error, "Cannot claim journaled blocks");
            return false;
        }
        drop(journal);
        self.batch.clear();
        let mut next = 0;
        while next < self.claimed.len() {
            let mut journal = spill::lock(&self.journal);
            let mut held = 0u64;
            // At least one record per hold: `held` starts below the bound.
            while next < self.claimed.len() && held < COPY_BYTES_PER_HOLD {
                let pos = self.claimed[next];
                held += self.claimed_bytes[next];
                next += 1;
                let record = match journal.read(pos) {
                    Ok(record) => record,
                    Err(error) => {
                        // Rare enough to log under the lock.
                        set_aside_damaged(
                            &mut journal,
                            pos,
                            &error,
                            &self.stats,
                            self.config.index,
                        );
                        continue;
                    }
                };
                let batch = &mut self.batch;
                let slot = batch.len();
                if batch.payloads.len() == slot {
                    batch.payloads.push(Vec::new());
                }
                let buffer = &mut batch.payloads[slot];
                buffer.clear();
                buffer.extend_from_slice(record.payload);
                let header = record.header;
                batch.positions.push(pos);
                batch.seq_first.push(header.seq_first);
                batch.seq_last.push(header.seq_last);
                batch.rows.push(header.rows);
                batch.received_min_ms.push(header.received_min_ms);
                batch.stored.push(false);
            }
        }
        if self.batch.len() == 0 {
            return false;
        }
        self.batch.target = Some(target);
        true
    }

    /// One INSERT of the batch's records not known stored (after a failure, first asks
    /// ClickHouse which are).
    fn insert(&mut self) -> Result<(), Error> {
        let Some(index) = self.batch.target else {
            return Ok(());
        };
        if self.uncertain {
            self.find_stored(index)?;
        }
        let merged = self.merge_batch(index);
        let (target, dedup) = (&self.targets[index].0, self.targets[index].1);
        let batch = &self.batch;
        let sent: Vec<usize> = (0..batch.len()).filter(|&i| !batch.stored[i]).collect();
        if sent.is_empty() {
            return Ok(());
        }
        // The token names the records (first and last sequence, how many), not the
        // blocks they travel in: a retry merged or not is the same INSERT.
        let token = dedup.then(|| {
            let first = batch.seq_first[sent[0]];
            let last = batch.seq_last[sent[sent.len() - 1]];
            dedup_token(target.table.name(), first, last, sent.len())
        });
        let settings: Vec<(&str, &str)> = token
            .iter()
            .map(|t| ("insert_deduplication_token", t.as_str()))
            .collect();
        if let Some(sorting) = self.sorting.as_mut().filter(|_| merged) {
            // Sorted, the records go as one raw block, streamed a column at a time:
            // compressing it again would cost about what ClickHouse saves by not
            // sorting it.
            let compression = self.config.options.compression;
            let (merge, piece) = (&mut sorting.merge, &mut sorting.piece);
            let mut streamed = 0u64;
            let result = self.client.run(|conn: &mut Connection| {
                streamed = 0;
                conn.set_compression(None);
                let result =
                    conn.insert_streamed_with(&target.sql, &target.header, &settings, |sink| {
                        piece.clear();
                        write_data_prefix(piece);
                        sink(piece)?;
                        merge.write_pieces(BlockFormat::Protocol, piece, &mut |bytes| {
                            streamed += bytes.len() as u64;
                            sink(bytes)
                        })
                    });
                conn.set_compression(compression);
                result
            });
            sorting.sent_bytes = streamed;
            return result;
        }
        let packets: Vec<&[u8]> = sent.iter().map(|&i| batch.payloads[i].as_slice()).collect();
        self.client.run(|conn: &mut Connection| {
            conn.insert_encoded_with(&target.sql, &target.header, &packets, &settings)
        })
    }

    /// Merges the batch's records not known stored into one block in key order, when
    /// the batch is of the sorted target. `false`: send the records as they are (not
    /// that target, or a record did not merge: ClickHouse then judges it as before).
    fn merge_batch(&mut self, index: usize) -> bool {
        let Some(sorting) = self.sorting.as_mut() else {
            return false;
        };
        sorting.sent_bytes = 0;
        if sorting.target != index {
            return false;
        }
        let compressed = self.config.options.compression.is_some();
        let batch = &self.batch;
        sorting.merge.clear();
        let rows = (0..batch.len())
            .filter(|&i| !batch.stored[i])
            .map(|i| batch.rows[i] as usize)
            .sum();
        sorting.merge.expect_rows(rows);
        for i in (0..batch.len()).filter(|&i| !batch.stored[i]) {
            if let Err(error) = sorting.merge.push_packet(&batch.payloads[i], compressed) {
                if !sorting.warned {
                    sorting.warned = true;
                    tracing::warn!(
                        writer = self.config.index,
                        seq_last = batch.seq_last[i],
                        %error,
                        "A journaled block does not merge; its INSERT goes unsorted, as journaled"
                    );
                }
                return false;
            }
        }
        sorting.merge.rows() > 0
    }

    /// Marks the batch's records whose last sequence ClickHouse already holds.
    fn find_stored(&mut self, index: usize) -> Result<(), Error> {
        let target = &self.targets[index].0;
        let found = self.client.run(|conn: &mut Connection| {
            stored_last_seqs(conn, target.table.name(), &self.batch.seq_last)
        })?;
        let mut skipped = 0u64;
        for (i, done) in self.batch.stored.iter_mut().enumerate() {
            if !*done && found.contains(&self.batch.seq_last[i]) {
                *done = true;
                skipped += 1;
            }
        }
        self.uncertain = false;
        if skipped > 0 {
            self.stats
                .resend_skipped_total
                .fetch_add(skipped, Ordering::Relaxed);
            tracing::warn!(
                writer = self.config.index,
                table = target.table.name(),
                records = skipped,
                "Journaled blocks of a cut INSERT are already stored; sending only the rest"
            );
        }
        Ok(())
    }

    fn after_commit(&mut self) {
        crash::reached(crash::Point::InsertCommitted);
        self.uncertain = false;
        self.backoff.reset();
        let batch = &self.batch;
        let (mut rows, mut sent) = (0u64, 0u64);
        let mut blocks = 0u64;
        for i in (0..batch.len()).filter(|&i| !batch.stored[i]) {
            rows += u64::from(batch.rows[i]);
            sent += batch.payloads[i].len() as u64;
            blocks += 1;
        }
        let s = &self.stats;
        s.degraded.store(0, Ordering::Relaxed);
        s.rows_total.fetch_add(rows, Ordering::Relaxed);
        if let Some(index) = batch.target {
            let table = match self.targets[index].0.table {
                RecordTable::MarketTicks => 0,
                RecordTable::StrategySignals => 1,
                RecordTable::RejectedMessages => 2,
            };
            // Latency before the row count: a scrape that sees the rows sees them timed.
            let now = now_ms();
            let name = self.targets[index].0.table.name();
            for i in (0..batch.len()).filter(|&i| !batch.stored[i]) {
                let latency_us = (now - batch.received_min_ms[i]).max(0) as u64 * 1000;
                s.committed_latency[table].observe(latency_us, u64::from(batch.rows[i]));
                let block = crate::model::BlockId {
                    table: name,
                    first: batch.seq_first[i],
                    last: batch.seq_last[i],
                };
                tracing::debug!(writer = self.config.index, inserter = self.config.slot, %block, rows = batch.rows[i],
                    latency_ms = latency_us / 1000, "Journaled block inserted");
            }
            s.table_rows_total[table].fetch_add(rows, Ordering::Relaxed);
        }
        s.blocks_total.fetch_add(blocks, Ordering::Relaxed);
        if blocks > 0 {
            s.inserts_total.fetch_add(1, Ordering::Relaxed);
            s.last_stored_ms
                .fetch_max(now_ms().max(0) as u64, Ordering::Relaxed);
        }
        if let Some(sorting) = self.sorting.as_ref().filter(|s| s.sent_bytes > 0) {
            sent = sorting.sent_bytes;
            s.sorted_inserts_total.fetch_add(1, Ordering::Relaxed);
        }
        s.sent_bytes_total.fetch_add(sent, Ordering::Relaxed);
        let mut journal = spill::lock(&self.journal);
        let marked = journal.mark_replayed_deferred(&self.batch.positions);
        s.spill_pending_bytes
            .store(journal.bytes_pending(), Ordering::Relaxed);
        drop(journal);
        crash::reached(crash::Point::MarksUnsynced);
        // The marks' sync and the trims' deletes wait for the disk: outside the lock,
        // so the writer's appends never wait for them.
        let synced = marked.and_then(|marks| {
            let (outcome, undeleted) = marks.sync();
            if undeleted > 0 {
                spill::lock(&self.journal).count_undeleted(undeleted);
            }
            outcome
        });
        if let Err(error) = synced {
            // The batch is done all the same: its records are marked in memory, so no
            // inserter of this run offers them again. Their marks are advisory: where one
            // did not reach the disk, the next start's replay finds the block stored
            // (`spill::replay`). Keeping the batch to retry would resend nothing but
            // loop on records whose segment the marks already emptied and let go.
            s.spill_fault(&error);
            tracing::error!(writer = self.config.index, %error,
                "Cannot sync the marks of inserted journaled blocks; a restart checks them against ClickHouse before any resend");
        }
        self.audit_batch();
        self.batch.clear();
    }

    /// An audit record per record of the committed batch, those found already stored
    /// after a cut included (their INSERT was never audited), once: only when the
    /// batch is done with.
    fn audit_batch(&mut self) {
        let Some(index) = self.batch.target else {
            return;
        };
        let table = self.targets[index].0.table.name();
        let now = now_ms();
        let batch = &self.batch;
        for i in 0..batch.len() {
            let stored = batch.payloads[i].len() as u64;
            self.audit.record(AuditRecord {
                table,
                destination: AuditDestination::ClickHouse,
                rows: batch.rows[i],
                seq_first: batch.seq_first[i],
                seq_last: batch.seq_last[i],
                timestamp_min_ms: None,
                timestamp_max_ms: None,
                // The journal keeps the bytes as sent, not the block's raw size.
                raw_bytes: stored,
                compressed_bytes: stored,
                latency_ms: (now - batch.received_min_ms[i]).max(0) as f64,
            });
        }
    }

    fn after_failure(&mut self, error: &Error) {
        self.uncertain = true;
        let s = &self.stats;
        s.errors_total.fetch_add(1, Ordering::Relaxed);
        s.degraded.store(1, Ordering::Relaxed);
        s.note_error(error);
        tracing::warn!(writer = self.config.index, inserter = self.config.slot, error = %error, attempt = self.backoff.attempts() + 1,
            "INSERT from the journal failed; the blocks stay journaled, retrying");
    }

    /// A permanent error: the records stay in the journal; nothing is retried until a
    /// restart (the schema fixed) replays them.
    fn hold_refused(&mut self, error: &Error) -> u64 {
        let s = &self.stats;
        s.errors_total.fetch_add(1, Ordering::Relaxed);
        s.note_error(error);
        // Reported once per journal: inserters refused together say the same thing.
        if s.refused.swap(1, Ordering::AcqRel) == 0 {
            tracing::error!(writer = self.config.index, error = %error, records = self.batch.len(),
                "ClickHouse refused journaled blocks (not retriable); they stay in the spill: fix the schema and restart");
        }
        self.hold()
    }

    /// Sends nothing more until the drain: the records stay in the journal.
    fn hold(&mut self) -> u64 {
        // Bound: a drain request (nothing will change the answer before it).
        while self.alert.sleep(Duration::from_millis(200), true) {}
        self.usable_pending()
    }
}

/// The sorted INSERT of `market_ticks`, or `None` (logged) when its header has a column
/// the merge cannot move or no key column: the INSERTs then go unsorted, as before.
fn sorting_of(targets: &[(Target, bool)], writer: usize) -> Option<Sorting> {
    let target = targets
        .iter()
        .position(|(t, _)| t.table == RecordTable::MarketTicks)?;
    match SortedMerge::new(&targets[target].0.header, &TICKS_KEY) {
        Ok(merge) => Some(Sorting {
            target,
            merge,
            piece: Vec::new(),
            sent_bytes: 0,
            warned: false,
        }),
        Err(error) => {
            tracing::warn!(writer, %error, "market_ticks INSERTs go unsorted");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TICKS_KEY;

    /// The merge sorts by the table's own key, or ClickHouse would sort again: both
    /// migrations' `ORDER BY` of `market_ticks` are prefixes of [`TICKS_KEY`] (the
    /// merge takes the longest prefix a header has).
    #[test]
    fn the_ticks_key_is_the_order_by_of_both_migrations() {
        for (sql, columns) in [
            (
                include_str!("../../migrations/clickhouse/001_market_ticks.sql"),
                2,
            ),
            (
                include_str!("../../migrations/clickhouse/001_market_ticks.legacy.sql"),
                3,
            ),
        ] {
            let order_by = sql
                .lines()
                .find_map(|line| line.trim().strip_prefix("ORDER BY "))
                .expect("an ORDER BY")
                .trim_end_matches(';');
            assert_eq!(order_by, format!("({})", TICKS_KEY[..columns].join(", ")));
        }
    }
}
