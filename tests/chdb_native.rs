//! Conformance with current ClickHouse: Native bytes our encoders produce are decoded
//! by chdb (ClickHouse 26.x in-process) into exactly the values we encoded. A property
//! test over a few hundred random tick blocks (modern schema: DateTime64,
//! LowCardinality, Array(Tuple)), plus the generic codec's other types.
//!
//! Needs ALPHAPT_CHDB_PYTHON (set by `make test`); without it the test fails and says
//! how to set it up, because a silent skip would hide a missing install step.

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use alphapt_storage::model::SealedBlock;
use alphapt_storage::model::{Depth, DepthLevel, Ohlc, Price, Symbol, Tick, DEPTH_LEVELS};
use alphapt_storage::native::merge::SortedMerge;
use alphapt_storage::native::{Block, BlockFormat, Column, Method, Values};
use alphapt_storage::shard::{TickColumns, TickSchema};
use alphapt_storage::write::inserter::TICKS_KEY;
use serde_json::Value as Json;

const CASES: usize = 300;

fn python() -> String {
    std::env::var("ALPHAPT_CHDB_PYTHON").expect(
        "ALPHAPT_CHDB_PYTHON is not set: run the tests through `make test` (it builds the chdb venv), \
         or `eval \"$(bash .ci/services.sh env)\"` first",
    )
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("alphapt-chdb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the decoder script and returns `file name -> rows`.
fn decode(dir: &Path, kind: &str) -> std::collections::HashMap<String, Vec<Json>> {
    let output = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/chdb/decode_native.py"
        ))
        .arg(dir)
        .arg(kind)
        .output()
        .expect("the chdb venv python runs");
    assert!(
        output.status.success(),
        "chdb decoder failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: Json = serde_json::from_str(line).unwrap();
            let rows = v["rows"].take().as_array().unwrap().clone();
            (v["file"].as_str().unwrap().to_string(), rows)
        })
        .collect()
}

fn price() -> impl Strategy<Value = Price> {
    (1i64..1_000_000_000_000).prop_map(Price)
}

fn depth() -> impl Strategy<Value = Depth> {
    (
        0..=DEPTH_LEVELS,
        prop::array::uniform5((price(), any::<u32>(), any::<u16>())),
    )
        .prop_map(|(len, levels)| {
            let mut depth = Depth {
                len: len as u8,
                ..Depth::default()
            };
            for (i, (price, quantity, orders)) in levels.into_iter().enumerate().take(len) {
                depth.levels[i] = DepthLevel {
                    price,
                    quantity,
                    orders,
                };
            }
            depth
        })
}

fn tick() -> impl Strategy<Value = Tick> {
    let times = (
        0i64..4_102_444_800_000,
        0i64..4_102_444_800_000,
        any::<u64>(),
        any::<u32>(),
    );
    let names = (
        prop::sample::select(vec!["NSE", "BSE", "NFO", "MCX", ""]),
        "[A-Z0-9&-]{0,25}",
    );
    let prices = (
        price(),
        any::<u32>(),
        price(),
        any::<u64>(),
        [price(), price(), price(), price()],
        any::<u64>(),
    );
    let rest = (depth(), depth(), 0f32..=1.0, any::<u32>());
    (times, names, prices, rest).prop_map(|(t, n, p, r)| Tick {
        timestamp_ms: t.0,
        received_at_ms: t.1,
        stream_seq: t.2,
        instrument_token: t.3,
        exchange: Symbol::new(n.0.as_bytes()).unwrap(),
        tradingsymbol: Symbol::new(n.1.as_bytes()).unwrap(),
        last_price: p.0,
        last_quantity: p.1,
        average_price: p.2,
        volume_traded: p.3,
        ohlc: Ohlc {
            open: p.4[0],
            high: p.4[1],
            low: p.4[2],
            close: p.4[3],
        },
        oi: p.5,
        depth_buy: r.0,
        depth_sell: r.1,
        data_quality_score: r.2,
        validation_flags: r.3,
    })
}

fn depth_json(depth: &Depth) -> Json {
    Json::Array(
        depth
            .as_slice()
            .iter()
            .map(|l| serde_json::json!({"price": l.price.to_f64(), "quantity": l.quantity, "orders": l.orders}))
            .collect(),
    )
}

