//! Strategy signals: the JSON parser for `strategy.signals.<strategy>.<token>` and the
//! column buffers for `strategy_signals` (DESIGN §3, §4).
//!
//! ```text
//!   payload ──parse_json_signal──► Signal + SignalParse (metadata byte range)
//!              │                        │ append(&signal, &payload[metadata])
//!              └──► RejectReason        ▼
//!                   (rejected_messages) SignalColumns ──seal──► SealedBlock (Data packet)
//! ```
//!
//! The platform's signal, keys in any order, unknown keys skipped:
//!
//! ```text
//! {"strategy_id": "mom-1", "strategy_type": "ml",          (optional; default traditional)
//!  "instrument_token": 256265, "tradingsymbol": "NIFTY 50",
//!  "signal_type": "BUY", "strength": 0.8, "confidence": 0.9,
//!  "price": 1234.05, "quantity": 10,
//!  "metadata": {any JSON object},                           (optional; stored verbatim)
//!  "timestamp": "2025-11-24T16:00:00.500+00:00"}            (or epoch milliseconds)
//! ```
//!
//! The parser reuses the tick scanner of [`crate::shard::parse::json`] (same lexer,
//! numbers, strings, timestamps and bounded skip walker), so it shares its guarantees:
//! no allocation, no panic, linear time, nesting bounded by
//! [`crate::shard::parse::json::NESTING_MAX`]. `metadata` is not decoded: the parser
//! checks its syntax and returns its byte range, and the builder copies those bytes
//! into the `metadata` String column as they were sent.
//!
//! The builder adapts to the server's table like the tick builder: times as
//! `DateTime64(P)` or `DateTime` + `*_ms UInt16` (18.16), strings as
//! `LowCardinality(String)` or `String`, and `strategy_type` as an `Enum8` whose codes
//! are looked up by name in the server's type, never assumed.
//!
//! Must never: allocate per signal after construction, do I/O, or read a clock
//! (`received_at_ms` and `stream_seq` come from the caller).

use crate::model::quality::RejectReason;
use crate::model::{Price, Symbol};
use crate::native::block::{BlockFormat, BLOCK_INFO};
use crate::native::compress::{compress_table, frames_bytes_max, CompressTable, Method};
use crate::native::types::ColumnType;
use crate::native::wire::{put_str, put_varuint};
use crate::native::Error;
use crate::shard::parse::json::{walk_object, Scanner, JSON_PAYLOAD_BYTES_MAX};

use super::columns::{
    put_data_packet, put_le, put_millis_part, put_strings, put_time, str_encoding, time_encoding,
    Arena, StrEncoding, TableShape, TimeEncoding,
};
use crate::model::SealedBlock;

use RejectReason::{
    BadNumber, MalformedJson, MissingField, PayloadTooLarge, SymbolTooLong, WrongType,
};

/// Largest `metadata` value stored, in bytes of JSON text. Strategies attach a few
/// features and parameters (~100–500 B); 4 KiB is 8x that, equal to the reject
/// payload cap, and bounds the metadata arena at `rows_max × 4 KiB`. A signal whose
/// metadata is longer is rejected whole ([`RejectReason::PayloadTooLarge`]): cutting
/// it would store JSON that no longer parses.
pub const METADATA_BYTES_MAX: usize = 4096;

/// Most rows one signal block may hold: 8 Ki. Each row may carry up to ~4.3 KiB
/// ([`METADATA_BYTES_MAX`] plus ~200 B of fields), so a full block reserves
/// 8 Ki × 4.3 KiB ≈ 35 MiB of metadata arena and as much again of raw block; signals
/// arrive at a few thousand per second, so 8 Ki rows is seconds of data.
pub const SIGNAL_BLOCK_ROWS_MAX: usize = 8 << 10;

/// Raw Native bytes one row can take, summed per holder: two times at 8 + 2 (ms
/// part), three strings as a varuint length (1) + up to 31 bytes, each possibly also
/// as a LowCardinality dictionary entry (32) and a 4-byte index, the enum code 1,
/// token 4, strength and confidence 4 each, price 8, quantity 4, metadata with its
/// length prefix (2 + 4 KiB), sequence 8.
const ROW_BYTES_MAX: usize =
    2 * (8 + 2) + 3 * (32 + 32 + 4) + 1 + 4 + 2 * 4 + 8 + 4 + (2 + METADATA_BYTES_MAX) + 8;

