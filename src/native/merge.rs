//! One block in key order out of many: the journal-first inserter's INSERT of a table
//! whose journal records each hold a block in arrival order. ClickHouse sorts every
//! block it writes by the table key unless the block is sorted already; sent sorted,
//! an INSERT of ~250k ticks with the three views costs the server ~30% less CPU
//! (perf/README.md, "ClickHouse's sort, per INSERT"). Sorting the records one by one
//! does not do it: the server squashes an INSERT's blocks into one before its sort,
//! and sorted runs end to end are not sorted.
//!
//! ```text
//!   Data packets of one header (LZ4 frames or raw)
//!        │ push: frames → raw block (scratch) → each column's rows appended, in wire
//!        ▼       form, to that column's buffers
//!   columns   fixed width: the bytes      String: bytes + end offsets
//!             LowCardinality(String): ids into one dictionary for the whole merge
//!             Array(T), Array(Tuple(..)): end offsets + each element's bytes
//!        │ sort: per row the key columns packed into the high 96 bits of a u128,
//!        │ the row number in the low 32 (so entries are unique and the unstable
//!        ▼ sort keeps arrival order among equal keys)
//!   one raw block ◄── every column gathered through the order, a column at a time
//!                     (`write_pieces`: the inserter streams each to the socket)
//! ```
//!
//! Values keep their wire bytes, nothing is converted, so each row leaves byte for byte
//! as it came. Every buffer is kept between merges: once warmed up to the largest
//! merge, a merge through `write_pieces` with a kept piece buffer allocates nothing
//! (`write`, for tests and tools, makes a piece buffer per call). Input is the journal's, whose records carry a CRC
//! of their own, so frame checksums are not checked again here; anything that does not
//! parse as a block of the header is an error naming what, and the caller sends the
//! records as they are.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};

use super::block::BLOCK_INFO;
use super::column::{
    write_low_cardinality_keys, LC_HAS_ADDITIONAL_KEYS, LC_NEED_GLOBAL_DICTIONARY, LC_VERSION,
};
use super::compress::decompress_frames_unchecked;
use super::types::ColumnType;
use super::wire::{get_varuint, put_str, put_varuint};
use super::{BlockFormat, Error};

/// Most rows one merge holds: the entries' low 32 bits number them.
pub const MERGE_ROWS_MAX: usize = 1 << 30;

/// Bits of key a u128 entry has room for beside the row number.
const KEY_BITS_MAX: u32 = 96;

/// How a column's rows sit on the wire, so that they can be moved without decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    /// Fixed bytes per row.
    Fixed(usize),
    /// `String`: VarUInt length and bytes per row.
    Str,
    /// `LowCardinality(String)`: a dictionary and an index per row.
    LowCardinality,
    /// `Array(T)` of fixed-width `T`, or `Array(Tuple(..))` of fixed-width elements:
    /// end offsets per row, then each element's values for all rows.
    Array(Vec<usize>),
}

impl Layout {
    fn of(ty: &ColumnType) -> Option<Layout> {
        if let Some(width) = ty.fixed_width() {
            return Some(Layout::Fixed(width));
        }
        match ty {
            ColumnType::String => Some(Layout::Str),
            ColumnType::LowCardinality(inner) if **inner == ColumnType::String => {
                Some(Layout::LowCardinality)
            }
            ColumnType::Array(inner) => match inner.as_ref() {
                ColumnType::Tuple(elements) => elements
                    .iter()
                    .map(|(_, t)| t.fixed_width())
                    .collect::<Option<Vec<_>>>()
                    .map(Layout::Array),
                t => t.fixed_width().map(|w| Layout::Array(vec![w])),
            },
            _ => None,
        }
    }
}

/// A key column: where it is and how its bytes order.
#[derive(Clone, Copy, Debug)]
struct KeyPart {
    column: usize,
    width: usize,
    /// Two's complement: the sign bit is flipped so that unsigned order is numeric.
    signed: bool,
}

