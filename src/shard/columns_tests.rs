//! The tick encoder against the generic column codec (the oracle): every column of a
//! sealed block, decoded generically, equals the ticks that went in; for both the
//! modern and the 18.16 layouts, compressed and not.
use super::*;
use crate::model::block::RECEIVED_SPREAD_MS;
use crate::model::synthetic::SyntheticTicks;
use crate::native::block::Block;
use crate::native::column::Value;
use crate::native::compress::FrameReader;
use crate::native::wire::{get_string, get_varuint};

fn ticks(n: usize) -> Vec<Tick> {
    let mut feed = SyntheticTicks::new(37, 11);
    (0..n)
        .map(|i| {
            let mut t = feed.next_tick(
                1_764_000_000_000 + i as i64 * 13,
                1_764_000_000_500 + i as i64,
                1000 + i as u64,
            );
            // Vary depth length so offsets are exercised.
            t.depth_sell.len = (i % 6) as u8;
            t
        })
        .collect()
}

fn decode_packet(bytes: &[u8], compressed: bool) -> Block {
    let mut input = bytes;
    assert_eq!(get_varuint(&mut input).unwrap(), 2, "Data packet");
    assert_eq!(get_string(&mut input).unwrap(), "");
    if compressed {
        let mut frames = FrameReader::new(&mut input);
        let block = Block::decode(BlockFormat::Protocol, &mut frames).unwrap();
        frames.finish().unwrap();
        assert!(input.is_empty());
        block
    } else {
        let block = Block::decode(BlockFormat::Protocol, &mut input).unwrap();
        assert!(input.is_empty());
        block
    }
}

