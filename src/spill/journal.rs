//! The spill journal of one writer: segment files in one directory, each preallocated
//! and memory-mapped; append writes a record into the file (`pwrite`; the mapping sees
//! it, the page cache being one), `sync` makes every record appended so far durable,
//! replay reads records through the mapping, marks them done, and whole segments go.
//!
//! ```text
//!   <spill.dir>/writer-<w>/                       (one directory, one owner: writer w)
//!     segment-00000000000000000001.spill  ┐ oldest: replayed first, deleted when every
//!     segment-00000000000000000002.spill  │         record is replayed (trim)
//!     segment-00000000000000000003.spill  ┘ active: appends go here until it is full,
//!                                                   then a new segment is created
//!   append ──pwrite(header, payload, padding)──► file ──sync(): fdatasync──► disk
//!   scan, read, replay ◄── mapping (same pages) ──► mark_replayed: state byte, msync
//! ```
//!
//! Why appends do not store into the mapping: a store into a mapped page first faults
//! it in, one trap per 4 KiB page, and `benches/spill.rs` measured appends through the
//! mapping at 0.61x of `write` + `fdatasync` of the same bytes, against 0.82x (1 MiB
//! records) and 0.94x (64 KiB) through the file, with no copy of the payload.
//!
//! **Durability.** A record is durable once [`Journal::sync`] has returned: `fdatasync`
//! of every segment appended to since the last sync. The segment file's length and its directory entry are made durable once,
//! when the segment is created (header flushed, `fsync` of file and directory), so a
//! record never depends on metadata written after it. `sync` is the group commit: one
//! per group of blocks, never one per message. A crash before `sync` returns may leave
//! any prefix of the unsynced bytes on disk, in any page order; the scan at the next
//! open cuts such a torn tail. Those records were never reported durable, so JetStream
//! still holds their messages and redelivers them.
//!
//! **The state byte is advisory.** [`Journal::mark_replayed`] sets it (outside both
//! CRCs) and syncs its page once the block is in ClickHouse
//! ([`Journal::mark_replayed_deferred`] leaves that sync, and the deletion of emptied
//! segments, to after the caller's lock). A crash before the sync replays the block
//! again at the next start; the replayer therefore checks ClickHouse
//! for the block's stream sequences before inserting (DESIGN §2, nothing doubled). A
//! damaged state byte other than 1 reads as pending, erring toward replay; the one flip
//! it cannot catch is 0 → 1 (bit 0 of a pending record's state), which reads as
//! replayed and so skips the record: that byte is unchecked by design, so it must
//! hold only what can be recomputed from ClickHouse.
//!
//! **Truncation underneath a mapping.** Touching a mapped page past the end of its file
//! raises SIGBUS and kills the process. The journal therefore: checks at open that each
//! file is exactly as long as its segment header says and maps none that is not (it is
//! reported as a damaged segment and left alone); never shrinks a file it has mapped
//! (segments are created at full length and only ever deleted whole, after unmapping);
//! reserves the blocks with `posix_fallocate` at creation, so a full disk fails there
//! with an error instead of as SIGBUS on a page fault in the middle of an append.
//! Journal-first, the new segment is usually a spare an inserter zero-filled ahead
//! (`journal::spare`), so appends never write into unwritten extents. What
//! it cannot defend against is another process truncating a segment while the journal
//! has it mapped: the spill directory belongs to the appliance; stop it before moving
//! files out of it. Deleting (unlinking) a mapped file is harmless.
//!
//! **Nothing read back is trusted.** The scan at open checks both CRCs of every record;
//! [`Journal::read`] checks them again before handing out bytes, since the disk or
//! another process may have changed them since.
//!
//! **Recovery never deletes data.** At open a torn tail (damage after the last valid
//! record) is zeroed and counted; damage in the middle is skipped by resyncing at the
//! next 8-aligned offset whose record verifies, and counted; a file that is not a valid
//! segment is reported and left as it is. A segment holding a corrupt record is never
//! trimmed automatically: its bytes may be the only copy of a block, so it stays (and
//! counts toward `spill_bytes_max`) until an operator moves it away, having read
//! `alphapt-storage spill verify`.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::MmapMut;
use thiserror::Error;

use crate::runtime::crash;

use super::format::{
    self, decode_record, encode_segment_header, record_bytes, scan_segment, Record, RecordHeader,
    ScannedRecord, SegmentHeader, PAYLOAD_BYTES_MAX, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
    STATE_OFFSET, STATE_REPLAYED,
};

/// Segment file names: `segment-` + the sequence number in 20 digits + `.spill`, so
/// names sort like numbers.
const SEGMENT_PREFIX: &str = "segment-";
/// See [`SEGMENT_PREFIX`].
const SEGMENT_SUFFIX: &str = ".spill";
/// Digits of the sequence number in a segment file name (`u64::MAX` has 20).
const SEGMENT_SEQ_DIGITS: usize = 20;
/// Journal directories under `spill.dir`: `writer-<index>`.
const WRITER_DIR_PREFIX: &str = "writer-";

/// Where one journal lives and how large it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// The journal's directory (one per writer, see [`writer_dir`]); created if missing.
    pub dir: PathBuf,
    /// Length of each new segment file, bytes (`spill.segment_bytes`). Existing
    /// segments keep the length their header records.
    pub segment_bytes: u64,
    /// Most bytes the journal's segment files may hold together; one more segment past
    /// it and [`Journal::append`] returns [`SpillError::Full`].
    pub bytes_max: u64,
}

/// Where a record is: its segment's sequence number and its offset in that file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct RecordPos {
    /// Sequence number of the segment holding the record.
    pub segment_seq: u64,
    /// Offset of the record's header in the segment file.
    pub offset: u64,
}

impl fmt::Display for RecordPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {} offset {}", self.segment_seq, self.offset)
    }
}

/// What the scan of a journal found, in counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanReport {
    /// Segment files found, damaged ones included.
    pub segments: u64,
    /// Records that verify.
    pub records: u64,
    /// Of those, records not marked replayed.
    pub pending: u64,
    /// Segments whose end held a torn (partly written) record.
    pub torn_tails: u64,
    /// Damaged spans in the middle of segments, skipped.
    pub corrupt_records: u64,
    /// Bytes of torn tails zeroed (by a read-only scan: that would be zeroed).
    pub bytes_cut: u64,
    /// Files named like segments that are not valid segments (left alone, not mapped).
    pub corrupt_segments: u64,
}

