//! `spill::format`: the pure decoders of the spill journal's on-disk bytes —
//! `decode_record`, `decode_segment_header` and `scan_segment`.
//!
//! Input: byte 0 picks the decoder (bits 1..) and whether the CRCs are fixed up first
//! (bit 0; CRC32C would otherwise stop nearly every input at the header check). A
//! fix-up makes only bytes a writer could have written: it zeroes the reserved
//! fields (the encoders always write zeros there) and recomputes the CRCs; magic,
//! version, table, flags, lengths and padding stay the fuzzer's.
//!
//! Asserts, from the module docs:
//! - no panic ("never panics, whatever the bytes");
//! - a decoded record occupies `record_bytes(payload)` bytes, inside the buffer, with
//!   the payload right after the 72-byte header; re-encoded with `encode_record`
//!   (state byte as found) it gives back exactly the bytes it was decoded from;
//! - likewise a decoded segment header re-encodes to its 64 bytes;
//! - `scan_segment`: records in file order, 8-byte aligned, inside the segment, not
//!   overlapping, each one `decode_record` accepts at its offset; every corrupt span
//!   is followed by a valid record; a torn tail starts where the last record ends,
//!   has only zeros after it, and `append_offset` is its start (else the end of the
//!   last record).
#![no_main]

use alphapt_storage::spill::format::{
    decode_record, decode_segment_header, encode_record, encode_segment_header, record_bytes,
    scan_segment, RecordError, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RECORD_MAGIC,
    SEGMENT_HEADER_BYTES,
};
use libfuzzer_sys::fuzz_target;

/// CRC32C of a record header with the state byte (7) skipped, as the format defines.
fn header_crc(head: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&head[..7]), &head[8..68])
}

/// Zeroes the reserved fields and recomputes both CRCs of the record at `buf[0..]`
/// when its payload length fits; returns the record's length when it does.
fn fix_record(buf: &mut [u8]) -> Option<usize> {
    if buf.len() < RECORD_HEADER_BYTES {
        return None;
    }
    buf[10..12].fill(0);
    buf[64..68].fill(0);
    let payload = u32::from_le_bytes(buf[12..16].try_into().unwrap()) as usize;
    let fits = RECORD_HEADER_BYTES + payload <= buf.len();
    if fits {
        let crc = crc32c::crc32c(&buf[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload]);
        buf[20..24].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = header_crc(&buf[..RECORD_HEADER_BYTES]);
    buf[68..72].copy_from_slice(&crc.to_le_bytes());
    let bytes = record_bytes(payload);
    (fits && bytes <= buf.len()).then_some(bytes)
}

fn fix_segment_header(buf: &mut [u8]) {
    if buf.len() >= SEGMENT_HEADER_BYTES {
        buf[32..60].fill(0);
        let crc = crc32c::crc32c(&buf[..60]);
        buf[60..64].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Fixes the segment header and every record found by walking from offset 64 the way
/// a reader would (a record's length, or one alignment step where there is none).
fn fix_segment(buf: &mut [u8]) {
    fix_segment_header(buf);
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset + RECORD_HEADER_BYTES <= buf.len() {
        if buf[offset..offset + 4] == RECORD_MAGIC {
            if let Some(bytes) = fix_record(&mut buf[offset..]) {
                offset += bytes;
                continue;
            }
        }
        offset += RECORD_ALIGN_BYTES;
    }
}

fn check_record(buf: &[u8]) {
    match decode_record(buf) {
        Ok(record) => {
            let payload = record.payload.len();
            assert_eq!(record.bytes, record_bytes(payload));
            assert!(record.bytes <= buf.len());
            assert_eq!(record.bytes % RECORD_ALIGN_BYTES, 0);
            assert_eq!(record.payload.as_ptr(), buf[RECORD_HEADER_BYTES..].as_ptr());
            assert_eq!(record.state, buf[7]);
            let mut again = vec![0u8; record.bytes];
            assert_eq!(
                encode_record(&record.header, record.payload, &mut again),
                record.bytes
            );
            again[7] = record.state;
            assert!(
                again == buf[..record.bytes],
                "decoded record re-encodes differently\n  read:    {:02x?}\n  encoded: {:02x?}",
                &buf[..RECORD_HEADER_BYTES],
                &again[..RECORD_HEADER_BYTES]
            );
        }
        Err(RecordError::End) => {
            let head = &buf[..buf.len().min(RECORD_HEADER_BYTES)];
            assert!(head.iter().all(|&b| b == 0), "End for a nonzero header");
        }
        Err(RecordError::Corrupt { .. }) => {}
    }
}

fn check_segment_header(buf: &[u8]) {
    if let Ok(header) = decode_segment_header(buf) {
        assert!(header.segment_seq >= 1);
        assert!(header.segment_bytes >= SEGMENT_HEADER_BYTES as u64);
        let mut again = [0u8; SEGMENT_HEADER_BYTES];
        encode_segment_header(&header, &mut again);
        assert!(
            again[..] == buf[..SEGMENT_HEADER_BYTES],
            "segment header re-encodes differently"
        );
    }
}

fn check_scan(segment: &[u8]) {
    let scan = scan_segment(segment);
    let mut end = segment.len().min(SEGMENT_HEADER_BYTES);
    for record in &scan.records {
        assert!(record.offset >= end, "records overlap or go backwards");
        assert_eq!(record.offset % RECORD_ALIGN_BYTES, 0);
        assert_eq!(record.bytes, record_bytes(record.payload_bytes));
        assert!(record.offset + record.bytes <= segment.len());
        let decoded = decode_record(&segment[record.offset..]).expect("a scanned record decodes");
        assert_eq!(decoded.header, record.header);
        assert_eq!(decoded.state, record.state);
        end = record.offset + record.bytes;
    }
    for span in &scan.corrupt {
        assert!(span.bytes > 0);
        let next = span.offset + span.bytes;
        assert!(
            scan.records.iter().any(|r| r.offset == next),
            "corrupt span {}..{next} not followed by a valid record",
            span.offset
        );
        assert!(
            !scan
                .records
                .iter()
                .any(|r| r.offset < next && span.offset < r.offset + r.bytes),
            "a corrupt span overlaps a record"
        );
    }
    assert!(scan.append_offset <= segment.len());
    match scan.torn_tail {
        Some(torn) => {
            assert_eq!(
                torn.offset, end,
                "torn tail does not start after the last record"
            );
            assert_eq!(scan.append_offset, torn.offset);
            assert!(torn.bytes > 0);
            assert!(torn.offset + torn.bytes <= segment.len());
            assert!(segment[torn.offset + torn.bytes..].iter().all(|&b| b == 0));
        }
        None => {
            assert_eq!(scan.append_offset, end);
            assert!(
                segment[end.max(SEGMENT_HEADER_BYTES).min(segment.len())..]
                    .iter()
                    .all(|&b| b == 0),
                "nonzero bytes after the last record but no torn tail"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [control, rest @ ..] = data else {
        return;
    };
    let mut buf = rest.to_vec();
    let fixup = control & 1 == 1;
    match (control >> 1) % 3 {
        0 => {
            if fixup {
                fix_record(&mut buf);
            }
            check_record(&buf);
        }
        1 => {
            if fixup {
                fix_segment_header(&mut buf);
            }
            check_segment_header(&buf);
        }
        _ => {
            if fixup {
                fix_segment(&mut buf);
            }
            check_scan(&buf);
        }
    }
});
