//! The journal against real files in a fresh temporary directory per test: records
//! survive reopen, replay marks survive and trim, the byte limit holds, and each kind
//! of damage (torn tail, flipped byte, garbage file) is cut, skipped or reported as the
//! module doc says, without a panic. Damage is made with plain `std::fs` writes.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::*;
use crate::spill::format::{RecordTable, STATE_PENDING};
use crate::spill::SEGMENTS_MIN;

/// A directory under the system temp dir with a random suffix, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let suffix: u64 = rand::random();
        let path = std::env::temp_dir().join(format!("alphapt-spill-{tag}-{suffix:016x}"));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Small segments so a few records span several of them.
const SEGMENT_BYTES: u64 = 4096;

fn config(dir: &Path, bytes_max: u64) -> JournalConfig {
    JournalConfig {
        dir: dir.join("writer-0"),
        segment_bytes: SEGMENT_BYTES,
        bytes_max,
    }
}

fn header(i: u64) -> RecordHeader {
    RecordHeader {
        table: RecordTable::MarketTicks,
        lz4: i % 2 == 0,
        shard: (i % 4) as u16,
        rows: 100 + i as u32,
        seq_first: i * 100 + 1,
        seq_last: i * 100 + 100,
        durable_through: if i % 3 == 0 { i * 100 + 100 } else { 0 },
        schema_hash: 0xfeed,
        received_min_ms: 1_700_000_000_000 + i as i64,
    }
}

fn payload(i: u64, bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|j| (i as usize * 31 + j) as u8 | 1)
        .collect()
}

/// Appends `count` records of `bytes` each, syncs, and returns their positions.
fn fill(journal: &mut Journal, count: u64, bytes: usize) -> Vec<RecordPos> {
    let positions = (0..count)
        .map(|i| journal.append(&header(i), &payload(i, bytes)).unwrap())
        .collect();
    journal.sync().unwrap();
    positions
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

fn path_of(journal: &Journal, pos: RecordPos) -> PathBuf {
    journal.dir().join(segment_file_name(pos.segment_seq))
}

/// Writes `bytes` at `offset` of `path` with plain file I/O (the journal is closed).
fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

/// Flips bit 5 of one byte in place (never truncating: the file may be mapped).
fn flip_byte(path: &Path, offset: u64) {
    let byte = fs::read(path).unwrap()[offset as usize];
    overwrite(path, offset, &[byte ^ 0x20]);
}

#[test]
fn append_sync_reopen_sees_every_record() {
    let tmp = TempDir::new("reopen");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, report) = Journal::open(&config).unwrap();
    assert_eq!(report, ScanReport::default());
    let sizes = [0usize, 1, 7, 8, 500, 1500, 3000, 64, 2000];
    let positions: Vec<RecordPos> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            journal
                .append(&header(i as u64), &payload(i as u64, n))
                .unwrap()
        })
        .collect();
    journal.sync().unwrap();
    assert!(
        segment_files(&config.dir).len() >= 3,
        "records span segments"
    );
    assert_eq!(journal.pending(), positions);
    let pending_bytes: u64 = sizes.iter().map(|&n| record_bytes(n) as u64).sum();
    assert_eq!(journal.bytes_pending(), pending_bytes);
    drop(journal);

    let (journal, report) = Journal::open(&config).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, sizes.len() as u64);
    assert_eq!(report.pending, sizes.len() as u64);
    assert_eq!(journal.pending(), positions);
    assert_eq!(journal.records_pending(), sizes.len() as u64);
    assert_eq!(journal.bytes_pending(), pending_bytes);
    for (i, pos) in positions.iter().enumerate() {
        let record = journal.read(*pos).unwrap();
        assert_eq!(record.header, header(i as u64));
        assert_eq!(record.payload, &payload(i as u64, sizes[i])[..]);
        assert_eq!(record.state, STATE_PENDING);
    }
    let summary = journal.summary();
    assert_eq!(summary.iter().map(|s| s.records).sum::<u64>(), 9);
    assert_eq!(summary[0].stream_seq_first, Some(1));
    assert_eq!(
        journal.bytes_used(),
        summary.len() as u64 * SEGMENT_BYTES,
        "bytes_used counts whole segment files"
    );
}