impl ScanReport {
    /// True when nothing was damaged: no corrupt record, segment or torn tail.
    pub fn is_clean(&self) -> bool {
        self.torn_tails == 0 && self.corrupt_records == 0 && self.corrupt_segments == 0
    }
}

/// The kind of a [`Finding`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Damage in the middle of a segment, skipped; valid records follow it.
    CorruptRecord,
    /// Damage at the end of a segment: a write cut short (cut at open).
    TornTail,
    /// A file named like a segment whose header, name or length is wrong (left alone).
    CorruptSegment,
}

/// One problem the scan found, for logs and `spill verify`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// What was found.
    pub kind: FindingKind,
    /// The segment file.
    pub file: PathBuf,
    /// Where the damage starts in the file.
    pub offset: u64,
    /// Bytes skipped (corrupt record), cut (torn tail) or held (corrupt segment).
    pub bytes: u64,
    /// Which check failed.
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FindingKind::CorruptRecord => "corrupt record",
            FindingKind::TornTail => "torn tail",
            FindingKind::CorruptSegment => "corrupt segment",
        };
        write!(
            f,
            "{kind} in {} at offset {} ({} B): {}",
            self.file.display(),
            self.offset,
            self.bytes,
            self.reason
        )
    }
}

/// One segment as `spill inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SegmentSummary {
    /// The segment file.
    pub file: PathBuf,
    /// Its sequence number (from the file name when the header is damaged).
    pub segment_seq: u64,
    /// Records that verify.
    pub records: u64,
    /// Of those, not marked replayed.
    pub pending: u64,
    /// Of those, marked replayed.
    pub replayed: u64,
    /// Damaged spans skipped in the middle of the segment.
    pub corrupt: u64,
    /// Length of the file: what counts toward `spill_bytes_max`.
    pub bytes: u64,
    /// Bytes up to the end of the last valid record (segment header included).
    pub bytes_written: u64,
    /// Lowest first stream sequence of its records.
    pub stream_seq_first: Option<u64>,
    /// Highest last stream sequence of its records.
    pub stream_seq_last: Option<u64>,
    /// Oldest `received_min_ms` of its records, Unix ms.
    pub received_oldest_ms: Option<i64>,
    /// Newest `received_min_ms` of its records, Unix ms.
    pub received_newest_ms: Option<i64>,
    /// Why the file is not a valid segment, when it is not (then it holds no records).
    pub damaged: Option<String>,
}

/// One valid record as a read-only scan found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecordSummary {
    /// Where it is.
    pub pos: RecordPos,
    /// Its verified header.
    pub header: RecordHeader,
    /// Payload bytes.
    pub payload_bytes: u64,
    /// True unless the state byte says replayed.
    pub pending: bool,
}

/// A read-only scan of one journal directory ([`Journal::scan_read_only`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct JournalScan {
    /// The journal's directory.
    pub dir: PathBuf,
    /// Counts.
    pub report: ScanReport,
    /// Every segment file, oldest first.
    pub segments: Vec<SegmentSummary>,
    /// Every valid record, oldest first.
    pub records: Vec<RecordSummary>,
    /// Every problem, in file order.
    pub findings: Vec<Finding>,
}

/// Spill failures. Each message names the file or key and what the operator can do.
#[derive(Debug, Error)]
pub enum SpillError {
    /// A file operation failed.
    #[error(
        "spill I/O failed: {action} {}: {source}; check that the disk holding `spill.dir` \
         is mounted, writable and not full",
        path.display()
    )]
    Io {
        /// What was being done, e.g. "cannot create segment".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// One more segment would pass `bytes_max`; nothing was written.
    #[error(
        "spill journal {} is full: {bytes_used} B held and one more {segment_bytes}-byte \
         segment would pass `spill.spill_bytes_max` = {bytes_max} B; blocks must drain to \
         ClickHouse first, or raise spill.spill_bytes_max if the disk has room",
        dir.display()
    )]
    Full {
        /// The journal's directory.
        dir: PathBuf,
        /// Bytes its segment files hold now.
        bytes_used: u64,
        /// The limit.
        bytes_max: u64,
        /// Size of the segment that did not fit.
        segment_bytes: u64,
    },
    /// A record longer than a segment can hold.
    #[error(
        "a {record_bytes}-byte spill record does not fit in a segment of \
         `spill.segment_bytes` = {segment_bytes} B ({SEGMENT_HEADER_BYTES} B go to the segment \
         header); raise spill.segment_bytes above the largest sealed block plus \
         {RECORD_HEADER_BYTES} B"
    )]
    RecordTooLarge {
        /// Bytes the record would occupy, header and padding included.
        record_bytes: u64,
        /// The configured segment size.
        segment_bytes: u64,
    },
    /// Another journal (another writer or another appliance process) has the directory.
    #[error(
        "spill directory {} is in use by another appliance process; give each appliance \
         its own `spill.dir`",
        dir.display()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The configured segment size cannot hold a single record.
    #[error(
        "`spill.segment_bytes` = {segment_bytes} B is too small: a segment needs at least \
         {min} B (its header and one record header); raise it (64 MiB is the default)"
    )]
    SegmentTooSmall {
        /// The configured segment size.
        segment_bytes: u64,
        /// The least that works.
        min: u64,
    },
    /// A record that verified at open no longer does.
    #[error(
        "the spill record at offset {offset} of {} fails verification ({reason}); it verified \
         when the journal opened, so the disk or another process changed it: run \
         `alphapt-storage spill verify` and keep the file for inspection",
        path.display()
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// The record's offset.
        offset: u64,
        /// Which check failed.
        reason: &'static str,
    },
    /// A position that names no record of this journal.
    #[error(
        "no spill record at {pos} in {}; positions come from `append` or `pending` of the \
         same journal (this is a bug in the caller)",
        dir.display()
    )]
    UnknownRecord {
        /// The journal's directory.
        dir: PathBuf,
        /// The position asked for.
        pos: RecordPos,
    },
}

/// The signals path's spill root under `spill.dir`: its writer indexes start at 0 too.
pub const SIGNALS_SUBDIR: &str = "signals";

