//! Column buffers for `rejected_messages`: messages that could not become a tick or a
//! signal are data, stored with their subject, sequence, reason and raw bytes (capped
//! by the receiver at 4 KiB), so every published message ends somewhere.
//!
//! Adapts to the server's table like the tick builder: `received_at` as DateTime64(P)
//! or DateTime (+ `received_at_ms` on 18.16), strings plain or LowCardinality. Strings
//! live in one arena per column; nothing is allocated per row after construction.

use crate::native::block::BLOCK_INFO;
use crate::native::compress::{compress_table, frames_bytes_max, CompressTable, Method};
use crate::native::types::ColumnType;
use crate::native::wire::{put_str, put_varuint};
use crate::native::Error;
use crate::ring::{SUBJECT_BYTES_MAX, TRUNCATED_BYTES};

use super::columns::{
    put_data_packet, put_millis_part, put_strings, put_time, str_encoding, time_encoding, Arena,
    StrEncoding, TableShape, TimeEncoding,
};
use crate::model::SealedBlock;

/// Raw bytes kept per rejected row (the receiver's truncation cap).
pub const PAYLOAD_BYTES_MAX: usize = TRUNCATED_BYTES;

/// What a reject column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum RejectSlot {
    ReceivedAt(TimeEncoding),
    ReceivedAtMs,
    Subject(StrEncoding),
    StreamSeq,
    Reason(StrEncoding),
    Detail(StrEncoding),
    Payload,
    PayloadSize,
}

/// The `rejected_messages` table as the server has it.
pub type RejectSchema = TableShape<RejectSlot>;

impl TableShape<RejectSlot> {
    /// Resolves the server's INSERT header; unknown columns or types are errors.
    pub fn from_header(header: &[(String, String)]) -> Result<RejectSchema, Error> {
        let required = ["received_at", "stream_seq", "reason", "payload"];
        TableShape::resolve("rejected_messages", header, &required, |name, ty| {
            match (name, ty) {
                ("received_at", t) => time_encoding(t).map(RejectSlot::ReceivedAt),
                ("received_at_ms", ColumnType::UInt16) => Some(RejectSlot::ReceivedAtMs),
                ("subject", t) => str_encoding(t).map(RejectSlot::Subject),
                ("stream_seq", ColumnType::UInt64) => Some(RejectSlot::StreamSeq),
                ("reason", t) => str_encoding(t).map(RejectSlot::Reason),
                ("detail", t) => str_encoding(t).map(RejectSlot::Detail),
                ("payload", ColumnType::String) => Some(RejectSlot::Payload),
                ("payload_size", ColumnType::UInt32) => Some(RejectSlot::PayloadSize),
                _ => None,
            }
        })
    }
}

/// One rejected message as the shard saw it.
#[derive(Clone, Copy, Debug)]
pub struct Rejected<'a> {
    /// Receive time, Unix ms.
    pub received_at_ms: i64,
    /// NATS subject.
    pub subject: &'a [u8],
    /// Stream sequence (0 on core NATS).
    pub stream_seq: u64,
    /// Reason label (`RejectReason` text).
    pub reason: &'static str,
    /// Human detail.
    pub detail: &'static str,
    /// Raw bytes (capped at [`PAYLOAD_BYTES_MAX`]).
    pub payload: &'a [u8],
    /// Size of the message as received.
    pub payload_size: u32,
}

/// Column buffers for up to `rows_max` rejected messages.
pub struct RejectColumns {
    /// Capacity in rows.
    rows_max: usize,
    received_at_ms: Vec<i64>,
    stream_seq: Vec<u64>,
    reason: Vec<&'static str>,
    detail: Vec<&'static str>,
    payload_size: Vec<u32>,
    subject: Arena,
    payload: Arena,
    /// Raw block before compression.
    raw: Vec<u8>,
    /// LZ4 match table, reused.
    lz4_table: CompressTable,
}

/// Raw bytes per reject row at most: subject and payload with their length
/// prefixes, reason and detail texts (< 64 B each), times, sequence and size.
const ROW_BYTES_MAX: usize =
    SUBJECT_BYTES_MAX + PAYLOAD_BYTES_MAX + 2 * 64 + 2 * 10 + 8 + 2 + 8 + 4;