#[test]
fn appends_continue_in_the_active_segment_after_reopen() {
    let tmp = TempDir::new("continue");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let first = fill(&mut journal, 2, 100);
    drop(journal);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let next = journal.append(&header(9), &payload(9, 100)).unwrap();
    journal.sync().unwrap();
    assert_eq!(next.segment_seq, first[1].segment_seq);
    assert_eq!(next.offset, first[1].offset + record_bytes(100) as u64);
    assert_eq!(segment_files(&config.dir).len(), 1);
}

#[test]
fn mark_replayed_survives_reopen_and_trims_segments() {
    let tmp = TempDir::new("replayed");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    // 1500-byte payloads: two records a 4 KiB segment, so 6 records fill 3 segments.
    let positions = fill(&mut journal, 6, 1500);
    let files = segment_files(&config.dir);
    assert_eq!(files.len(), 3);
    // Replay all of segment 1 (trimmed: not active) and half of segment 2.
    for pos in &positions[..3] {
        journal.mark_replayed(*pos).unwrap();
    }
    journal.mark_replayed(positions[2]).unwrap(); // twice is harmless
    assert!(!files[0].exists(), "a fully replayed segment is trimmed");
    assert!(files[1].exists());
    assert_eq!(journal.pending(), positions[3..].to_vec());
    assert_eq!(journal.bytes_used(), 2 * SEGMENT_BYTES);
    drop(journal);

    let (mut journal, report) = Journal::open(&config).unwrap();
    assert_eq!(
        report.records, 4,
        "segment 2's replayed record is still there"
    );
    assert_eq!(report.pending, 3);
    assert_eq!(journal.pending(), positions[3..].to_vec());
    // The active (last) segment is kept even when all of it is replayed...
    for pos in &positions[3..] {
        journal.mark_replayed(*pos).unwrap();
    }
    assert_eq!(segment_files(&config.dir), vec![files[2].clone()]);
    assert_eq!(journal.records_pending(), 0);
    assert_eq!(journal.bytes_pending(), 0);
    // ...until appends move on to a new segment.
    fill(&mut journal, 2, 1500);
    assert!(!files[2].exists());
    assert_eq!(journal.summary().len(), 1);
}

#[test]
fn marking_many_at_once_survives_reopen_trims_and_pending_headers_follow() {
    let tmp = TempDir::new("replayed-all");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    // Two records a segment: 6 records in 3 segments.
    let positions = fill(&mut journal, 6, 1500);
    let files = segment_files(&config.dir);
    let listed: Vec<(RecordPos, RecordHeader)> =
        journal.pending_headers().map(|(p, h)| (p, *h)).collect();
    let expected: Vec<(RecordPos, RecordHeader)> = positions
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, header(i as u64)))
        .collect();
    assert_eq!(
        listed, expected,
        "every pending record, oldest first, with its header"
    );
    // Records of segments 1 and 2, out of order, one of them twice.
    let marked = [
        positions[3],
        positions[0],
        positions[2],
        positions[1],
        positions[3],
    ];
    journal.mark_replayed_all(&marked).unwrap();
    assert!(
        !files[0].exists() && !files[1].exists(),
        "replayed segments are trimmed"
    );
    assert!(files[2].exists(), "the active segment stays");
    let pending: Vec<RecordPos> = journal.pending_headers().map(|(p, _)| p).collect();
    assert_eq!(pending, positions[4..].to_vec());
    assert_eq!(journal.records_pending(), 2);
    drop(journal);
    let (journal, report) = Journal::open(&config).unwrap();
    assert_eq!(report.pending, 2, "the marks reached the files");
    assert_eq!(journal.pending(), positions[4..].to_vec());
    // An unknown position is an error, not a panic.
    let mut journal = journal;
    let unknown = RecordPos {
        segment_seq: 99,
        offset: 64,
    };
    assert!(matches!(
        journal.mark_replayed_all(&[unknown]),
        Err(SpillError::UnknownRecord { .. })
    ));
}

