//! The signal parser reads every field of the platform's signal, returns the exact
//! metadata bytes, refuses bad input with the right reason and never panics on any
//! bytes; sealed signal blocks decode, with the generic codec, to the rows that went
//! in, for the modern and the 18.16 table shapes, with Enum codes found by name.
use super::*;
use crate::native::block::Block;
use crate::native::column::Value;
use crate::native::compress::FrameReader;
use proptest::prelude::*;

const FULL: &str = r#"{"strategy_id": "mom-1", "strategy_type": "ml", "instrument_token": 256265, "tradingsymbol": "NIFTY 50", "signal_type": "BUY", "strength": 0.8, "confidence": 0.9, "price": 1234.05, "quantity": 10, "metadata": {"window": [5, 20], "note": "a \"b\" \u00e9", "nested": {"x": null}}, "timestamp": "2025-11-24T16:00:00.500+00:00"}"#;

const METADATA: &str = r#"{"window": [5, 20], "note": "a \"b\" \u00e9", "nested": {"x": null}}"#;

fn parse(text: &[u8]) -> Result<(Signal, SignalParse), RejectReason> {
    let mut signal = Signal::default();
    parse_json_signal(text, &mut signal).map(|p| (signal, p))
}

/// A minimal valid signal with `extra` spliced in before the timestamp.
fn with(extra: &str) -> String {
    format!(
        r#"{{"strategy_id":"s","instrument_token":1,"signal_type":"SELL",{extra}"timestamp":1764000000000}}"#
    )
}

#[test]
fn every_field_parses() {
    let (s, p) = parse(FULL.as_bytes()).unwrap();
    assert_eq!(s.strategy_id.as_bytes(), b"mom-1");
    assert_eq!(s.strategy_type, StrategyType::Ml);
    assert_eq!(s.instrument_token, 256_265);
    assert_eq!(s.tradingsymbol.as_bytes(), b"NIFTY 50");
    assert_eq!(s.signal_type.as_bytes(), b"BUY");
    assert_eq!(s.strength, 0.8f32);
    assert_eq!(s.confidence, 0.9f32);
    assert_eq!(s.price, Price(123_405_000_000));
    assert_eq!(s.quantity, 10);
    assert_eq!(s.timestamp_ms, 1_764_000_000_500);
    assert_eq!(p.metadata(FULL.as_bytes()), METADATA.as_bytes());
    let start = FULL.find(METADATA).unwrap();
    assert_eq!(p.metadata_start as usize, start);
    assert_eq!(p.metadata_end as usize, start + METADATA.len());
}