/// One column's rows so far, in wire form.
struct Column {
    name: String,
    type_name: String,
    layout: Layout,
    /// Fixed: the rows' bytes. String: every value's bytes back to back.
    bytes: Vec<u8>,
    /// String: end offset in `bytes` per row.
    ends: Vec<u32>,
    /// LowCardinality: the row's id in the merge's dictionary.
    ids: Vec<u32>,
    /// Array: end offset in the elements per row, counted from the merge's first row.
    offsets: Vec<u64>,
    /// Array: each element's values.
    elements: Vec<Vec<u8>>,
    /// LowCardinality: the dictionary (bytes, end offsets) and its index by hash.
    dict_bytes: Vec<u8>,
    dict_ends: Vec<u32>,
    dict_index: HashMap<u64, u32>,
    /// LowCardinality: the block being pushed, its dictionary's ids in the merge's.
    local_ids: Vec<u32>,
}

impl Column {
    fn new(name: &str, type_name: &str, layout: Layout) -> Column {
        let elements = match &layout {
            Layout::Array(widths) => widths.iter().map(|_| Vec::new()).collect(),
            _ => Vec::new(),
        };
        Column {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            layout,
            bytes: Vec::new(),
            ends: Vec::new(),
            ids: Vec::new(),
            offsets: Vec::new(),
            elements,
            dict_bytes: Vec::new(),
            dict_ends: Vec::new(),
            dict_index: HashMap::new(),
            local_ids: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.ids.clear();
        self.offsets.clear();
        self.elements.iter_mut().for_each(Vec::clear);
        self.dict_bytes.clear();
        self.dict_ends.clear();
        self.dict_index.clear();
        self.local_ids.clear();
    }

    /// Drops rows pushed after the first `rows` (a block that failed half-way).
    fn truncate(&mut self, rows: usize) {
        match &self.layout {
            Layout::Fixed(width) => self.bytes.truncate(rows * width),
            Layout::Str => {
                self.ends.truncate(rows);
                let end = self.ends.last().map_or(0, |&e| e as usize);
                self.bytes.truncate(end);
            }
            // Dictionary entries a failed block added stay: unused keys are harmless.
            Layout::LowCardinality => self.ids.truncate(rows),
            Layout::Array(widths) => {
                self.offsets.truncate(rows);
                let end = self.offsets.last().map_or(0, |&e| e as usize);
                for (values, width) in self.elements.iter_mut().zip(widths) {
                    values.truncate(end * width);
                }
            }
        }
    }

    fn dict_entry(&self, id: u32) -> &[u8] {
        let id = id as usize;
        let start = if id == 0 {
            0
        } else {
            self.dict_ends[id - 1] as usize
        };
        &self.dict_bytes[start..self.dict_ends[id] as usize]
    }

    /// The merge's id of a dictionary string, added when new.
    fn intern(&mut self, value: &[u8]) -> Result<u32, Error> {
        let mut hasher = DefaultHasher::new();
        hasher.write(value);
        let hash = hasher.finish();
        if let Some(&id) = self.dict_index.get(&hash) {
            if self.dict_entry(id) != value {
                return Err(Error::Protocol(format!(
                    "column `{}`: two dictionary strings share a 64-bit hash",
                    self.name
                )));
            }
            return Ok(id);
        }
        let id = self.dict_ends.len() as u32;
        self.dict_bytes.extend_from_slice(value);
        self.dict_ends
            .push(to_u32(self.dict_bytes.len(), &self.name)?);
        self.dict_index.insert(hash, id);
        Ok(id)
    }

    /// After a merge's first block of `rows` rows: room for `remaining` more like them
    /// in every buffer at once, where growing as the blocks come would copy each buffer
    /// and fault its pages in about twice over (a cold merge of 262,144 rows: 170 ms
    /// against 72 warm, `benches/encode.rs`).
    fn reserve_like(&mut self, rows: usize, remaining: usize) {
        fn room<T>(values: &mut Vec<T>, rows: usize, remaining: usize) {
            let per_row = values.len().div_ceil(rows);
            // An eighth more: the first block's rows may be leaner than the rest.
            values.reserve_exact(per_row * remaining + per_row * remaining / 8);
        }
        room(&mut self.bytes, rows, remaining);
        room(&mut self.ends, rows, remaining);
        room(&mut self.ids, rows, remaining);
        room(&mut self.offsets, rows, remaining);
        for values in &mut self.elements {
            room(values, rows, remaining);
        }
    }

    /// Most bytes [`Column::write`] appends.
    fn written_bytes_max(&self) -> usize {
        match &self.layout {
            Layout::Fixed(_) => self.bytes.len(),
            // A length below 4 GiB takes at most 5 VarUInt bytes.
            Layout::Str => self.bytes.len() + 5 * self.ends.len(),
            Layout::LowCardinality => {
                32 + self.dict_bytes.len() + 5 * self.dict_ends.len() + 4 * self.ids.len()
            }
            Layout::Array(_) => {
                8 * self.offsets.len() + self.elements.iter().map(Vec::len).sum::<usize>()
            }
        }
    }

    /// Appends `rows` rows of this column's body from `input`.
    fn push(&mut self, input: &mut Cursor<'_>, rows: usize) -> Result<(), Error> {
        match &self.layout {
            Layout::Fixed(width) => {
                let bytes = input.take_rows(rows, *width, &self.name)?;
                self.bytes.extend_from_slice(bytes);
            }
            Layout::Str => {
                for _ in 0..rows {
                    let value = input.string(&self.name)?;
                    self.bytes.extend_from_slice(value);
                    let end = to_u32(self.bytes.len(), &self.name)?;
                    self.ends.push(end);
                }
            }
            Layout::LowCardinality => self.push_low_cardinality(input, rows)?,
            Layout::Array(widths) => {
                let base = self.offsets.last().copied().unwrap_or(0);
                let mut last = 0u64;
                for _ in 0..rows {
                    let end = input.u64(&self.name)?;
                    // Every element takes at least a byte after the offsets.
                    if end < last || end > input.left() as u64 {
                        return Err(bad(&self.name, "array offsets out of order or range"));
                    }
                    last = end;
                    self.offsets.push(base + end);
                }
                for (values, width) in self.elements.iter_mut().zip(widths) {
                    let bytes = input.take_rows(last as usize, *width, &self.name)?;
                    values.extend_from_slice(bytes);
                }
            }
        }
        Ok(())
    }

    fn push_low_cardinality(&mut self, input: &mut Cursor<'_>, rows: usize) -> Result<(), Error> {
        if input.u64(&self.name)? != LC_VERSION {
            return Err(bad(&self.name, "LowCardinality version is not 1"));
        }
        let flags = input.u64(&self.name)?;
        if flags & LC_NEED_GLOBAL_DICTIONARY != 0 || flags & LC_HAS_ADDITIONAL_KEYS == 0 {
            return Err(bad(&self.name, "LowCardinality without a block dictionary"));
        }
        let width = match flags & 0xff {
            0 => 1,
            1 => 2,
            2 => 4,
            _ => {
                return Err(bad(
                    &self.name,
                    "LowCardinality index width is not 1, 2 or 4",
                ))
            }
        };
        let keys = input.u64(&self.name)?;
        if keys > input.left() as u64 {
            return Err(bad(
                &self.name,
                "LowCardinality dictionary longer than the block",
            ));
        }
        let mut local_ids = std::mem::take(&mut self.local_ids);
        local_ids.clear();
        for _ in 0..keys {
            let value = input.string(&self.name);
            match value.and_then(|v| self.intern(v)) {
                Ok(id) => local_ids.push(id),
                Err(error) => {
                    self.local_ids = local_ids;
                    return Err(error);
                }
            }
        }
        self.local_ids = local_ids;
        if input.u64(&self.name)? != rows as u64 {
            return Err(bad(
                &self.name,
                "LowCardinality index count differs from the rows",
            ));
        }
        let indexes = input.take_rows(rows, width, &self.name)?;
        for index in indexes.chunks_exact(width) {
            let mut word = [0u8; 4];
            word[..width].copy_from_slice(index);
            let local = u32::from_le_bytes(word) as usize;
            let Some(&id) = self.local_ids.get(local) else {
                return Err(bad(
                    &self.name,
                    "LowCardinality index outside its dictionary",
                ));
            };
            self.ids.push(id);
        }
        Ok(())
    }

    /// Appends this column's body, rows in `order`.
    fn write(&self, order: &[u32], out: &mut Vec<u8>) {
        match &self.layout {
            Layout::Fixed(width) => gather_fixed(&self.bytes, *width, order, out),
            Layout::Str => {
                for &row in order {
                    let row = row as usize;
                    let start = if row == 0 {
                        0
                    } else {
                        self.ends[row - 1] as usize
                    };
                    put_str(out, &self.bytes[start..self.ends[row] as usize]);
                }
            }
            Layout::LowCardinality => {
                out.extend_from_slice(&LC_VERSION.to_le_bytes());
                let keys = (0..self.dict_ends.len()).map(|id| self.dict_entry(id as u32));
                let indexes = order.iter().map(|&row| self.ids[row as usize]);
                write_low_cardinality_keys(out, keys, indexes);
            }
            Layout::Array(widths) => {
                let range = |row: u32| {
                    let row = row as usize;
                    let start = if row == 0 { 0 } else { self.offsets[row - 1] };
                    (start as usize, self.offsets[row] as usize)
                };
                let mut end = 0u64;
                let start = out.len();
                out.resize(start + order.len() * 8, 0);
                for (dst, &row) in out[start..].chunks_exact_mut(8).zip(order) {
                    let (from, to) = range(row);
                    end += (to - from) as u64;
                    dst.copy_from_slice(&end.to_le_bytes());
                }
                for (values, &width) in self.elements.iter().zip(widths) {
                    let start = out.len();
                    out.resize(start + end as usize * width, 0);
                    gather_ranges(values, width, order, range, &mut out[start..]);
                }
            }
        }
    }
}

/// Appends rows of `width` bytes from `bytes` in `order`. The common widths get a copy
/// of constant size, which compiles to one load and store.
fn gather_fixed(bytes: &[u8], width: usize, order: &[u32], out: &mut Vec<u8>) {
    fn gather<const W: usize>(bytes: &[u8], order: &[u32], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + order.len() * W, 0);
        for (dst, &row) in out[start..].chunks_exact_mut(W).zip(order) {
            let from = row as usize * W;
            let value: [u8; W] = bytes[from..from + W].try_into().expect("W bytes");
            dst.copy_from_slice(&value);
        }
    }
    match width {
        1 => gather::<1>(bytes, order, out),
        2 => gather::<2>(bytes, order, out),
        4 => gather::<4>(bytes, order, out),
        8 => gather::<8>(bytes, order, out),
        16 => gather::<16>(bytes, order, out),
        _ => {
            out.reserve(order.len() * width);
            for &row in order {
                let from = row as usize * width;
                out.extend_from_slice(&bytes[from..from + width]);
            }
        }
    }
}

