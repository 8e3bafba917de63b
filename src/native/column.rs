//! Generic column codec: the Native encoding of every type in [`ColumnType`], for
//! SELECT results, ad-hoc INSERTs and as the slow, obviously right oracle the hot-path
//! tick encoder is tested against.
//!
//! Layout (protocol notes §7): counts inside column data are fixed `UInt64`; a column
//! first writes the state prefixes of all its nested parts (only `LowCardinality` has
//! one: version `1`), depth-first, then its body.
//!
//! | type | body |
//! | --- | --- |
//! | numbers, dates | rows × width, little-endian |
//! | `String` | per row `VarUInt len` + bytes |
//! | `FixedString(n)` | rows × n bytes |
//! | `Nullable(T)` | rows null bytes (1 = NULL), then the T body |
//! | `Array(T)` | rows × `UInt64` end offsets, then the T body of `last offset` rows |
//! | `Tuple(A, B)` | the A body, then the B body |
//! | `LowCardinality(T)` | `UInt64` flags (index width code, 0x200, 0x400), `UInt64` dictionary size, dictionary as a T body (Nullable stripped, entry 0 = NULL), `UInt64` index count, indexes |
//!
//! This codec allocates per column; it is off the hot path by design.

use std::collections::HashMap;
use std::io::Read;

use super::types::{decimal_width, ColumnType};
use super::wire::{get_array, get_bytes, get_u8, get_varuint, put_str, read_received};
use super::Error;

/// Most rows (or array elements) one column may hold in a block we read: 64 Mi.
/// A server never sends blocks near this (its default is 65,505 rows); a larger count
/// is a corrupt stream and is refused before anything is allocated.
pub const COLUMN_ROWS_MAX: u64 = 64 << 20;

/// LowCardinality key-serialization version "shared dictionaries with additional keys".
pub const LC_VERSION: u64 = 1;
/// LowCardinality flag: the block carries its own ("additional") keys.
pub const LC_HAS_ADDITIONAL_KEYS: u64 = 0x200;
/// LowCardinality flag: the dictionary is updated by this block.
const LC_NEED_UPDATE_DICTIONARY: u64 = 0x400;
/// LowCardinality flag: a global dictionary was sent (no client does this).
pub const LC_NEED_GLOBAL_DICTIONARY: u64 = 0x100;

/// Column values in their physical form. Logical meaning comes from the paired
/// [`ColumnType`]: `U32` holds `UInt32` and `DateTime`, `I64` holds `Int64`,
/// `DateTime64` and `Decimal64`, `LowCardinality(T)` is held as plain `T`.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Values {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    I128(Vec<i128>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// `String` and `FixedString` rows.
    Bytes(Vec<Vec<u8>>),
    /// End offsets per row, then all elements.
    Array(Vec<u64>, Box<Values>),
    /// One column per element.
    Tuple(Vec<Values>),
    /// Null map (1 = NULL), then the values (placeholders where NULL).
    Nullable(Vec<u8>, Box<Values>),
}

/// One row's value, for reading results and comparing in tests.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Value {
    UInt(u64),
    Int(i64),
    Int128(i128),
    Float(f64),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Tuple(Vec<Value>),
    Null,
}

macro_rules! for_numbers {
    ($values:expr, $v:ident => $body:expr, $other:pat => $fallback:expr) => {
        match $values {
            Values::U8($v) => $body,
            Values::U16($v) => $body,
            Values::U32($v) => $body,
            Values::U64($v) => $body,
            Values::I8($v) => $body,
            Values::I16($v) => $body,
            Values::I32($v) => $body,
            Values::I64($v) => $body,
            Values::I128($v) => $body,
            Values::F32($v) => $body,
            Values::F64($v) => $body,
            $other => $fallback,
        }
    };
}