/// Bytes of a block that are not per row: BlockInfo, counts, and 15 column names and
/// types (< 100 B each), with room to spare for a wide Enum8 type text.
const BLOCK_HEADER_BYTES_MAX: usize = 4096;

const _: () = assert!(
    METADATA_BYTES_MAX < (1 << 14),
    "a metadata length prefix is two varuint bytes at most"
);
const _: () = assert!(
    SIGNAL_BLOCK_ROWS_MAX * ROW_BYTES_MAX < u32::MAX as usize,
    "arena end offsets are u32"
);

/// Kind of strategy that produced a signal: the `strategy_type` Enum8's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StrategyType {
    /// Rule-based (the column's DEFAULT, and ours when the key is absent or null).
    #[default]
    Traditional = 0,
    /// Model-driven.
    Ml = 1,
    /// Rules and a model together.
    Hybrid = 2,
}

impl StrategyType {
    /// Every type, in `repr` order (so `ALL[t as usize] == t`).
    pub const ALL: [StrategyType; 3] = [
        StrategyType::Traditional,
        StrategyType::Ml,
        StrategyType::Hybrid,
    ];

    /// The name as JSON carries it and as the Enum8 declares it.
    pub const fn as_str(self) -> &'static str {
        match self {
            StrategyType::Traditional => "traditional",
            StrategyType::Ml => "ml",
            StrategyType::Hybrid => "hybrid",
        }
    }

    /// The type named `name` (exact, lowercase), if any.
    pub fn from_name(name: &[u8]) -> Option<StrategyType> {
        StrategyType::ALL
            .into_iter()
            .find(|t| t.as_str().as_bytes() == name)
    }
}

/// One strategy signal as parsed: every `strategy_signals` column but `metadata`,
/// which stays in the payload (see [`SignalParse`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signal {
    /// The strategy's event time, Unix ms (`timestamp`; ISO-8601 or epoch ms in JSON).
    pub timestamp_ms: i64,
    /// Our receive time, Unix ms; set by the caller, kept by the parser.
    pub received_at_ms: i64,
    /// JetStream stream sequence (0 on core NATS); set by the caller, kept by the parser.
    pub stream_seq: u64,
    /// Strategy name, up to [`crate::model::SYMBOL_BYTES_MAX`] bytes; never empty once parsed.
    pub strategy_id: Symbol,
    /// Kind of strategy; [`StrategyType::Traditional`] when not sent.
    pub strategy_type: StrategyType,
    /// Instrument the signal is about.
    pub instrument_token: u32,
    /// Trading symbol; empty when not sent.
    pub tradingsymbol: Symbol,
    /// `BUY`, `SELL`, `HOLD`, or any other label the strategy uses; never empty once parsed.
    pub signal_type: Symbol,
    /// Signal strength as sent (0 when absent); not range-checked.
    pub strength: f32,
    /// Model confidence as sent (0 when absent); not range-checked.
    pub confidence: f32,
    /// Reference price, fixed point (zero when absent).
    pub price: Price,
    /// Suggested quantity (0 when absent).
    pub quantity: u32,
}

/// What the parser found besides the [`Signal`]: where the raw `metadata` object lies
/// in the payload. `metadata_start == metadata_end` when there was none (absent or
/// null); the builder then stores an empty string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalParse {
    /// Offset of the metadata object's `{` in the payload.
    pub metadata_start: u32,
    /// Offset one past its closing `}`.
    pub metadata_end: u32,
}

impl SignalParse {
    /// The raw metadata bytes inside `payload` (the slice that was parsed); empty when
    /// none, or when `payload` is not that slice and the range does not fit it.
    pub fn metadata<'a>(&self, payload: &'a [u8]) -> &'a [u8] {
        payload
            .get(self.metadata_start as usize..self.metadata_end as usize)
            .unwrap_or_default()
    }
}

const REQUIRED_STRATEGY: u8 = 1;
const REQUIRED_TOKEN: u8 = 2;
const REQUIRED_SIGNAL_TYPE: u8 = 4;
const REQUIRED_TIME: u8 = 8;
const REQUIRED_ALL: u8 = REQUIRED_STRATEGY | REQUIRED_TOKEN | REQUIRED_SIGNAL_TYPE | REQUIRED_TIME;