/// Fills `out` with each row's elements (`range` gives them, in elements) in `order`.
/// A row holds a handful of elements (five book levels): copies of a constant width
/// per element beat a `memcpy` call per row by a wide margin.
fn gather_ranges(
    values: &[u8],
    width: usize,
    order: &[u32],
    range: impl Fn(u32) -> (usize, usize),
    out: &mut [u8],
) {
    fn gather<const W: usize>(
        values: &[u8],
        order: &[u32],
        range: impl Fn(u32) -> (usize, usize),
        out: &mut [u8],
    ) {
        let mut at = 0;
        for &row in order {
            let (from, to) = range(row);
            let src = &values[from * W..to * W];
            let dst = &mut out[at..at + src.len()];
            for (d, s) in dst.chunks_exact_mut(W).zip(src.chunks_exact(W)) {
                let value: [u8; W] = s.try_into().expect("W bytes");
                d.copy_from_slice(&value);
            }
            at += src.len();
        }
    }
    match width {
        1 => gather::<1>(values, order, range, out),
        2 => gather::<2>(values, order, range, out),
        4 => gather::<4>(values, order, range, out),
        8 => gather::<8>(values, order, range, out),
        _ => {
            let mut at = 0;
            for &row in order {
                let (from, to) = range(row);
                let src = &values[from * width..to * width];
                out[at..at + src.len()].copy_from_slice(src);
                at += src.len();
            }
        }
    }
}