impl Values {
    /// Number of rows.
    pub fn len(&self) -> usize {
        for_numbers!(self, v => v.len(), other => match other {
            Values::Bytes(v) => v.len(),
            Values::Array(offsets, _) => offsets.len(),
            Values::Tuple(columns) => columns.first().map_or(0, Values::len),
            Values::Nullable(nulls, _) => nulls.len(),
            _ => unreachable!("numbers handled above"),
        })
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of one row.
    ///
    /// # Panics
    /// When `row` is out of range (a caller bug).
    pub fn get(&self, row: usize) -> Value {
        match self {
            Values::U8(v) => Value::UInt(v[row].into()),
            Values::U16(v) => Value::UInt(v[row].into()),
            Values::U32(v) => Value::UInt(v[row].into()),
            Values::U64(v) => Value::UInt(v[row]),
            Values::I8(v) => Value::Int(v[row].into()),
            Values::I16(v) => Value::Int(v[row].into()),
            Values::I32(v) => Value::Int(v[row].into()),
            Values::I64(v) => Value::Int(v[row]),
            Values::I128(v) => Value::Int128(v[row]),
            Values::F32(v) => Value::Float(v[row].into()),
            Values::F64(v) => Value::Float(v[row]),
            Values::Bytes(v) => Value::Bytes(v[row].clone()),
            Values::Array(offsets, inner) => {
                let start = if row == 0 {
                    0
                } else {
                    offsets[row - 1] as usize
                };
                let end = offsets[row] as usize;
                Value::Array((start..end).map(|i| inner.get(i)).collect())
            }
            Values::Tuple(columns) => Value::Tuple(columns.iter().map(|c| c.get(row)).collect()),
            Values::Nullable(nulls, inner) => {
                if nulls[row] != 0 {
                    Value::Null
                } else {
                    inner.get(row)
                }
            }
        }
    }
}

impl Value {
    /// The value as `u64` when it is an unsigned integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::UInt(v) => Some(*v),
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// The value as `i64` when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::UInt(v) => i64::try_from(*v).ok(),
            Value::Int(v) => Some(*v),
            Value::Int128(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// The value as `f64` when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::UInt(v) => Some(*v as f64),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The value as text when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(v) => std::str::from_utf8(v).ok(),
            _ => None,
        }
    }
}

fn check_rows(rows: u64, what: &str) -> Result<usize, Error> {
    if rows > COLUMN_ROWS_MAX {
        return Err(Error::Protocol(format!(
            "{what} of {rows} rows exceeds the {COLUMN_ROWS_MAX}-row limit; the stream is corrupt"
        )));
    }
    Ok(rows as usize)
}

fn read_fixed<const N: usize, T, R: Read + ?Sized>(
    input: &mut R,
    rows: usize,
    convert: fn([u8; N]) -> T,
) -> Result<Vec<T>, Error> {
    let raw = read_received(input, rows * N)?;
    Ok(raw
        .chunks_exact(N)
        .map(|chunk| convert(chunk.try_into().expect("chunks_exact yields N bytes")))
        .collect())
}

/// Reads the state prefixes of a column (protocol notes §7.4).
pub fn read_prefix<R: Read + ?Sized>(ty: &ColumnType, input: &mut R) -> Result<(), Error> {
    match ty {
        ColumnType::LowCardinality(_) => {
            let version = u64::from_le_bytes(get_array(input)?);
            if version != LC_VERSION {
                return Err(Error::Protocol(format!(
                    "LowCardinality serialization version {version}, expected {LC_VERSION}"
                )));
            }
            Ok(())
        }
        ColumnType::Array(inner) | ColumnType::Nullable(inner) => read_prefix(inner, input),
        ColumnType::Tuple(elements) => elements.iter().try_for_each(|(_, t)| read_prefix(t, input)),
        _ => Ok(()),
    }
}

