//! The columnar block builder for `market_ticks`: ticks are appended into column
//! buffers sized once at start, and sealed into one encoded (optionally LZ4-framed)
//! Data packet, ready for a writer to put on the socket as is.
//!
//! ```text
//!   Tick ──append──► column buffers (struct of arrays, capacity = block_rows_max)
//!                        │ seal (size or age; the shard loop decides)
//!                        ▼
//!                    raw Native block ──LZ4 frames──► SealedBlock.bytes ──► writer
//! ```
//!
//! The builder adapts to the table the server has ([`TickSchema::from_header`]): it
//! writes `DateTime64(P)` or `DateTime` (+ `timestamp_ms UInt16` on 18.16),
//! `LowCardinality(String)` or `String`, and depth as `Array(Tuple(..))` or as the
//! `depth_buy.1/.2/.3` arrays 18.16 exposes for such a column.
//!
//! Must never: allocate per row after construction (a counting-allocator test checks),
//! do I/O, or read a clock (times arrive in the tick).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::model::{
    Depth, Price, ReceivedSpread, SealedBlock, Symbol, Table, Tick, DEPTH_LEVELS, SYMBOL_BYTES_MAX,
};
use crate::native::block::{BlockFormat, BLOCK_INFO};
use crate::native::column::{write_low_cardinality_keys, LC_VERSION};
use crate::native::compress::{
    compress_frames, compress_table, frames_bytes_max, CompressTable, Method,
};
use crate::native::protocol::write_data_prefix;
use crate::native::types::ColumnType;
use crate::native::wire::{put_str, put_varuint};
use crate::native::Error;

/// Most rows one block may hold: 1 Mi. At ~376 B a row that is ~376 MiB of raw
/// buffer, the most we let one shard reserve.
pub const BLOCK_ROWS_MAX: usize = 1 << 20;

/// Upper bound of the raw Native bytes one row can take, summed per holder:
/// times 8 + 2 (ms part) twice, token 4, exchange and symbol up to 1 + 31 as plain
/// strings or 4 index + 32 dictionary bytes each, seven `Float64` prices, quantity 4,
/// volume 8, oi 8, score 4, flags 4, sequence 8, and per depth side offsets written
/// up to three times (split 18.16 layout) plus five levels of 8 + 4 + 2.
pub const ROW_BYTES_MAX: usize = 2 * (8 + 2)
    + 4
    + 2 * (4 + 1 + SYMBOL_BYTES_MAX)
    + 7 * 8
    + 4
    + 8
    + 8
    + 4
    + 4
    + 8
    + 2 * (3 * 8 + DEPTH_LEVELS * (8 + 4 + 2));
/// Bytes of everything in a block that is not per row: BlockInfo, counts, column
/// names and types (~30 columns × < 100 B), LowCardinality prefixes.
pub const BLOCK_HEADER_BYTES_MAX: usize = 8 << 10;

const _: () = assert!(
    ROW_BYTES_MAX <= 512,
    "a tick row grew; revisit buffer sizing"
);

/// FxHash (the rustc hasher): one multiply per 8 bytes. Symbols are short, trusted
/// after validation, and hashed per row, so SipHash's DoS resistance is not worth
/// its cost here.
#[derive(Default, Clone, Copy)]
struct SymbolHasher(u64);

impl Hasher for SymbolHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    #[inline]
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Distinct symbols of one block, in first-seen order.
struct Dictionary {
    /// Direct-mapped cache, keyed by a caller's hint (the instrument token): slot
    /// `hint % HINT_SLOTS` holds the position last found for that hint. A hit costs one
    /// 32-byte compare instead of hashing the symbol and probing the table.
    hints: Vec<u32>,
    /// Symbol → position in `entries`.
    positions: HashMap<Symbol, u32, BuildHasherDefault<SymbolHasher>>,
    /// The distinct symbols.
    entries: Vec<Symbol>,
}

/// Slots of the hint cache: 4,096 × 4 B = 16 KiB, in L1/L2, covering the instruments
/// a feed cycles through with few collisions.
const HINT_SLOTS: usize = 4096;
/// A hint slot with nothing cached.
const HINT_EMPTY: u32 = u32::MAX;

impl Dictionary {
    fn with_capacity(capacity: usize) -> Dictionary {
        Dictionary {
            hints: vec![HINT_EMPTY; HINT_SLOTS],
            positions: HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            entries: Vec::with_capacity(capacity),
        }
    }