fn to_u32(value: usize, column: &str) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| bad(column, "more than 4 GiB of strings"))
}

fn bad(column: &str, what: &str) -> Error {
    Error::Protocol(format!("block to merge, column `{column}`: {what}"))
}

/// A reader over a byte slice; every read is bounds-checked and names the column.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        if n > self.left() {
            return Err(bad(what, "the block ends early"));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    /// `rows` values of `width` bytes.
    fn take_rows(&mut self, rows: usize, width: usize, what: &str) -> Result<&'a [u8], Error> {
        let n = rows
            .checked_mul(width)
            .ok_or_else(|| bad(what, "the block ends early"))?;
        self.take(n, what)
    }

    fn u64(&mut self, what: &str) -> Result<u64, Error> {
        let bytes = self.take(8, what)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn varuint(&mut self, what: &str) -> Result<u64, Error> {
        let mut rest = &self.bytes[self.pos..];
        let value = get_varuint(&mut rest)
            .map_err(|_| bad(what, "a VarUInt cut short or longer than 10 bytes"))?;
        self.pos = self.bytes.len() - rest.len();
        Ok(value)
    }

    fn string(&mut self, what: &str) -> Result<&'a [u8], Error> {
        let len = self.varuint(what)?;
        if len > self.left() as u64 {
            return Err(bad(what, "a string longer than the block"));
        }
        self.take(len as usize, what)
    }
}

