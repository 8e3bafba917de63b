//! `spill::journal::Journal`: the journal's start-up path over a segment file of
//! fuzzed bytes — `Journal::scan_read_only` (what `spill verify` shows), then
//! `Journal::open` (maps the file, the crate's only `unsafe`; cuts a torn tail; skips
//! corrupt spans), `read` of every pending record, `mark_replayed` of the first, and a
//! second `open` that must see that mark.
//!
//! The segment lives in a per-process directory under /dev/shm (or the temp dir),
//! rewritten for every input as `segment-00000000000000000001.spill`. Input byte 0,
//! bit 0: fix the segment up first — header sequence 1, header length = file length,
//! reserved fields zeroed, CRCs recomputed for the records a reader walks to — so
//! inputs get past the header checks into the record scan; without it the bytes are
//! taken as they are (damaged-segment paths).
//!
//! Asserts: no panic; the read-only scan and `open` report the same counts (records,
//! pending, torn tails, corrupt spans and segments, bytes cut); `open` reports as
//! pending exactly the records `pending()` lists; every pending record reads back
//! (CRCs re-checked on the mapping); after a torn tail is cut, the file reads back as
//! clean; a replayed mark survives reopening.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use alphapt_storage::spill::format::{
    record_bytes, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RECORD_MAGIC, SEGMENT_HEADER_BYTES,
};
use alphapt_storage::spill::journal::{Journal, JournalConfig};
use libfuzzer_sys::fuzz_target;

const SEGMENT_NAME: &str = "segment-00000000000000000001.spill";

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = PathBuf::from("/dev/shm");
        let base = if base.is_dir() {
            base
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("alphapt-fuzz-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz scratch directory");
        dir
    })
}

fn header_crc(head: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&head[..7]), &head[8..68])
}

/// See the module doc: makes the header valid for this file and fixes the records.
fn fix_segment(buf: &mut [u8]) {
    if buf.len() < SEGMENT_HEADER_BYTES {
        return;
    }
    buf[0..4].copy_from_slice(b"APSG");
    buf[4..8].copy_from_slice(&1u32.to_le_bytes());
    buf[8..16].copy_from_slice(&1u64.to_le_bytes());
    let len = buf.len() as u64;
    buf[24..32].copy_from_slice(&len.to_le_bytes());
    buf[32..60].fill(0);
    let crc = crc32c::crc32c(&buf[..60]);
    buf[60..64].copy_from_slice(&crc.to_le_bytes());
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset + RECORD_HEADER_BYTES <= buf.len() {
        let rec = &mut buf[offset..];
        if rec[0..4] == RECORD_MAGIC {
            rec[10..12].fill(0);
            rec[64..68].fill(0);
            let payload = u32::from_le_bytes(rec[12..16].try_into().unwrap()) as usize;
            if RECORD_HEADER_BYTES + payload <= rec.len() {
                let crc = crc32c::crc32c(&rec[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload]);
                rec[20..24].copy_from_slice(&crc.to_le_bytes());
            }
            let crc = header_crc(&rec[..RECORD_HEADER_BYTES]);
            rec[68..72].copy_from_slice(&crc.to_le_bytes());
            let bytes = record_bytes(payload);
            if bytes <= rec.len() {
                offset += bytes;
                continue;
            }
        }
        offset += RECORD_ALIGN_BYTES;
    }
}

fuzz_target!(|data: &[u8]| {
    let [control, rest @ ..] = data else {
        return;
    };
    let mut segment = rest.to_vec();
    if control & 1 == 1 {
        fix_segment(&mut segment);
    }
    let dir = dir();
    // Clear what the previous input left (a trimmed segment is deleted; LOCK stays).
    for entry in std::fs::read_dir(dir).expect("list scratch dir") {
        let path = entry.expect("scratch entry").path();
        if path.file_name().is_some_and(|n| n != "LOCK") {
            std::fs::remove_file(&path).expect("clear scratch dir");
        }
    }
    let path = dir.join(SEGMENT_NAME);
    std::fs::write(&path, &segment).expect("write segment");

    let scan = Journal::scan_read_only(dir).expect("read-only scan of a readable directory");
    let config = JournalConfig {
        dir: dir.clone(),
        // Existing segments keep their own length; this is for new ones only.
        segment_bytes: 1 << 20,
        bytes_max: 1 << 30,
    };
    let (mut journal, report) = Journal::open(&config).expect("open over one segment file");
    assert_eq!(scan.report, report, "spill verify and open disagree");
    let pending = journal.pending();
    assert_eq!(pending.len() as u64, report.pending);
    assert_eq!(journal.records_pending(), report.pending);
    for &pos in &pending {
        let record = journal
            .read(pos)
            .unwrap_or_else(|e| panic!("pending record {pos} does not read: {e}"));
        assert!(record.is_pending());
    }
    if report.torn_tails > 0 {
        // The cut is on disk: a fresh look finds the tail gone and the records kept.
        let again = Journal::scan_read_only(dir).expect("rescan");
        assert_eq!(
            again.report.torn_tails, 0,
            "torn tail still there after the cut"
        );
        assert_eq!(again.report.records, report.records);
    }
    if let Some(&first) = pending.first() {
        journal.mark_replayed(first).expect("mark replayed");
        drop(journal);
        let (journal, again) = Journal::open(&config).expect("reopen");
        if again.segments == 1 {
            assert_eq!(
                again.pending,
                report.pending - 1,
                "replayed mark lost on reopen"
            );
            assert!(journal.pending().iter().all(|&p| p != first));
        } else {
            // All replayed and trimmed at the first open's mark: nothing pending.
            assert_eq!(again.pending, 0);
        }
    }
});
