//! Blocks: a set of named, typed columns of equal length, as carried in a Data packet
//! or stored in a Native file (protocol notes §6.2).
//!
//! | part | type | notes |
//! | --- | --- | --- |
//! | BlockInfo | field id + value pairs, `0` ends | protocol only; we write `01 00 02 ff ff ff ff 00` |
//! | columns, rows | `VarUInt` ×2 | |
//! | per column: name, type | `String` ×2 | |
//! | per column: data | prefix + body | only when rows > 0 |
//!
//! A Native *file* is the same without BlockInfo. We announce revision 54429, below the
//! per-column custom-serialization byte (54454), so no such byte is ever read or written.

use std::io::Read;

use super::column::{read_body, read_prefix, write_body, write_prefix, Values};
use super::types::ColumnType;
use super::wire::{get_array, get_string, get_u8, get_varuint, put_str, put_varuint};
use super::Error;

/// BlockInfo as ClickHouse writes it: field 1 `is_overflows = 0`, field 2
/// `bucket_num = -1`, end.
pub const BLOCK_INFO: [u8; 8] = [0x01, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00];

/// Most columns a block may have: far above any table of ours, low enough to refuse a
/// corrupt count before allocating.
pub const BLOCK_COLUMNS_MAX: u64 = 4096;

pub use crate::model::block::BlockFormat;

/// One named, typed column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Column name as the server spells it (`depth_buy.1` on 18.16 for tuple parts).
    pub name: String,
    /// The type exactly as the server wrote it, echoed back on INSERT.
    pub type_name: String,
    /// The parsed type.
    pub ty: ColumnType,
    /// The rows.
    pub values: Values,
}

impl Column {
    /// Builds a column, parsing its type name.
    pub fn new(name: &str, type_name: &str, values: Values) -> Result<Column, Error> {
        Ok(Column {
            name: name.to_string(),
            type_name: type_name.to_string(),
            ty: ColumnType::parse(type_name)?,
            values,
        })
    }
}

/// A decoded or hand-built block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Block {
    /// Row count; every column holds this many rows.
    pub rows: u64,
    /// The columns in order.
    pub columns: Vec<Column>,
}

impl Block {
    /// A block from columns, checking that their lengths agree.
    pub fn new(columns: Vec<Column>) -> Result<Block, Error> {
        let rows = columns.first().map_or(0, |c| c.values.len());
        for column in &columns {
            if column.values.len() != rows {
                return Err(Error::SchemaMismatch(format!(
                    "column `{}` has {} rows, the first column {rows}",
                    column.name,
                    column.values.len()
                )));
            }
        }
        Ok(Block {
            rows: rows as u64,
            columns,
        })
    }

    /// The column of that name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// `(name, type)` pairs, the shape a server header is compared by.
    pub fn header(&self) -> Vec<(String, String)> {
        self.columns
            .iter()
            .map(|c| (c.name.clone(), c.type_name.clone()))
            .collect()
    }

    /// Appends the encoded block.
    pub fn encode(&self, format: BlockFormat, out: &mut Vec<u8>) -> Result<(), Error> {
        if format == BlockFormat::Protocol {
            out.extend_from_slice(&BLOCK_INFO);
        }
        put_varuint(out, self.columns.len() as u64);
        put_varuint(out, self.rows);
        for column in &self.columns {
            put_str(out, column.name.as_bytes());
            put_str(out, column.type_name.as_bytes());
            if self.rows > 0 {
                write_prefix(&column.ty, out);
                write_body(&column.ty, &column.values, out)?;
            }
        }
        Ok(())
    }

    /// Reads one block.
    pub fn decode<R: Read + ?Sized>(format: BlockFormat, input: &mut R) -> Result<Block, Error> {
        if format == BlockFormat::Protocol {
            read_block_info(input)?;
        }
        let column_count = get_varuint(input)?;
        if column_count > BLOCK_COLUMNS_MAX {
            return Err(Error::Protocol(format!(
                "block of {column_count} columns exceeds the {BLOCK_COLUMNS_MAX}-column limit"
            )));
        }
        let rows = get_varuint(input)?;
        let mut columns = Vec::with_capacity(column_count as usize);
        for _ in 0..column_count {
            let name = get_string(input)?;
            let type_name = get_string(input)?;
            let ty = ColumnType::parse(&type_name)?;
            let values = if rows > 0 {
                read_prefix(&ty, input)?;
                read_body(&ty, rows, input)?
            } else {
                empty_values(&ty)
            };
            columns.push(Column {
                name,
                type_name,
                ty,
                values,
            });
        }
        Ok(Block { rows, columns })
    }
}