/// Merges blocks of one header into one block ordered by key columns.
pub struct SortedMerge {
    columns: Vec<Column>,
    key: Vec<KeyPart>,
    rows: usize,
    /// Rows the caller said the merge will hold ([`SortedMerge::expect_rows`]).
    expected: usize,
    /// `key << 32 | row`, sorted by [`SortedMerge::write`].
    entries: Vec<u128>,
    /// The row numbers in key order.
    order: Vec<u32>,
    /// Decompressed bytes of the packet being pushed.
    raw: Vec<u8>,
}

impl SortedMerge {
    /// A merge of blocks with `header` (`(name, type)` in order), sorted by the longest
    /// prefix of `key` whose columns the header has. Every column must be of a type
    /// this module moves (fixed width, `String`, `LowCardinality(String)`, arrays of
    /// fixed-width values or tuples of them), and the key columns integers, dates or
    /// times of at most 96 bits together; otherwise an error says which column.
    pub fn new(header: &[(String, String)], key: &[&str]) -> Result<SortedMerge, Error> {
        let mut columns = Vec::with_capacity(header.len());
        for (name, type_name) in header {
            let ty = ColumnType::parse(type_name)?;
            let layout = Layout::of(&ty).ok_or_else(|| {
                Error::SchemaMismatch(format!(
                    "column `{name} {type_name}` is of a type the merge does not move"
                ))
            })?;
            columns.push((Column::new(name, type_name, layout), ty));
        }
        let mut parts = Vec::new();
        let mut bits = 0;
        for name in key {
            let Some(index) = columns.iter().position(|(c, _)| c.name == *name) else {
                break;
            };
            let ty = &columns[index].1;
            let signed = match ty {
                ColumnType::UInt8
                | ColumnType::UInt16
                | ColumnType::UInt32
                | ColumnType::UInt64
                | ColumnType::Date
                | ColumnType::DateTime(_) => false,
                ColumnType::Int8
                | ColumnType::Int16
                | ColumnType::Int32
                | ColumnType::Int64
                | ColumnType::DateTime64(..) => true,
                _ => {
                    return Err(Error::SchemaMismatch(format!(
                        "key column `{name}` is not an integer, date or time"
                    )))
                }
            };
            let width = ty.fixed_width().expect("integers have a width");
            bits += 8 * width as u32;
            if bits > KEY_BITS_MAX {
                return Err(Error::SchemaMismatch(format!(
                    "the key up to `{name}` is wider than {KEY_BITS_MAX} bits"
                )));
            }
            parts.push(KeyPart {
                column: index,
                width,
                signed,
            });
        }
        if parts.is_empty() {
            return Err(Error::SchemaMismatch(format!(
                "no key column ({}) in the header",
                key.join(", ")
            )));
        }
        Ok(SortedMerge {
            columns: columns.into_iter().map(|(c, _)| c).collect(),
            key: parts,
            rows: 0,
            expected: 0,
            entries: Vec::new(),
            order: Vec::new(),
            raw: Vec::new(),
        })
    }