/// Claims steer which inserter sends a record and nothing else: a claimed record is
/// still pending (counted, replayed after a restart), only hidden from the other
/// inserters' choice; a record appended later is free; the mark ends a claim, and a
/// restart forgets every claim.
#[test]
fn claimed_records_stay_pending_but_are_passed_over_until_marked_or_reopened() {
    let tmp = TempDir::new("claims");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let positions = fill(&mut journal, 6, 1500);
    let free = |j: &Journal| -> Vec<RecordPos> { j.unclaimed_headers().map(|(p, ..)| p).collect() };
    assert_eq!(free(&journal), positions, "nothing claimed yet");
    let sizes: Vec<u64> = journal.unclaimed_headers().map(|(.., b)| b).collect();
    assert!(
        sizes.iter().all(|&b| b >= 1500),
        "each record's size, its payload included: {sizes:?}"
    );
    // One inserter takes records 1 and 3 (in two segments), another 4.
    journal.claim_all(&[positions[1], positions[3]]).unwrap();
    journal.claim_all(&[positions[4]]).unwrap();
    assert_eq!(
        free(&journal),
        vec![positions[0], positions[2], positions[5]]
    );
    // An inserter that claimed a record and found it unreadable leaves it as it was.
    journal.claim_all(&[positions[5]]).unwrap();
    journal.unclaim(positions[5]).unwrap();
    assert_eq!(
        free(&journal),
        vec![positions[0], positions[2], positions[5]]
    );
    assert_eq!(journal.records_pending(), 6, "claimed is still pending");
    assert_eq!(journal.pending_headers().count(), 6);
    assert_eq!(
        journal.pending(),
        positions,
        "pending lists claimed records"
    );
    let later = journal.append(&header(6), &payload(6, 1500)).unwrap();
    journal.sync().unwrap();
    assert!(free(&journal).contains(&later), "a new record is free");
    // The first inserter's INSERT committed: marked, gone from both lists; the
    // second one's record stays claimed.
    journal
        .mark_replayed_all(&[positions[1], positions[3]])
        .unwrap();
    assert_eq!(
        free(&journal),
        vec![positions[0], positions[2], positions[5], later]
    );
    assert_eq!(journal.records_pending(), 5);
    // A restart: what was claimed and not marked is pending and free.
    journal.claim_all(&[positions[0]]).unwrap();
    drop(journal);
    let (mut journal, report) = Journal::open(&config).unwrap();
    assert_eq!(report.pending, 5);
    let unmarked = [0, 2, 4, 5].map(|i| positions[i]);
    let unmarked = [unmarked.as_slice(), &[later]].concat();
    assert_eq!(free(&journal), unmarked);
    let unknown = RecordPos {
        segment_seq: 99,
        offset: 64,
    };
    assert!(matches!(
        journal.claim_all(&[unknown]),
        Err(SpillError::UnknownRecord { .. })
    ));
    assert!(matches!(
        journal.unclaim(unknown),
        Err(SpillError::UnknownRecord { .. })
    ));
}

/// The deferred marks: counted and listed at once, under the lock; the emptied
/// segments leave the journal then, their files go, and the marks reach the files, only
/// at `sync`, after the lock.
#[test]
fn deferred_marks_count_at_once_and_reach_the_disk_at_sync() {
    let tmp = TempDir::new("deferred");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    // Two records a segment: 6 records in 3 segments.
    let positions = fill(&mut journal, 6, 1500);
    let files = segment_files(&config.dir);
    let used = journal.bytes_used();
    let marks = journal
        .mark_replayed_deferred(&[positions[0], positions[1], positions[2]])
        .unwrap();
    assert_eq!(journal.records_pending(), 3);
    assert_eq!(journal.pending(), positions[3..].to_vec());
    assert!(
        journal.bytes_used() < used,
        "the emptied segment is uncounted"
    );
    assert!(files[0].exists(), "deleted at sync, not under the lock");
    let (outcome, undeleted) = marks.sync();
    outcome.unwrap();
    assert_eq!(undeleted, 0);
    assert!(!files[0].exists(), "deleted at sync");
    assert!(files[1].exists() && files[2].exists());
    drop(journal);
    let (journal, report) = Journal::open(&config).unwrap();
    assert_eq!(report.pending, 3, "the marks reached the files");
    assert_eq!(journal.pending(), positions[3..].to_vec());
}