/// Every journal an appliance with spill root `root` writes: the ticks path's
/// `writer-<n>` and the signals path's `signals/writer-<n>`.
pub fn all_journal_dirs(root: &Path) -> Result<Vec<PathBuf>, SpillError> {
    let mut dirs = journal_dirs(root)?;
    dirs.extend(journal_dirs(&root.join(SIGNALS_SUBDIR))?);
    Ok(dirs)
}

/// The directory of writer `writer`'s journal under the spill root.
pub fn writer_dir(root: &Path, writer: usize) -> PathBuf {
    root.join(format!("{WRITER_DIR_PREFIX}{writer}"))
}

/// The `writer-<n>` journal directories under `root`, by `n`; empty when `root` does
/// not exist. Other entries are ignored.
pub fn journal_dirs(root: &Path) -> Result<Vec<PathBuf>, SpillError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error("cannot list", root, error)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot list", root, e))?;
        let name = entry.file_name();
        let Some(index) = name
            .to_str()
            .and_then(|n| n.strip_prefix(WRITER_DIR_PREFIX))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if entry.path().is_dir() {
            dirs.push((index, entry.path()));
        }
    }
    dirs.sort();
    Ok(dirs.into_iter().map(|(_, path)| path).collect())
}

/// One mapped segment.
struct Segment {
    /// Sequence number, from the header (which agrees with the file name).
    seq: u64,
    /// The file.
    path: PathBuf,
    /// The whole file, mapped shared and writable; its length never changes.
    map: MmapMut,
    /// The file itself: appends are written through it (see `append`); shared with
    /// [`MarksToSync`], which syncs replayed marks after the lock is released.
    file: std::sync::Arc<fs::File>,
    /// Every valid record, in file order; `state` follows `mark_replayed`.
    records: Vec<ScannedRecord>,
    /// Records whose state is not replayed.
    pending: u64,
    /// Per record (same index as `records`): taken by one of the journal-first
    /// inserters for an INSERT in flight, so the others pass it over. Memory only: a
    /// restart finds every pending record free.
    claimed: Vec<bool>,
    /// Damaged spans skipped at open; a segment with any is never trimmed.
    corrupt: u64,
    /// Where the next record goes; grows with `append`.
    append_offset: usize,
    /// Bytes up to here are durable; `sync` raises it to `append_offset`.
    synced_offset: usize,
}

/// A file named like a segment that is not a valid one: listed, counted, never touched.
struct DamagedSegment {
    /// Sequence number from the file name.
    seq: u64,
    /// The file.
    path: PathBuf,
    /// Its length.
    bytes: u64,
    /// What is wrong with it.
    reason: String,
}

/// The spill journal of one writer. See the module doc for its guarantees.
pub struct Journal {
    /// Directory and limits.
    config: JournalConfig,
    /// Mapped segments, oldest first.
    segments: Vec<Segment>,
    /// Damaged segment files, oldest first; they count toward `bytes_used`.
    damaged: Vec<DamagedSegment>,
    /// True when the last mapped segment takes appends (false when it is full, or when
    /// a damaged segment is newer than it).
    appendable: bool,
    /// Sequence number of the next segment created: above every file seen.
    next_segment_seq: u64,
    /// Bytes of all segment files held, damaged ones included.
    bytes_used: u64,
    /// Records not marked replayed.
    records_pending: u64,
    /// Their bytes (headers and padding included).
    bytes_pending: u64,
    /// What the scan at open found.
    findings: Vec<Finding>,
    /// The next segment's file made ahead ([`spare`]).
    spare: spare::SpareState,
    /// The directory's `LOCK` file, held (flock) for the journal's life: one owner.
    _lock: fs::File,
}

impl Journal {
    /// Opens (creating the directory if missing) the journal in `config.dir`: scans
    /// every segment oldest first, verifying every CRC; zeroes and counts a torn tail,
    /// skips and counts corrupt records in the middle, reports damaged segment files;
    /// trims segments whose records are all replayed. Logs every finding.
    pub fn open(config: &JournalConfig) -> Result<(Journal, ScanReport), SpillError> {
        let min = (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES) as u64;
        if config.segment_bytes < min || usize::try_from(config.segment_bytes).is_err() {
            return Err(SpillError::SegmentTooSmall {
                segment_bytes: config.segment_bytes,
                min,
            });
        }
        fs::create_dir_all(&config.dir)
            .map_err(|e| io_error("cannot create directory", &config.dir, e))?;
        let lock = lock_dir(&config.dir)?;
        let spare = spare::state_at_open(&config.dir, config.segment_bytes);
        let mut journal = Journal {
            config: config.clone(),
            segments: Vec::new(),
            damaged: Vec::new(),
            appendable: false,
            next_segment_seq: 1,
            bytes_used: 0,
            records_pending: 0,
            bytes_pending: 0,
            findings: Vec::new(),
            spare,
            _lock: lock,
        };
        let mut report = ScanReport::default();
        for (seq, path) in list_segments(&config.dir)? {
            report.segments += 1;
            journal.next_segment_seq = journal.next_segment_seq.max(seq + 1);
            journal.load_segment(seq, path, &mut report)?;
        }
        // Appends continue in the newest file only when it is a mapped segment.
        let newest_mapped = journal.segments.last().map(|s| s.seq);
        let newest_damaged = journal.damaged.last().map(|d| d.seq);
        journal.appendable = newest_mapped.is_some() && newest_mapped > newest_damaged;
        for index in (0..journal.segments.len()).rev() {
            journal.trim_if_replayed(index);
        }
        for finding in &journal.findings {
            tracing::warn!(dir = %config.dir.display(), finding = %finding, "Spill damage found");
        }
        tracing::info!(
            dir = %config.dir.display(),
            segments = report.segments,
            records = report.records,
            pending = report.pending,
            torn_tails = report.torn_tails,
            corrupt_records = report.corrupt_records,
            corrupt_segments = report.corrupt_segments,
            "Spill journal opened"
        );
        Ok((journal, report))
    }