    /// The position of `symbol`, added when new. `hint` is any number that usually
    /// comes with the same symbol (the instrument token for trading symbols, 0 for
    /// exchanges); a wrong hint only costs the slow path.
    #[inline]
    fn index(&mut self, hint: u32, symbol: Symbol) -> u32 {
        let slot = hint as usize % HINT_SLOTS;
        let cached = self.hints[slot];
        if cached != HINT_EMPTY && self.entries[cached as usize] == symbol {
            return cached;
        }
        let entries = &mut self.entries;
        let position = *self.positions.entry(symbol).or_insert_with(|| {
            entries.push(symbol);
            entries.len() as u32 - 1
        });
        self.hints[slot] = position;
        position
    }

    fn clear(&mut self) {
        self.hints.fill(HINT_EMPTY);
        self.positions.clear();
        self.entries.clear();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum Side {
    Buy,
    Sell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum DepthField {
    Price,
    Quantity,
    Orders,
}

/// How a time column is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum TimeEncoding {
    /// `DateTime`: `UInt32` seconds.
    Seconds,
    /// `DateTime64(P)`: `Int64` of 10^-P s, from ms by `× mul / div`.
    Ticks { mul: i64, div: i64 },
}

/// How a string column is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum StrEncoding {
    Plain,
    LowCardinality,
}

/// What the tick builder writes into one server column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum Slot {
    Timestamp(TimeEncoding),
    TimestampMs,
    ReceivedAt(TimeEncoding),
    ReceivedAtMs,
    Token,
    Exchange(StrEncoding),
    Symbol(StrEncoding),
    LastPrice,
    LastQuantity,
    AveragePrice,
    Volume,
    Open,
    High,
    Low,
    Close,
    Oi,
    Depth(Side),
    DepthPart(Side, DepthField),
    Score,
    Flags,
    StreamSeq,
}

/// Columns that must exist for a block to mean anything.
const REQUIRED_COLUMNS: [&str; 4] = ["timestamp", "instrument_token", "last_price", "stream_seq"];

/// A server table's columns as a builder resolved them: name, the server's type text
/// (echoed back on INSERT), and what the builder writes there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableShape<S> {
    /// Server column name, server type text, the builder's slot.
    pub(crate) columns: Vec<(String, String, S)>,
}

impl<S> TableShape<S> {
    /// `(name, type)` pairs the server's INSERT header must match.
    pub fn header(&self) -> Vec<(String, String)> {
        self.columns
            .iter()
            .map(|(n, t, _)| (n.clone(), t.clone()))
            .collect()
    }

    /// `INSERT INTO <table> (<columns>) VALUES`. Names are back-quoted (18.16 exposes
    /// tuple parts as dotted names).
    pub fn insert_sql(&self, table: &str) -> String {
        let names: Vec<String> = self
            .columns
            .iter()
            .map(|(n, _, _)| format!("`{n}`"))
            .collect();
        format!("INSERT INTO {table} ({}) VALUES", names.join(", "))
    }

    /// Resolves a server's INSERT header for `table` with `slot_of`, which names what
    /// the builder writes into a column of that name and type (`None`: it cannot).
    /// Unknown columns and missing `required` ones are errors naming the column.
    pub(crate) fn resolve(
        table: &str,
        header: &[(String, String)],
        required: &[&str],
        slot_of: impl Fn(&str, &ColumnType) -> Option<S>,
    ) -> Result<TableShape<S>, Error> {
        let mut columns = Vec::with_capacity(header.len());
        for (name, type_name) in header {
            let ty = ColumnType::parse(type_name)?;
            let slot = slot_of(name, &ty).ok_or_else(|| {
                Error::SchemaMismatch(format!(
                    "{table} column `{name} {type_name}` is not one the appliance writes; \
                     run `alphapt-storage migrate up`, or give it a DEFAULT and drop it"
                ))
            })?;
            columns.push((name.clone(), type_name.clone(), slot));
        }
        for required in required {
            if !columns.iter().any(|(name, _, _)| name == required) {
                return Err(Error::SchemaMismatch(format!(
                    "{table} has no `{required}` column; run `alphapt-storage migrate up`"
                )));
            }
        }
        Ok(TableShape { columns })
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True when there are no columns (never for a resolved table).
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }
}

/// The shape of the `market_ticks` table the builder writes, resolved once per
/// server from its INSERT header.
pub type TickSchema = TableShape<Slot>;

impl TableShape<Slot> {
    /// Resolves the server's INSERT header for `market_ticks`. A column the builder
    /// does not produce, or a type it cannot write, is an error naming the column.
    pub fn from_header(header: &[(String, String)]) -> Result<TickSchema, Error> {
        TableShape::resolve("market_ticks", header, &REQUIRED_COLUMNS, resolve)
    }