#[test]
fn append_refuses_past_bytes_max_and_writes_nothing() {
    let tmp = TempDir::new("full");
    let config = config(&tmp.0, 2 * SEGMENT_BYTES);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let positions = fill(&mut journal, 4, 1500);
    let pending = journal.records_pending();
    let error = journal.append(&header(9), &payload(9, 1500)).unwrap_err();
    assert!(matches!(error, SpillError::Full { .. }), "{error}");
    assert!(
        error.to_string().contains("spill.spill_bytes_max"),
        "{error}"
    );
    assert_eq!(journal.records_pending(), pending);
    assert_eq!(journal.bytes_used(), 2 * SEGMENT_BYTES);
    assert_eq!(segment_files(&config.dir).len(), 2);
    // Replaying the oldest segment makes room again.
    journal.mark_replayed(positions[0]).unwrap();
    journal.mark_replayed(positions[1]).unwrap();
    journal.append(&header(9), &payload(9, 1500)).unwrap();
    journal.sync().unwrap();
    assert_eq!(journal.bytes_used(), 2 * SEGMENT_BYTES);
}

/// Why a journal gets at least `SEGMENTS_MIN` segments: the active segment keeps the
/// room of its replayed records until it is full. With one segment a journal holding
/// one stored record and one pending is full; with two, a whole segment more fits.
#[test]
fn replayed_records_in_the_active_segment_hold_room_until_it_rolls() {
    let tmp = TempDir::new("active");
    let one = config(&tmp.0, SEGMENT_BYTES);
    let (mut journal, _) = Journal::open(&one).unwrap();
    let stored = fill(&mut journal, 1, 1500);
    journal.mark_replayed(stored[0]).unwrap();
    journal.append(&header(1), &payload(1, 1500)).unwrap();
    let error = journal.append(&header(2), &payload(2, 1500)).unwrap_err();
    assert!(matches!(error, SpillError::Full { .. }), "{error}");
    assert_eq!(journal.records_pending(), 1, "full with one record pending");
    drop(journal);
    fs::remove_dir_all(&one.dir).unwrap();

    let two = config(&tmp.0, SEGMENTS_MIN * SEGMENT_BYTES);
    let (mut journal, _) = Journal::open(&two).unwrap();
    let stored = fill(&mut journal, 1, 1500);
    journal.mark_replayed(stored[0]).unwrap();
    for i in 1..=3 {
        journal.append(&header(i), &payload(i, 1500)).unwrap();
    }
    journal.sync().unwrap();
    assert_eq!(journal.records_pending(), 3, "a whole segment more fits");
    assert!(matches!(
        journal.append(&header(4), &payload(4, 1500)),
        Err(SpillError::Full { .. })
    ));
}