    /// Maps, scans and (for a torn tail) cuts one segment file, or records it damaged.
    fn load_segment(
        &mut self,
        seq: u64,
        path: PathBuf,
        report: &mut ScanReport,
    ) -> Result<(), SpillError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("cannot open segment", &path, e))?;
        let file_bytes = file
            .metadata()
            .map_err(|e| io_error("cannot stat segment", &path, e))?
            .len();
        let mut head = [0u8; SEGMENT_HEADER_BYTES];
        let head_bytes = read_prefix(&mut file, &mut head)
            .map_err(|e| io_error("cannot read segment header", &path, e))?;
        if let Err(reason) = check_segment_header(seq, &head[..head_bytes], file_bytes) {
            self.add_damaged(seq, path, file_bytes, reason, report);
            return Ok(());
        }
        // SAFETY: the file is a spill segment of this journal's directory, which only
        // this journal writes (one directory per writer). Its length was checked just
        // above to equal the length its header records, and the journal never shrinks
        // a mapped file; truncation by another process is excluded by the module doc's
        // contract (it would raise SIGBUS, not undefined behaviour in safe code here).
        let mut map = unsafe { MmapMut::map_mut(&file) }
            .map_err(|e| io_error("cannot map segment", &path, e))?;
        assert_eq!(map.len() as u64, file_bytes, "mapping length");
        let scan = scan_segment(&map);
        self.findings.extend(corrupt_findings(&path, &scan));
        if let Some(torn) = scan.torn_tail {
            map[torn.offset..torn.offset + torn.bytes].fill(0);
            map.flush_range(torn.offset, torn.bytes)
                .map_err(|e| io_error("cannot cut the torn tail of", &path, e))?;
            report.torn_tails += 1;
            report.bytes_cut += torn.bytes as u64;
            self.findings.push(Finding {
                kind: FindingKind::TornTail,
                file: path.clone(),
                offset: torn.offset as u64,
                bytes: torn.bytes as u64,
                reason: format!("{} (cut)", torn.reason),
            });
        }
        let pending: Vec<&ScannedRecord> = scan
            .records
            .iter()
            .filter(|r| r.state != STATE_REPLAYED)
            .collect();
        report.records += scan.records.len() as u64;
        report.pending += pending.len() as u64;
        report.corrupt_records += scan.corrupt.len() as u64;
        self.records_pending += pending.len() as u64;
        self.bytes_pending += pending.iter().map(|r| r.bytes as u64).sum::<u64>();
        self.bytes_used += file_bytes;
        self.segments.push(Segment {
            seq,
            path,
            map,
            file: std::sync::Arc::new(file),
            pending: pending.len() as u64,
            claimed: vec![false; scan.records.len()],
            records: scan.records,
            corrupt: scan.corrupt.len() as u64,
            append_offset: scan.append_offset,
            synced_offset: scan.append_offset,
        });
        Ok(())
    }

    fn add_damaged(
        &mut self,
        seq: u64,
        path: PathBuf,
        bytes: u64,
        reason: String,
        report: &mut ScanReport,
    ) {
        report.corrupt_segments += 1;
        self.bytes_used += bytes;
        self.findings.push(Finding {
            kind: FindingKind::CorruptSegment,
            file: path.clone(),
            offset: 0,
            bytes,
            reason: reason.clone(),
        });
        self.damaged.push(DamagedSegment {
            seq,
            path,
            bytes,
            reason,
        });
    }

    /// Reads every segment of `dir` without changing anything (no cut, no trim, no
    /// mapping): what `spill verify` and `spill inspect` show. Run against a live
    /// journal, the record being written may show as a torn tail.
    pub fn scan_read_only(dir: &Path) -> Result<JournalScan, SpillError> {
        let mut scan = JournalScan {
            dir: dir.to_path_buf(),
            report: ScanReport::default(),
            segments: Vec::new(),
            records: Vec::new(),
            findings: Vec::new(),
        };
        for (seq, path) in list_segments(dir)? {
            scan.report.segments += 1;
            let bytes = fs::read(&path).map_err(|e| io_error("cannot read segment", &path, e))?;
            let head = &bytes[..bytes.len().min(SEGMENT_HEADER_BYTES)];
            if let Err(reason) = check_segment_header(seq, head, bytes.len() as u64) {
                scan.report.corrupt_segments += 1;
                scan.findings.push(Finding {
                    kind: FindingKind::CorruptSegment,
                    file: path.clone(),
                    offset: 0,
                    bytes: bytes.len() as u64,
                    reason: reason.clone(),
                });
                scan.segments
                    .push(damaged_summary(seq, path, bytes.len() as u64, reason));
                continue;
            }
            let found = scan_segment(&bytes);
            scan.findings.extend(corrupt_findings(&path, &found));
            if let Some(torn) = found.torn_tail {
                scan.report.torn_tails += 1;
                scan.report.bytes_cut += torn.bytes as u64;
                scan.findings.push(Finding {
                    kind: FindingKind::TornTail,
                    file: path.clone(),
                    offset: torn.offset as u64,
                    bytes: torn.bytes as u64,
                    reason: torn.reason.to_owned(),
                });
            }
            scan.report.records += found.records.len() as u64;
            scan.report.pending += found
                .records
                .iter()
                .filter(|r| r.state != STATE_REPLAYED)
                .count() as u64;
            scan.report.corrupt_records += found.corrupt.len() as u64;
            scan.records
                .extend(found.records.iter().map(|r| RecordSummary {
                    pos: RecordPos {
                        segment_seq: seq,
                        offset: r.offset as u64,
                    },
                    header: r.header,
                    payload_bytes: r.payload_bytes as u64,
                    pending: r.state != STATE_REPLAYED,
                }));
            scan.segments.push(summarize(
                seq,
                path,
                bytes.len() as u64,
                found.append_offset as u64,
                &found.records,
                found.corrupt.len() as u64,
            ));
        }
        Ok(scan)
    }

    /// Copies one record into the active segment (creating a segment when it is full)
    /// and returns where it is. Not durable until [`Journal::sync`] returns.
    ///
    /// # Errors
    ///
    /// [`SpillError::Full`] when a new segment would pass `bytes_max` (nothing is
    /// written); [`SpillError::RecordTooLarge`] when the record cannot fit in a segment;
    /// [`SpillError::Io`] when a new segment cannot be created.
    pub fn append(
        &mut self,
        header: &RecordHeader,
        payload: &[u8],
    ) -> Result<RecordPos, SpillError> {
        let room = self.config.segment_bytes - SEGMENT_HEADER_BYTES as u64;
        let too_large = || SpillError::RecordTooLarge {
            record_bytes: (RECORD_HEADER_BYTES + payload.len()) as u64,
            segment_bytes: self.config.segment_bytes,
        };
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(too_large());
        }
        let bytes = record_bytes(payload.len());
        if bytes as u64 > room {
            return Err(too_large());
        }
        if !self.active_has_room(bytes) {
            self.roll()?;
        }
        let segment = self.segments.last_mut().expect("roll made a segment");
        let offset = segment.append_offset;
        // Written through the file, not the mapping: a store into a mapped page first
        // faults it in (one trap per 4 KiB page), and `benches/spill.rs` measured the
        // mapping at 0.61x of write + fdatasync against 0.82x this way. The mapping
        // still reads every record (the page cache is one), and flips state bytes.
        let mut head = [0u8; RECORD_HEADER_BYTES];
        format::encode_record_header(header, payload, &mut head);
        let padding = [0u8; format::RECORD_ALIGN_BYTES];
        let pad = format::record_padding(payload.len());
        {
            use std::os::unix::fs::FileExt;
            let at = offset as u64;
            let write = |bytes: &[u8], at: u64| {
                segment
                    .file
                    .write_all_at(bytes, at)
                    .map_err(|e| io_error("cannot write a record to", &segment.path, e))
            };
            write(&head, at)?;
            write(payload, at + RECORD_HEADER_BYTES as u64)?;
            if pad > 0 {
                write(
                    &padding[..pad],
                    at + (RECORD_HEADER_BYTES + payload.len()) as u64,
                )?;
            }
        }
        debug_assert_eq!(
            decode_record(&segment.map[offset..]).map(|r| r.header),
            Ok(*header),
            "a record must read back as written"
        );
        segment.records.push(ScannedRecord {
            offset,
            bytes,
            payload_bytes: payload.len(),
            header: *header,
            state: format::STATE_PENDING,
        });
        segment.claimed.push(false);
        segment.append_offset += bytes;
        segment.pending += 1;
        self.records_pending += 1;
        self.bytes_pending += bytes as u64;
        Ok(RecordPos {
            segment_seq: segment.seq,
            offset: offset as u64,
        })
    }

    fn active_has_room(&self, bytes: usize) -> bool {
        match self.segments.last() {
            Some(segment) if self.appendable => segment.append_offset + bytes <= segment.map.len(),
            _ => false,
        }
    }

    /// A spare segment file to make now (outside the lock: [`SpareJob::run`]), when
    /// none is ready or being made; report the outcome with [`Journal::spare_prepared`].
    pub fn spare_job(&mut self) -> Option<SpareJob> {
        if self.spare != spare::SpareState::Missing {
            return None;
        }
        self.spare = spare::SpareState::Preparing;
        Some(SpareJob {
            dir: self.config.dir.clone(),
            bytes: self.config.segment_bytes,
        })
    }

    /// The outcome of a [`SpareJob`]: made (the next roll takes it), stopped by a
    /// drain (none), or failed (logged here; segments are then created as before for
    /// the rest of the journal's life).
    pub fn spare_prepared(&mut self, outcome: std::io::Result<bool>) {
        self.spare = match outcome {
            Ok(true) => spare::SpareState::Ready,
            Ok(false) => spare::SpareState::Missing,
            Err(error) => {
                tracing::warn!(dir = %self.config.dir.display(), %error,
                    "Cannot make a zero-filled spare segment; new segments are allocated as they are needed");
                spare::SpareState::Off
            }
        };
    }

    /// Creates the next segment and makes it the active one. The segment it replaces
    /// goes first when all of it is replayed, making room; otherwise it stays active
    /// until the new one exists, so a [`SpillError::Full`] changes nothing.
    fn roll(&mut self) -> Result<(), SpillError> {
        if let Some(last) = self.segments.last() {
            if self.appendable && last.pending == 0 && last.corrupt == 0 {
                self.appendable = false;
                self.trim_if_replayed(self.segments.len() - 1);
            }
        }
        let segment_bytes = self.config.segment_bytes;
        if self.bytes_used + segment_bytes > self.config.bytes_max {
            return Err(SpillError::Full {
                dir: self.config.dir.clone(),
                bytes_used: self.bytes_used,
                bytes_max: self.config.bytes_max,
                segment_bytes,
            });
        }
        let seq = self.next_segment_seq;
        let path = self.config.dir.join(segment_file_name(seq));
        let dir = &self.config.dir;
        let from_spare = match self.spare {
            spare::SpareState::Ready => {
                self.spare = spare::SpareState::Missing;
                spare::take(dir, &path, segment_bytes)
            }
            _ => None,
        };
        let made = match from_spare {
            Some(file) => init_segment(dir, &path, file, seq, segment_bytes),
            None => create_segment(dir, &path, seq, segment_bytes),
        };
        let (file, map) = made.inspect_err(|_| {
            // Best effort: a half-made file would be reported as damaged at the next open.
            let _ = fs::remove_file(&path);
        })?;
        tracing::debug!(path = %path.display(), segment_bytes, "Spill segment created");
        self.next_segment_seq += 1;
        self.bytes_used += segment_bytes;
        self.segments.push(Segment {
            seq,
            path,
            map,
            file: std::sync::Arc::new(file),
            records: Vec::new(),
            claimed: Vec::new(),
            pending: 0,
            corrupt: 0,
            append_offset: SEGMENT_HEADER_BYTES,
            synced_offset: SEGMENT_HEADER_BYTES,
        });
        self.appendable = true;
        Ok(())
    }

    /// Group commit: writes back every byte appended since the last sync, in every
    /// segment, and waits for the device. Afterwards every appended record is durable.
    pub fn sync(&mut self) -> Result<(), SpillError> {
        for segment in &mut self.segments {
            if segment.synced_offset < segment.append_offset {
                segment
                    .file
                    .sync_data()
                    .map_err(|e| io_error("cannot sync", &segment.path, e))?;
                segment.synced_offset = segment.append_offset;
            }
        }
        Ok(())
    }

    /// Records not marked replayed, oldest first (segment order, then file order).
    pub fn pending(&self) -> Vec<RecordPos> {
        self.pending_records().map(|(pos, ..)| pos).collect()
    }

    /// Records not marked replayed with their headers, oldest first, without
    /// allocating: what the journal-first inserters look through every few ms.
    pub fn pending_headers(&self) -> impl Iterator<Item = (RecordPos, &RecordHeader)> + '_ {
        self.pending_records().map(|(pos, r, _)| (pos, &r.header))
    }

    /// Pending records no inserter has claimed, with their headers and the bytes they
    /// occupy, oldest first: what a journal-first inserter chooses its next INSERT from.
    pub fn unclaimed_headers(&self) -> impl Iterator<Item = (RecordPos, &RecordHeader, u64)> + '_ {
        self.pending_records()
            .filter(|&(.., claimed)| !claimed)
            .map(|(pos, r, _)| (pos, &r.header, r.bytes as u64))
    }

    /// Every record not marked replayed, oldest first, with whether it is claimed.
    fn pending_records(&self) -> impl Iterator<Item = (RecordPos, &ScannedRecord, bool)> + '_ {
        self.segments.iter().flat_map(|segment| {
            segment
                .records
                .iter()
                .zip(&segment.claimed)
                .filter(|(r, _)| r.state != STATE_REPLAYED)
                .map(move |(r, &claimed)| {
                    let pos = RecordPos {
                        segment_seq: segment.seq,
                        offset: r.offset as u64,
                    };
                    (pos, r, claimed)
                })
        })
    }

    /// Claims every record in `positions` for the INSERT an inserter is about to
    /// send, so the journal's other inserters send other records meanwhile. A claim
    /// only steers who sends what: marks and replay ignore it, the mark after the
    /// INSERT ends it, and a restart forgets it.
    pub fn claim_all(&mut self, positions: &[RecordPos]) -> Result<(), SpillError> {
        for &pos in positions {
            let (segment_index, record_index) = self.locate(pos)?;
            self.segments[segment_index].claimed[record_index] = true;
        }
        Ok(())
    }

    /// Ends the claim on the record at `pos` without marking it: an inserter that claimed
    /// it found it unreadable, and leaves it as it found it.
    pub fn unclaim(&mut self, pos: RecordPos) -> Result<(), SpillError> {
        let (segment_index, record_index) = self.locate(pos)?;
        self.segments[segment_index].claimed[record_index] = false;
        Ok(())
    }

    /// Takes the record at `pos`, found damaged by [`Journal::read`] after it was
    /// written, out of the pending ones, as the scan at open would have: it is counted
    /// as corrupt (so its segment is never trimmed: its bytes may be the only copy of a
    /// block), listed in [`Journal::findings`] with `reason`, and never offered again.
    /// Memory only, like a claim: the next open's scan finds it damaged again.
    pub fn set_aside(&mut self, pos: RecordPos, reason: &str) -> Result<(), SpillError> {
        let (segment_index, record_index) = self.locate(pos)?;
        let segment = &mut self.segments[segment_index];
        let record = segment.records.remove(record_index);
        segment.claimed.remove(record_index);
        segment.corrupt += 1;
        if record.state != STATE_REPLAYED {
            segment.pending -= 1;
            self.records_pending -= 1;
            self.bytes_pending -= record.bytes as u64;
        }
        self.findings.push(Finding {
            kind: FindingKind::CorruptRecord,
            file: segment.path.clone(),
            offset: pos.offset,
            bytes: record.bytes as u64,
            reason: format!("{reason} (found after it was written)"),
        });
        Ok(())
    }

    /// The record at `pos`, its CRCs checked again and its header compared with the one
    /// seen at open or append.
    pub fn read(&self, pos: RecordPos) -> Result<Record<'_>, SpillError> {
        let (segment_index, record_index) = self.locate(pos)?;
        let segment = &self.segments[segment_index];
        let known = &segment.records[record_index];
        let corrupt = |reason| SpillError::Corrupt {
            path: segment.path.clone(),
            offset: pos.offset,
            reason,
        };
        let record = decode_record(&segment.map[known.offset..]).map_err(|e| match e {
            format::RecordError::End => corrupt("the record was zeroed"),
            format::RecordError::Corrupt { reason } => corrupt(reason),
        })?;
        if record.header != known.header || record.bytes != known.bytes {
            return Err(corrupt("header differs from the one seen at open"));
        }
        Ok(record)
    }

    /// Marks the record at `pos` replayed (its block is in ClickHouse) and syncs that
    /// byte; deletes its segment when that was the segment's last pending record and the
    /// segment is not the active one. Marking twice is harmless.
    pub fn mark_replayed(&mut self, pos: RecordPos) -> Result<(), SpillError> {
        let (segment_index, record_index) = self.locate(pos)?;
        let segment = &mut self.segments[segment_index];
        let record = &mut segment.records[record_index];
        if record.state == STATE_REPLAYED {
            return Ok(());
        }
        let at = record.offset + STATE_OFFSET;
        segment.map[at] = STATE_REPLAYED;
        let synced = if crash::fails(crash::Point::MarksSyncError) {
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        } else {
            segment.map.flush_range(at, 1)
        };
        synced.map_err(|e| io_error("cannot sync the replayed mark in", &segment.path, e))?;
        record.state = STATE_REPLAYED;
        segment.pending -= 1;
        self.records_pending -= 1;
        self.bytes_pending -= record.bytes as u64;
        self.trim_if_replayed(segment_index);
        Ok(())
    }

    /// Marks every record in `positions` replayed, writing the state bytes back with
    /// one `msync` per segment touched instead of one per record (journal-first marks
    /// a whole INSERT's records at once); trims segments left with nothing pending.
    /// The marks are advisory (see the module doc), so an error after some were set
    /// leaves nothing wrong: the next start finds those blocks stored.
    pub fn mark_replayed_all(&mut self, positions: &[RecordPos]) -> Result<(), SpillError> {
        let (outcome, undeleted) = self.mark_replayed_deferred(positions)?.sync();
        self.count_undeleted(undeleted);
        outcome
    }

    /// [`Journal::mark_replayed_all`] without the syncs: the marks are written into the
    /// mapping and counted, and emptied segments leave the list; the returned
    /// [`MarksToSync`] writes the marks back and deletes those files once the caller has
    /// released the journal's lock. Each is a wait for the disk (20-35 ms seen on a
    /// disk shared with nats-server), and a writer that needs the lock to append would
    /// wait through it with its whole group commit. Marks are advisory, so a crash before
    /// the sync only means a replay that finds the blocks stored.
    pub fn mark_replayed_deferred(
        &mut self,
        positions: &[RecordPos],
    ) -> Result<MarksToSync, SpillError> {
        let mut touched: Vec<(usize, usize, usize)> = Vec::new();
        for &pos in positions {
            let (segment_index, record_index) = self.locate(pos)?;
            let segment = &mut self.segments[segment_index];
            let record = &mut segment.records[record_index];
            if record.state == STATE_REPLAYED {
                continue;
            }
            let at = record.offset + STATE_OFFSET;
            segment.map[at] = STATE_REPLAYED;
            record.state = STATE_REPLAYED;
            segment.pending -= 1;
            self.records_pending -= 1;
            self.bytes_pending -= record.bytes as u64;
            match touched.iter_mut().find(|(s, _, _)| *s == segment_index) {
                Some((_, low, high)) => {
                    *low = (*low).min(at);
                    *high = (*high).max(at);
                }
                None => touched.push((segment_index, at, at)),
            }
        }
        let mut deferred = MarksToSync {
            dir: self.config.dir.clone(),
            files: Vec::new(),
            removed: Vec::new(),
        };
        // Highest index first: trimming removes the segment from the list.
        touched.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
        for (segment_index, _, _) in touched {
            match self.take_if_replayed(segment_index) {
                Some(gone) => deferred.removed.push(gone),
                None => {
                    let segment = &self.segments[segment_index];
                    deferred
                        .files
                        .push((segment.file.clone(), segment.path.clone()));
                }
            }
        }
        Ok(deferred)
    }

    /// Counts again a segment file [`MarksToSync::sync`] could not delete: it is still
    /// on disk, and the next open trims it.
    pub fn count_undeleted(&mut self, bytes: u64) {
        self.bytes_used += bytes;
    }

    /// Takes segment `index` out of the list when [`Journal::trim_if_replayed`] would
    /// delete it, and uncounts it; the caller deletes the file.
    fn take_if_replayed(&mut self, index: usize) -> Option<(PathBuf, u64)> {
        let segment = &self.segments[index];
        let active = self.appendable && index + 1 == self.segments.len();
        if active || segment.pending > 0 || segment.corrupt > 0 {
            return None;
        }
        let path = segment.path.clone();
        let bytes = segment.map.len() as u64;
        // Unmap first: the file is only ever deleted whole, never shrunk while mapped.
        drop(self.segments.remove(index));
        self.bytes_used -= bytes;
        Some((path, bytes))
    }

    /// Deletes segment `index` when it is not the active one, every record in it is
    /// replayed and none is corrupt. A failure to delete is logged and the segment kept.
    fn trim_if_replayed(&mut self, index: usize) {
        let Some((path, bytes)) = self.take_if_replayed(index) else {
            return;
        };
        match fs::remove_file(&path).and_then(|()| sync_dir(&self.config.dir)) {
            Ok(()) => tracing::debug!(path = %path.display(), "Spill segment trimmed"),
            Err(error) => {
                // Still on disk: count it again; the next open trims it.
                self.count_undeleted(bytes);
                tracing::warn!(path = %path.display(), error = %error, "Cannot trim spill segment");
            }
        }
    }

    fn locate(&self, pos: RecordPos) -> Result<(usize, usize), SpillError> {
        let unknown = || SpillError::UnknownRecord {
            dir: self.config.dir.clone(),
            pos,
        };
        let segment_index = self
            .segments
            .binary_search_by_key(&pos.segment_seq, |s| s.seq)
            .map_err(|_| unknown())?;
        let record_index = self.segments[segment_index]
            .records
            .binary_search_by_key(&pos.offset, |r| r.offset as u64)
            .map_err(|_| unknown())?;
        Ok((segment_index, record_index))
    }

    /// The most bytes the segment files may hold.
    pub fn bytes_max(&self) -> u64 {
        self.config.bytes_max
    }

    /// Bytes of the segment files held (what counts toward `bytes_max`).
    pub fn bytes_used(&self) -> u64 {
        self.bytes_used
    }

    /// Records not marked replayed.
    pub fn records_pending(&self) -> u64 {
        self.records_pending
    }

    /// Bytes of the records not marked replayed (headers and padding included).
    pub fn bytes_pending(&self) -> u64 {
        self.bytes_pending
    }

    /// What the scan at open found (each was also logged).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Every segment file held, oldest first, damaged ones included.
    pub fn summary(&self) -> Vec<SegmentSummary> {
        let mut summaries: Vec<SegmentSummary> = self
            .segments
            .iter()
            .map(|s| {
                summarize(
                    s.seq,
                    s.path.clone(),
                    s.map.len() as u64,
                    s.append_offset as u64,
                    &s.records,
                    s.corrupt,
                )
            })
            .chain(
                self.damaged
                    .iter()
                    .map(|d| damaged_summary(d.seq, d.path.clone(), d.bytes, d.reason.clone())),
            )
            .collect();
        summaries.sort_by_key(|s| s.segment_seq);
        summaries
    }
}