/// Parses one JSON signal into `signal` (every field but `received_at_ms` and
/// `stream_seq` is overwritten). `strategy_id`, `instrument_token`, `signal_type` and
/// `timestamp` are required; a field holding `null`, or an empty `strategy_id` or
/// `signal_type`, counts as absent ([`RejectReason::MissingField`]).
///
/// Reasons: a payload over [`JSON_PAYLOAD_BYTES_MAX`] or metadata over
/// [`METADATA_BYTES_MAX`] is `PayloadTooLarge`; a `strategy_type` other than the three
/// names, or one that is not a string, is `WrongType` (the reason set is shared with
/// ticks and labels metrics, so it stays small); a `metadata` that is not an object
/// or null is `WrongType`; strings over 31 bytes are `SymbolTooLong`. On error
/// `signal` holds partial data and must not be stored.
pub fn parse_json_signal(payload: &[u8], signal: &mut Signal) -> Result<SignalParse, RejectReason> {
    if payload.len() > JSON_PAYLOAD_BYTES_MAX {
        return Err(PayloadTooLarge);
    }
    *signal = Signal {
        received_at_ms: signal.received_at_ms,
        stream_seq: signal.stream_seq,
        ..Signal::default()
    };
    let mut parse = SignalParse::default();
    let required = walk_object(payload, |scan, name| {
        parse_field(scan, name, signal, &mut parse)
    })?;
    if required != REQUIRED_ALL {
        return Err(MissingField);
    }
    debug_assert!(parse.metadata_start <= parse.metadata_end);
    debug_assert!(parse.metadata_end as usize <= payload.len());
    Ok(parse)
}

/// Reads the value of top-level `key` into `signal` or `parse`; returns the
/// `REQUIRED_*` bit it satisfied (0 for optional or unknown keys, nulls and empties).
fn parse_field(
    scan: &mut Scanner<'_>,
    key: &[u8],
    signal: &mut Signal,
    parse: &mut SignalParse,
) -> Result<u8, RejectReason> {
    let mut satisfied = 0;
    match key {
        b"strategy_id" | b"signal_type" => {
            if let Some(text) = scan.symbol_or_null()? {
                if !text.as_bytes().is_empty() {
                    if key == b"strategy_id" {
                        signal.strategy_id = text;
                        satisfied = REQUIRED_STRATEGY;
                    } else {
                        signal.signal_type = text;
                        satisfied = REQUIRED_SIGNAL_TYPE;
                    }
                }
            }
        }
        b"tradingsymbol" => {
            if let Some(text) = scan.symbol_or_null()? {
                signal.tradingsymbol = text;
            }
        }
        b"strategy_type" => {
            // A name longer than any we know is as unknown as a short one.
            let name = scan.symbol_or_null().map_err(|e| match e {
                SymbolTooLong => WrongType,
                other => other,
            })?;
            if let Some(name) = name {
                signal.strategy_type = StrategyType::from_name(name.as_bytes()).ok_or(WrongType)?;
            }
        }
        b"instrument_token" => {
            if let Some(n) = scan.number_or_null()? {
                signal.instrument_token = n.to_u32()?;
                satisfied = REQUIRED_TOKEN;
            }
        }
        b"strength" => signal.strength = f32_or_null(scan)?.unwrap_or(0.0),
        b"confidence" => signal.confidence = f32_or_null(scan)?.unwrap_or(0.0),
        b"price" => {
            if let Some(n) = scan.number_or_null()? {
                signal.price = n.to_price()?;
            }
        }
        b"quantity" => {
            if let Some(n) = scan.number_or_null()? {
                signal.quantity = n.to_u32()?;
            }
        }
        b"metadata" => *parse = metadata(scan)?,
        b"timestamp" => {
            if let Some(ms) = scan.timestamp()? {
                signal.timestamp_ms = ms;
                satisfied = REQUIRED_TIME;
            }
        }
        _ => scan.skip_value()?,
    }
    Ok(satisfied)
}

/// A number as `f32`, `None` for `null`. The scanner checks the JSON syntax; the
/// standard library's correctly rounded parser (no allocation) converts the digits as
/// written. A value beyond `f32` range is [`RejectReason::BadNumber`].
fn f32_or_null(scan: &mut Scanner<'_>) -> Result<Option<f32>, RejectReason> {
    // `peek` leaves the position on the value's first byte, where `number` starts.
    scan.peek();
    let start = scan.pos;
    if scan.number_or_null()?.is_none() {
        return Ok(None);
    }
    let text = std::str::from_utf8(&scan.bytes[start..scan.pos]).map_err(|_| BadNumber)?;
    let value: f32 = text.parse().map_err(|_| BadNumber)?;
    if !value.is_finite() {
        return Err(BadNumber);
    }
    Ok(Some(value))
}

