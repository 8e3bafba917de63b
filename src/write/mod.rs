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
//! ClickHouse pays per part far more than per row. A failed INSERT is retried with capped exponential
//! backoff and jitter on a fresh connection, holding the blocks: the sealed ring fills,
//! the shard stops, the receiver stops pulling — back-pressure, nothing acked that is
//! not stored. (The spill file, which takes blocks when ClickHouse is down, is the next
//! stage.) Must never: lose a block, retry without backoff.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::durable::DurableMarks;
use crate::native::{Backoff, Client, Connection, Error, Options};
use crate::runtime::Waiter;
use crate::shard::{SealedBlock, Table};

/// Most blocks one INSERT carries: a few full blocks are ~50–100 MB, one server
/// round trip amortised over all of them.
pub const BLOCKS_PER_INSERT_MAX: usize = 8;

/// Blocks one seal takes from the pool at most (ticks, signals, rejects).
const SEAL_GROUP_BLOCKS: usize = 3;

/// INSERT statement and expected header of one table.
#[derive(Clone, Debug)]
pub struct TableInsert {
    /// `INSERT INTO db.table (...) VALUES`.
    pub sql: String,
    /// Column names and types the server must announce.
    pub header: Vec<(String, String)>,
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
    /// Blocks committed.
    pub blocks_total: AtomicU64,
    /// INSERT statements committed.
    pub inserts_total: AtomicU64,
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
}

/// Writer settings.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Index, for the thread name and logs.
    pub index: usize,
    /// ClickHouse connection.
    pub options: Options,
    /// Reconnect pacing.
    pub backoff_initial: Duration,
    /// Reconnect pacing ceiling.
    pub backoff_max: Duration,
    /// Ping an idle connection after this long.
    pub ping_after: Duration,
    /// Give up retrying when draining and this moment has passed.
    pub drain_timeout: Duration,
    /// Hold sealed blocks up to this long (from their oldest message) to INSERT more
    /// of them at once.
    pub insert_linger: Duration,
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
    tables: Tables,
    /// The shards this writer serves, in fixed order.
    inputs: Vec<WriterInput>,
    /// Where committed seal groups are reported (read by the receiver).
    marks: Arc<DurableMarks>,
    /// Counters for the control plane, published once per INSERT.
    stats: Arc<WriterStats>,
    /// How the writer waits when every input is empty.
    waiter: Waiter,
    /// Set when the appliance drains.
    stop: Arc<AtomicBool>,
    /// Receive-to-durable per block, µs.
    histogram: Histogram<u64>,
    /// Blocks of the INSERT being assembled; capacity reserved once.
    batch: Vec<SealedBlock>,
}

/// Unix time in ms, the clock receive stamps use.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
        stop: Arc<AtomicBool>,
    ) -> Writer {
        let backoff = Backoff::new(config.backoff_initial, config.backoff_max);
        let client = Client::new(
            config.options.clone(),
            backoff.clone(),
            config.ping_after,
            1,
        );
        Writer {
            config,
            client,
            backoff,
            tables,
            inputs,
            marks,
            stats,
            waiter,
            stop,
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            batch: Vec::with_capacity(BLOCKS_PER_INSERT_MAX),
        }
    }

    /// The writer's main loop: until every input shard has finished and its ring is
    /// empty. Returns the number of blocks it could not store before the drain
    /// deadline (0 on a clean drain); those were never acknowledged.
    pub fn run(mut self) -> usize {
        let mut drain_started: Option<Instant> = None;
        loop {
            let mut worked = false;
            for index in 0..self.inputs.len() {
                if !self.due(index, drain_started.is_some()) {
                    continue;
                }
                if self.collect(index) {
                    worked = true;
                    if let Err(abandoned) = self.insert_batch(index, drain_started) {
                        return abandoned + self.queued_blocks();
                    }
                }
            }
            if worked {
                self.waiter.reset();
                continue;
            }
            if self.stop.load(Ordering::Acquire) && drain_started.is_none() {
                drain_started = Some(Instant::now());
            }
            let all_done = self
                .inputs
                .iter()
                .all(|i| i.finished.load(Ordering::Acquire) && i.sealed.is_empty());
            if all_done {
                return 0;
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
        if self.config.insert_linger.is_zero() || draining {
            return true;
        }
        let queued = input.sealed.slots();
        // Blocks in the free ring = the pool less what is queued or in our batch.
        let free = crate::pipeline::POOL_BLOCKS.saturating_sub(queued + self.batch.len());
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

    /// INSERTs the batch, retrying with backoff; on success records durability and
    /// returns the buffers. `Err(blocks)` when the drain deadline passed first.
    fn insert_batch(&mut self, index: usize, drain_started: Option<Instant>) -> Result<(), usize> {
        let table = self.tables.get(self.batch[0].table).clone();
        let mut drain_started = drain_started;
        let started = Instant::now();
        loop {
            let packets: Vec<&[u8]> = self.batch.iter().map(|b| b.bytes.as_slice()).collect();
            let outcome = self.client.run(|conn: &mut Connection| {
                conn.insert_encoded(&table.sql, &table.header, &packets)
            });
            match outcome {
                Ok(()) => break,
                Err(error) => self.after_failure(&error),
            }
            if self.stop.load(Ordering::Acquire) {
                let started = *drain_started.get_or_insert_with(Instant::now);
                if started.elapsed() >= self.config.drain_timeout {
                    tracing::error!(
                        writer = self.config.index,
                        blocks = self.batch.len(),
                        "Drain timeout; blocks not stored will be redelivered"
                    );
                    return Err(self.batch.len());
                }
            }
            std::thread::sleep(self.backoff.next_delay());
        }
        self.backoff.reset();
        self.stats.degraded.store(0, Ordering::Relaxed);
        tracing::debug!(writer = self.config.index, table = %table.sql, blocks = self.batch.len(),
            rows = self.batch.iter().map(|b| u64::from(b.rows)).sum::<u64>(),
            ms = started.elapsed().as_secs_f64() * 1e3, "INSERT committed");
        self.after_commit(index);
        Ok(())
    }

    fn after_failure(&mut self, error: &Error) {
        self.stats.errors_total.fetch_add(1, Ordering::Relaxed);
        self.stats.degraded.store(1, Ordering::Relaxed);
        // Rate-limited by the backoff itself: at most one line per attempt.
        tracing::warn!(writer = self.config.index, error = %error, attempt = self.backoff.attempts() + 1, "INSERT failed; retrying");
    }

    fn after_commit(&mut self, index: usize) {
        let now = now_ms();
        let input = &mut self.inputs[index];
        let (mut rows, mut raw, mut sent) = (0u64, 0u64, 0u64);
        let blocks = self.batch.len() as u64;
        for block in self.batch.drain(..) {
            rows += u64::from(block.rows);
            raw += block.raw_bytes as u64;
            sent += block.bytes.len() as u64;
            let latency_us = (now - block.received_min_ms).max(0) as u64 * 1000;
            self.histogram.saturating_record(latency_us.max(1));
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
        s.rows_total.fetch_add(rows, Ordering::Relaxed);
        s.blocks_total.fetch_add(blocks, Ordering::Relaxed);
        s.inserts_total.fetch_add(1, Ordering::Relaxed);
        s.raw_bytes_total.fetch_add(raw, Ordering::Relaxed);
        s.sent_bytes_total.fetch_add(sent, Ordering::Relaxed);
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