/// Reads a column body of `rows` rows, after its prefix was read.
pub fn read_body<R: Read + ?Sized>(
    ty: &ColumnType,
    rows: u64,
    input: &mut R,
) -> Result<Values, Error> {
    let n = check_rows(rows, "column")?;
    Ok(match ty {
        ColumnType::UInt8 | ColumnType::Bool => Values::U8(read_received(input, n)?),
        ColumnType::UInt16 | ColumnType::Date => {
            Values::U16(read_fixed(input, n, u16::from_le_bytes)?)
        }
        ColumnType::UInt32 | ColumnType::DateTime(_) => {
            Values::U32(read_fixed(input, n, u32::from_le_bytes)?)
        }
        ColumnType::UInt64 => Values::U64(read_fixed(input, n, u64::from_le_bytes)?),
        ColumnType::Int8 | ColumnType::Enum8(_) => {
            Values::I8(read_fixed(input, n, i8::from_le_bytes)?)
        }
        ColumnType::Int16 | ColumnType::Enum16(_) => {
            Values::I16(read_fixed(input, n, i16::from_le_bytes)?)
        }
        ColumnType::Int32 => Values::I32(read_fixed(input, n, i32::from_le_bytes)?),
        ColumnType::Int64 | ColumnType::DateTime64(..) => {
            Values::I64(read_fixed(input, n, i64::from_le_bytes)?)
        }
        ColumnType::Float32 => Values::F32(read_fixed(input, n, f32::from_le_bytes)?),
        ColumnType::Float64 => Values::F64(read_fixed(input, n, f64::from_le_bytes)?),
        ColumnType::Decimal(precision, _) => match decimal_width(*precision) {
            4 => Values::I32(read_fixed(input, n, i32::from_le_bytes)?),
            8 => Values::I64(read_fixed(input, n, i64::from_le_bytes)?),
            16 => Values::I128(read_fixed(input, n, i128::from_le_bytes)?),
            _ => {
                return Err(unsupported(
                    ty,
                    "256-bit decimals are not used by this project",
                ))
            }
        },
        ColumnType::String => {
            let mut v = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                v.push(get_bytes(input)?);
            }
            Values::Bytes(v)
        }
        ColumnType::FixedString(width) => {
            let len = n
                .checked_mul(*width)
                .ok_or_else(|| unsupported(ty, "too large"))?;
            let raw = read_received(input, len)?;
            Values::Bytes(raw.chunks_exact(*width).map(<[u8]>::to_vec).collect())
        }
        ColumnType::Nullable(inner) => {
            let nulls = read_received(input, n)?;
            Values::Nullable(nulls, Box::new(read_body(inner, rows, input)?))
        }
        ColumnType::Array(inner) => {
            let offsets = read_fixed(input, n, u64::from_le_bytes)?;
            let mut previous = 0;
            for &offset in &offsets {
                if offset < previous {
                    return Err(Error::Protocol(
                        "array offsets decrease; the stream is corrupt".into(),
                    ));
                }
                previous = offset;
            }
            check_rows(previous, "array elements")?;
            Values::Array(offsets, Box::new(read_body(inner, previous, input)?))
        }
        ColumnType::Tuple(elements) => Values::Tuple(
            elements
                .iter()
                .map(|(_, t)| read_body(t, rows, input))
                .collect::<Result<_, _>>()?,
        ),
        ColumnType::LowCardinality(inner) => read_low_cardinality(inner, n, input)?,
    })
}

fn unsupported(ty: &ColumnType, reason: &str) -> Error {
    Error::UnsupportedType {
        type_name: format!("{ty:?}"),
        reason: reason.into(),
    }
}