/// Checks the `metadata` value and returns its byte range: an object (of any content
/// the skip walker accepts), or `null` for none.
fn metadata(scan: &mut Scanner<'_>) -> Result<SignalParse, RejectReason> {
    match scan.peek() {
        Some(b'{') => {
            let start = scan.pos;
            scan.skip_value()?;
            let end = scan.pos;
            debug_assert!(start < end);
            if end - start > METADATA_BYTES_MAX {
                return Err(PayloadTooLarge);
            }
            // Both fit: the payload is at most JSON_PAYLOAD_BYTES_MAX (16 KiB).
            Ok(SignalParse {
                metadata_start: start as u32,
                metadata_end: end as u32,
            })
        }
        Some(b'n') => scan.literal(b"null").map(|()| SignalParse::default()),
        Some(b'[' | b'"' | b't' | b'f' | b'-' | b'0'..=b'9') => Err(WrongType),
        _ => Err(MalformedJson),
    }
}

/// The server's code for each [`StrategyType`], indexed by `StrategyType as usize`,
/// as found by name in the column's `Enum8(..)` type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnumCodes(pub [i8; 3]);

impl EnumCodes {
    /// Codes for every [`StrategyType`] name in `ty`, or `None` when `ty` is not an
    /// `Enum8` or lacks one of the names (extra names are fine).
    pub fn of(ty: &ColumnType) -> Option<EnumCodes> {
        let ColumnType::Enum8(entries) = ty else {
            return None;
        };
        let mut codes = [0i8; 3];
        for (code, strategy_type) in codes.iter_mut().zip(StrategyType::ALL) {
            *code = entries
                .iter()
                .find(|(name, _)| name == strategy_type.as_str())?
                .1;
        }
        Some(EnumCodes(codes))
    }

    /// The server's code for `strategy_type`.
    #[inline]
    pub fn code(&self, strategy_type: StrategyType) -> i8 {
        self.0[strategy_type as usize]
    }
}

/// What the signal builder writes into one server column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum SignalSlot {
    Timestamp(TimeEncoding),
    TimestampMs,
    StrategyId(StrEncoding),
    StrategyType(EnumCodes),
    Token,
    Symbol(StrEncoding),
    SignalType(StrEncoding),
    Strength,
    Confidence,
    Price,
    Quantity,
    Metadata,
    ReceivedAt(TimeEncoding),
    ReceivedAtMs,
    StreamSeq,
}

/// Columns without which a signal row means nothing.
const REQUIRED_COLUMNS: [&str; 5] = [
    "timestamp",
    "strategy_id",
    "instrument_token",
    "signal_type",
    "stream_seq",
];

/// The `strategy_signals` table as the server has it, resolved once per server.
pub type SignalSchema = TableShape<SignalSlot>;

impl TableShape<SignalSlot> {
    /// Resolves the server's INSERT header for `strategy_signals`. A column the
    /// builder does not write, a type it cannot write (including an Enum8 without one
    /// of `traditional`, `ml`, `hybrid`), or a missing required column is an error
    /// naming the column.
    pub fn from_header(header: &[(String, String)]) -> Result<SignalSchema, Error> {
        TableShape::resolve("strategy_signals", header, &REQUIRED_COLUMNS, signal_slot)
    }

    /// The schema of the modern migration (ClickHouse ≥ 20.1).
    pub fn modern() -> SignalSchema {
        Self::from_static(&[
            ("timestamp", "DateTime64(3, 'UTC')"),
            ("strategy_id", "LowCardinality(String)"),
            (
                "strategy_type",
                "Enum8('traditional' = 1, 'ml' = 2, 'hybrid' = 3)",
            ),
            ("instrument_token", "UInt32"),
            ("tradingsymbol", "LowCardinality(String)"),
            ("signal_type", "LowCardinality(String)"),
            ("strength", "Float32"),
            ("confidence", "Float32"),
            ("price", "Float64"),
            ("quantity", "UInt32"),
            ("metadata", "String"),
            ("received_at", "DateTime64(3, 'UTC')"),
            ("stream_seq", "UInt64"),
        ])
    }