    /// Rows pushed since the last [`SortedMerge::clear`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Forgets every row, keeping the buffers.
    pub fn clear(&mut self) {
        self.columns.iter_mut().for_each(Column::clear);
        self.rows = 0;
        self.expected = 0;
    }

    /// Says how many rows the pushes until the next [`SortedMerge::clear`] bring in all
    /// (the inserter knows from the journal's headers): the first block then sizes the
    /// buffers for all of them. A hint only; a wrong one costs growth, not rows.
    pub fn expect_rows(&mut self, rows: usize) {
        self.expected = rows;
    }

    /// Appends the rows of one Data packet as a writer sends it (packet type, empty
    /// table name, then the block, in LZ4 or NONE frames when `compressed`). On an
    /// error nothing of this packet stays.
    pub fn push_packet(&mut self, packet: &[u8], compressed: bool) -> Result<(), Error> {
        let mut input = Cursor {
            bytes: packet,
            pos: 0,
        };
        if input.varuint("packet")? != super::protocol::client_packet::DATA
            || !input.string("packet")?.is_empty()
        {
            return Err(bad("packet", "not a Data packet with an empty table name"));
        }
        let body = &packet[input.pos..];
        if !compressed {
            return self.push_block(body);
        }
        // The frames' checksums are not verified: the journal record's CRC covers them.
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let result = decompress_frames_unchecked(body, &mut raw)
            .map_err(|e| bad("frame", &e.to_string()))
            .and_then(|()| self.push_block(&raw));
        self.raw = raw;
        result
    }

    /// Appends the rows of one raw Protocol-form block (BlockInfo first).
    pub fn push_block(&mut self, block: &[u8]) -> Result<(), Error> {
        let before = self.rows;
        let result = self.push_block_inner(block);
        if result.is_err() {
            self.columns.iter_mut().for_each(|c| c.truncate(before));
            self.rows = before;
        }
        result
    }