/// Reads a LowCardinality body and materialises it as plain values.
fn read_low_cardinality<R: Read + ?Sized>(
    inner: &ColumnType,
    n: usize,
    input: &mut R,
) -> Result<Values, Error> {
    let flags = u64::from_le_bytes(get_array(input)?);
    if flags & LC_NEED_GLOBAL_DICTIONARY != 0 {
        return Err(Error::Protocol(
            "LowCardinality global dictionaries are not supported".into(),
        ));
    }
    let (nullable, dict_type) = match inner {
        ColumnType::Nullable(t) => (true, t.as_ref()),
        t => (false, t),
    };
    let dict_len = u64::from_le_bytes(get_array(input)?);
    let dict = read_body(dict_type, dict_len, input)?;
    let index_count = u64::from_le_bytes(get_array(input)?);
    if index_count != n as u64 {
        return Err(Error::Protocol(format!(
            "LowCardinality index count {index_count} differs from the {n} rows of the column"
        )));
    }
    let indexes: Vec<u64> = match flags & 0xff {
        0 => read_fixed(input, n, u8::from_le_bytes)?
            .into_iter()
            .map(u64::from)
            .collect(),
        1 => read_fixed(input, n, u16::from_le_bytes)?
            .into_iter()
            .map(u64::from)
            .collect(),
        2 => read_fixed(input, n, u32::from_le_bytes)?
            .into_iter()
            .map(u64::from)
            .collect(),
        3 => read_fixed(input, n, u64::from_le_bytes)?,
        code => {
            return Err(Error::Protocol(format!(
                "LowCardinality index width code {code} is unknown"
            )))
        }
    };
    if let Some(&bad) = indexes.iter().find(|&&i| i >= dict_len) {
        return Err(Error::Protocol(format!(
            "LowCardinality index {bad} outside a dictionary of {dict_len}"
        )));
    }
    let picked = gather(&dict, &indexes);
    Ok(if nullable {
        let nulls = indexes.iter().map(|&i| u8::from(i == 0)).collect();
        Values::Nullable(nulls, Box::new(picked))
    } else {
        picked
    })
}

/// Values at the given positions, for dictionary lookups.
fn gather(dict: &Values, indexes: &[u64]) -> Values {
    fn pick<T: Clone>(v: &[T], indexes: &[u64]) -> Vec<T> {
        indexes.iter().map(|&i| v[i as usize].clone()).collect()
    }
    match dict {
        Values::U8(v) => Values::U8(pick(v, indexes)),
        Values::U16(v) => Values::U16(pick(v, indexes)),
        Values::U32(v) => Values::U32(pick(v, indexes)),
        Values::U64(v) => Values::U64(pick(v, indexes)),
        Values::I8(v) => Values::I8(pick(v, indexes)),
        Values::I16(v) => Values::I16(pick(v, indexes)),
        Values::I32(v) => Values::I32(pick(v, indexes)),
        Values::I64(v) => Values::I64(pick(v, indexes)),
        Values::I128(v) => Values::I128(pick(v, indexes)),
        Values::F32(v) => Values::F32(pick(v, indexes)),
        Values::F64(v) => Values::F64(pick(v, indexes)),
        Values::Bytes(v) => Values::Bytes(pick(v, indexes)),
        // Dictionaries hold only plain scalar types; the reader never builds others.
        other => other.clone(),
    }
}

/// Writes the state prefixes of a column.
pub fn write_prefix(ty: &ColumnType, out: &mut Vec<u8>) {
    match ty {
        ColumnType::LowCardinality(_) => out.extend_from_slice(&LC_VERSION.to_le_bytes()),
        ColumnType::Array(inner) | ColumnType::Nullable(inner) => write_prefix(inner, out),
        ColumnType::Tuple(elements) => elements.iter().for_each(|(_, t)| write_prefix(t, out)),
        _ => {}
    }
}

fn mismatch(ty: &ColumnType, values: &Values) -> Error {
    Error::SchemaMismatch(format!(
        "values {} do not fit type {ty:?}",
        values_kind(values)
    ))
}