/// Creates, preallocates, maps and durably initialises segment `seq` at `path`.
fn create_segment(
    dir: &Path,
    path: &Path,
    seq: u64,
    segment_bytes: u64,
) -> Result<(fs::File, MmapMut), SpillError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error("cannot create segment", path, e))?;
    file.set_len(segment_bytes)
        .map_err(|e| io_error("cannot size segment", path, e))?;
    preallocate(&file, segment_bytes)
        .map_err(|e| io_error("cannot reserve disk space for segment", path, e))?;
    init_segment(dir, path, file, seq, segment_bytes)
}

/// Maps `file` (already `segment_bytes` long and allocated: just created, or a spare
/// renamed to `path`), writes its header and makes it and its directory entry durable.
fn init_segment(
    dir: &Path,
    path: &Path,
    file: fs::File,
    seq: u64,
    segment_bytes: u64,
) -> Result<(fs::File, MmapMut), SpillError> {
    // SAFETY: the file was created just above by this journal (create_new), sized to
    // `segment_bytes` and never shrunk afterwards; see the module doc on truncation.
    let mut map =
        unsafe { MmapMut::map_mut(&file) }.map_err(|e| io_error("cannot map segment", path, e))?;
    assert_eq!(map.len() as u64, segment_bytes, "mapping length");
    let header = SegmentHeader {
        segment_seq: seq,
        created_ms: unix_ms_now(),
        segment_bytes,
    };
    encode_segment_header(&header, &mut map[..SEGMENT_HEADER_BYTES]);
    map.flush_range(0, SEGMENT_HEADER_BYTES)
        .map_err(|e| io_error("cannot sync segment header", path, e))?;
    // The length and the block allocation are metadata: make them durable once here,
    // and the directory entry with them, so later record syncs depend on nothing else.
    file.sync_all()
        .map_err(|e| io_error("cannot sync segment", path, e))?;
    sync_dir(dir).map_err(|e| io_error("cannot sync directory", dir, e))?;
    Ok((file, map))
}

