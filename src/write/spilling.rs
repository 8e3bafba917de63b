//! The writer's spill side: a batch ClickHouse cannot take now goes into the writer's
//! journal (one sync for the whole batch: group commit) and counts as durable; when
//! ClickHouse answers again, the writer replays pending records one per idle pass,
//! oldest first, each at most once (`spill::replay`).
//!
//! ```text
//!   INSERT failed (retriable) ──► spill_batch: append each block, sync once ──► marks (ack)
//!        │ spill full / failing: hold the batch, back off (back-pressure upstream)
//!   idle pass, ClickHouse not away ──► replay_step: oldest pending record ──► INSERT or
//!        "already stored" ──► mark_replayed
//! ```

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::model::{SealedBlock, Table};
use crate::native::Connection;
use crate::spill::replay::{replay_record, Replayed, Target};
use crate::spill::{schema_hash, RecordHeader, RecordTable, SpillError};

use super::{set_aside_damaged, Tables, Writer, WriterStats};

/// The spill's name for a table.
pub fn record_table(table: Table) -> RecordTable {
    match table {
        Table::Ticks => RecordTable::MarketTicks,
        Table::Signals => RecordTable::StrategySignals,
        Table::Rejects => RecordTable::RejectedMessages,
    }
}

impl Tables {
    /// Replay targets for the three tables, with their schema hashes.
    pub fn targets(&self) -> Vec<Target> {
        [
            (Table::Ticks, &self.ticks),
            (Table::Signals, &self.signals),
            (Table::Rejects, &self.rejects),
        ]
        .into_iter()
        .map(|(table, insert)| Target {
            table: record_table(table),
            sql: insert.sql.clone(),
            header: insert.header.clone(),
            schema_hash: schema_hash(&insert.header),
        })
        .collect()
    }
}

/// A block's spill record header.
fn record_header(block: &SealedBlock, schema_hash: u64) -> RecordHeader {
    RecordHeader {
        table: record_table(block.table),
        lz4: block.compression.is_some(),
        shard: block.shard,
        rows: block.rows,
        seq_first: block.seq_min,
        seq_last: block.seq_max,
        durable_through: block.durable_through.unwrap_or(0),
        schema_hash,
        received_min_ms: block.received_min_ms,
    }
}

/// Counts one journal sync of `took` (the group commit's wait for the disk).
fn note_sync(histogram: &mut Histogram<u64>, stats: &WriterStats, took: Duration) {
    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
    stats.spill_sync.observe(us, 1);
    histogram.saturating_record(us);
    for (slot, value) in stats.spill_sync_us.iter().zip([
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max(),
    ]) {
        slot.store(value, Ordering::Relaxed);
    }
}

impl Writer {
    /// True while a failed INSERT's backoff runs: ClickHouse counts as away.
    pub(super) fn clickhouse_away(&self) -> bool {
        self.retry_at
            .is_some_and(|at| std::time::Instant::now() < at)
    }