fn values_kind(values: &Values) -> &'static str {
    match values {
        Values::U8(_) => "U8",
        Values::U16(_) => "U16",
        Values::U32(_) => "U32",
        Values::U64(_) => "U64",
        Values::I8(_) => "I8",
        Values::I16(_) => "I16",
        Values::I32(_) => "I32",
        Values::I64(_) => "I64",
        Values::I128(_) => "I128",
        Values::F32(_) => "F32",
        Values::F64(_) => "F64",
        Values::Bytes(_) => "Bytes",
        Values::Array(..) => "Array",
        Values::Tuple(_) => "Tuple",
        Values::Nullable(..) => "Nullable",
    }
}

/// Writes a column body.
pub fn write_body(ty: &ColumnType, values: &Values, out: &mut Vec<u8>) -> Result<(), Error> {
    match (ty, values) {
        (ColumnType::UInt8 | ColumnType::Bool, Values::U8(v)) => out.extend_from_slice(v),
        (ColumnType::UInt16 | ColumnType::Date, Values::U16(v)) => {
            v.iter().for_each(|x| out.extend(x.to_le_bytes()))
        }
        (ColumnType::UInt32 | ColumnType::DateTime(_), Values::U32(v)) => {
            v.iter().for_each(|x| out.extend(x.to_le_bytes()))
        }
        (ColumnType::UInt64, Values::U64(v)) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        (ColumnType::Int8 | ColumnType::Enum8(_), Values::I8(v)) => {
            v.iter().for_each(|x| out.extend(x.to_le_bytes()))
        }
        (ColumnType::Int16 | ColumnType::Enum16(_), Values::I16(v)) => {
            v.iter().for_each(|x| out.extend(x.to_le_bytes()))
        }
        (ColumnType::Int32, Values::I32(v)) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        (ColumnType::Int64 | ColumnType::DateTime64(..), Values::I64(v)) => {
            v.iter().for_each(|x| out.extend(x.to_le_bytes()))
        }
        (ColumnType::Float32, Values::F32(v)) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        (ColumnType::Float64, Values::F64(v)) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        (ColumnType::Decimal(p, _), Values::I32(v)) if decimal_width(*p) == 4 => {
            v.iter().for_each(|x| out.extend(x.to_le_bytes()))
        }
        (ColumnType::Decimal(p, _), Values::I64(v)) if decimal_width(*p) == 8 => {
            v.iter().for_each(|x| out.extend(x.to_le_bytes()))
        }
        (ColumnType::Decimal(p, _), Values::I128(v)) if decimal_width(*p) == 16 => {
            v.iter().for_each(|x| out.extend(x.to_le_bytes()))
        }
        (ColumnType::String, Values::Bytes(v)) => v.iter().for_each(|x| put_str(out, x)),
        (ColumnType::FixedString(width), Values::Bytes(v)) => {
            for x in v {
                if x.len() > *width {
                    return Err(Error::SchemaMismatch(format!(
                        "{} bytes do not fit FixedString({width})",
                        x.len()
                    )));
                }
                out.extend_from_slice(x);
                out.resize(out.len() + width - x.len(), 0);
            }
        }
        (ColumnType::Nullable(inner), Values::Nullable(nulls, v)) => {
            out.extend_from_slice(nulls);
            write_body(inner, v, out)?;
        }
        (ColumnType::Array(inner), Values::Array(offsets, v)) => {
            offsets.iter().for_each(|x| out.extend(x.to_le_bytes()));
            write_body(inner, v, out)?;
        }
        (ColumnType::Tuple(elements), Values::Tuple(columns))
            if elements.len() == columns.len() =>
        {
            for ((_, t), c) in elements.iter().zip(columns) {
                write_body(t, c, out)?;
            }
        }
        (ColumnType::LowCardinality(inner), _) => write_low_cardinality(inner, values, out)?,
        _ => return Err(mismatch(ty, values)),
    }
    Ok(())
}