    /// The schema of the modern migration (ClickHouse ≥ 20.1).
    pub fn modern() -> TickSchema {
        let depth = "Array(Tuple(price Float64, quantity UInt32, orders UInt16))";
        let header = [
            ("timestamp", "DateTime64(3, 'UTC')"),
            ("instrument_token", "UInt32"),
            ("exchange", "LowCardinality(String)"),
            ("tradingsymbol", "LowCardinality(String)"),
            ("last_price", "Float64"),
            ("last_quantity", "UInt32"),
            ("average_price", "Float64"),
            ("volume_traded", "UInt64"),
            ("open", "Float64"),
            ("high", "Float64"),
            ("low", "Float64"),
            ("close", "Float64"),
            ("oi", "UInt64"),
            ("depth_buy", depth),
            ("depth_sell", depth),
            ("data_quality_score", "Float32"),
            ("validation_flags", "UInt32"),
            ("received_at", "DateTime64(3, 'UTC')"),
            ("stream_seq", "UInt64"),
        ];
        Self::from_static(&header)
    }

    /// The schema of the legacy migration (ClickHouse 18.16), as its INSERT header
    /// shows it.
    pub fn legacy() -> TickSchema {
        let header = [
            ("timestamp", "DateTime('UTC')"),
            ("timestamp_ms", "UInt16"),
            ("instrument_token", "UInt32"),
            ("exchange", "String"),
            ("tradingsymbol", "String"),
            ("last_price", "Float64"),
            ("last_quantity", "UInt32"),
            ("average_price", "Float64"),
            ("volume_traded", "UInt64"),
            ("open", "Float64"),
            ("high", "Float64"),
            ("low", "Float64"),
            ("close", "Float64"),
            ("oi", "UInt64"),
            ("depth_buy.1", "Array(Float64)"),
            ("depth_buy.2", "Array(UInt32)"),
            ("depth_buy.3", "Array(UInt16)"),
            ("depth_sell.1", "Array(Float64)"),
            ("depth_sell.2", "Array(UInt32)"),
            ("depth_sell.3", "Array(UInt16)"),
            ("data_quality_score", "Float32"),
            ("validation_flags", "UInt32"),
            ("received_at", "DateTime('UTC')"),
            ("received_at_ms", "UInt16"),
            ("stream_seq", "UInt64"),
        ];
        Self::from_static(&header)
    }

    fn from_static(header: &[(&str, &str)]) -> TickSchema {
        let owned: Vec<(String, String)> = header
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        TickSchema::from_header(&owned).expect("built-in schema resolves")
    }
}

/// The encoding of a `DateTime`/`DateTime64(P)` column, or `None` for other types.
pub(crate) fn time_encoding(ty: &ColumnType) -> Option<TimeEncoding> {
    match ty {
        ColumnType::DateTime(_) => Some(TimeEncoding::Seconds),
        ColumnType::DateTime64(p, _) => {
            let p = i64::from(*p);
            Some(if p >= 3 {
                TimeEncoding::Ticks {
                    mul: 10i64.pow((p - 3) as u32),
                    div: 1,
                }
            } else {
                TimeEncoding::Ticks {
                    mul: 1,
                    div: 10i64.pow((3 - p) as u32),
                }
            })
        }
        _ => None,
    }
}

/// The encoding of a `String`/`LowCardinality(String)` column, or `None`.
pub(crate) fn str_encoding(ty: &ColumnType) -> Option<StrEncoding> {
    match ty {
        ColumnType::String => Some(StrEncoding::Plain),
        ColumnType::LowCardinality(inner) if **inner == ColumnType::String => {
            Some(StrEncoding::LowCardinality)
        }
        _ => None,
    }
}

fn is_depth_tuple(ty: &ColumnType) -> bool {
    let ColumnType::Array(inner) = ty else {
        return false;
    };
    let ColumnType::Tuple(elements) = inner.as_ref() else {
        return false;
    };
    let types: Vec<&ColumnType> = elements.iter().map(|(_, t)| t).collect();
    types
        == [
            &ColumnType::Float64,
            &ColumnType::UInt32,
            &ColumnType::UInt16,
        ]
}

fn depth_part(name: &str) -> Option<(Side, DepthField)> {
    let (side, field) = name.split_once('.')?;
    let side = match side {
        "depth_buy" => Side::Buy,
        "depth_sell" => Side::Sell,
        _ => return None,
    };
    let field = match field {
        "1" | "price" => DepthField::Price,
        "2" | "quantity" => DepthField::Quantity,
        "3" | "orders" => DepthField::Orders,
        _ => return None,
    };
    Some((side, field))
}