    /// The schema of the legacy migration (ClickHouse 18.16), as its INSERT header
    /// shows it.
    pub fn legacy() -> SignalSchema {
        Self::from_static(&[
            ("timestamp", "DateTime('UTC')"),
            ("timestamp_ms", "UInt16"),
            ("strategy_id", "String"),
            (
                "strategy_type",
                "Enum8('traditional' = 1, 'ml' = 2, 'hybrid' = 3)",
            ),
            ("instrument_token", "UInt32"),
            ("tradingsymbol", "String"),
            ("signal_type", "String"),
            ("strength", "Float32"),
            ("confidence", "Float32"),
            ("price", "Float64"),
            ("quantity", "UInt32"),
            ("metadata", "String"),
            ("received_at", "DateTime('UTC')"),
            ("received_at_ms", "UInt16"),
            ("stream_seq", "UInt64"),
        ])
    }

    fn from_static(header: &[(&str, &str)]) -> SignalSchema {
        let owned: Vec<(String, String)> = header
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        SignalSchema::from_header(&owned).expect("built-in schema resolves")
    }
}

/// Which slot a server column maps to, when its type is one we write.
fn signal_slot(name: &str, ty: &ColumnType) -> Option<SignalSlot> {
    use ColumnType as T;
    let exact = |expected: &ColumnType, slot: SignalSlot| (ty == expected).then_some(slot);
    match name {
        "timestamp" => time_encoding(ty).map(SignalSlot::Timestamp),
        "timestamp_ms" => exact(&T::UInt16, SignalSlot::TimestampMs),
        "strategy_id" => str_encoding(ty).map(SignalSlot::StrategyId),
        "strategy_type" => EnumCodes::of(ty).map(SignalSlot::StrategyType),
        "instrument_token" => exact(&T::UInt32, SignalSlot::Token),
        "tradingsymbol" => str_encoding(ty).map(SignalSlot::Symbol),
        "signal_type" => str_encoding(ty).map(SignalSlot::SignalType),
        "strength" => exact(&T::Float32, SignalSlot::Strength),
        "confidence" => exact(&T::Float32, SignalSlot::Confidence),
        "price" => exact(&T::Float64, SignalSlot::Price),
        "quantity" => exact(&T::UInt32, SignalSlot::Quantity),
        "metadata" => exact(&T::String, SignalSlot::Metadata),
        "received_at" => time_encoding(ty).map(SignalSlot::ReceivedAt),
        "received_at_ms" => exact(&T::UInt16, SignalSlot::ReceivedAtMs),
        "stream_seq" => exact(&T::UInt64, SignalSlot::StreamSeq),
        _ => None,
    }
}

/// Column buffers for up to `rows_max` signals.
///
/// Every buffer is one column of the open block, reserved to `rows_max` rows (arenas
/// to `rows_max` × their longest value) at construction, cleared, never shrunk, per seal.
pub struct SignalColumns {
    /// Capacity in rows; `append` refuses beyond it.
    rows_max: usize,
    /// `timestamp` per row, Unix ms.
    timestamp_ms: Vec<i64>,
    /// `received_at` per row, Unix ms.
    received_at_ms: Vec<i64>,
    /// `stream_seq` per row.
    stream_seq: Vec<u64>,
    /// `strategy_type` per row, mapped to the server's code when sealing.
    strategy_type: Vec<StrategyType>,
    /// `instrument_token` per row.
    instrument_token: Vec<u32>,
    /// `strength` per row.
    strength: Vec<f32>,
    /// `confidence` per row.
    confidence: Vec<f32>,
    /// `price` per row, already as the `Float64` the column stores.
    price: Vec<f64>,
    /// `quantity` per row.
    quantity: Vec<u32>,
    /// `strategy_id` bytes per row.
    strategy_id: Arena,
    /// `tradingsymbol` bytes per row.
    tradingsymbol: Arena,
    /// `signal_type` bytes per row.
    signal_type: Arena,
    /// Raw `metadata` JSON per row, as sent (at most [`METADATA_BYTES_MAX`] each).
    metadata: Arena,
    /// Oldest `received_at_ms` in the open block (`i64::MAX` when empty).
    received_min_ms: i64,
    /// Raw Native block before compression; reused every seal.
    raw: Vec<u8>,
    /// LZ4 match table, reused every frame.
    lz4_table: CompressTable,
}