/// Writes plain values as a LowCardinality body: builds the dictionary, then indexes.
/// Only `String` dictionaries (with or without Nullable) are needed by this project.
fn write_low_cardinality(
    inner: &ColumnType,
    values: &Values,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let (nulls, rows): (Option<&[u8]>, &[Vec<u8>]) = match (inner, values) {
        (ColumnType::String, Values::Bytes(v)) => (None, v),
        (ColumnType::Nullable(t), Values::Nullable(nulls, v)) if **t == ColumnType::String => {
            match v.as_ref() {
                Values::Bytes(v) => (Some(nulls), v),
                other => return Err(mismatch(inner, other)),
            }
        }
        _ => {
            return Err(unsupported(
                inner,
                "LowCardinality is written for String and Nullable(String) only",
            ))
        }
    };
    let mut dict: Vec<&[u8]> = Vec::new();
    if nulls.is_some() {
        dict.push(b""); // Entry 0 stands for NULL.
    }
    let mut positions: HashMap<&[u8], u64> = HashMap::new();
    let indexes: Vec<u64> = rows
        .iter()
        .enumerate()
        .map(|(row, value)| {
            if nulls.is_some_and(|n| n[row] != 0) {
                return 0;
            }
            *positions.entry(value.as_slice()).or_insert_with(|| {
                dict.push(value);
                dict.len() as u64 - 1
            })
        })
        .collect();
    write_low_cardinality_keys(out, dict.iter().copied(), indexes.iter().map(|&i| i as u32));
    Ok(())
}

/// Writes a `LowCardinality(String)` body after its version prefix, as every writer of
/// ours sends it: flags (index width by dictionary size, the block's own keys), the
/// keys, then one index per row. Shared by the generic codec, the tick builder and the
/// merge.
pub fn write_low_cardinality_keys<'a>(
    out: &mut Vec<u8>,
    keys: impl ExactSizeIterator<Item = &'a [u8]>,
    indexes: impl ExactSizeIterator<Item = u32>,
) {
    let (width_code, width) = match keys.len() {
        0..=0x100 => (0u64, 1usize),
        0x101..=0x1_0000 => (1, 2),
        _ => (2, 4),
    };
    let flags = width_code | LC_HAS_ADDITIONAL_KEYS | LC_NEED_UPDATE_DICTIONARY;
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    keys.for_each(|key| put_str(out, key));
    out.extend_from_slice(&(indexes.len() as u64).to_le_bytes());
    let start = out.len();
    out.resize(start + indexes.len() * width, 0);
    for (dst, index) in out[start..].chunks_exact_mut(width).zip(indexes) {
        dst.copy_from_slice(&index.to_le_bytes()[..width]);
    }
}

/// Reads a single byte flag (used by the block reader for the custom-serialization byte).
pub fn read_flag<R: Read + ?Sized>(input: &mut R) -> Result<u8, Error> {
    get_u8(input)
}

/// Reads a `VarUInt` (re-exported for the block reader).
pub fn read_count<R: Read + ?Sized>(input: &mut R) -> Result<u64, Error> {
    get_varuint(input)
}

#[cfg(test)]
mod tests {
    //! Round trips of every supported type through write then read, plus the known
    //! LowCardinality layout from the protocol notes.
    use super::*;

    fn round_trip(type_name: &str, values: Values) {
        let ty = ColumnType::parse(type_name).unwrap();
        let mut out = Vec::new();
        write_prefix(&ty, &mut out);
        write_body(&ty, &values, &mut out).unwrap();
        let mut input = &out[..];
        read_prefix(&ty, &mut input).unwrap();
        let back = read_body(&ty, values.len() as u64, &mut input).unwrap();
        assert!(input.is_empty(), "{type_name}: {} bytes left", input.len());
        assert_eq!(back, values, "{type_name}");
    }