/// Reserves the file's blocks so writes through the mapping cannot hit a full disk.
#[cfg(target_os = "linux")]
fn preallocate(file: &File, bytes: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let length = libc::off_t::try_from(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "segment too large"))?;
    // SAFETY: `file` is borrowed for the whole call, so its descriptor is open and
    // valid; posix_fallocate reads no memory of ours.
    let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, length) };
    match code {
        0 => Ok(()),
        code => Err(std::io::Error::from_raw_os_error(code)),
    }
}

/// Elsewhere the file stays sparse (set_len only): a full disk shows up as SIGBUS.
#[cfg(not(target_os = "linux"))]
fn preallocate(_file: &File, _bytes: u64) -> std::io::Result<()> {
    Ok(())
}

/// Checks a segment header (`head`, possibly short) against the file's name and length.
fn check_segment_header(name_seq: u64, head: &[u8], file_bytes: u64) -> Result<(), String> {
    let header = format::decode_segment_header(head).map_err(|e| e.reason.to_owned())?;
    if header.segment_seq != name_seq {
        return Err(format!(
            "header says segment {} but the file name says {name_seq}",
            header.segment_seq
        ));
    }
    if header.segment_bytes != file_bytes {
        return Err(format!(
            "file is {file_bytes} B but its header says {} B: changed outside the appliance, \
             so it is not mapped",
            header.segment_bytes
        ));
    }
    if usize::try_from(file_bytes).is_err() {
        return Err("segment larger than this platform's address space".to_owned());
    }
    Ok(())
}