    /// Appends the batch's blocks not marked in `skip`, marking each one appended
    /// there, and syncs once. True when all are durable in the spill; false when there
    /// is no spill or it refused (full or failing): the caller holds the batch.
    ///
    /// A refusal can come after some blocks of the batch were appended. Overflow mode
    /// passes a copy of its stored-blocks marks and INSERTs the whole batch later: the
    /// extra records are harmless, replay finds their blocks stored. Journal-first keeps
    /// the marks across attempts, so a retry appends only the rest: the journal then
    /// holds each block once (the inserter would send a second copy), and the next
    /// successful sync makes the earlier records durable with the rest.
    pub(super) fn spill_batch(&mut self, skip: &mut [bool]) -> bool {
        let Some(shared) = self.spill.as_ref() else {
            return false;
        };
        let mut journal = crate::spill::lock(shared);
        let hash = |table: Table| schema_hash(&self.tables.get(table).header);
        let mut outcome: Result<(), SpillError> = Ok(());
        let mut appended = false;
        for (block, done) in self.batch.iter().zip(skip.iter_mut()) {
            if *done {
                continue;
            }
            let header = record_header(block, hash(block.table));
            if let Err(error) = journal.append(&header, &block.bytes) {
                outcome = Err(error);
                break;
            }
            *done = true;
            appended = true;
        }
        let synced_at = Instant::now();
        let outcome = outcome.and_then(|()| journal.sync());
        if outcome.is_ok() && appended {
            note_sync(&mut self.sync_histogram, &self.stats, synced_at.elapsed());
        }
        let pending = journal.bytes_pending();
        self.stats
            .spill_pending_bytes
            .store(pending, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                if self.stats.spill_refusing.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!(writer = self.config.index, "Spill takes blocks again");
                }
                true
            }
            Err(error) => {
                if self.stats.spill_refusing.swap(1, Ordering::Relaxed) == 0 {
                    tracing::error!(writer = self.config.index, %error,
                        "Spill refuses blocks; holding them, intake stops until ClickHouse or the spill has room");
                }
                false
            }
        }
    }

    /// Replays the oldest pending record written for this writer's tables and
    /// compression, when ClickHouse is not away and no drain runs. True when it did
    /// something.
    pub(super) fn replay_step(&mut self) -> bool {
        if self.config.journal_first
            || self.replay_blocked
            || self.clickhouse_away()
            || self.alert.stopping()
        {
            return false;
        }
        let Some(shared) = self.spill.clone() else {
            return false;
        };
        let mut journal = crate::spill::lock(&shared);
        if journal.records_pending() <= self.replay_unreplayable {
            return false;
        }
        let targets = self.tables.targets();
        let lz4 = self.config.options.compression.is_some();
        let mut chosen = None;
        for pos in journal.pending() {
            let record = match journal.read(pos) {
                Ok(record) => record,
                Err(error) => {
                    set_aside_damaged(&mut journal, pos, &error, &self.stats, self.config.index);
                    continue;
                }
            };
            let header = record.header;
            if header.lz4 != lz4 {
                continue;
            }
            if let Some(target) = targets
                .iter()
                .find(|t| t.table == header.table && t.schema_hash == header.schema_hash)
            {
                chosen = Some((pos, target.clone(), header));
                break;
            }
        }
        let Some((pos, target, header)) = chosen else {
            // Only records from another schema or compression: the next start's replay
            // (or `spill replay`) takes them. Look again only when new records come.
            if self.replay_unreplayable != journal.records_pending() {
                tracing::warn!(writer = self.config.index, records = journal.records_pending(),
                    "Spilled blocks for another schema or compression wait for the next start or `spill replay`");
            }
            self.replay_unreplayable = journal.records_pending();
            return false;
        };
        let rows = header.rows;
        let (outcome, stored_bytes) = {
            let record = match journal.read(pos) {
                Ok(record) => record,
                Err(_) => return false,
            };
            let outcome = self
                .client
                .run(|conn: &mut Connection| replay_record(conn, &target, &record));
            (outcome, record.payload.len())
        };
        match outcome {
            Ok(replayed) => {
                if let Err(error) = journal.mark_replayed(pos) {
                    tracing::error!(writer = self.config.index, %error, "Cannot mark a replayed spill record; replay stops (the next start finds it stored)");
                    self.replay_blocked = true;
                } else {
                    // Once: unmarked, the next start finds it stored and audits it then.
                    self.audit.record(crate::audit::replayed(
                        &header,
                        stored_bytes,
                        crate::runtime::clock::now_ms(),
                    ));
                }
                let s = &self.stats;
                s.replayed_blocks_total.fetch_add(1, Ordering::Relaxed);
                if replayed == Replayed::Inserted {
                    s.replayed_rows_total
                        .fetch_add(u64::from(rows), Ordering::Relaxed);
                }
                s.spill_pending_bytes
                    .store(journal.bytes_pending(), Ordering::Relaxed);
                true
            }
            Err(error) if error.is_retriable() => {
                self.after_failure(&error);
                self.retry_at = Some(std::time::Instant::now() + self.backoff.next_delay());
                false
            }
            Err(error) => {
                self.note_error(&error);
                self.stats.refused.store(1, Ordering::Relaxed);
                tracing::error!(writer = self.config.index, %error,
                    "ClickHouse refused a spilled block; replay stops, the spill keeps it (fix the schema, then restart or run `spill replay`)");
                self.replay_blocked = true;
                false
            }
        }
    }
}