fn check_row(file: &str, row: usize, got: &Json, t: &Tick) {
    let ctx = format!("{file} row {row}");
    assert_eq!(got["ts"].as_i64(), Some(t.timestamp_ms), "{ctx} ts");
    assert_eq!(
        got["recv"].as_i64(),
        Some(t.received_at_ms),
        "{ctx} received_at"
    );
    assert_eq!(
        got["stream_seq"].as_u64(),
        Some(t.stream_seq),
        "{ctx} stream_seq"
    );
    assert_eq!(
        got["instrument_token"].as_u64(),
        Some(t.instrument_token.into()),
        "{ctx}"
    );
    assert_eq!(
        got["exchange"].as_str().map(str::as_bytes),
        Some(t.exchange.as_bytes()),
        "{ctx}"
    );
    assert_eq!(
        got["tradingsymbol"].as_str().map(str::as_bytes),
        Some(t.tradingsymbol.as_bytes()),
        "{ctx}"
    );
    for (name, price) in [
        ("last_price", t.last_price),
        ("average_price", t.average_price),
        ("open", t.ohlc.open),
        ("high", t.ohlc.high),
        ("low", t.ohlc.low),
        ("close", t.ohlc.close),
    ] {
        assert_eq!(got[name].as_f64(), Some(price.to_f64()), "{ctx} {name}");
    }
    assert_eq!(
        got["last_quantity"].as_u64(),
        Some(t.last_quantity.into()),
        "{ctx}"
    );
    assert_eq!(
        got["volume_traded"].as_u64(),
        Some(t.volume_traded),
        "{ctx}"
    );
    assert_eq!(got["oi"].as_u64(), Some(t.oi), "{ctx}");
    assert_eq!(
        got["depth_buy"],
        depth_json(&t.depth_buy),
        "{ctx} depth_buy"
    );
    assert_eq!(
        got["depth_sell"],
        depth_json(&t.depth_sell),
        "{ctx} depth_sell"
    );
    assert_eq!(
        got["data_quality_score"].as_f64().map(|v| v as f32),
        Some(t.data_quality_score),
        "{ctx}"
    );
    assert_eq!(
        got["validation_flags"].as_u64(),
        Some(t.validation_flags.into()),
        "{ctx}"
    );
    assert_eq!(got["ts_type"], "DateTime64(3, 'UTC')", "{ctx}");
    assert_eq!(got["exchange_type"], "LowCardinality(String)", "{ctx}");
}