#[test]
fn a_record_larger_than_a_segment_is_refused_naming_segment_bytes() {
    let tmp = TempDir::new("large");
    let (mut journal, _) = Journal::open(&config(&tmp.0, 1 << 20)).unwrap();
    let error = journal.append(&header(0), &payload(0, 4000)).unwrap_err();
    assert!(
        matches!(error, SpillError::RecordTooLarge { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("spill.segment_bytes"), "{error}");
    assert_eq!(journal.bytes_used(), 0, "nothing created");
    let small = JournalConfig {
        segment_bytes: 100,
        ..config(&tmp.0, 1 << 20)
    };
    assert!(matches!(
        Journal::open(&small),
        Err(SpillError::SegmentTooSmall { .. })
    ));
}

#[test]
fn a_torn_tail_is_cut_and_counted_and_appends_continue_after_it() {
    let tmp = TempDir::new("torn");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let positions = fill(&mut journal, 2, 600);
    let last = positions[1];
    let path = path_of(&journal, last);
    drop(journal);
    // The last record's end never reached the disk.
    let end = last.offset + record_bytes(600) as u64;
    overwrite(&path, end - 100, &[0u8; 100]);

    let (mut journal, report) = Journal::open(&config).unwrap();
    assert_eq!(report.torn_tails, 1);
    assert_eq!(report.records, 1);
    assert!(report.bytes_cut > 0);
    assert!(report.bytes_cut <= record_bytes(600) as u64);
    assert_eq!(journal.findings()[0].kind, FindingKind::TornTail);
    assert_eq!(journal.pending(), vec![positions[0]]);
    let again = journal.append(&header(5), &payload(5, 600)).unwrap();
    journal.sync().unwrap();
    assert_eq!(again, last, "the cut tail is where the next record goes");
    drop(journal);

    // Half a record written past the end: cut the same way.
    let mut half = vec![0u8; record_bytes(600)];
    super::format::encode_record(&header(6), &payload(6, 600), &mut half);
    overwrite(&path, end, &half[..half.len() / 2]);
    let (journal, report) = Journal::open(&config).unwrap();
    assert_eq!(report.torn_tails, 1);
    assert_eq!(report.bytes_cut, (half.len() / 2) as u64);
    assert_eq!(journal.pending(), vec![positions[0], again]);
    assert_eq!(journal.read(again).unwrap().header, header(5));
    drop(journal);
    let (_, report) = Journal::open(&config).unwrap();
    assert!(report.is_clean(), "the cut is durable: {report:?}");
}

#[test]
fn a_flipped_byte_in_a_middle_record_is_skipped_and_counted() {
    let tmp = TempDir::new("flip");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let positions = fill(&mut journal, 3, 300);
    let path = path_of(&journal, positions[1]);
    drop(journal);
    flip_byte(&path, positions[1].offset + 200);

    let (mut journal, report) = Journal::open(&config).unwrap();
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(report.torn_tails, 0);
    assert_eq!(report.records, 2);
    assert_eq!(journal.pending(), vec![positions[0], positions[2]]);
    assert_eq!(journal.read(positions[2]).unwrap().header, header(2));
    assert!(matches!(
        journal.read(positions[1]),
        Err(SpillError::UnknownRecord { .. })
    ));
    let finding = &journal.findings()[0];
    assert_eq!(finding.kind, FindingKind::CorruptRecord);
    assert_eq!(finding.offset, positions[1].offset);
    // Appends go after the last good record, not over the damage.
    let next = journal.append(&header(3), &payload(3, 300)).unwrap();
    assert!(next.offset > positions[2].offset);
    journal.sync().unwrap();
    // A segment with a corrupt record is kept even when its good records are replayed
    // and appends have moved on to later segments.
    let more = fill(&mut journal, 6, 1500);
    assert!(more.last().unwrap().segment_seq > 1);
    let first_segment = [positions[0], positions[2], next]
        .into_iter()
        .chain(more.into_iter().filter(|p| p.segment_seq == 1));
    for pos in first_segment {
        journal.mark_replayed(pos).unwrap();
    }
    assert_eq!(journal.summary()[0].pending, 0);
    assert!(
        path.exists(),
        "never trimmed while it holds a corrupt record"
    );
}

#[test]
fn read_checks_the_crcs_again() {
    let tmp = TempDir::new("reread");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let positions = fill(&mut journal, 2, 300);
    // Changed behind the journal's back: the shared mapping sees the file's page cache.
    flip_byte(&path_of(&journal, positions[0]), positions[0].offset + 100);
    let error = journal.read(positions[0]).unwrap_err();
    assert!(matches!(error, SpillError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("spill verify"), "{error}");
    assert!(journal.read(positions[1]).is_ok());
}

/// What an inserter does with a record `read` finds damaged: set aside, it leaves the
/// pending ones, is listed as a finding, keeps its segment from being trimmed, and the
/// next open finds it damaged again.
#[test]
fn a_record_damaged_after_it_was_written_is_set_aside_and_its_segment_kept() {
    let tmp = TempDir::new("aside");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    // Two records a segment: the damaged one's segment is not the active one.
    let positions = fill(&mut journal, 4, 1500);
    let path = path_of(&journal, positions[0]);
    flip_byte(&path, positions[0].offset + 100);
    let pending_bytes = journal.bytes_pending();
    let SpillError::Corrupt { reason, .. } = journal.read(positions[0]).unwrap_err() else {
        panic!("not a corrupt record");
    };
    journal.set_aside(positions[0], reason).unwrap();
    assert_eq!(journal.records_pending(), 3);
    assert!(journal.bytes_pending() < pending_bytes);
    assert_eq!(journal.pending(), positions[1..].to_vec());
    assert!(journal
        .unclaimed_headers()
        .all(|(pos, ..)| pos != positions[0]));
    assert!(journal.read(positions[0]).is_err(), "no longer a record");
    let finding = journal.findings().last().unwrap();
    assert_eq!(finding.kind, FindingKind::CorruptRecord);
    assert_eq!(
        (finding.file.as_path(), finding.offset),
        (path.as_path(), positions[0].offset)
    );
    assert!(finding.reason.contains("after it was written"), "{finding}");
    // Its neighbour replayed, the segment holds nothing pending, and is still kept.
    journal.mark_replayed_all(&[positions[1]]).unwrap();
    assert!(
        path.exists(),
        "a segment with a damaged record is never trimmed"
    );
    drop(journal);
    let (journal, report) = Journal::open(&config).unwrap();
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(journal.pending(), positions[2..].to_vec());
}

/// A trimmed segment whose file cannot be deleted (here a directory took its name, so
/// the unlink fails as a real one can) is counted again, not forgotten: `bytes_used`
/// must still hold it, or the journal would overfill the disk.
#[test]
fn a_segment_the_sync_cannot_delete_is_counted_again() {
    let tmp = TempDir::new("undeleted");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let positions = fill(&mut journal, 6, 1500);
    let files = segment_files(&config.dir);
    let used = journal.bytes_used();
    let marks = journal
        .mark_replayed_deferred(&[positions[0], positions[1]])
        .unwrap();
    assert_eq!(journal.bytes_used(), used - SEGMENT_BYTES);
    let moved = tmp.0.join("moved-aside");
    fs::rename(&files[0], &moved).unwrap();
    fs::create_dir(&files[0]).unwrap();
    fs::write(files[0].join("keep"), b"x").unwrap();
    let (outcome, undeleted) = marks.sync();
    outcome.unwrap();
    assert_eq!(undeleted, SEGMENT_BYTES);
    journal.count_undeleted(undeleted);
    assert_eq!(journal.bytes_used(), used, "counted again");
    assert_eq!(journal.pending(), positions[2..].to_vec());
    // Put back as it was, the next open trims the replayed segment.
    drop(journal);
    fs::remove_dir_all(&files[0]).unwrap();
    fs::rename(&moved, &files[0]).unwrap();
    let (journal, report) = Journal::open(&config).unwrap();
    assert_eq!(report.pending, 4);
    assert_eq!(journal.pending(), positions[2..].to_vec());
    assert!(!files[0].exists(), "trimmed at open");
}

#[test]
fn garbage_files_in_the_directory_are_reported_not_a_panic() {
    let tmp = TempDir::new("garbage");
    let config = config(&tmp.0, 1 << 20);
    fs::create_dir_all(&config.dir).unwrap();
    let garbage: Vec<u8> = (0..SEGMENT_BYTES).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(config.dir.join(segment_file_name(7)), &garbage).unwrap();
    fs::write(config.dir.join(segment_file_name(8)), b"short").unwrap();
    fs::write(config.dir.join("notes.txt"), b"not a segment").unwrap();
    // A valid header of the wrong length (truncated by someone): never mapped.
    let mut truncated = vec![0u8; SEGMENT_HEADER_BYTES];
    let segment_header = SegmentHeader {
        segment_seq: 9,
        created_ms: 0,
        segment_bytes: SEGMENT_BYTES,
    };
    encode_segment_header(&segment_header, &mut truncated);
    fs::write(config.dir.join(segment_file_name(9)), &truncated).unwrap();

    let (mut journal, report) = Journal::open(&config).unwrap();
    assert_eq!(report.segments, 3);
    assert_eq!(report.corrupt_segments, 3);
    assert_eq!(report.records, 0);
    assert!(journal
        .findings()
        .iter()
        .all(|f| f.kind == FindingKind::CorruptSegment));
    let pos = journal.append(&header(0), &payload(0, 100)).unwrap();
    journal.sync().unwrap();
    assert_eq!(pos.segment_seq, 10, "new segments number past damaged ones");
    let summary = journal.summary();
    assert_eq!(summary.len(), 4);
    assert!(summary[..3].iter().all(|s| s.damaged.is_some()));
    assert_eq!(summary[3].records, 1);
    drop(journal);
    assert_eq!(
        fs::read(config.dir.join(segment_file_name(7))).unwrap(),
        garbage,
        "a damaged segment is left as it is"
    );
    let scan = Journal::scan_read_only(&config.dir).unwrap();
    assert_eq!(scan.report.corrupt_segments, 3);
    assert_eq!(scan.report.records, 1);
}

#[test]
fn read_only_scan_reports_damage_and_changes_nothing() {
    let tmp = TempDir::new("readonly");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let positions = fill(&mut journal, 4, 300);
    journal.mark_replayed(positions[0]).unwrap();
    let path = path_of(&journal, positions[0]);
    drop(journal);
    flip_byte(&path, positions[1].offset + 100);
    let end = positions[3].offset + record_bytes(300) as u64;
    overwrite(&path, end - 50, &[0u8; 50]);
    let before = fs::read(&path).unwrap();

    let scan = Journal::scan_read_only(&config.dir).unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "read-only means read-only"
    );
    assert_eq!(scan.report.corrupt_records, 1);
    assert_eq!(scan.report.torn_tails, 1);
    assert_eq!(scan.report.records, 2);
    assert_eq!(scan.report.pending, 1);
    let kept: Vec<RecordPos> = scan.records.iter().map(|r| r.pos).collect();
    assert_eq!(kept, vec![positions[0], positions[2]]);
    assert_eq!(scan.segments[0].replayed, 1);
    assert_eq!(scan.findings.len(), 2);
}

#[test]
fn journal_dirs_lists_writer_directories_in_order() {
    let tmp = TempDir::new("dirs");
    for name in ["writer-10", "writer-2", "writer-0", "other", "writer-x"] {
        fs::create_dir_all(tmp.0.join(name)).unwrap();
    }
    fs::write(tmp.0.join("writer-3"), b"a file").unwrap();
    let dirs = journal_dirs(&tmp.0).unwrap();
    let expected: Vec<PathBuf> = [0, 2, 10].iter().map(|&w| writer_dir(&tmp.0, w)).collect();
    assert_eq!(dirs, expected);
    assert_eq!(
        journal_dirs(&tmp.0.join("missing")).unwrap(),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn segment_file_names_round_trip_and_sort_numerically() {
    assert_eq!(segment_file_name(1), "segment-00000000000000000001.spill");
    assert_eq!(
        parse_segment_file_name(&segment_file_name(u64::MAX)),
        Some(u64::MAX)
    );
    assert_eq!(parse_segment_file_name("segment-1.spill"), None);
    assert_eq!(
        parse_segment_file_name("segment-0000000000000000000x.spill"),
        None
    );
    assert!(segment_file_name(9) < segment_file_name(10));
}

/// The inode of `path` (which file a name points at).
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

#[test]
fn a_prepared_spare_becomes_the_next_segment_and_its_records_survive_reopen() {
    let tmp = TempDir::new("spare");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let first = fill(&mut journal, 1, 100);
    let job = journal.spare_job().expect("no spare yet: a job");
    assert!(journal.spare_job().is_none(), "one job at a time");
    assert!(job.run(|| true).unwrap(), "made");
    let spare = config.dir.join(spare::SPARE_NAME);
    let spare_inode = inode(&spare);
    assert_eq!(fs::read(&spare).unwrap(), vec![0u8; SEGMENT_BYTES as usize]);
    journal.spare_prepared(Ok(true));
    assert!(journal.spare_job().is_none(), "one ready: no job");
    // Fill the active segment: the roll takes the spare's file.
    let same = journal.append(&header(1), &payload(1, 3000)).unwrap();
    let next = journal.append(&header(2), &payload(2, 3000)).unwrap();
    journal.sync().unwrap();
    assert_eq!(same.segment_seq, first[0].segment_seq);
    assert!(next.segment_seq > first[0].segment_seq);
    let rolled = path_of(&journal, next);
    assert_eq!(
        inode(&rolled),
        spare_inode,
        "the new segment is the spare's file"
    );
    assert!(!spare.exists(), "the spare is used up");
    assert!(
        journal.spare_job().is_some(),
        "used: the next one is wanted"
    );
    drop(journal);
    let (journal, report) = Journal::open(&config).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(journal.pending(), vec![first[0], same, next]);
    assert_eq!(journal.read(next).unwrap().payload, &payload(2, 3000)[..]);
}

#[test]
fn at_open_a_half_made_spare_goes_and_a_whole_one_is_used() {
    let tmp = TempDir::new("spareopen");
    let config = config(&tmp.0, 1 << 20);
    drop(Journal::open(&config).unwrap());
    let temp = config.dir.join(spare::SPARE_TEMP_NAME);
    let spare = config.dir.join(spare::SPARE_NAME);
    // A crash mid-way left a .tmp; another run left a whole spare.
    fs::write(&temp, [0u8; 100]).unwrap();
    fs::write(&spare, vec![0u8; SEGMENT_BYTES as usize]).unwrap();
    let spare_inode = inode(&spare);
    let (mut journal, report) = Journal::open(&config).unwrap();
    assert!(
        report.is_clean(),
        "spare files are not segments: {report:?}"
    );
    assert!(!temp.exists());
    assert!(
        journal.spare_job().is_none(),
        "the whole spare counts as ready"
    );
    let pos = fill(&mut journal, 1, 100)[0];
    assert_eq!(inode(&path_of(&journal, pos)), spare_inode);
    drop(journal);
    // A spare of another length (spill.segment_bytes changed) is removed, not used.
    fs::write(&spare, [0u8; 100]).unwrap();
    let (mut journal, _) = Journal::open(&config).unwrap();
    assert!(!spare.exists());
    assert!(journal.spare_job().is_some());
}

#[test]
fn a_spare_stopped_by_a_drain_leaves_nothing_and_a_failed_one_turns_spares_off() {
    let tmp = TempDir::new("sparestop");
    let config = config(&tmp.0, 1 << 20);
    let (mut journal, _) = Journal::open(&config).unwrap();
    let job = journal.spare_job().unwrap();
    assert!(!job.run(|| false).unwrap(), "stopped before the first step");
    assert!(!config.dir.join(spare::SPARE_TEMP_NAME).exists());
    assert!(!config.dir.join(spare::SPARE_NAME).exists());
    journal.spare_prepared(Ok(false));
    let job = journal.spare_job().expect("stopped: asked for again");
    // The directory is gone from under the job: it fails, and no more are asked for.
    let gone = SpareJob {
        dir: tmp.0.join("missing"),
        ..job
    };
    let failed = gone.run(|| true);
    assert!(failed.is_err());
    journal.spare_prepared(failed.map(|_| true));
    assert!(journal.spare_job().is_none(), "spares off after a failure");
    // Segments are still made as before.
    let positions = fill(&mut journal, 3, 3000);
    assert_eq!(segment_files(&config.dir).len(), 3, "{positions:?}");
}