/// Which slot a server column maps to, when its type is one we write.
fn resolve(name: &str, ty: &ColumnType) -> Option<Slot> {
    use ColumnType as T;
    let exact = |expected: &ColumnType, slot: Slot| (ty == expected).then_some(slot);
    match name {
        "timestamp" => time_encoding(ty).map(Slot::Timestamp),
        "timestamp_ms" => exact(&T::UInt16, Slot::TimestampMs),
        "received_at" => time_encoding(ty).map(Slot::ReceivedAt),
        "received_at_ms" => exact(&T::UInt16, Slot::ReceivedAtMs),
        "instrument_token" => exact(&T::UInt32, Slot::Token),
        "exchange" => str_encoding(ty).map(Slot::Exchange),
        "tradingsymbol" => str_encoding(ty).map(Slot::Symbol),
        "last_price" => exact(&T::Float64, Slot::LastPrice),
        "last_quantity" => exact(&T::UInt32, Slot::LastQuantity),
        "average_price" => exact(&T::Float64, Slot::AveragePrice),
        "volume_traded" => exact(&T::UInt64, Slot::Volume),
        "open" => exact(&T::Float64, Slot::Open),
        "high" => exact(&T::Float64, Slot::High),
        "low" => exact(&T::Float64, Slot::Low),
        "close" => exact(&T::Float64, Slot::Close),
        "oi" => exact(&T::UInt64, Slot::Oi),
        "depth_buy" => is_depth_tuple(ty).then_some(Slot::Depth(Side::Buy)),
        "depth_sell" => is_depth_tuple(ty).then_some(Slot::Depth(Side::Sell)),
        "data_quality_score" => exact(&T::Float32, Slot::Score),
        "validation_flags" => exact(&T::UInt32, Slot::Flags),
        "stream_seq" => exact(&T::UInt64, Slot::StreamSeq),
        _ => {
            let (side, field) = depth_part(name)?;
            let element = match field {
                DepthField::Price => T::Float64,
                DepthField::Quantity => T::UInt32,
                DepthField::Orders => T::UInt16,
            };
            exact(&T::Array(Box::new(element)), Slot::DepthPart(side, field))
        }
    }
}

/// One side of the book, flattened: end offsets per row and the levels' fields.
struct DepthColumns {
    offsets: Vec<u64>,
    /// Fixed-point raws; converted to `Float64` when encoding (see `put_prices`).
    price: Vec<i64>,
    quantity: Vec<u32>,
    orders: Vec<u16>,
}

impl DepthColumns {
    fn with_capacity(rows: usize) -> DepthColumns {
        DepthColumns {
            offsets: Vec::with_capacity(rows),
            price: Vec::with_capacity(rows * DEPTH_LEVELS),
            quantity: Vec::with_capacity(rows * DEPTH_LEVELS),
            orders: Vec::with_capacity(rows * DEPTH_LEVELS),
        }
    }

    #[inline]
    fn push(&mut self, depth: &Depth) {
        // `extend` over a slice iterator reserves once per call instead of checking
        // capacity per element.
        let levels = depth.as_slice();
        self.price.extend(levels.iter().map(|l| l.price.0));
        self.quantity.extend(levels.iter().map(|l| l.quantity));
        self.orders.extend(levels.iter().map(|l| l.orders));
        self.offsets.push(self.price.len() as u64);
    }

    fn clear(&mut self) {
        self.offsets.clear();
        self.price.clear();
        self.quantity.clear();
        self.orders.clear();
    }
}

// `SealedBlock` and `Table` are hand-off types (`model::block`); the sizing that
// depends on the tick columns stays here.
impl SealedBlock {
    /// An empty sealed block whose buffer holds a block of `rows_max` rows in any
    /// form without reallocating.
    pub fn with_capacity(rows_max: usize) -> SealedBlock {
        SealedBlock {
            table: Table::Ticks,
            shard: 0,
            durable_through: None,
            rows: 0,
            seq_min: 0,
            seq_max: 0,
            timestamp_min_ms: 0,
            timestamp_max_ms: 0,
            received_min_ms: 0,
            received_spread: ReceivedSpread::default(),
            raw_bytes: 0,
            format: BlockFormat::Protocol,
            compression: None,
            bytes: Vec::with_capacity(Self::bytes_max(rows_max)),
        }
    }

    /// Buffer bytes for a block of `rows_max` rows: the packet prefix plus the
    /// worst-case LZ4 framing of the largest raw block.
    pub fn bytes_max(rows_max: usize) -> usize {
        16 + frames_bytes_max(raw_bytes_max(rows_max))
    }
}