/// chdb decodes every file of `dir` to its ticks, row for row; then `dir` goes.
fn check_files(dir: &Path, cases: &[(String, Vec<Tick>)]) {
    let decoded = decode(dir, "ticks");
    assert_eq!(decoded.len(), cases.len(), "every file decoded");
    for (name, ticks) in cases {
        let rows = &decoded[name];
        assert_eq!(rows.len(), ticks.len(), "{name} row count");
        for (i, (got, t)) in rows.iter().zip(ticks).enumerate() {
            check_row(name, i, got, t);
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn chdb_decodes_random_tick_blocks_to_the_values_we_encoded() {
    let dir = scratch_dir("ticks");
    let schema = TickSchema::modern();
    let strategy = prop::collection::vec(tick(), 1..40);
    let mut runner = TestRunner::new(ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..ProptestConfig::default()
    });
    let mut cases = Vec::with_capacity(CASES);
    let mut columns = TickColumns::new(64);
    let mut sealed = SealedBlock::with_capacity(64);
    for case in 0..CASES {
        let ticks = strategy.new_tree(&mut runner).unwrap().current();
        for t in &ticks {
            assert!(columns.append(t));
        }
        columns.seal_file(&schema, &mut sealed);
        let name = format!("case{case:04}.native");
        std::fs::write(dir.join(&name), &sealed.bytes).unwrap();
        cases.push((name, ticks));
    }
    check_files(&dir, &cases);
}

/// The journal-first inserter's sorted INSERT: LZ4 Data packets as shards seal them,
/// merged into one block in key order. chdb must read back every tick, in
/// `(instrument_token, timestamp)` order and arrival order among equal keys.
#[test]
fn chdb_decodes_merged_blocks_to_the_ticks_in_key_order() {
    const MERGES: usize = 60;
    let dir = scratch_dir("merged");
    let schema = TickSchema::modern();
    let strategy = prop::collection::vec(prop::collection::vec(tick(), 0..40), 1..4);
    let mut runner = TestRunner::new(ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..ProptestConfig::default()
    });
    let mut merge = SortedMerge::new(&schema.header(), &TICKS_KEY).unwrap();
    let mut columns = TickColumns::new(64);
    let mut sealed = SealedBlock::with_capacity(64);
    let mut cases = Vec::with_capacity(MERGES);
    for case in 0..MERGES {
        let blocks = strategy.new_tree(&mut runner).unwrap().current();
        merge.clear();
        for block in &blocks {
            for t in block {
                // Few tokens and times, so that keys repeat across blocks.
                let mut t = *t;
                t.instrument_token %= 5;
                t.timestamp_ms %= 3;
                assert!(columns.append(&t));
            }
            columns.seal(&schema, Some(Method::Lz4), &mut sealed);
            merge.push_packet(&sealed.bytes, true).unwrap();
        }
        let mut ticks: Vec<Tick> = blocks.concat();
        for t in &mut ticks {
            t.instrument_token %= 5;
            t.timestamp_ms %= 3;
        }
        ticks.sort_by_key(|t| (t.instrument_token, t.timestamp_ms));
        let mut bytes = Vec::new();
        merge.write(BlockFormat::File, &mut bytes);
        if ticks.is_empty() {
            assert!(bytes.is_empty(), "no rows, nothing written");
            continue;
        }
        let name = format!("merged{case:04}.native");
        std::fs::write(dir.join(&name), &bytes).unwrap();
        cases.push((name, ticks));
    }
    check_files(&dir, &cases);
}

#[test]
fn chdb_decodes_the_generic_codecs_other_types() {
    let dir = scratch_dir("generic");
    let block = Block::new(vec![
        Column::new("u8", "UInt8", Values::U8(vec![0, 255])).unwrap(),
        Column::new("i64", "Int64", Values::I64(vec![i64::MIN, -1])).unwrap(),
        Column::new("dt", "DateTime('UTC')", Values::U32(vec![0, 1_764_000_000])).unwrap(),
        Column::new("dec", "Decimal(18, 4)", Values::I64(vec![123_456, -1])).unwrap(),
        Column::new(
            "e",
            "Enum8('traditional' = 1, 'ml' = 2, 'hybrid' = 3)",
            Values::I8(vec![1, 3]),
        )
        .unwrap(),
        Column::new(
            "n",
            "Nullable(Float64)",
            Values::Nullable(vec![1, 0], Box::new(Values::F64(vec![0.0, 2.5]))),
        )
        .unwrap(),
        Column::new(
            "lc",
            "LowCardinality(Nullable(String))",
            Values::Nullable(
                vec![0, 1],
                Box::new(Values::Bytes(vec![b"ml".to_vec(), Vec::new()])),
            ),
        )
        .unwrap(),
        Column::new(
            "alc",
            "Array(LowCardinality(String))",
            Values::Array(
                vec![2, 3],
                Box::new(Values::Bytes(vec![
                    b"a".to_vec(),
                    b"b".to_vec(),
                    b"a".to_vec(),
                ])),
            ),
        )
        .unwrap(),
        Column::new(
            "tup",
            "Tuple(a UInt16, b String)",
            Values::Tuple(vec![
                Values::U16(vec![1, 2]),
                Values::Bytes(vec![b"x".to_vec(), b"y".to_vec()]),
            ]),
        )
        .unwrap(),
    ])
    .unwrap();
    let mut bytes = Vec::new();
    block.encode(BlockFormat::File, &mut bytes).unwrap();
    std::fs::write(dir.join("generic.native"), &bytes).unwrap();
    let rows = &decode(&dir, "generic")["generic.native"];
    let expected = serde_json::json!([
        {"u8": 0, "i64": i64::MIN, "dt": "1970-01-01 00:00:00", "dec": 12.3456, "e": "traditional",
         "n": null, "lc": "ml", "alc": ["a", "b"], "tup": {"a": 1, "b": "x"}, "lc_type": "LowCardinality(Nullable(String))"},
        {"u8": 255, "i64": -1, "dt": "2025-11-24 16:00:00", "dec": -0.0001, "e": "hybrid",
         "n": 2.5, "lc": null, "alc": ["a"], "tup": {"a": 2, "b": "y"}, "lc_type": "LowCardinality(Nullable(String))"},
    ]);
    assert_eq!(Json::Array(rows.clone()), expected);
    std::fs::remove_dir_all(&dir).unwrap();
}