    #[test]
    fn scalars_round_trip() {
        round_trip("UInt8", Values::U8(vec![0, 255]));
        round_trip("UInt64", Values::U64(vec![0, u64::MAX]));
        round_trip("Int32", Values::I32(vec![i32::MIN, -1, 7]));
        round_trip("Float64", Values::F64(vec![1.5, -0.0, f64::MAX]));
        round_trip("DateTime('UTC')", Values::U32(vec![1_764_000_000]));
        round_trip("DateTime64(3, 'UTC')", Values::I64(vec![1_764_000_000_123]));
        round_trip("Decimal(18, 4)", Values::I64(vec![123_400]));
        round_trip("Decimal(38, 2)", Values::I128(vec![-1]));
        round_trip("Enum8('a' = 1, 'b' = 2)", Values::I8(vec![1, 2, 1]));
        round_trip(
            "String",
            Values::Bytes(vec![b"".to_vec(), b"NIFTY".to_vec()]),
        );
        round_trip("FixedString(3)", Values::Bytes(vec![b"abc".to_vec()]));
    }

    #[test]
    fn composites_round_trip() {
        round_trip(
            "Nullable(Float64)",
            Values::Nullable(vec![0, 1], Box::new(Values::F64(vec![1.0, 0.0]))),
        );
        round_trip(
            "Array(Tuple(Float64, UInt32, UInt16))",
            Values::Array(
                vec![2, 2, 3],
                Box::new(Values::Tuple(vec![
                    Values::F64(vec![1.0, 2.0, 3.0]),
                    Values::U32(vec![10, 20, 30]),
                    Values::U16(vec![1, 2, 3]),
                ])),
            ),
        );
        round_trip(
            "LowCardinality(String)",
            Values::Bytes(vec![b"NSE".to_vec(), b"BSE".to_vec(), b"NSE".to_vec()]),
        );
        round_trip(
            "LowCardinality(Nullable(String))",
            Values::Nullable(
                vec![0, 1, 0],
                Box::new(Values::Bytes(vec![b"x".to_vec(), vec![], b"y".to_vec()])),
            ),
        );
        round_trip(
            "Array(LowCardinality(String))",
            Values::Array(
                vec![1, 3],
                Box::new(Values::Bytes(vec![
                    b"a".to_vec(),
                    b"b".to_vec(),
                    b"a".to_vec(),
                ])),
            ),
        );
    }

    #[test]
    fn low_cardinality_layout_matches_the_notes() {
        // ['k1', 'k2', 'k1'] -> version 1, flags 0x600, dict [k1, k2], indexes [0, 1, 0].
        let ty = ColumnType::parse("LowCardinality(String)").unwrap();
        let values = Values::Bytes(vec![b"k1".to_vec(), b"k2".to_vec(), b"k1".to_vec()]);
        let mut out = Vec::new();
        write_prefix(&ty, &mut out);
        write_body(&ty, &values, &mut out).unwrap();
        let mut expected = Vec::new();
        expected.extend(1u64.to_le_bytes());
        expected.extend(0x600u64.to_le_bytes());
        expected.extend(2u64.to_le_bytes());
        expected.extend(b"\x02k1\x02k2");
        expected.extend(3u64.to_le_bytes());
        expected.extend([0, 1, 0]);
        assert_eq!(out, expected);
    }

    #[test]
    fn corrupt_bodies_are_refused() {
        let ty = ColumnType::parse("Array(UInt8)").unwrap();
        let mut out = Vec::new();
        out.extend(5u64.to_le_bytes());
        out.extend(3u64.to_le_bytes()); // Offsets go down.
        assert!(read_body(&ty, 2, &mut &out[..]).is_err());
        assert!(read_body(&ty, COLUMN_ROWS_MAX + 1, &mut &out[..]).is_err());
        let lc = ColumnType::parse("LowCardinality(String)").unwrap();
        let mut bad = Vec::new();
        bad.extend(0x600u64.to_le_bytes());
        bad.extend(1u64.to_le_bytes());
        bad.extend(b"\x01a");
        bad.extend(1u64.to_le_bytes());
        bad.push(4); // Index 4 in a dictionary of 1.
        assert!(read_body(&lc, 1, &mut &bad[..]).is_err());
    }
}