/// Largest raw Native block of `rows_max` rows.
pub fn raw_bytes_max(rows_max: usize) -> usize {
    BLOCK_HEADER_BYTES_MAX + rows_max * ROW_BYTES_MAX
}

/// Column buffers for up to `rows_max` ticks.
///
/// Every `Vec` below is one column of the open block, reserved to `rows_max` (depth
/// columns to `rows_max × 5`) at construction and cleared, never shrunk, per seal.
pub struct TickColumns {
    /// Capacity in rows; `append` refuses beyond it.
    rows_max: usize,
    timestamp_ms: Vec<i64>,
    received_at_ms: Vec<i64>,
    stream_seq: Vec<u64>,
    instrument_token: Vec<u32>,
    exchange: Vec<u32>,
    tradingsymbol: Vec<u32>,
    last_price: Vec<i64>,
    last_quantity: Vec<u32>,
    average_price: Vec<i64>,
    volume_traded: Vec<u64>,
    open: Vec<i64>,
    high: Vec<i64>,
    low: Vec<i64>,
    close: Vec<i64>,
    oi: Vec<u64>,
    score: Vec<f32>,
    flags: Vec<u32>,
    depth_buy: DepthColumns,
    depth_sell: DepthColumns,
    exchanges: Dictionary,
    symbols: Dictionary,
    /// Raw Native block, before compression; reused every seal.
    raw: Vec<u8>,
    /// LZ4 match table, reused every frame.
    lz4_table: CompressTable,
    /// Sequence and time bounds of the open block.
    seq_min: u64,
    seq_max: u64,
    timestamp_min_ms: i64,
    timestamp_max_ms: i64,
    received_min_ms: i64,
}

impl TickColumns {
    /// Buffers for blocks of up to `rows_max` rows, all reserved now.
    ///
    /// # Panics
    /// When `rows_max` is 0 or above [`BLOCK_ROWS_MAX`] (config validation refuses both).
    pub fn new(rows_max: usize) -> TickColumns {
        assert!(rows_max > 0, "block_rows_max must be positive");
        assert!(
            rows_max <= BLOCK_ROWS_MAX,
            "block_rows_max above {BLOCK_ROWS_MAX}"
        );
        // Distinct symbols per block are bounded by the instruments traded; 64 Ki
        // covers every NSE+BSE+NFO instrument listed at once.
        let dict = rows_max.min(1 << 16);
        TickColumns {
            rows_max,
            timestamp_ms: Vec::with_capacity(rows_max),
            received_at_ms: Vec::with_capacity(rows_max),
            stream_seq: Vec::with_capacity(rows_max),
            instrument_token: Vec::with_capacity(rows_max),
            exchange: Vec::with_capacity(rows_max),
            tradingsymbol: Vec::with_capacity(rows_max),
            last_price: Vec::with_capacity(rows_max),
            last_quantity: Vec::with_capacity(rows_max),
            average_price: Vec::with_capacity(rows_max),
            volume_traded: Vec::with_capacity(rows_max),
            open: Vec::with_capacity(rows_max),
            high: Vec::with_capacity(rows_max),
            low: Vec::with_capacity(rows_max),
            close: Vec::with_capacity(rows_max),
            oi: Vec::with_capacity(rows_max),
            score: Vec::with_capacity(rows_max),
            flags: Vec::with_capacity(rows_max),
            depth_buy: DepthColumns::with_capacity(rows_max),
            depth_sell: DepthColumns::with_capacity(rows_max),
            exchanges: Dictionary::with_capacity(64),
            symbols: Dictionary::with_capacity(dict),
            raw: Vec::with_capacity(raw_bytes_max(rows_max)),
            lz4_table: compress_table(),
            seq_min: u64::MAX,
            seq_max: 0,
            timestamp_min_ms: i64::MAX,
            timestamp_max_ms: i64::MIN,
            received_min_ms: i64::MAX,
        }
    }