impl SignalColumns {
    /// Buffers for blocks of up to `rows_max` rows, all reserved now.
    ///
    /// # Panics
    /// When `rows_max` is 0 or above [`SIGNAL_BLOCK_ROWS_MAX`].
    pub fn new(rows_max: usize) -> SignalColumns {
        assert!(rows_max > 0, "a signal block must hold at least one row");
        assert!(
            rows_max <= SIGNAL_BLOCK_ROWS_MAX,
            "signal block rows above {SIGNAL_BLOCK_ROWS_MAX}"
        );
        let symbol_bytes = crate::model::SYMBOL_BYTES_MAX;
        SignalColumns {
            rows_max,
            timestamp_ms: Vec::with_capacity(rows_max),
            received_at_ms: Vec::with_capacity(rows_max),
            stream_seq: Vec::with_capacity(rows_max),
            strategy_type: Vec::with_capacity(rows_max),
            instrument_token: Vec::with_capacity(rows_max),
            strength: Vec::with_capacity(rows_max),
            confidence: Vec::with_capacity(rows_max),
            price: Vec::with_capacity(rows_max),
            quantity: Vec::with_capacity(rows_max),
            strategy_id: Arena::with_capacity(rows_max, symbol_bytes),
            tradingsymbol: Arena::with_capacity(rows_max, symbol_bytes),
            signal_type: Arena::with_capacity(rows_max, symbol_bytes),
            metadata: Arena::with_capacity(rows_max, METADATA_BYTES_MAX),
            received_min_ms: i64::MAX,
            raw: Vec::with_capacity(Self::raw_bytes_max(rows_max)),
            lz4_table: compress_table(),
        }
    }

    /// Largest raw Native block of `rows_max` rows.
    pub fn raw_bytes_max(rows_max: usize) -> usize {
        BLOCK_HEADER_BYTES_MAX + rows_max * ROW_BYTES_MAX
    }

    /// Buffer bytes a [`SealedBlock`] needs to hold a sealed signal block of
    /// `rows_max` rows in any framing without reallocating.
    pub fn sealed_bytes_max(rows_max: usize) -> usize {
        16 + frames_bytes_max(Self::raw_bytes_max(rows_max))
    }

    /// Rows in the open block.
    #[inline]
    pub fn rows(&self) -> usize {
        self.stream_seq.len()
    }

    /// True when the open block has no rows.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }

