//! A crafted corpus through parse → validate: every `FLAG_*` bit and every
//! `RejectReason` has at least one case with its exact expected outcome, and the test
//! fails if a flag or reason is added without a case.

use alphapt_storage::config::ValidationConfig;
use alphapt_storage::model::quality::{
    data_quality_score, RejectReason, FLAGS_ALL, FLAG_CROSSED_BOOK, FLAG_DEPTH_UNSORTED,
    FLAG_FUTURE_TIMESTAMP, FLAG_MISSING_OPTIONAL, FLAG_NONPOSITIVE_PRICE, FLAG_OFF_TICK_SIZE,
    FLAG_OUTSIDE_CIRCUIT, FLAG_OUT_OF_ORDER, FLAG_PRICE_JUMP, FLAG_QUANTITY_INSANE,
    FLAG_STALE_TIMESTAMP,
};
use alphapt_storage::model::reference::Reference;
use alphapt_storage::model::{Price, Tick};
use alphapt_storage::shard::parse::kite::{encode_kite_full, KITE_FULL_BYTES, KITE_QUOTE_BYTES};
use alphapt_storage::shard::parse::{
    parse_json_tick, parse_kite_message, parse_kite_packet, parse_tick_subject, ParseInfo,
};
use alphapt_storage::shard::validate::Validator;

/// 2025-11-24T16:00:00Z, the validator's "now" in every case.
const NOW: i64 = 1_764_000_000_000;