    fn push_block_inner(&mut self, block: &[u8]) -> Result<(), Error> {
        let mut input = Cursor {
            bytes: block,
            pos: 0,
        };
        if input.take(BLOCK_INFO.len(), "block")? != BLOCK_INFO {
            return Err(bad("block", "BlockInfo is not the one writers send"));
        }
        let columns = input.varuint("block")?;
        let rows = input.varuint("block")?;
        if columns != self.columns.len() as u64 {
            return Err(bad(
                "block",
                &format!("{columns} columns, the header has {}", self.columns.len()),
            ));
        }
        if rows > (MERGE_ROWS_MAX - self.rows) as u64 {
            return Err(bad("block", "more rows than one merge holds"));
        }
        let rows = rows as usize;
        for column in &mut self.columns {
            let name = input.string(&column.name)?;
            let type_name = input.string(&column.name)?;
            if name != column.name.as_bytes() || type_name != column.type_name.as_bytes() {
                return Err(bad(
                    &column.name,
                    &format!(
                        "the block has `{} {}` here",
                        String::from_utf8_lossy(name),
                        String::from_utf8_lossy(type_name)
                    ),
                ));
            }
            if rows > 0 {
                column.push(&mut input, rows)?;
                if self.rows == 0 && self.expected > rows {
                    column.reserve_like(rows, self.expected - rows);
                }
            }
        }
        if input.left() != 0 {
            return Err(bad("block", "bytes left after the last column"));
        }
        self.rows += rows;
        Ok(())
    }

    /// Appends every row pushed, in key order (arrival order among equal keys), as one
    /// raw block in `format`. Nothing is written for no rows.
    pub fn write(&mut self, format: BlockFormat, out: &mut Vec<u8>) {
        let mut piece = Vec::new();
        let written: Result<(), std::convert::Infallible> =
            self.write_pieces(format, &mut piece, &mut |bytes| {
                out.extend_from_slice(bytes);
                Ok(())
            });
        written.unwrap_or_else(|never| match never {});
    }

    /// [`SortedMerge::write`] a column at a time: each piece (the block's head, then
    /// each column with its name and type) is built in `piece` and handed to `sink`,
    /// so the block never sits whole in memory (the inserter streams it to the socket:
    /// half the memory a merge touches, and each column still in cache when sent).
    pub fn write_pieces<E>(
        &mut self,
        format: BlockFormat,
        piece: &mut Vec<u8>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.rows == 0 {
            return Ok(());
        }
        self.sort();
        piece.clear();
        if format == BlockFormat::Protocol {
            piece.extend_from_slice(&BLOCK_INFO);
        }
        put_varuint(piece, self.columns.len() as u64);
        put_varuint(piece, self.rows as u64);
        sink(piece)?;
        for column in &self.columns {
            piece.clear();
            // Sized once for the column (a name, a type, two VarUInts): no doubling.
            let most = 20 + column.name.len() + column.type_name.len();
            piece.reserve_exact(most + column.written_bytes_max());
            put_str(piece, column.name.as_bytes());
            put_str(piece, column.type_name.as_bytes());
            column.write(&self.order, piece);
            sink(piece)?;
        }
        Ok(())
    }

    /// Fills `order` with the row numbers in key order.
    fn sort(&mut self) {
        self.entries.clear();
        self.entries.reserve(self.rows);
        for row in 0..self.rows {
            let mut key = 0u128;
            for part in &self.key {
                let bytes = &self.columns[part.column].bytes;
                let at = row * part.width;
                let mut word = [0u8; 8];
                word[..part.width].copy_from_slice(&bytes[at..at + part.width]);
                let mut value = u64::from_le_bytes(word);
                if part.signed {
                    value ^= 1 << (8 * part.width - 1);
                }
                key = (key << (8 * part.width)) | u128::from(value);
            }
            self.entries.push((key << 32) | row as u128);
        }
        // Journal records are each in arrival order and often follow one another in
        // key order already (one instrument's ticks): check before sorting.
        if !self.entries.windows(2).all(|pair| pair[0] < pair[1]) {
            self.entries.sort_unstable();
        }
        self.order.clear();
        self.order
            .extend(self.entries.iter().map(|&entry| entry as u32));
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