    /// True when the open block cannot take another row.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.rows() >= self.rows_max
    }

    /// Oldest receive stamp in the open block (for sealing on age).
    pub fn received_min_ms(&self) -> Option<i64> {
        (!self.is_empty()).then_some(self.received_min_ms)
    }

    /// Appends one signal with its raw `metadata` bytes (from
    /// [`SignalParse::metadata`]); `false`, and nothing appended, when the block is full.
    ///
    /// # Panics
    /// In debug builds, when `metadata` is longer than [`METADATA_BYTES_MAX`] (the
    /// parser never returns such a range); release builds store its first
    /// [`METADATA_BYTES_MAX`] bytes rather than outgrow the arena.
    #[inline]
    pub fn append(&mut self, signal: &Signal, metadata: &[u8]) -> bool {
        if self.is_full() {
            return false;
        }
        debug_assert!(metadata.len() <= METADATA_BYTES_MAX);
        self.timestamp_ms.push(signal.timestamp_ms);
        self.received_at_ms.push(signal.received_at_ms);
        self.stream_seq.push(signal.stream_seq);
        self.strategy_type.push(signal.strategy_type);
        self.instrument_token.push(signal.instrument_token);
        self.strength.push(signal.strength);
        self.confidence.push(signal.confidence);
        self.price.push(signal.price.to_f64());
        self.quantity.push(signal.quantity);
        self.strategy_id.push(signal.strategy_id.as_bytes());
        self.tradingsymbol.push(signal.tradingsymbol.as_bytes());
        self.signal_type.push(signal.signal_type.as_bytes());
        self.metadata
            .push(&metadata[..metadata.len().min(METADATA_BYTES_MAX)]);
        self.received_min_ms = self.received_min_ms.min(signal.received_at_ms);
        true
    }

    /// Empties the open block, keeping every buffer's capacity.
    pub(crate) fn clear(&mut self) {
        self.timestamp_ms.clear();
        self.received_at_ms.clear();
        self.stream_seq.clear();
        self.strategy_type.clear();
        self.instrument_token.clear();
        self.strength.clear();
        self.confidence.clear();
        self.price.clear();
        self.quantity.clear();
        self.strategy_id.clear();
        self.tradingsymbol.clear();
        self.signal_type.clear();
        self.metadata.clear();
        self.received_min_ms = i64::MAX;
    }

    /// Encodes the open block as a Protocol-format Native block appended to `out`.
    fn encode(&self, schema: &SignalSchema, out: &mut Vec<u8>) {
        out.extend_from_slice(&BLOCK_INFO);
        let rows = self.rows();
        put_varuint(out, schema.columns.len() as u64);
        put_varuint(out, rows as u64);
        for (name, type_name, slot) in &schema.columns {
            put_str(out, name.as_bytes());
            put_str(out, type_name.as_bytes());
            if rows > 0 {
                self.encode_column(*slot, out);
            }
        }
    }

    fn encode_column(&self, slot: SignalSlot, out: &mut Vec<u8>) {
        let rows = self.rows();
        match slot {
            SignalSlot::Timestamp(encoding) => put_time(out, &self.timestamp_ms, encoding),
            SignalSlot::TimestampMs => put_millis_part(out, &self.timestamp_ms),
            SignalSlot::ReceivedAt(encoding) => put_time(out, &self.received_at_ms, encoding),
            SignalSlot::ReceivedAtMs => put_millis_part(out, &self.received_at_ms),
            SignalSlot::StrategyType(codes) => out.extend(
                self.strategy_type
                    .iter()
                    .map(|&t| codes.code(t).to_le_bytes()[0]),
            ),
            SignalSlot::Token => put_le(out, &self.instrument_token),
            SignalSlot::Strength => put_le(out, &self.strength),
            SignalSlot::Confidence => put_le(out, &self.confidence),
            SignalSlot::Price => put_le(out, &self.price),
            SignalSlot::Quantity => put_le(out, &self.quantity),
            SignalSlot::StreamSeq => put_le(out, &self.stream_seq),
            SignalSlot::StrategyId(e) => put_strings(out, e, rows, |r| self.strategy_id.get(r)),
            SignalSlot::Symbol(e) => put_strings(out, e, rows, |r| self.tradingsymbol.get(r)),
            SignalSlot::SignalType(e) => put_strings(out, e, rows, |r| self.signal_type.get(r)),
            SignalSlot::Metadata => (0..rows).for_each(|r| put_str(out, self.metadata.get(r))),
        }
    }

    /// Seals the open block into `sealed` as a Data packet (LZ4-framed when
    /// `compression` is set), fills its row count and bounds, and empties the builder.
    /// The caller sets `sealed.table`, `shard` and `durable_through`. No allocation
    /// when `sealed.bytes` holds [`SignalColumns::sealed_bytes_max`] bytes.
    pub fn seal(
        &mut self,
        schema: &SignalSchema,
        compression: Option<Method>,
        sealed: &mut SealedBlock,
    ) {
        let rows = self.rows();
        assert_eq!(self.timestamp_ms.len(), rows);
        assert_eq!(self.strategy_type.len(), rows);
        assert_eq!(self.price.len(), rows);
        assert_eq!(self.quantity.len(), rows);
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        self.encode(schema, &mut raw);
        put_data_packet(&raw, compression, &mut self.lz4_table, sealed);
        self.raw = raw;
        debug_assert_eq!(sealed.format, BlockFormat::Protocol);
        sealed.rows = rows as u32;
        sealed.seq_min = self.stream_seq.iter().copied().min().unwrap_or(0);
        sealed.seq_max = self.stream_seq.iter().copied().max().unwrap_or(0);
        sealed.timestamp_min_ms = self.timestamp_ms.iter().copied().min().unwrap_or(0);
        sealed.timestamp_max_ms = self.timestamp_ms.iter().copied().max().unwrap_or(0);
        sealed.received_min_ms = self.received_min_ms().unwrap_or(0);
        sealed
            .received_spread
            .fill(sealed.received_min_ms, self.received_at_ms.iter().copied());
        self.clear();
    }
}

#[cfg(test)]
#[path = "signals_tests.rs"]
mod tests;