/// The clean tick's fields in order; a case overrides values or drops keys.
const BASE: [(&str, &str); 11] = [
    ("instrument_token", "1"),
    ("exchange", r#""NSE""#),
    ("tradingsymbol", r#""INFY""#),
    ("last_price", "100.05"),
    ("last_quantity", "10"),
    ("average_price", "100"),
    ("volume_traded", "1000"),
    ("oi", "0"),
    (
        "ohlc",
        r#"{"open": 99, "high": 101, "low": 98.5, "close": 99.5}"#,
    ),
    (
        "depth",
        r#"{"buy": [{"price": 100.0, "quantity": 5, "orders": 1}, {"price": 99.95, "quantity": 7, "orders": 2}],
            "sell": [{"price": 100.1, "quantity": 3, "orders": 1}, {"price": 100.15, "quantity": 9, "orders": 4}]}"#,
    ),
    ("timestamp", r#""2025-11-24T16:00:00.000Z""#),
];

/// The clean tick with `changes` applied: `(key, value)` replaces, `(key, "-")` drops.
fn json(changes: &[(&str, &str)]) -> Vec<u8> {
    let fields: Vec<String> = BASE
        .iter()
        .filter_map(|(key, value)| {
            let value = changes.iter().find(|c| c.0 == *key).map_or(*value, |c| c.1);
            (value != "-").then(|| format!(r#""{key}": {value}"#))
        })
        .collect();
    format!("{{{}}}", fields.join(", ")).into_bytes()
}

fn kite_full(last_price: Price, timestamp_ms: i64) -> Vec<u8> {
    let mut tick = Tick::default();
    parse_json_tick(&json(&[]), &mut tick).expect("base parses");
    tick.instrument_token = 256_265; // 256265 & 0xff = 9 (indices): prices in paise
    tick.last_price = last_price;
    tick.timestamp_ms = timestamp_ms;
    let mut out = [0u8; KITE_FULL_BYTES];
    encode_kite_full(&tick, &mut out);
    out.to_vec()
}

/// What a case feeds in.
enum Input {
    /// A JSON payload.
    Json(Vec<u8>),
    /// One Kite packet.
    Kite(Vec<u8>),
    /// A Kite frame; its first packet is parsed.
    KiteFrame(Vec<u8>),
    /// A NATS subject.
    Subject(&'static [u8]),
}

/// One corpus entry.
struct Case {
    /// What it shows.
    name: &'static str,
    /// A tick of the same instrument validated first (history for stateful checks).
    prior: Option<Vec<u8>>,
    /// Reference data set for token 1 first.
    reference: Option<Reference>,
    /// The input.
    input: Input,
    /// `Ok(flags)` or `Err(reason)`.
    expect: Result<u32, RejectReason>,
}

fn case(name: &'static str, input: Input, expect: Result<u32, RejectReason>) -> Case {
    Case {
        name,
        prior: None,
        reference: None,
        input,
        expect,
    }
}

fn run(case: &Case) -> Result<u32, RejectReason> {
    let mut validator = Validator::new(ValidationConfig::default());
    let mut tick = Tick {
        received_at_ms: NOW,
        ..Tick::default()
    };
    if let Some(reference) = case.reference {
        assert!(validator.set_reference(1, reference));
    }
    if let Some(prior) = &case.prior {
        let info = parse_json_tick(prior, &mut tick).expect("prior parses");
        validator.validate(&mut tick, info, NOW);
    }
    let info: ParseInfo = match &case.input {
        Input::Json(bytes) => parse_json_tick(bytes, &mut tick)?,
        Input::Kite(bytes) => parse_kite_packet(bytes, &mut tick)?,
        Input::KiteFrame(bytes) => {
            let mut first = Err(RejectReason::BadKitePacket);
            parse_kite_message(bytes, |p| {
                if first.is_err() {
                    first = parse_kite_packet(p, &mut tick);
                }
            })?;
            first?
        }
        Input::Subject(subject) => {
            parse_tick_subject(subject)?;
            return Ok(0);
        }
    };
    validator.validate(&mut tick, info, NOW);
    assert_eq!(
        tick.data_quality_score,
        data_quality_score(tick.validation_flags)
    );
    Ok(tick.validation_flags)
}

fn corpus() -> Vec<Case> {
    use Input::{Json, Kite, KiteFrame, Subject};
    use RejectReason::*;
    let reference = |tick, lower, upper| Reference {
        tick_size: Price(tick),
        circuit_lower: Price(lower),
        circuit_upper: Price(upper),
    };
    let mut cases = vec![
        // Flags.
        case("clean JSON tick", Json(json(&[])), Ok(0)),
        case(
            "clean Kite full packet",
            Kite(kite_full(Price(10_005_000_000), NOW)),
            Ok(0),
        ),
        case(
            "only the platform's fields (no exchange, average, oi, ohlc or depth) is clean",
            Json(json(&[
                ("exchange", "-"),
                ("average_price", "-"),
                ("oi", "-"),
                ("ohlc", "-"),
                ("depth", "-"),
            ])),
            Ok(0),
        ),
        case(
            "oi absent is not a failure",
            Json(json(&[("oi", "-")])),
            Ok(0),
        ),
        case(
            "volume absent",
            Json(json(&[("volume_traded", "-")])),
            Ok(FLAG_MISSING_OPTIONAL),
        ),
        case(
            "tradingsymbol null",
            Json(json(&[("tradingsymbol", "null")])),
            Ok(FLAG_MISSING_OPTIONAL),
        ),
        case(
            "Kite quote has no exchange time",
            Kite(kite_full(Price(10_005_000_000), NOW)[..KITE_QUOTE_BYTES].to_vec()),
            Ok(FLAG_MISSING_OPTIONAL),
        ),
        case(
            "zero last price",
            Json(json(&[("last_price", "0")])),
            Ok(FLAG_NONPOSITIVE_PRICE),
        ),
        case(
            "negative last price",
            Json(json(&[("last_price", "-37.63")])),
            Ok(FLAG_NONPOSITIVE_PRICE),
        ),
        case(
            "best bid above best ask",
            Json(json(&[(
                "depth",
                r#"{"buy": [{"price": 100.2, "quantity": 1}], "sell": [{"price": 100.1, "quantity": 1}]}"#,
            )])),
            Ok(FLAG_CROSSED_BOOK),
        ),
        case(
            "locked book is not crossed",
            Json(json(&[(
                "depth",
                r#"{"buy": [{"price": 100.1, "quantity": 1}], "sell": [{"price": 100.1, "quantity": 1}]}"#,
            )])),
            Ok(0),
        ),
        case(
            "bids ascending",
            Json(json(&[(
                "depth",
                r#"{"buy": [{"price": 99.9, "quantity": 1}, {"price": 100.0, "quantity": 1}], "sell": []}"#,
            )])),
            Ok(FLAG_DEPTH_UNSORTED),
        ),
        case(
            "last quantity absurd",
            Json(json(&[("last_quantity", "20000000")])),
            Ok(FLAG_QUANTITY_INSANE),
        ),
        case(
            "time 5 s ahead",
            Json(json(&[("timestamp", "1764000005000")])),
            Ok(FLAG_FUTURE_TIMESTAMP),
        ),
        case(
            "time 2 s ahead is within skew",
            Json(json(&[("timestamp", "1764000002000")])),
            Ok(0),
        ),
        case(
            "time 2 min behind",
            Json(json(&[("timestamp", r#""2025-11-24T15:58:00Z""#)])),
            Ok(FLAG_STALE_TIMESTAMP),
        ),
        case(
            "several flags add up",
            Json(json(&[
                ("last_price", "0"),
                ("last_quantity", "-"),
                ("timestamp", "1764000005000"),
            ])),
            Ok(FLAG_NONPOSITIVE_PRICE | FLAG_MISSING_OPTIONAL | FLAG_FUTURE_TIMESTAMP),
        ),
        // Rejects.
        case(
            "truncated object",
            Json(b"{\"instrument_token\": 1,".to_vec()),
            Err(MalformedJson),
        ),
        case(
            "trailing garbage",
            Json([json(&[]), b"}".to_vec()].concat()),
            Err(MalformedJson),
        ),
        case(
            "latin-1 symbol",
            Json(
                json(&[("tradingsymbol", r#""CAF#""#)])
                    .into_iter()
                    .map(|b| if b == b'#' { 0xe9 } else { b })
                    .collect(),
            ),
            Err(InvalidUtf8),
        ),
        case(
            "no timestamp",
            Json(json(&[("timestamp", "-")])),
            Err(MissingField),
        ),
        case(
            "price as string",
            Json(json(&[("last_price", r#""100.05""#)])),
            Err(WrongType),
        ),
        case(
            "negative quantity",
            Json(json(&[("last_quantity", "-5")])),
            Err(BadNumber),
        ),
        case(
            "price beyond fixed point",
            Json(json(&[("last_price", "1e12")])),
            Err(BadNumber),
        ),
        case(
            "timestamp words",
            Json(json(&[("timestamp", r#""24 Nov 2025""#)])),
            Err(BadTimestamp),
        ),
        case(
            "symbol of 40 bytes",
            Json(json(&[(
                "tradingsymbol",
                r#""ABCDEFGHIJABCDEFGHIJABCDEFGHIJABCDEFGHIJ""#,
            )])),
            Err(SymbolTooLong),
        ),
        case(
            "six bid levels",
            Json(json(&[(
                "depth",
                &format!(
                    r#"{{"buy": [{}]}}"#,
                    [r#"{"price": 1, "quantity": 1}"#; 6].join(",")
                ),
            )])),
            Err(TooManyDepthLevels),
        ),
        case(
            "10 MB of junk",
            Json(vec![b'x'; 10 << 20]),
            Err(PayloadTooLarge),
        ),
        case(
            "Kite packet of 100 bytes",
            Kite(vec![0; 100]),
            Err(BadKitePacket),
        ),
        case(
            "Kite frame cut short",
            KiteFrame(vec![0, 1, 0, 184, 0, 0]),
            Err(BadKitePacket),
        ),
        case(
            "signal subject on the tick path",
            Subject(b"strategy.signals.momentum.256265"),
            Err(UnknownSubject),
        ),
        case("tick subject", Subject(b"market.ticks.NSE.256265"), Ok(0)),
    ];
    // Stateful flags need history or reference data.
    cases.push(Case {
        prior: Some(json(&[])),
        ..case(
            "time goes back 1 ms",
            Json(json(&[("timestamp", "1763999999999")])),
            Ok(FLAG_OUT_OF_ORDER),
        )
    });
    cases.push(Case {
        prior: Some(json(&[])),
        ..case(
            "price up 50%",
            Json(json(&[("last_price", "150.05")])),
            Ok(FLAG_PRICE_JUMP),
        )
    });
    cases.push(Case {
        prior: Some(json(&[("timestamp", r#""2099-01-01T00:00:00Z""#)])),
        ..case(
            "after a tick stamped 2099, an in-order tick is clean",
            Json(json(&[])),
            Ok(0),
        )
    });
    cases.push(Case {
        prior: Some(json(&[])),
        ..case(
            "price up 5% is within band",
            Json(json(&[("last_price", "105.05")])),
            Ok(0),
        )
    });
    cases.push(Case {
        reference: Some(reference(10_000_000, 0, 0)),
        ..case(
            "0.05 off a 0.10 grid",
            Json(json(&[])),
            Ok(FLAG_OFF_TICK_SIZE),
        )
    });
    cases.push(Case {
        reference: Some(reference(5_000_000, 9_000_000_000, 11_000_000_000)),
        ..case("on grid, inside circuit", Json(json(&[])), Ok(0))
    });
    cases.push(Case {
        reference: Some(reference(0, 9_000_000_000, 10_000_000_000)),
        ..case(
            "above upper circuit",
            Json(json(&[])),
            Ok(FLAG_OUTSIDE_CIRCUIT),
        )
    });
    cases
}

#[test]
fn every_flag_and_reason_has_its_expected_outcome() {
    let mut flags_seen = 0u32;
    let mut reasons_seen = Vec::new();
    for case in corpus() {
        let got = run(&case);
        assert_eq!(got, case.expect, "case: {}", case.name);
        match case.expect {
            Ok(flags) => flags_seen |= flags,
            Err(reason) => reasons_seen.push(reason),
        }
    }
    assert_eq!(flags_seen, FLAGS_ALL, "a flag has no corpus case");
    for reason in RejectReason::ALL {
        assert!(
            reasons_seen.contains(&reason),
            "no corpus case for {}",
            reason.as_str()
        );
    }
}