#[test]
fn parser_keeps_receiver_stamps_and_defaults_optionals() {
    let mut signal = Signal {
        received_at_ms: 7,
        stream_seq: 9,
        quantity: 99,
        strategy_type: StrategyType::Hybrid,
        ..Signal::default()
    };
    let p = parse_json_signal(with("").as_bytes(), &mut signal).unwrap();
    assert_eq!((signal.received_at_ms, signal.stream_seq), (7, 9));
    assert_eq!(signal.timestamp_ms, 1_764_000_000_000);
    assert_eq!(signal.strategy_type, StrategyType::Traditional);
    assert_eq!((signal.quantity, signal.strength), (0, 0.0));
    assert_eq!(signal.tradingsymbol.as_bytes(), b"");
    assert_eq!(p, SignalParse::default());
    let (_, p) = parse(with(r#""metadata":null,"strategy_type":null,"#).as_bytes()).unwrap();
    assert_eq!(p.metadata(b"anything"), b"");
}

#[test]
fn every_strategy_type_name_parses() {
    for t in StrategyType::ALL {
        let text = with(&format!(r#""strategy_type":"{}","#, t.as_str()));
        assert_eq!(parse(text.as_bytes()).unwrap().0.strategy_type, t);
        assert_eq!(StrategyType::ALL[t as usize], t);
    }
}

#[test]
fn missing_required_fields_are_refused() {
    let fields = [
        r#""strategy_id":"s""#,
        r#""instrument_token":1"#,
        r#""signal_type":"BUY""#,
        r#""timestamp":"2025-11-24T16:00:00Z""#,
    ];
    for skip in 0..fields.len() {
        let kept: Vec<&str> = (0..fields.len())
            .filter(|&i| i != skip)
            .map(|i| fields[i])
            .collect();
        let text = format!("{{{}}}", kept.join(","));
        assert_eq!(parse(text.as_bytes()).unwrap_err(), MissingField, "{text}");
        let nulled = text.replace('}', &format!(r#","{}":null}}"#, field_name(fields[skip])));
        assert_eq!(
            parse(nulled.as_bytes()).unwrap_err(),
            MissingField,
            "{nulled}"
        );
    }
    let empty = r#"{"strategy_id":"","instrument_token":1,"signal_type":"B","timestamp":0}"#;
    assert_eq!(parse(empty.as_bytes()).unwrap_err(), MissingField);
}

fn field_name(pair: &str) -> &str {
    pair.split('"').nth(1).unwrap()
}

#[test]
fn wrong_types_and_values_have_their_reasons() {
    let cases: [(&str, RejectReason); 14] = [
        (r#""strategy_type":"quant","#, WrongType),
        (r#""strategy_type":"ML","#, WrongType),
        (
            r#""strategy_type":"a-name-much-longer-than-thirty-one-bytes","#,
            WrongType,
        ),
        (r#""strategy_type":2,"#, WrongType),
        (r#""strength":"high","#, WrongType),
        (r#""strength":1e39,"#, BadNumber),
        (r#""price":[1],"#, WrongType),
        (r#""quantity":-1,"#, BadNumber),
        (r#""quantity":1.5,"#, BadNumber),
        (r#""metadata":[1,2],"#, WrongType),
        (r#""metadata":"{}","#, WrongType),
        (
            r#""tradingsymbol":"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789","#,
            SymbolTooLong,
        ),
        (r#""metadata":{"a":},"#, MalformedJson),
        (r#""timestamp":"yesterday","#, RejectReason::BadTimestamp),
    ];
    for (extra, reason) in cases {
        let text = with(extra);
        assert_eq!(parse(text.as_bytes()).unwrap_err(), reason, "{text}");
    }
    assert_eq!(parse(b"[1]").unwrap_err(), WrongType);
    assert_eq!(parse(b"").unwrap_err(), MalformedJson);
    let text = with("").replace("\"instrument_token\":1", "\"instrument_token\":\"1\"");
    assert_eq!(parse(text.as_bytes()).unwrap_err(), WrongType);
}

#[test]
fn metadata_is_capped_and_nesting_bounded() {
    let body = "x".repeat(METADATA_BYTES_MAX - 8);
    let fits = with(&format!(r#""metadata":{{"k":"{body}"}},"#));
    let (_, p) = parse(fits.as_bytes()).unwrap();
    assert_eq!(p.metadata(fits.as_bytes()).len(), METADATA_BYTES_MAX);
    let over = with(&format!(r#""metadata":{{"k":"{body}x"}},"#));
    assert_eq!(parse(over.as_bytes()).unwrap_err(), PayloadTooLarge);
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let text = with(&format!(r#""metadata":{{"d":{deep}}},"#));
    assert_eq!(parse(text.as_bytes()).unwrap_err(), MalformedJson);
    let huge = vec![b' '; JSON_PAYLOAD_BYTES_MAX + 1];
    assert_eq!(parse(&huge).unwrap_err(), PayloadTooLarge);
}

#[test]
fn escaped_strings_decode_and_last_repeat_wins() {
    let text = with(r#""strategy_id":"m\u006fm","metadata":{"a":1},"metadata":{"b":2},"#);
    let (s, p) = parse(text.as_bytes()).unwrap();
    assert_eq!(s.strategy_id.as_bytes(), b"mom");
    assert_eq!(p.metadata(text.as_bytes()), br#"{"b":2}"#);
}

#[test]
fn every_truncation_of_a_signal_is_refused() {
    for end in 0..FULL.len() {
        assert!(
            parse(&FULL.as_bytes()[..end]).is_err(),
            "prefix of {end} bytes"
        );
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok((_, p)) = parse(&bytes) {
            prop_assert!(p.metadata_end as usize <= bytes.len());
        }
    }

    #[test]
    fn mutated_signals_never_panic(at in 0usize..FULL.len(), byte in any::<u8>()) {
        let mut bytes = FULL.as_bytes().to_vec();
        bytes[at] = byte;
        if let Ok((_, p)) = parse(&bytes) {
            let metadata = p.metadata(&bytes);
            prop_assert!(metadata.is_empty() || metadata[0] == b'{', "metadata starts at its brace");
        }
    }
}

fn header(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The schema's header with `strategy_type` declared with other codes and an extra
/// name, so only a lookup by name writes the right ones.
fn shuffled_enum(schema: &SignalSchema) -> Vec<(String, String)> {
    let mut pairs = schema.header();
    for (name, ty) in pairs.iter_mut() {
        if name == "strategy_type" {
            *ty = "Enum8('hybrid' = -5, 'other' = 0, 'ml' = 7, 'traditional' = 3)".into();
        }
    }
    pairs
}

fn decode(sealed: &SealedBlock) -> Block {
    let mut input = &sealed.bytes[2..];
    match sealed.compression {
        Some(_) => {
            let mut frames = FrameReader::new(&mut input);
            let block = Block::decode(BlockFormat::Protocol, &mut frames).unwrap();
            frames.finish().unwrap();
            block
        }
        None => Block::decode(BlockFormat::Protocol, &mut input).unwrap(),
    }
}

#[test]
fn signal_blocks_decode_to_their_rows() {
    let types = [
        StrategyType::Ml,
        StrategyType::Traditional,
        StrategyType::Hybrid,
    ];
    for (schema, modern) in [
        (SignalSchema::modern(), true),
        (SignalSchema::legacy(), false),
    ] {
        let schema = SignalSchema::from_header(&shuffled_enum(&schema)).unwrap();
        for compression in [Some(Method::Lz4), None] {
            let mut columns = SignalColumns::new(4);
            let mut payloads = Vec::new();
            for (i, t) in types.iter().enumerate() {
                payloads.push(
                    FULL.replace("\"ml\"", &format!("\"{}\"", t.as_str()))
                        .replace(
                            "\"timestamp\": \"2025-11-24T16:00:00.500+00:00\"",
                            &format!("\"timestamp\": {}", 1_764_000_000_500 + i as i64),
                        ),
                );
            }
            for (i, payload) in payloads.iter().enumerate() {
                let mut signal = Signal {
                    received_at_ms: 1_764_000_001_000 + i as i64,
                    stream_seq: 100 + i as u64,
                    ..Signal::default()
                };
                let p = parse_json_signal(payload.as_bytes(), &mut signal).unwrap();
                let metadata = if i == 1 {
                    &b""[..]
                } else {
                    p.metadata(payload.as_bytes())
                };
                assert!(columns.append(&signal, metadata));
            }
            assert_eq!(columns.rows(), 3);
            assert_eq!(columns.received_min_ms(), Some(1_764_000_001_000));
            let mut sealed = SealedBlock::with_capacity(4);
            columns.seal(&schema, compression, &mut sealed);
            assert!(columns.is_empty());
            assert_eq!((sealed.rows, sealed.seq_min, sealed.seq_max), (3, 100, 102));
            assert_eq!(sealed.timestamp_min_ms, 1_764_000_000_500);
            assert_eq!(sealed.timestamp_max_ms, 1_764_000_000_502);
            assert_eq!(sealed.received_min_ms, 1_764_000_001_000);
            let block = decode(&sealed);
            assert_eq!(block.rows, 3);
            assert_eq!(block.header(), schema.header());
            let column = |name: &str| -> Vec<Value> {
                let c = block.column(name).unwrap();
                (0..3).map(|r| c.values.get(r)).collect()
            };
            assert_eq!(column("strategy_type"), [7, 3, -5].map(Value::Int).to_vec());
            assert_eq!(
                column("metadata"),
                vec![
                    Value::Bytes(METADATA.as_bytes().to_vec()),
                    Value::Bytes(Vec::new()),
                    Value::Bytes(METADATA.as_bytes().to_vec()),
                ]
            );
            assert_eq!(column("strategy_id")[2], Value::Bytes(b"mom-1".to_vec()));
            assert_eq!(column("signal_type")[0], Value::Bytes(b"BUY".to_vec()));
            assert_eq!(
                column("tradingsymbol")[1],
                Value::Bytes(b"NIFTY 50".to_vec())
            );
            assert_eq!(column("instrument_token")[0], Value::UInt(256_265));
            assert_eq!(column("strength")[0], Value::Float(f64::from(0.8f32)));
            assert_eq!(column("confidence")[1], Value::Float(f64::from(0.9f32)));
            assert_eq!(column("price")[2], Value::Float(1234.05));
            assert_eq!(column("quantity")[2], Value::UInt(10));
            assert_eq!(column("stream_seq")[1], Value::UInt(101));
            if modern {
                assert_eq!(column("timestamp")[2], Value::Int(1_764_000_000_502));
                assert_eq!(column("received_at")[0], Value::Int(1_764_000_001_000));
            } else {
                assert_eq!(column("timestamp")[2], Value::UInt(1_764_000_000));
                assert_eq!(column("timestamp_ms")[2], Value::UInt(502));
                assert_eq!(column("received_at_ms")[1], Value::UInt(1));
            }
        }
    }
}

#[test]
fn builder_refuses_rows_beyond_capacity() {
    let mut columns = SignalColumns::new(1);
    let (signal, _) = parse(with("").as_bytes()).unwrap();
    assert!(columns.is_empty());
    assert_eq!(columns.received_min_ms(), None);
    assert!(columns.append(&signal, b"{}"));
    assert!(columns.is_full());
    assert!(!columns.append(&signal, b"{}"));
    assert_eq!(columns.rows(), 1);
}

#[test]
fn tables_the_builder_cannot_write_are_refused_by_column() {
    let base = SignalSchema::modern().header();
    let with_type = |column: &str, ty: &str| -> Vec<(String, String)> {
        let mut pairs = base.clone();
        pairs
            .iter_mut()
            .filter(|(n, _)| n == column)
            .for_each(|(_, t)| *t = ty.into());
        pairs
    };
    let refused = [
        with_type("strategy_type", "Enum8('traditional' = 1, 'ml' = 2)"),
        with_type("strategy_type", "String"),
        with_type("metadata", "LowCardinality(String)"),
        with_type("quantity", "UInt64"),
    ];
    for pairs in refused {
        let error = SignalSchema::from_header(&pairs).unwrap_err().to_string();
        assert!(error.contains("strategy_signals column"), "{error}");
    }
    let no_id: Vec<(String, String)> = base
        .iter()
        .filter(|(n, _)| n != "strategy_id")
        .cloned()
        .collect();
    let error = SignalSchema::from_header(&no_id).unwrap_err().to_string();
    assert!(error.contains("`strategy_id`"), "{error}");
    let unknown = header(&[("timestamp", "DateTime"), ("mystery", "UInt8")]);
    assert!(SignalSchema::from_header(&unknown)
        .unwrap_err()
        .to_string()
        .contains("mystery"));
}