impl RejectColumns {
    /// Buffers for `rows_max` rows, reserved now.
    ///
    /// # Panics
    /// When `rows_max` is 0.
    pub fn new(rows_max: usize) -> RejectColumns {
        assert!(rows_max > 0, "reject block must hold at least one row");
        RejectColumns {
            rows_max,
            received_at_ms: Vec::with_capacity(rows_max),
            stream_seq: Vec::with_capacity(rows_max),
            reason: Vec::with_capacity(rows_max),
            detail: Vec::with_capacity(rows_max),
            payload_size: Vec::with_capacity(rows_max),
            subject: Arena::with_capacity(rows_max, SUBJECT_BYTES_MAX),
            payload: Arena::with_capacity(rows_max, PAYLOAD_BYTES_MAX),
            raw: Vec::with_capacity(Self::raw_bytes_max(rows_max)),
            lz4_table: compress_table(),
        }
    }

    /// Largest raw block of `rows_max` rows.
    pub fn raw_bytes_max(rows_max: usize) -> usize {
        4096 + rows_max * ROW_BYTES_MAX
    }

    /// Buffer bytes a [`SealedBlock`] needs to hold a sealed reject block.
    pub fn sealed_bytes_max(rows_max: usize) -> usize {
        16 + frames_bytes_max(Self::raw_bytes_max(rows_max))
    }

    /// Rows in the open block.
    pub fn rows(&self) -> usize {
        self.stream_seq.len()
    }