fn summarize(
    seq: u64,
    file: PathBuf,
    bytes: u64,
    bytes_written: u64,
    records: &[ScannedRecord],
    corrupt: u64,
) -> SegmentSummary {
    let replayed = records.iter().filter(|r| r.state == STATE_REPLAYED).count() as u64;
    SegmentSummary {
        file,
        segment_seq: seq,
        records: records.len() as u64,
        pending: records.len() as u64 - replayed,
        replayed,
        corrupt,
        bytes,
        bytes_written,
        stream_seq_first: records.iter().map(|r| r.header.seq_first).min(),
        stream_seq_last: records.iter().map(|r| r.header.seq_last).max(),
        received_oldest_ms: records.iter().map(|r| r.header.received_min_ms).min(),
        received_newest_ms: records.iter().map(|r| r.header.received_min_ms).max(),
        damaged: None,
    }
}

fn damaged_summary(seq: u64, file: PathBuf, bytes: u64, reason: String) -> SegmentSummary {
    SegmentSummary {
        damaged: Some(reason),
        ..summarize(seq, file, bytes, 0, &[], 0)
    }
}

/// Segment files of `dir` as (sequence number, path), by sequence number. Only names of
/// exactly the journal's form count; anything else in the directory is ignored.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpillError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("cannot list", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot list", dir, e))?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(parse_segment_file_name) {
            segments.push((seq, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

fn segment_file_name(seq: u64) -> String {
    format!(
        "{SEGMENT_PREFIX}{seq:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_SEQ_DIGITS
    )
}

fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads up to `buf.len()` bytes from the start of `file`; returns how many.
fn read_prefix(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    // Bounded: each round adds at least one byte or ends.
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What [`Journal::mark_replayed_deferred`] leaves for after the lock: the replayed
/// marks to write back, segment by segment, and the emptied segment files to delete.
#[must_use = "the marks are not durable and emptied segments not deleted until `sync`"]
pub struct MarksToSync {
    dir: PathBuf,
    files: Vec<(std::sync::Arc<fs::File>, PathBuf)>,
    removed: Vec<(PathBuf, u64)>,
}

impl MarksToSync {
    /// Writes the marks back (`fdatasync` of each touched segment: the marks are stores
    /// into its shared mapping) and deletes the emptied segments, with the directory
    /// synced after. Returns the first failed sync, and the bytes of segment files that
    /// could not be deleted (each logged): they stay on disk, so the journal must count
    /// them again ([`Journal::count_undeleted`]); the next open trims them.
    pub fn sync(self) -> (Result<(), SpillError>, u64) {
        let mut outcome = Ok(());
        for (file, path) in &self.files {
            let synced = if crash::fails(crash::Point::MarksSyncError) {
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            } else {
                file.sync_data()
            };
            if let Err(e) = synced {
                outcome = Err(io_error("cannot sync the replayed marks in", path, e));
                break;
            }
        }
        let mut undeleted = 0;
        let mut deleted = false;
        for (path, bytes) in &self.removed {
            match fs::remove_file(path) {
                Ok(()) => {
                    deleted = true;
                    tracing::debug!(path = %path.display(), "Spill segment trimmed");
                }
                Err(error) => {
                    undeleted += bytes;
                    tracing::warn!(path = %path.display(), error = %error, "Cannot trim spill segment");
                }
            }
        }
        if deleted {
            if let Err(error) = sync_dir(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %error, "Cannot sync the spill directory after a trim");
            }
        }
        (outcome, undeleted)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Takes the directory's `LOCK` file exclusively (released when the file closes, also
/// when the process dies), so two journals never share a directory.
fn lock_dir(dir: &Path) -> Result<fs::File, SpillError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("cannot open lock file", &path, e))?;
    // SAFETY: flock takes a file descriptor and flags only; the descriptor belongs to
    // `file`, which is alive for the whole call.
    let code = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if code != 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::WouldBlock {
            return Err(SpillError::Locked {
                dir: dir.to_path_buf(),
            });
        }
        return Err(io_error("cannot lock", &path, error));
    }
    Ok(file)
}

/// The corrupt records a segment scan found, as findings naming the file.
fn corrupt_findings<'a>(
    path: &'a Path,
    scan: &'a super::format::SegmentScan,
) -> impl Iterator<Item = Finding> + 'a {
    scan.corrupt.iter().map(move |span| Finding {
        kind: FindingKind::CorruptRecord,
        file: path.to_path_buf(),
        offset: span.offset as u64,
        bytes: span.bytes as u64,
        reason: span.reason.to_owned(),
    })
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> SpillError {
    SpillError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;

mod spare;
pub use spare::SpareJob;
