//! The merge against an oracle: blocks the tick builder seals (both schemas, LZ4 and
//! raw) decoded by the generic codec, concatenated, stable-sorted by the key; the
//! merged block must decode to the same rows in the same order. Then every way a
//! pushed packet can be wrong.

use super::*;
use crate::model::synthetic::{SplitMix64, SyntheticTicks};
use crate::model::{SealedBlock, Tick};
use crate::native::{Block, Method, Value};
use crate::shard::{TickColumns, TickSchema};

const KEY: [&str; 3] = ["instrument_token", "timestamp", "timestamp_ms"];

/// Ticks of 300 instruments in arrival order, their times drawn from a 40 ms window
/// so that many share a key, and their books of 0 to 5 levels.
fn ticks(count: usize, seed: u64) -> Vec<Tick> {
    let mut feed = SyntheticTicks::new(300, seed);
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|i| {
            let at = 1_764_000_000_000 + rng.below(40) as i64;
            let mut tick = feed.next_tick(at, at + 1, 1_000 + i as u64);
            tick.depth_buy.len = rng.below(6) as u8;
            tick.depth_sell.len = rng.below(6) as u8;
            tick
        })
        .collect()
}

/// Sealed Data packets of `rows` ticks each (the last shorter).
fn packets(
    schema: &TickSchema,
    compression: Option<Method>,
    ticks: &[Tick],
    rows: usize,
) -> Vec<Vec<u8>> {
    let mut columns = TickColumns::new(rows);
    let mut sealed = SealedBlock::with_capacity(rows);
    ticks
        .chunks(rows)
        .map(|chunk| {
            chunk.iter().for_each(|t| assert!(columns.append(t)));
            columns.seal(schema, compression, &mut sealed);
            sealed.bytes.clone()
        })
        .collect()
}

/// The rows of a raw Protocol-form block, each a vector of column values.
fn rows_of(block: &[u8]) -> (Vec<String>, Vec<Vec<Value>>) {
    let block = Block::decode(BlockFormat::Protocol, &mut &block[..]).expect("block decodes");
    let names = block.columns.iter().map(|c| c.name.clone()).collect();
    let rows = (0..block.rows as usize)
        .map(|row| block.columns.iter().map(|c| c.values.get(row)).collect())
        .collect();
    (names, rows)
}

/// The block of a raw (uncompressed) Data packet: past the type and table name.
fn block_of(packet: &[u8]) -> &[u8] {
    assert_eq!(&packet[..2], &[2, 0], "a Data packet with no table name");
    &packet[2..]
}

fn key_of(names: &[String], row: &[Value]) -> Vec<i128> {
    KEY.iter()
        .filter_map(|k| names.iter().position(|n| n == k))
        .map(|i| match &row[i] {
            Value::UInt(v) => i128::from(*v),
            Value::Int(v) => i128::from(*v),
            other => panic!("key value {other:?}"),
        })
        .collect()
}

/// What the merge must produce: every raw packet's rows, stable-sorted by the key.
fn expected(raw_packets: &[Vec<u8>]) -> (Vec<String>, Vec<Vec<Value>>) {
    let mut names = Vec::new();
    let mut all = Vec::new();
    for packet in raw_packets {
        let (n, rows) = rows_of(block_of(packet));
        names = n;
        all.extend(rows);
    }
    all.sort_by_key(|row| key_of(&names, row));
    (names, all)
}

fn merged(merge: &mut SortedMerge) -> Vec<u8> {
    let mut out = Vec::new();
    merge.write(BlockFormat::Protocol, &mut out);
    out
}

#[test]
fn blocks_of_both_schemas_merge_into_key_order_row_for_row() {
    let ticks = ticks(5_000, 7);
    for schema in [TickSchema::legacy(), TickSchema::modern()] {
        // Blocks of different sizes, as the shards seal them on size or age.
        let raw = packets(&schema, None, &ticks, 1_300);
        let (names, want) = expected(&raw);
        let mut sorted = 0;
        for compression in [None, Some(Method::Lz4)] {
            let input = packets(&schema, compression, &ticks, 1_300);
            let mut merge = SortedMerge::new(&schema.header(), &KEY).unwrap();
            for packet in &input {
                merge.push_packet(packet, compression.is_some()).unwrap();
            }
            assert_eq!(merge.rows(), ticks.len());
            let out = merged(&mut merge);
            let (got_names, got) = rows_of(&out);
            assert_eq!(got_names, names);
            assert_eq!(got.len(), want.len());
            for (row, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "row {row} ({compression:?})");
            }
            sorted += 1;
        }
        assert_eq!(sorted, 2);
    }
}

#[test]
fn a_merge_is_reusable_and_its_dictionary_starts_afresh() {
    let schema = TickSchema::modern();
    let first = ticks(2_000, 1);
    let second: Vec<Tick> = ticks(700, 2).into_iter().take(50).collect();
    let mut merge = SortedMerge::new(&schema.header(), &KEY).unwrap();
    for packet in packets(&schema, Some(Method::Lz4), &first, 512) {
        merge.push_packet(&packet, true).unwrap();
    }
    let _ = merged(&mut merge);
    merge.clear();
    assert_eq!(merge.rows(), 0);
    let raw = packets(&schema, None, &second, 512);
    for packet in &raw {
        merge.push_packet(packet, false).unwrap();
    }
    let out = merged(&mut merge);
    assert_eq!(rows_of(&out), expected(&raw));
    // 50 ticks of 50 instruments: a dictionary of 50, one-byte indexes, nothing left
    // over from the 300 symbols of the first merge.
    let needle = b"tradingsymbol\x16LowCardinality(String)";
    let at = out.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len();
    let flags = u64::from_le_bytes(out[at + 8..at + 16].try_into().unwrap());
    let keys = u64::from_le_bytes(out[at + 16..at + 24].try_into().unwrap());
    assert_eq!((flags & 0xff, keys), (0, 50));
}