    /// True when no rows are open.
    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }

    /// True when no more rows fit.
    pub fn is_full(&self) -> bool {
        self.rows() >= self.rows_max
    }

    /// Oldest receive time in the open block.
    pub fn received_min_ms(&self) -> Option<i64> {
        self.received_at_ms.iter().copied().min()
    }

    /// Appends one rejected message; `false` when full.
    pub fn append(&mut self, r: &Rejected<'_>) -> bool {
        if self.is_full() {
            return false;
        }
        self.received_at_ms.push(r.received_at_ms);
        self.stream_seq.push(r.stream_seq);
        self.reason.push(r.reason);
        self.detail.push(r.detail);
        self.payload_size.push(r.payload_size);
        self.subject
            .push(&r.subject[..r.subject.len().min(SUBJECT_BYTES_MAX)]);
        self.payload
            .push(&r.payload[..r.payload.len().min(PAYLOAD_BYTES_MAX)]);
        true
    }

    pub(crate) fn clear(&mut self) {
        self.received_at_ms.clear();
        self.stream_seq.clear();
        self.reason.clear();
        self.detail.clear();
        self.payload_size.clear();
        self.subject.clear();
        self.payload.clear();
    }

    fn encode(&self, schema: &RejectSchema, out: &mut Vec<u8>) {
        out.extend_from_slice(&BLOCK_INFO);
        let rows = self.rows();
        put_varuint(out, schema.columns.len() as u64);
        put_varuint(out, rows as u64);
        for (name, type_name, slot) in &schema.columns {
            put_str(out, name.as_bytes());
            put_str(out, type_name.as_bytes());
            if rows == 0 {
                continue;
            }
            match *slot {
                RejectSlot::ReceivedAt(encoding) => put_time(out, &self.received_at_ms, encoding),
                RejectSlot::ReceivedAtMs => put_millis_part(out, &self.received_at_ms),
                RejectSlot::StreamSeq => self
                    .stream_seq
                    .iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
                RejectSlot::PayloadSize => self
                    .payload_size
                    .iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
                RejectSlot::Payload => {
                    (0..rows).for_each(|row| put_str(out, self.payload.get(row)))
                }
                RejectSlot::Subject(e) => put_strings(out, e, rows, |row| self.subject.get(row)),
                RejectSlot::Reason(e) => {
                    put_strings(out, e, rows, |row| self.reason[row].as_bytes())
                }
                RejectSlot::Detail(e) => {
                    put_strings(out, e, rows, |row| self.detail[row].as_bytes())
                }
            }
        }
    }

    /// Seals the open rows into `sealed` as a Data packet and empties the buffers.
    pub fn seal(
        &mut self,
        schema: &RejectSchema,
        compression: Option<Method>,
        sealed: &mut SealedBlock,
    ) {
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        self.encode(schema, &mut raw);
        put_data_packet(&raw, compression, &mut self.lz4_table, sealed);
        self.raw = raw;
        sealed.rows = self.rows() as u32;
        sealed.seq_min = self.stream_seq.iter().copied().min().unwrap_or(0);
        sealed.seq_max = self.stream_seq.iter().copied().max().unwrap_or(0);
        sealed.timestamp_min_ms = self.received_min_ms().unwrap_or(0);
        sealed.timestamp_max_ms = self.received_at_ms.iter().copied().max().unwrap_or(0);
        sealed.received_min_ms = sealed.timestamp_min_ms;
        sealed
            .received_spread
            .fill(sealed.received_min_ms, self.received_at_ms.iter().copied());
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    //! Reject blocks decode, with the generic codec, to the rows that went in, for the
    //! modern and the 18.16 table shapes.
    use super::*;
    use crate::native::block::{Block, BlockFormat};
    use crate::native::column::Value;
    use crate::native::compress::FrameReader;

    fn header(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// The modern table's columns: LowCardinality subject and reason.
    fn modern_header() -> Vec<(String, String)> {
        header(&[
            ("received_at", "DateTime64(3, 'UTC')"),
            ("subject", "LowCardinality(String)"),
            ("stream_seq", "UInt64"),
            ("reason", "LowCardinality(String)"),
            ("detail", "String"),
            ("payload", "String"),
            ("payload_size", "UInt32"),
        ])
    }

    #[test]
    fn reject_blocks_decode_to_their_rows() {
        let modern = modern_header();
        let legacy = header(&[
            ("received_at", "DateTime('UTC')"),
            ("received_at_ms", "UInt16"),
            ("subject", "String"),
            ("stream_seq", "UInt64"),
            ("reason", "String"),
            ("detail", "String"),
            ("payload", "String"),
            ("payload_size", "UInt32"),
        ]);
        for header in [modern, legacy] {
            let schema = RejectSchema::from_header(&header).unwrap();
            let mut columns = RejectColumns::new(8);
            let reasons = ["malformed_json", "missing_field", "malformed_json"];
            for (i, reason) in reasons.iter().enumerate() {
                assert!(columns.append(&Rejected {
                    received_at_ms: 1_764_000_000_123 + i as i64,
                    subject: b"market.ticks.NSE.1",
                    stream_seq: 10 + i as u64,
                    reason,
                    detail: "",
                    payload: format!("{{bad {i}").as_bytes(),
                    payload_size: 6,
                }));
            }
            let mut sealed = SealedBlock::with_capacity(8);
            columns.seal(&schema, Some(Method::Lz4), &mut sealed);
            assert_eq!((sealed.rows, sealed.seq_min, sealed.seq_max), (3, 10, 12));
            let mut input = &sealed.bytes[2..];
            let mut frames = FrameReader::new(&mut input);
            let block = Block::decode(BlockFormat::Protocol, &mut frames).unwrap();
            frames.finish().unwrap();
            let reason: Vec<Value> = (0..3)
                .map(|r| block.column("reason").unwrap().values.get(r))
                .collect();
            let expected: Vec<Value> = reasons
                .iter()
                .map(|r| Value::Bytes(r.as_bytes().to_vec()))
                .collect();
            assert_eq!(reason, expected);
            assert_eq!(
                block.column("payload").unwrap().values.get(2),
                Value::Bytes(b"{bad 2".to_vec())
            );
            assert_eq!(
                block.column("stream_seq").unwrap().values.get(1),
                Value::UInt(11)
            );
        }
    }

    #[test]
    fn a_full_block_of_distinct_subjects_takes_wider_indexes() {
        // 1,024 rows, 300 distinct subjects: the LowCardinality dictionary outgrows
        // one-byte indexes, and every row must still decode to its own subject.
        let schema = RejectSchema::from_header(&modern_header()).unwrap();
        let rows = 1024;
        let mut columns = RejectColumns::new(rows);
        let subject = |i: usize| format!("market.ticks.NSE.{}", i * 7 % 300);
        for i in 0..rows {
            assert!(columns.append(&Rejected {
                received_at_ms: 1_764_000_000_000 + i as i64,
                subject: subject(i).as_bytes(),
                stream_seq: 1 + i as u64,
                reason: "malformed_json",
                detail: "",
                payload: b"{",
                payload_size: 1,
            }));
        }
        let mut sealed = SealedBlock::with_capacity(rows);
        columns.seal(&schema, Some(Method::Lz4), &mut sealed);
        let mut input = &sealed.bytes[2..];
        let mut frames = FrameReader::new(&mut input);
        let block = Block::decode(BlockFormat::Protocol, &mut frames).unwrap();
        frames.finish().unwrap();
        let subjects = &block.column("subject").unwrap().values;
        for i in [0, 1, 255, 256, 299, 300, 1023] {
            assert_eq!(
                subjects.get(i),
                Value::Bytes(subject(i).into_bytes()),
                "row {i}"
            );
        }
        let reasons = &block.column("reason").unwrap().values;
        assert_eq!(reasons.get(1023), Value::Bytes(b"malformed_json".to_vec()));
    }

    #[test]
    fn unknown_reject_columns_are_refused() {
        let bad = header(&[("received_at", "DateTime"), ("mystery", "UInt8")]);
        assert!(RejectSchema::from_header(&bad)
            .unwrap_err()
            .to_string()
            .contains("mystery"));
    }
}