/// Skips BlockInfo, accepting any subset of the known fields.
fn read_block_info<R: Read + ?Sized>(input: &mut R) -> Result<(), Error> {
    // Three known fields; a well-formed BlockInfo has at most that many before the end.
    for _ in 0..4 {
        match get_varuint(input)? {
            0 => return Ok(()),
            1 => {
                get_u8(input)?;
            }
            2 => {
                get_array::<4, _>(input)?;
            }
            3 => {
                let count = get_varuint(input)?;
                if count > 1 << 16 {
                    return Err(Error::Protocol(format!("BlockInfo lists {count} buckets")));
                }
                for _ in 0..count {
                    get_array::<4, _>(input)?;
                }
            }
            field => return Err(Error::Protocol(format!("unknown BlockInfo field {field}"))),
        }
    }
    Err(Error::Protocol("BlockInfo does not end".into()))
}

/// Zero rows of the physical form of `ty`, so header blocks hold typed empty columns.
pub fn empty_values(ty: &ColumnType) -> Values {
    match ty {
        ColumnType::UInt8 | ColumnType::Bool => Values::U8(Vec::new()),
        ColumnType::UInt16 | ColumnType::Date => Values::U16(Vec::new()),
        ColumnType::UInt32 | ColumnType::DateTime(_) => Values::U32(Vec::new()),
        ColumnType::UInt64 => Values::U64(Vec::new()),
        ColumnType::Int8 | ColumnType::Enum8(_) => Values::I8(Vec::new()),
        ColumnType::Int16 | ColumnType::Enum16(_) => Values::I16(Vec::new()),
        ColumnType::Int32 => Values::I32(Vec::new()),
        ColumnType::Int64 | ColumnType::DateTime64(..) => Values::I64(Vec::new()),
        ColumnType::Float32 => Values::F32(Vec::new()),
        ColumnType::Float64 => Values::F64(Vec::new()),
        ColumnType::Decimal(p, _) => match super::types::decimal_width(*p) {
            4 => Values::I32(Vec::new()),
            8 => Values::I64(Vec::new()),
            _ => Values::I128(Vec::new()),
        },
        ColumnType::String | ColumnType::FixedString(_) => Values::Bytes(Vec::new()),
        ColumnType::Nullable(inner) => Values::Nullable(Vec::new(), Box::new(empty_values(inner))),
        ColumnType::LowCardinality(inner) => empty_values(inner),
        ColumnType::Array(inner) => Values::Array(Vec::new(), Box::new(empty_values(inner))),
        ColumnType::Tuple(elements) => {
            Values::Tuple(elements.iter().map(|(_, t)| empty_values(t)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    //! Block framing: the end marker bytes and a round trip in both formats.
    use super::*;

    /// Inputs cargo-fuzz found (hex): a few bytes whose header claims 2^26 rows of
    /// UInt64 (512 MiB) or of FixedString(1048576) (64 TiB). Each must fail on the
    /// missing bytes, having allocated only about what arrived.
    #[test]
    fn a_header_claiming_huge_columns_costs_only_what_arrived() {
        fn bytes(hex: &str) -> Vec<u8> {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        }
        for hex in [
            "0400018080802001610655496e743634",
            "040001808080200161144669786564537472696e67283130343835373629",
        ] {
            let input = bytes(hex);
            let result = Block::decode(BlockFormat::File, &mut input.as_slice());
            assert!(result.is_err(), "{hex}");
        }
    }

    #[test]
    fn end_marker_bytes_match_the_notes() {
        let mut out = Vec::new();
        Block::default()
            .encode(BlockFormat::Protocol, &mut out)
            .unwrap();
        assert_eq!(
            out,
            [0x01, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00]
        );
    }

    #[test]
    fn blocks_round_trip_in_both_formats() {
        let block = Block::new(vec![
            Column::new("a", "UInt32", Values::U32(vec![1, 2])).unwrap(),
            Column::new(
                "s",
                "LowCardinality(String)",
                Values::Bytes(vec![b"x".to_vec(), b"y".to_vec()]),
            )
            .unwrap(),
        ])
        .unwrap();
        for format in [BlockFormat::Protocol, BlockFormat::File] {
            let mut out = Vec::new();
            block.encode(format, &mut out).unwrap();
            let mut input = &out[..];
            assert_eq!(Block::decode(format, &mut input).unwrap(), block);
            assert!(input.is_empty());
        }
    }

    #[test]
    fn uneven_columns_and_bad_block_info_are_refused() {
        let uneven = Block::new(vec![
            Column::new("a", "UInt8", Values::U8(vec![1])).unwrap(),
            Column::new("b", "UInt8", Values::U8(vec![])).unwrap(),
        ]);
        assert!(uneven.is_err());
        let bad_info = [0x07u8, 0x00];
        assert!(Block::decode(BlockFormat::Protocol, &mut &bad_info[..]).is_err());
    }
}