    /// Rows in the open block.
    #[inline]
    pub fn rows(&self) -> usize {
        self.timestamp_ms.len()
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

    /// Rows the open block can still take.
    #[inline]
    pub fn rows_free(&self) -> usize {
        self.rows_max.saturating_sub(self.rows())
    }

    /// Most rows a block holds.
    pub fn rows_max(&self) -> usize {
        self.rows_max
    }

    /// Oldest receive stamp in the open block (for sealing on age).
    pub fn received_min_ms(&self) -> Option<i64> {
        (!self.is_empty()).then_some(self.received_min_ms)
    }

    /// Appends one tick; `false` (and nothing appended) when the block is full.
    #[inline]
    pub fn append(&mut self, tick: &Tick) -> bool {
        if self.is_full() {
            return false;
        }
        self.timestamp_ms.push(tick.timestamp_ms);
        self.received_at_ms.push(tick.received_at_ms);
        self.stream_seq.push(tick.stream_seq);
        self.instrument_token.push(tick.instrument_token);
        let exchange = self.exchanges.index(0, tick.exchange);
        self.exchange.push(exchange);
        let symbol = self
            .symbols
            .index(tick.instrument_token, tick.tradingsymbol);
        self.tradingsymbol.push(symbol);
        self.last_price.push(tick.last_price.0);
        self.last_quantity.push(tick.last_quantity);
        self.average_price.push(tick.average_price.0);
        self.volume_traded.push(tick.volume_traded);
        self.open.push(tick.ohlc.open.0);
        self.high.push(tick.ohlc.high.0);
        self.low.push(tick.ohlc.low.0);
        self.close.push(tick.ohlc.close.0);
        self.oi.push(tick.oi);
        self.score.push(tick.data_quality_score);
        self.flags.push(tick.validation_flags);
        self.depth_buy.push(&tick.depth_buy);
        self.depth_sell.push(&tick.depth_sell);
        self.seq_min = self.seq_min.min(tick.stream_seq);
        self.seq_max = self.seq_max.max(tick.stream_seq);
        self.timestamp_min_ms = self.timestamp_min_ms.min(tick.timestamp_ms);
        self.timestamp_max_ms = self.timestamp_max_ms.max(tick.timestamp_ms);
        self.received_min_ms = self.received_min_ms.min(tick.received_at_ms);
        true
    }

    /// Empties the open block, keeping every buffer's capacity.
    pub fn clear(&mut self) {
        for v in [&mut self.timestamp_ms, &mut self.received_at_ms] {
            v.clear();
        }
        self.stream_seq.clear();
        self.volume_traded.clear();
        self.oi.clear();
        for v in [
            &mut self.instrument_token,
            &mut self.exchange,
            &mut self.tradingsymbol,
        ] {
            v.clear();
        }
        self.last_quantity.clear();
        self.flags.clear();
        for v in [
            &mut self.last_price,
            &mut self.average_price,
            &mut self.open,
            &mut self.high,
            &mut self.low,
            &mut self.close,
        ] {
            v.clear();
        }
        self.score.clear();
        self.depth_buy.clear();
        self.depth_sell.clear();
        self.exchanges.clear();
        self.symbols.clear();
        self.seq_min = u64::MAX;
        self.seq_max = 0;
        self.timestamp_min_ms = i64::MAX;
        self.timestamp_max_ms = i64::MIN;
        self.received_min_ms = i64::MAX;
    }

    /// Encodes the open block as raw Native bytes in `format`, appended to `out`.
    pub fn encode(&self, schema: &TickSchema, format: BlockFormat, out: &mut Vec<u8>) {
        if format == BlockFormat::Protocol {
            out.extend_from_slice(&BLOCK_INFO);
        }
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

    fn depth(&self, side: Side) -> &DepthColumns {
        match side {
            Side::Buy => &self.depth_buy,
            Side::Sell => &self.depth_sell,
        }
    }

    fn encode_column(&self, slot: Slot, out: &mut Vec<u8>) {
        match slot {
            Slot::Timestamp(encoding) => put_time(out, &self.timestamp_ms, encoding),
            Slot::ReceivedAt(encoding) => put_time(out, &self.received_at_ms, encoding),
            Slot::TimestampMs => put_millis_part(out, &self.timestamp_ms),
            Slot::ReceivedAtMs => put_millis_part(out, &self.received_at_ms),
            Slot::Token => put_le(out, &self.instrument_token),
            Slot::Exchange(encoding) => {
                put_symbols(out, &self.exchange, &self.exchanges.entries, encoding)
            }
            Slot::Symbol(encoding) => {
                put_symbols(out, &self.tradingsymbol, &self.symbols.entries, encoding)
            }
            Slot::LastPrice => put_prices(out, &self.last_price),
            Slot::LastQuantity => put_le(out, &self.last_quantity),
            Slot::AveragePrice => put_prices(out, &self.average_price),
            Slot::Volume => put_le(out, &self.volume_traded),
            Slot::Open => put_prices(out, &self.open),
            Slot::High => put_prices(out, &self.high),
            Slot::Low => put_prices(out, &self.low),
            Slot::Close => put_prices(out, &self.close),
            Slot::Oi => put_le(out, &self.oi),
            Slot::Score => put_le(out, &self.score),
            Slot::Flags => put_le(out, &self.flags),
            Slot::StreamSeq => put_le(out, &self.stream_seq),
            Slot::Depth(side) => {
                let depth = self.depth(side);
                put_le(out, &depth.offsets);
                put_prices(out, &depth.price);
                put_le(out, &depth.quantity);
                put_le(out, &depth.orders);
            }
            Slot::DepthPart(side, field) => {
                let depth = self.depth(side);
                put_le(out, &depth.offsets);
                match field {
                    DepthField::Price => put_prices(out, &depth.price),
                    DepthField::Quantity => put_le(out, &depth.quantity),
                    DepthField::Orders => put_le(out, &depth.orders),
                }
            }
        }
    }

    /// Seals the open block into `sealed` as a Data packet (LZ4-framed when
    /// `compression` is set) and empties the builder. No allocation when `sealed`
    /// came from [`SealedBlock::with_capacity`] with at least this builder's rows.
    pub fn seal(
        &mut self,
        schema: &TickSchema,
        compression: Option<Method>,
        sealed: &mut SealedBlock,
    ) {
        sealed.bytes.clear();
        write_data_prefix(&mut sealed.bytes);
        match compression {
            None => {
                let start = sealed.bytes.len();
                self.encode(schema, BlockFormat::Protocol, &mut sealed.bytes);
                sealed.raw_bytes = sealed.bytes.len() - start;
            }
            Some(method) => {
                let mut raw = std::mem::take(&mut self.raw);
                raw.clear();
                self.encode(schema, BlockFormat::Protocol, &mut raw);
                compress_frames(method, &raw, &mut sealed.bytes, &mut self.lz4_table);
                sealed.raw_bytes = raw.len();
                self.raw = raw;
            }
        }
        self.fill_bounds(sealed, BlockFormat::Protocol, compression);
        self.clear();
    }

    /// Seals the open block as a Native file (what `clickhouse-client --format Native`
    /// reads and chdb's `file(..., Native)` decodes) and empties the builder.
    pub fn seal_file(&mut self, schema: &TickSchema, sealed: &mut SealedBlock) {
        sealed.bytes.clear();
        self.encode(schema, BlockFormat::File, &mut sealed.bytes);
        sealed.raw_bytes = sealed.bytes.len();
        self.fill_bounds(sealed, BlockFormat::File, None);
        self.clear();
    }

    fn fill_bounds(
        &self,
        sealed: &mut SealedBlock,
        format: BlockFormat,
        compression: Option<Method>,
    ) {
        sealed.rows = self.rows() as u32;
        sealed.seq_min = self.seq_min;
        sealed.seq_max = self.seq_max;
        sealed.timestamp_min_ms = self.timestamp_min_ms;
        sealed.timestamp_max_ms = self.timestamp_max_ms;
        sealed.received_min_ms = self.received_min_ms;
        sealed
            .received_spread
            .fill(self.received_min_ms, self.received_at_ms.iter().copied());
        sealed.format = format;
        sealed.compression = compression;
    }
}

/// Fixed-width little-endian encoding for the column writer.
pub(crate) trait LeBytes: Copy {
    const WIDTH: usize;
    fn put(self, dst: &mut [u8]);
}

macro_rules! le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline]
            fn put(self, dst: &mut [u8]) {
                dst.copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_bytes!(u8, u16, u32, u64, i64, f32, f64);

/// Appends a column of fixed-width values. Resizing once and filling fixed chunks
/// lets the compiler drop per-element capacity checks.
#[inline]
pub(crate) fn put_le<T: LeBytes>(out: &mut Vec<u8>, values: &[T]) {
    let start = out.len();
    out.resize(start + values.len() * T::WIDTH, 0);
    for (dst, value) in out[start..].chunks_exact_mut(T::WIDTH).zip(values) {
        value.put(dst);
    }
}

/// Appends fixed-point prices as `Float64`. Converting here rather than per append
/// batches the divisions into one loop the compiler vectorises; the value is
/// exactly [`crate::model::Price::to_f64`].
#[inline]
fn put_prices(out: &mut Vec<u8>, raws: &[i64]) {
    let start = out.len();
    out.resize(start + raws.len() * 8, 0);
    for (dst, &raw) in out[start..].chunks_exact_mut(8).zip(raws) {
        dst.copy_from_slice(&Price(raw).to_f64().to_le_bytes());
    }
}

/// Appends Unix-ms times as the column stores them.
pub(crate) fn put_time(out: &mut Vec<u8>, millis: &[i64], encoding: TimeEncoding) {
    let start = out.len();
    match encoding {
        TimeEncoding::Seconds => {
            out.resize(start + millis.len() * 4, 0);
            for (dst, ms) in out[start..].chunks_exact_mut(4).zip(millis) {
                // DateTime is unsigned seconds; validation flags out-of-range times,
                // clamping keeps the row storable.
                let seconds = ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32;
                dst.copy_from_slice(&seconds.to_le_bytes());
            }
        }
        TimeEncoding::Ticks { mul, div } => {
            out.resize(start + millis.len() * 8, 0);
            for (dst, ms) in out[start..].chunks_exact_mut(8).zip(millis) {
                let ticks = ms.saturating_mul(mul) / div;
                dst.copy_from_slice(&ticks.to_le_bytes());
            }
        }
    }
}

/// Appends the millisecond part (0–999) of Unix-ms times as `UInt16` (18.16 layout).
pub(crate) fn put_millis_part(out: &mut Vec<u8>, millis: &[i64]) {
    let start = out.len();
    out.resize(start + millis.len() * 2, 0);
    for (dst, ms) in out[start..].chunks_exact_mut(2).zip(millis) {
        dst.copy_from_slice(&(ms.rem_euclid(1000) as u16).to_le_bytes());
    }
}

fn put_symbols(out: &mut Vec<u8>, indexes: &[u32], entries: &[Symbol], encoding: StrEncoding) {
    match encoding {
        StrEncoding::Plain => {
            for &index in indexes {
                put_str(out, entries[index as usize].as_bytes());
            }
        }
        StrEncoding::LowCardinality => {
            // Layout: version (the prefix), then the body.
            out.extend_from_slice(&LC_VERSION.to_le_bytes());
            write_low_cardinality_keys(
                out,
                entries.iter().map(Symbol::as_bytes),
                indexes.iter().copied(),
            );
        }
    }
}

/// An arena of byte strings: one buffer and end offsets.
pub(crate) struct Arena {
    /// Every value's bytes, back to back.
    bytes: Vec<u8>,
    /// End offset in `bytes` of each value, one per row.
    ends: Vec<u32>,
}

impl Arena {
    /// An empty arena reserved for `rows` values of up to `bytes_per_row` bytes.
    pub(crate) fn with_capacity(rows: usize, bytes_per_row: usize) -> Arena {
        Arena {
            bytes: Vec::with_capacity(rows * bytes_per_row),
            ends: Vec::with_capacity(rows),
        }
    }

    /// Appends one value.
    pub(crate) fn push(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
        self.ends.push(self.bytes.len() as u32);
    }

    /// The value of `row`.
    pub(crate) fn get(&self, row: usize) -> &[u8] {
        let start = if row == 0 {
            0
        } else {
            self.ends[row - 1] as usize
        };
        &self.bytes[start..self.ends[row] as usize]
    }

    /// Drops every value, keeping the capacity.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// Writes `raw` (a Protocol-format Native block) into `sealed` as a Data packet,
/// LZ4-framed when `compression` is set, and records its size, format and compression.
/// Shared by the small builders (rejects, signals); the tick builder encodes in place.
pub(crate) fn put_data_packet(
    raw: &[u8],
    compression: Option<Method>,
    lz4_table: &mut CompressTable,
    sealed: &mut SealedBlock,
) {
    sealed.bytes.clear();
    write_data_prefix(&mut sealed.bytes);
    match compression {
        Some(method) => compress_frames(method, raw, &mut sealed.bytes, lz4_table),
        None => sealed.bytes.extend_from_slice(raw),
    }
    sealed.raw_bytes = raw.len();
    sealed.format = BlockFormat::Protocol;
    sealed.compression = compression;
}

/// Writes a string column, plain or as LowCardinality with a per-block dictionary of
/// distinct values (duplicate dictionary entries are untested on servers, so none are
/// written). For the small, rare blocks (rejects, signals: at most 1,024 rows); the
/// dictionary's allocations are per block.
pub(crate) fn put_strings<'a>(
    out: &mut Vec<u8>,
    encoding: StrEncoding,
    rows: usize,
    value: impl Fn(usize) -> &'a [u8],
) {
    if encoding == StrEncoding::Plain {
        (0..rows).for_each(|row| put_str(out, value(row)));
        return;
    }
    out.extend_from_slice(&LC_VERSION.to_le_bytes());
    let mut positions: HashMap<&[u8], u32> = HashMap::new();
    let mut keys: Vec<&[u8]> = Vec::new();
    let indexes: Vec<u32> = (0..rows)
        .map(|row| {
            let text = value(row);
            *positions.entry(text).or_insert_with(|| {
                keys.push(text);
                keys.len() as u32 - 1
            })
        })
        .collect();
    write_low_cardinality_keys(out, keys.into_iter(), indexes.into_iter());
}

#[cfg(test)]
#[path = "columns_tests.rs"]
mod tests;