fn check(block: &Block, ticks: &[Tick], modern: bool) {
    assert_eq!(block.rows as usize, ticks.len());
    let col = |name: &str| {
        block
            .column(name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .values
            .clone()
    };
    for (row, t) in ticks.iter().enumerate() {
        if modern {
            assert_eq!(col("timestamp").get(row), Value::Int(t.timestamp_ms));
        } else {
            assert_eq!(
                col("timestamp").get(row),
                Value::UInt((t.timestamp_ms / 1000) as u64)
            );
            assert_eq!(
                col("timestamp_ms").get(row),
                Value::UInt((t.timestamp_ms % 1000) as u64)
            );
            assert_eq!(
                col("received_at_ms").get(row),
                Value::UInt((t.received_at_ms % 1000) as u64)
            );
        }
        assert_eq!(
            col("instrument_token").get(row),
            Value::UInt(t.instrument_token.into())
        );
        assert_eq!(
            col("exchange").get(row),
            Value::Bytes(t.exchange.as_bytes().to_vec())
        );
        assert_eq!(
            col("tradingsymbol").get(row),
            Value::Bytes(t.tradingsymbol.as_bytes().to_vec())
        );
        assert_eq!(
            col("last_price").get(row),
            Value::Float(t.last_price.to_f64())
        );
        assert_eq!(col("volume_traded").get(row), Value::UInt(t.volume_traded));
        assert_eq!(col("close").get(row), Value::Float(t.ohlc.close.to_f64()));
        assert_eq!(col("stream_seq").get(row), Value::UInt(t.stream_seq));
        assert_eq!(
            col("data_quality_score").get(row),
            Value::Float(f64::from(t.data_quality_score))
        );
        for (name, depth) in [("depth_buy", &t.depth_buy), ("depth_sell", &t.depth_sell)] {
            let levels = depth.as_slice();
            if modern {
                let expected = Value::Array(
                    levels
                        .iter()
                        .map(|l| {
                            Value::Tuple(vec![
                                Value::Float(l.price.to_f64()),
                                Value::UInt(l.quantity.into()),
                                Value::UInt(l.orders.into()),
                            ])
                        })
                        .collect(),
                );
                assert_eq!(col(name).get(row), expected, "{name} row {row}");
            } else {
                let prices = Value::Array(
                    levels
                        .iter()
                        .map(|l| Value::Float(l.price.to_f64()))
                        .collect(),
                );
                let orders = Value::Array(
                    levels
                        .iter()
                        .map(|l| Value::UInt(l.orders.into()))
                        .collect(),
                );
                assert_eq!(col(&format!("{name}.1")).get(row), prices);
                assert_eq!(col(&format!("{name}.3")).get(row), orders);
            }
        }
    }
}

#[test]
fn sealed_blocks_decode_to_the_ticks_that_went_in() {
    let input = ticks(1_000);
    for (schema, modern) in [(TickSchema::modern(), true), (TickSchema::legacy(), false)] {
        for compression in [None, Some(Method::Lz4), Some(Method::None)] {
            let mut columns = TickColumns::new(2_000);
            for t in &input {
                assert!(columns.append(t));
            }
            let mut sealed = SealedBlock::with_capacity(2_000);
            columns.seal(&schema, compression, &mut sealed);
            assert!(columns.is_empty());
            assert_eq!(sealed.rows, 1_000);
            assert_eq!((sealed.seq_min, sealed.seq_max), (1000, 1999));
            // Received a ms apart: one row in each ms slot, the rest in the last.
            assert_eq!(sealed.received_min_ms, 1_764_000_000_500);
            let waits: Vec<(i64, u32)> = sealed.waits().collect();
            assert_eq!(waits.len(), RECEIVED_SPREAD_MS);
            assert_eq!(waits[0], (0, 1));
            assert_eq!(waits[100], (100, 1));
            assert_eq!(
                waits[RECEIVED_SPREAD_MS - 1],
                (
                    RECEIVED_SPREAD_MS as i64 - 1,
                    1_000 - (RECEIVED_SPREAD_MS as u32 - 1)
                )
            );
            let block = decode_packet(&sealed.bytes, compression.is_some());
            assert_eq!(block.header(), schema.header());
            check(&block, &input, modern);
        }
    }
}

#[test]
fn file_format_decodes_too_and_full_builder_refuses_rows() {
    let input = ticks(10);
    let mut columns = TickColumns::new(10);
    for t in &input {
        assert!(columns.append(t));
    }
    assert!(columns.is_full());
    assert!(!columns.append(&input[0]));
    let mut sealed = SealedBlock::with_capacity(10);
    columns.seal_file(&TickSchema::modern(), &mut sealed);
    let block = Block::decode(BlockFormat::File, &mut &sealed.bytes[..]).unwrap();
    check(&block, &input, true);
}

#[test]
fn schema_resolution_adapts_and_refuses_unknown_columns() {
    let header = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let minimal = header(&[
        ("timestamp", "DateTime64(6)"),
        ("instrument_token", "UInt32"),
        ("last_price", "Float64"),
        ("stream_seq", "UInt64"),
    ]);
    assert_eq!(TickSchema::from_header(&minimal).unwrap().len(), 4);
    let unknown = header(&[("timestamp", "DateTime"), ("mystery", "UInt8")]);
    let err = TickSchema::from_header(&unknown).unwrap_err().to_string();
    assert!(err.contains("mystery"), "{err}");
    let wrong_type = header(&[("timestamp", "DateTime"), ("last_price", "Decimal(18, 4)")]);
    let err = TickSchema::from_header(&wrong_type)
        .unwrap_err()
        .to_string();
    assert!(err.contains("last_price"), "{err}");
    let missing = header(&[("timestamp", "DateTime"), ("instrument_token", "UInt32")]);
    let err = TickSchema::from_header(&missing).unwrap_err().to_string();
    assert!(err.contains("last_price"), "{err}");
}

#[test]
fn datetime64_precisions_scale_milliseconds() {
    let header: Vec<(String, String)> = [
        ("timestamp", "DateTime64(6, 'UTC')"),
        ("instrument_token", "UInt32"),
        ("last_price", "Float64"),
        ("stream_seq", "UInt64"),
        ("received_at", "DateTime64(0)"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let schema = TickSchema::from_header(&header).unwrap();
    let mut columns = TickColumns::new(4);
    let mut tick = ticks(1)[0];
    tick.timestamp_ms = 1_764_000_000_123;
    tick.received_at_ms = 1_764_000_001_999;
    columns.append(&tick);
    let mut sealed = SealedBlock::with_capacity(4);
    columns.seal_file(&schema, &mut sealed);
    let block = Block::decode(BlockFormat::File, &mut &sealed.bytes[..]).unwrap();
    assert_eq!(
        block.column("timestamp").unwrap().values.get(0),
        Value::Int(1_764_000_000_123_000)
    );
    assert_eq!(
        block.column("received_at").unwrap().values.get(0),
        Value::Int(1_764_000_001)
    );
}