#[test]
fn nothing_is_written_for_no_rows_and_empty_blocks_are_taken() {
    let schema = TickSchema::legacy();
    let mut merge = SortedMerge::new(&schema.header(), &KEY).unwrap();
    let mut empty = Vec::new();
    TickColumns::new(8).encode(&schema, BlockFormat::Protocol, &mut empty);
    merge.push_block(&empty).unwrap();
    assert_eq!(merge.rows(), 0);
    assert!(merged(&mut merge).is_empty());
}

#[test]
fn a_packet_that_is_wrong_anywhere_is_refused_and_leaves_the_merge_as_it_was() {
    let schema = TickSchema::modern();
    let ticks = ticks(600, 3);
    let good = packets(&schema, None, &ticks[..300], 300);
    let bad_source = packets(&schema, Some(Method::Lz4), &ticks[300..], 300);
    let mut merge = SortedMerge::new(&schema.header(), &KEY).unwrap();
    merge.push_packet(&good[0], false).unwrap();
    // Cut anywhere, compressed or raw: an error, never a panic, and no rows kept.
    for compressed in [true, false] {
        let packet = if compressed { &bad_source[0] } else { &good[0] };
        for cut in 0..packet.len() - 1 {
            let result = merge.push_packet(&packet[..cut], compressed);
            assert!(result.is_err(), "a packet cut at {cut} was taken");
            assert_eq!(merge.rows(), 300);
        }
    }
    // Not a Data packet; a compressed packet read as raw and the other way round.
    let mut other = good[0].clone();
    other[0] = 3;
    assert!(merge.push_packet(&other, false).is_err());
    assert!(merge.push_packet(&bad_source[0], false).is_err());
    assert!(merge.push_packet(&good[0], true).is_err());
    // A block of the other schema.
    let legacy = packets(&TickSchema::legacy(), None, &ticks[..10], 10);
    let error = merge.push_packet(&legacy[0], false).unwrap_err();
    assert!(error.to_string().contains("columns"), "{error}");
    // A LowCardinality index past its dictionary.
    let mut raw = good[0].clone();
    let needle = b"LowCardinality(String)";
    let at = raw.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len();
    let keys = u64::from_le_bytes(raw[at + 16..at + 24].try_into().unwrap()) as usize;
    let mut pos = at + 24;
    for _ in 0..keys {
        pos += 1 + raw[pos] as usize;
    }
    raw[pos + 8] = 0xff;
    let error = merge.push_packet(&raw, false).unwrap_err();
    assert!(
        error.to_string().contains("outside its dictionary"),
        "{error}"
    );
    // Trailing bytes after the last column.
    let mut long = good[0].clone();
    long.push(0);
    assert!(merge.push_packet(&long, false).is_err());
    // Through all of it the merge kept exactly the first packet, and still works.
    assert_eq!(merge.rows(), 300);
    merge.push_packet(&bad_source[0], true).unwrap();
    let raw_second = packets(&schema, None, &ticks[300..], 300);
    let out = merged(&mut merge);
    assert_eq!(
        rows_of(&out),
        expected(&[good[0].clone(), raw_second[0].clone()])
    );
}

#[test]
fn headers_the_merge_cannot_move_or_sort_are_refused_with_the_column_named() {
    let header = |cols: &[(&str, &str)]| -> Vec<(String, String)> {
        cols.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };
    let cases = [
        (
            header(&[("instrument_token", "UInt32"), ("x", "Nullable(UInt8)")]),
            "`x Nullable(UInt8)`",
        ),
        (
            header(&[("instrument_token", "Float64")]),
            "`instrument_token`",
        ),
        (
            header(&[
                ("instrument_token", "UInt32"),
                ("timestamp", "Int64"),
                ("timestamp_ms", "UInt16"),
            ]),
            "`timestamp_ms`",
        ),
        (header(&[("price", "Float64")]), "no key column"),
    ];
    for (header, named) in cases {
        let error = SortedMerge::new(&header, &KEY).err().expect("refused");
        assert!(error.to_string().contains(named), "{error} lacks {named}");
    }
}

#[test]
fn signed_and_narrow_keys_order_numerically() {
    // Int16 keys across zero, then a UInt8: the sign bit flip puts -2 before 1.
    let header = vec![
        ("instrument_token".to_owned(), "Int16".to_owned()),
        ("timestamp".to_owned(), "UInt8".to_owned()),
    ];
    let mut block = Vec::new();
    block.extend_from_slice(&BLOCK_INFO);
    put_varuint(&mut block, 2);
    put_varuint(&mut block, 4);
    put_str(&mut block, b"instrument_token");
    put_str(&mut block, b"Int16");
    for v in [1i16, -2, 300, -2] {
        block.extend_from_slice(&v.to_le_bytes());
    }
    put_str(&mut block, b"timestamp");
    put_str(&mut block, b"UInt8");
    block.extend_from_slice(&[5, 9, 0, 3]);
    let mut merge = SortedMerge::new(&header, &KEY).unwrap();
    merge.push_block(&block).unwrap();
    let (_, rows) = rows_of(&merged(&mut merge));
    let keys: Vec<(Value, Value)> = rows
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(
        keys,
        [(-2, 3), (-2, 9), (1, 5), (300, 0)]
            .map(|(a, b)| (Value::Int(a), Value::UInt(b)))
            .to_vec()
    );
}
