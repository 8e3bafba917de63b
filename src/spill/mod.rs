//! The spill: a journal of sealed blocks in memory-mapped segment files, for blocks
//! ClickHouse cannot take now (or, journal-first, for every block before its ack).
//!
//! ```text
//!   writer[w] ── append(header, block bytes) ──► <spill.dir>/writer-<w>/segment-….spill
//!       │            (pwrite into the file)           (preallocated, mmap'd for reading)
//!       └─────── sync() once per group ──► fdatasync: now durable, ack may pass it
//!   replay  ◄── pending(), read(pos) (CRCs checked again) ── INSERT ──► ClickHouse
//!           ─── mark_replayed(pos) ──► state byte = 1; a fully replayed segment is deleted
//! ```
//!
//! Back-pressure: [`Journal::append`] returns [`SpillError::Full`] when one more segment
//! would pass `spill.spill_bytes_max`, writing nothing; the writer then stops taking
//! blocks and the receiver stops pulling from JetStream (which holds the data).
//!
//! The spill must never hold more than its configured bytes, never report a record
//! durable before `sync` returned, and never delete a record that is not replayed.
//!
//! - [`format`](mod@format): the record and segment-header byte layout, CRC32C, the segment scan
//!   (pure: no files, no clock).
//! - [`journal`]: segment files, mmap, sync, scan at open, trim (the only unsafe code:
//!   the mapping and the directory lock).
//! - [`replay`]: pending records into ClickHouse, each at most once.

use std::sync::{Arc, Mutex, MutexGuard};

pub mod format;
pub mod journal;
pub mod replay;

pub use format::{
    decode_record, encode_record, record_bytes, schema_hash, Record, RecordError, RecordHeader,
    RecordTable,
};
pub use journal::{
    all_journal_dirs, journal_dirs, writer_dir, Finding, FindingKind, Journal, JournalConfig,
    JournalScan, MarksToSync, RecordPos, RecordSummary, ScanReport, SegmentSummary, SpillError,
    SIGNALS_SUBDIR,
};

/// Fewest segments one journal's share of `spill.spill_bytes_max` holds. The active
/// segment is trimmed only once it is full and all of it replayed, so its replayed
/// records keep their room until then: a journal of one segment could be full with
/// nothing pending. With two, at least one segment's worth of room is always there.
pub const SEGMENTS_MIN: u64 = 2;

/// A journal shared by its writer (appends, syncs) and, journal-first, its inserter
/// (reads, marks). Each holds the lock for one batch, never for a message, and never
/// across a ClickHouse call: the inserter copies the bytes out first.
pub type SharedJournal = Arc<Mutex<Journal>>;

/// Locks `journal`. A holder that panicked stops the whole process (main's
/// panic hook), and the journal's own state stays consistent at every step (records
/// are verified on read; marks are advisory), so a poisoned lock is taken over.
pub fn lock(journal: &Mutex<Journal>) -> MutexGuard<'_, Journal> {
    journal
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
