//! The JSON parser reads the platform's ticks exactly, refuses bad input with the
//! right reason, agrees with a slow serde_json oracle on generated ticks, and never
//! panics or accepts non-JSON.
use super::*;
use crate::model::json::{civil_from_days, write_tick_json};
use crate::model::synthetic::SyntheticTicks;
use proptest::prelude::*;
use serde_json::Value;

const PYTHON_TICK: &[u8] = br#"{"instrument_token": 256265, "exchange": "NSE", "tradingsymbol": "SYM0", "last_price": 1012.34, "last_quantity": 42, "average_price": 1011.99, "volume_traded": 0, "oi": 12, "ohlc": {"open": 1007.34, "high": 1019.34, "low": 1003.34, "close": 1011.34}, "depth": {"buy": [{"price": 1012.29, "quantity": 1, "orders": 2}, {"price": 1012.24, "quantity": 3, "orders": 4}], "sell": [{"price": 1012.39, "quantity": 5, "orders": 6}]}, "timestamp": "2025-11-24T16:00:00.000+00:00"}"#;

fn parse(bytes: &[u8]) -> Result<(Tick, ParseInfo), RejectReason> {
    let mut tick = Tick::default();
    parse_json_tick(bytes, &mut tick).map(|info| (tick, info))
}

fn price_of(text: &str) -> Result<Price, RejectReason> {
    let json = format!(r#"{{"instrument_token":1,"timestamp":0,"last_price":{text}}}"#);
    parse(json.as_bytes()).map(|(t, _)| t.last_price)
}

#[test]
fn python_tick_parses_exactly() {
    let (t, info) = parse(PYTHON_TICK).unwrap();
    assert_eq!(info.missing(), 0);
    assert_eq!(t.instrument_token, 256_265);
    assert_eq!(t.exchange.as_bytes(), b"NSE");
    assert_eq!(t.tradingsymbol.as_bytes(), b"SYM0");
    assert_eq!(t.last_price, Price(101_234_000_000));
    assert_eq!(t.average_price, Price(101_199_000_000));
    assert_eq!(t.ohlc.close, Price(101_134_000_000));
    assert_eq!((t.last_quantity, t.volume_traded, t.oi), (42, 0, 12));
    assert_eq!(t.depth_buy.len, 2);
    assert_eq!(t.depth_buy.levels[1].quantity, 3);
    assert_eq!(t.depth_sell.levels[0].orders, 6);
    assert_eq!(t.timestamp_ms, 1_764_000_000_000);
}

#[test]
fn parser_keeps_receiver_stamps() {
    let mut tick = Tick {
        received_at_ms: 7,
        stream_seq: 9,
        last_quantity: 5,
        ..Tick::default()
    };
    parse_json_tick(
        br#"{"instrument_token":1,"last_price":1,"timestamp":5}"#,
        &mut tick,
    )
    .unwrap();
    assert_eq!(
        (tick.received_at_ms, tick.stream_seq, tick.last_quantity),
        (7, 9, 0)
    );
}

#[test]
fn prices_are_exact_fixed_point() {
    assert_eq!(price_of("1234.05"), Ok(Price(123_405_000_000)));
    assert_eq!(price_of("-1.25"), Ok(Price(-125_000_000)));
    assert_eq!(price_of("0.00000001"), Ok(Price(1)));
    assert_eq!(
        price_of("0.000000005"),
        Ok(Price(1)),
        "half rounds away from zero"
    );
    assert_eq!(price_of("-0.000000005"), Ok(Price(-1)));
    assert_eq!(price_of("0.0000000049999"), Ok(Price(0)));
    assert_eq!(price_of("1e3"), Ok(Price(100_000_000_000)));
    assert_eq!(price_of("12345E-2"), Ok(Price(12_345_000_000)));
    assert_eq!(price_of("1.5e-9"), Ok(Price(0)));
    assert_eq!(price_of("2.5e-8"), Ok(Price(3)));
    assert_eq!(price_of("1e-400"), Ok(Price(0)));
    assert_eq!(price_of("0e99999999999"), Ok(Price(0)));
    assert_eq!(price_of("1016.6999999999999"), Ok(Price(101_670_000_000)));
    assert_eq!(
        price_of("12345678901.234567891234"),
        Ok(Price(1_234_567_890_123_456_789))
    );
    assert_eq!(price_of("92233720368.54775807"), Ok(Price(i64::MAX)));
    assert_eq!(price_of("92233720368.54775808"), Err(BadNumber));
    assert_eq!(price_of("1e11"), Err(BadNumber));
    assert_eq!(price_of("1e99999"), Err(BadNumber));
    assert_eq!(price_of("123456789012345678901234567890"), Err(BadNumber));
    // A 20-digit integer part that fits a u64, then a fraction (found by cargo-fuzz):
    // the fraction must not be multiplied into the full mantissa (a panic in debug, a
    // wrapped price such as 0.9 in release).
    assert_eq!(price_of("11068046444225730970.5"), Err(BadNumber));
    assert_eq!(
        price_of("10000000000000000000.5e-9"),
        Ok(Price(1_000_000_000_000_000_000))
    );
    assert!(parse(
        br#"{"s": 10525023007999991052.5, "instrument_token":1,"timestamp":0,"last_price":1}"#
    )
    .is_ok());
    for bad in [
        "01", "1.", ".5", "-", "1e", "1e+", "+1", "0x10", "NaN", "1.2.3",
    ] {
        assert_eq!(price_of(bad), Err(MalformedJson), "{bad}");
    }
}

#[test]
fn timestamps_accept_iso_variants_and_epoch_ms() {
    let base = 1_764_000_000_000;
    for (text, ms) in [
        ("2025-11-24T16:00:00Z", base),
        ("2025-11-24T16:00:00.5+00:00", base + 500),
        ("2025-11-24T16:00:00.123456789Z", base + 123),
        ("2025-11-24 21:30:00.250+05:30", base + 250),
        ("2025-11-24T11:00:00-0500", base),
        ("2025-11-24T17:00:00+01", base),
        ("2025-11-24T16:00:00", base),
        ("1970-01-01T00:00:00Z", 0),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
    ] {
        assert_eq!(parse_iso8601_ms(text.as_bytes()), Some(ms), "{text}");
    }
    for bad in [
        "2025-02-29T00:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-11-24T24:00:00Z",
        "2025-11-24T16:00:00.Z",
        "2025-11-24T16:00:00.1234567890Z",
        "2025-11-24T16:00:00+5:30",
        "2025-11-24T16:00:00Zjunk",
        "2025-11-24",
        "1969-12-31T23:59:59Z",
        "",
    ] {
        assert_eq!(parse_iso8601_ms(bad.as_bytes()), None, "{bad}");
    }
    let epoch = br#"{"instrument_token":1,"last_price":1,"timestamp":1764000000123}"#;
    assert_eq!(parse(epoch).unwrap().0.timestamp_ms, 1_764_000_000_123);
}

#[test]
fn strings_decode_escapes_into_symbols() {
    let json = br#"{"instrument_token":1,"last_price":1,"timestamp":0,
        "tradingsymbol":"M\u0026M\"\\\/\ud83d\ude00", "exchange":"\u00e9"}"#;
    let (t, info) = parse(json).unwrap();
    assert_eq!(t.tradingsymbol.as_bytes(), "M&M\"\\/😀".as_bytes());
    assert_eq!(t.exchange.as_bytes(), "é".as_bytes());
    assert_eq!(info.present & FIELD_EXCHANGE, FIELD_EXCHANGE);
}

#[test]
fn unknown_keys_and_nulls_are_skipped() {
    let json = br#"{"x":{"a":[1,{"b":[[],{}]},"s\n",true,false,null,-0.5e3]},
        "instrument_token":1,"volume":7,"oi":null,"last_price":1,"timestamp":0,
        "depth":{"buy":[{"price":1,"quantity":2,"extra":[1]}],"sell":null,"x":{}},
        "ohlc":{"open":1,"high":2,"low":3}}"#;
    let (t, info) = parse(json).unwrap();
    assert_eq!(t.volume_traded, 7);
    assert_eq!(t.depth_buy.len, 1);
    assert_eq!(t.depth_buy.levels[0].orders, 0);
    assert_eq!(
        info.missing(),
        FIELD_EXCHANGE
            | FIELD_TRADINGSYMBOL
            | FIELD_LAST_QUANTITY
            | FIELD_AVERAGE_PRICE
            | FIELD_OI
            | FIELD_OHLC
            | FIELD_DEPTH_SELL
    );
}

#[test]
fn bad_input_gets_its_reason() {
    let cases: &[(&[u8], RejectReason)] = &[
        (b"", MalformedJson),
        (b"   ", MalformedJson),
        (b"{", MalformedJson),
        (b"{\"instrument_token\":1", MalformedJson),
        (b"{}x", MalformedJson),
        (b"{\"a\":1,}", MalformedJson),
        (b"{\"a\" 1}", MalformedJson),
        (b"{\"a\":tru}", MalformedJson),
        (b"{\"a\":\"\x01\"}", MalformedJson),
        (b"{\"a\":\"\\x\"}", MalformedJson),
        (b"{\"a\":\"\\ud800\"}", MalformedJson),
        (b"{\"a\":\"\xff\"}", InvalidUtf8),
        (b"{\"a\":\"\xc3\"}", InvalidUtf8),
        (b"[1]", WrongType),
        (b"{}", MissingField),
        (br#"{"instrument_token":1,"timestamp":0}"#, MissingField),
        (br#"{"instrument_token":1,"last_price":null,"timestamp":0}"#, MissingField),
        (br#"{"instrument_token":"1","last_price":1,"timestamp":0}"#, WrongType),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":true}"#, WrongType),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":0,"depth":[]}"#, WrongType),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":0,"exchange":5}"#, WrongType),
        (br#"{"instrument_token":-1,"last_price":1,"timestamp":0}"#, BadNumber),
        (br#"{"instrument_token":4294967296,"last_price":1,"timestamp":0}"#, BadNumber),
        (br#"{"instrument_token":1.0,"last_price":1,"timestamp":0}"#, BadNumber),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":0,"volume":1e3}"#, BadNumber),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":-1}"#, BadTimestamp),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":1.5}"#, BadTimestamp),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":"yesterday"}"#, BadTimestamp),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":0,"exchange":"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"}"#, SymbolTooLong),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":0,"depth":{"buy":[{"price":1,"quantity":1},{"price":1,"quantity":1},{"price":1,"quantity":1},{"price":1,"quantity":1},{"price":1,"quantity":1},{"price":1,"quantity":1}]}}"#, TooManyDepthLevels),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":0,"depth":{"sell":[{"price":1}]}}"#, MissingField),
        (br#"{"instrument_token":1,"last_price":1,"timestamp":0,"depth":{"sell":[{"price":1,"quantity":1,"orders":65536}]}}"#, BadNumber),
    ];
    for (bytes, reason) in cases {
        assert_eq!(
            parse(bytes).map(|_| ()),
            Err(*reason),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn huge_and_deep_payloads_are_refused_fast() {
    let junk = vec![b'['; 10 << 20];
    assert_eq!(parse(&junk).map(|_| ()), Err(PayloadTooLarge));
    let mut deep = b"{\"a\":".to_vec();
    deep.extend(std::iter::repeat(b'[').take(JSON_PAYLOAD_BYTES_MAX - 10));
    assert_eq!(parse(&deep).map(|_| ()), Err(MalformedJson));
    let mut ok = b"{\"a\":".to_vec();
    ok.extend(std::iter::repeat(b'[').take(NESTING_MAX as usize));
    ok.extend(std::iter::repeat(b']').take(NESTING_MAX as usize));
    ok.extend(br#","instrument_token":1,"last_price":1,"timestamp":0}"#);
    assert!(parse(&ok).is_ok());
}

#[test]
fn synthetic_json_round_trips() {
    let mut feed = SyntheticTicks::new(10, 3);
    let mut buf = Vec::new();
    for i in 0..200 {
        let mut expect = feed.next_tick(1_764_000_000_000 + i * 37, 5, 6);
        buf.clear();
        write_tick_json(&mut buf, &expect);
        let mut got = Tick {
            received_at_ms: 5,
            stream_seq: 6,
            ..Tick::default()
        };
        let info = parse_json_tick(&buf, &mut got).unwrap();
        assert_eq!(info.missing(), 0);
        expect.data_quality_score = 0.0;
        assert_eq!(got, expect);
    }
}

// ---- The serde_json oracle -------------------------------------------------------

/// Days before `year`-`month`-01 since 1970, counted the slow, obvious way.
fn slow_days(year: i64, month: u32) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days = 0;
    for y in 1970..year {
        days += if leap(y) { 366 } else { 365 };
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days + lengths[..month as usize - 1].iter().sum::<i64>()
}

/// The oracle's ISO-8601 reading: split on the separators and count days slowly.
fn slow_iso(text: &str) -> Option<i64> {
    let (date, rest) = text.split_at(10);
    let mut parts = date.split('-').map(|p| p.parse::<i64>().unwrap());
    let (y, mo, d) = (parts.next()?, parts.next()?, parts.next()?);
    let time = &rest[1..];
    let (clock, offset) = match time.find(['Z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => (time, ""),
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = hms.split(':').map(|p| p.parse::<i64>().unwrap());
    let secs = hms.next()? * 3600 + hms.next()? * 60 + hms.next()?;
    let millis = format!("{frac:0<3}")[..3].parse::<i64>().unwrap();
    let offset_s = match offset {
        "" | "Z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (h, m) = o[1..].split_once(':').unwrap();
            sign * (h.parse::<i64>().unwrap() * 3600 + m.parse::<i64>().unwrap() * 60)
        }
    };
    let days = slow_days(y, mo as u32) + d - 1;
    Some((days * 86_400 + secs - offset_s) * 1000 + millis)
}

/// serde_json's view of a tick: `None` when a required field is missing.
fn oracle(bytes: &[u8]) -> Option<(Tick, u16)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let price = |v: &Value| Price::from_f64(v.as_f64().unwrap()).unwrap();
    let get = |k: &str| v.get(k).filter(|x| !x.is_null());
    let mut t = Tick::default();
    let mut present = FIELD_EXCHANGE_TIME;
    t.instrument_token = get("instrument_token")?.as_u64()? as u32;
    t.last_price = price(get("last_price")?);
    t.timestamp_ms = match get("timestamp")? {
        Value::String(s) => slow_iso(s)?,
        n => n.as_i64()?,
    };
    if let Some(s) = get("exchange") {
        t.exchange = Symbol::new(s.as_str()?.as_bytes())?;
        present |= FIELD_EXCHANGE;
    }
    if let Some(s) = get("tradingsymbol") {
        t.tradingsymbol = Symbol::new(s.as_str()?.as_bytes())?;
        present |= FIELD_TRADINGSYMBOL;
    }
    if let Some(n) = get("last_quantity") {
        t.last_quantity = n.as_u64()? as u32;
        present |= FIELD_LAST_QUANTITY;
    }
    if let Some(n) = get("average_price") {
        t.average_price = price(n);
        present |= FIELD_AVERAGE_PRICE;
    }
    if let Some(n) = get("volume_traded").or(get("volume")) {
        t.volume_traded = n.as_u64()?;
        present |= FIELD_VOLUME;
    }
    if let Some(n) = get("oi") {
        t.oi = n.as_u64()?;
        present |= FIELD_OI;
    }
    if let Some(o) = get("ohlc") {
        t.ohlc = Ohlc {
            open: price(&o["open"]),
            high: price(&o["high"]),
            low: price(&o["low"]),
            close: price(&o["close"]),
        };
        present |= FIELD_OHLC;
    }
    if let Some(d) = get("depth") {
        for (name, side, bit) in [
            ("buy", &mut t.depth_buy, FIELD_DEPTH_BUY),
            ("sell", &mut t.depth_sell, FIELD_DEPTH_SELL),
        ] {
            if let Some(levels) = d.get(name).and_then(Value::as_array) {
                for (i, l) in levels.iter().enumerate() {
                    side.levels[i] = DepthLevel {
                        price: price(&l["price"]),
                        quantity: l["quantity"].as_u64()? as u32,
                        orders: l["orders"].as_u64()? as u16,
                    };
                }
                side.len = levels.len() as u8;
                present |= bit;
            }
        }
    }
    Some((t, present))
}

use crate::model::Ohlc;

// ---- Generated ticks -------------------------------------------------------------

/// A price with at most 8 decimals below 10^6 (where `f64` still resolves 10^-8, so
/// the oracle's `Price::from_f64` is exact), rendered plainly or with an exponent.
fn price_text() -> impl Strategy<Value = String> {
    (0i64..100_000_000_000_000, 0u32..9, any::<bool>()).prop_map(|(units, keep, exp)| {
        // Keep `keep` decimals: a realistic mix of 1234, 1234.5, 1234.05, ...
        let step = 10i64.pow(8 - keep);
        let units = units / step * step;
        if exp {
            format!("{units}e-8")
        } else {
            let mut out = Vec::new();
            crate::model::json::write_price(&mut out, Price(units));
            String::from_utf8(out).unwrap()
        }
    })
}

/// A JSON string literal of a short symbol, with escapes mixed in.
fn symbol_text() -> impl Strategy<Value = String> {
    (proptest::collection::vec(
        (
            prop::sample::select(vec!['A', 'Z', '9', '&', '-', '"', '\\', 'é', '/']),
            any::<bool>(),
        ),
        0..10,
    ))
    .prop_map(|chars| {
        let mut s = String::from("\"");
        for (c, escape) in chars {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                c if escape => s.push_str(&format!("\\u{:04x}", c as u32)),
                c => s.push(c),
            }
        }
        s.push('"');
        s
    })
}

/// A timestamp: epoch ms, or ISO with 0/3/6 fraction digits and a Z or ±HH:MM offset.
fn timestamp_text() -> impl Strategy<Value = String> {
    (
        1_600_000_000_000i64..1_900_000_000_000,
        prop::sample::select(vec![0usize, 3, 6]),
        -40i64..56,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(ms, frac, quarter_hours, zulu, epoch)| {
            if epoch {
                return ms.to_string();
            }
            let offset_min = if zulu { 0 } else { quarter_hours * 15 };
            let local = ms + offset_min * 60_000;
            let (secs, millis) = (local.div_euclid(1000), local.rem_euclid(1000));
            let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
            let s = secs.rem_euclid(86_400);
            let mut text = format!(
                "\"{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
                s / 3600,
                s / 60 % 60,
                s % 60
            );
            match frac {
                3 => text.push_str(&format!(".{millis:03}")),
                6 => text.push_str(&format!(".{millis:03}{:03}", millis * 7 % 1000)),
                _ => {}
            }
            if zulu {
                text.push('Z');
            } else {
                let a = offset_min.abs();
                let sign = if offset_min < 0 { '-' } else { '+' };
                text.push_str(&format!("{sign}{:02}:{:02}", a / 60, a % 60));
            }
            text.push('"');
            text
        })
}

fn level_text() -> impl Strategy<Value = String> {
    (price_text(), any::<u32>(), any::<u16>())
        .prop_map(|(p, q, o)| format!(r#"{{"price": {p}, "quantity": {q}, "orders": {o}}}"#))
}

fn side_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(level_text(), 0..=5).prop_map(|l| format!("[{}]", l.join(",")))
}

/// Generated `"key": value` pairs of one tick, in random order, some dropped.
fn tick_fields() -> impl Strategy<Value = Vec<String>> {
    let required = (any::<u32>(), price_text(), timestamp_text());
    let optional = (
        proptest::option::of(symbol_text()),
        proptest::option::of(symbol_text()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(price_text()),
        proptest::option::of((any::<u64>(), any::<bool>())),
        proptest::option::of(any::<u64>()),
        proptest::option::of(proptest::collection::vec(price_text(), 4)),
        proptest::option::of((
            proptest::option::of(side_text()),
            proptest::option::of(side_text()),
        )),
        any::<bool>(),
    );
    (required, optional).prop_flat_map(
        |((token, price, ts), (ex, sym, lq, avg, vol, oi, ohlc, depth, extra))| {
            let mut f = vec![
                format!(r#""instrument_token": {token}"#),
                format!(r#""last_price": {price}"#),
                format!(r#""timestamp": {ts}"#),
            ];
            if let Some(s) = ex {
                f.push(format!(r#""exchange": {s}"#));
            }
            if let Some(s) = sym {
                f.push(format!(r#""tradingsymbol": {s}"#));
            }
            if let Some(q) = lq {
                f.push(format!(r#""last_quantity": {q}"#));
            }
            if let Some(p) = avg {
                f.push(format!(r#""average_price": {p}"#));
            }
            if let Some((v, alias)) = vol {
                f.push(format!(
                    r#""{}": {v}"#,
                    if alias { "volume" } else { "volume_traded" }
                ));
            }
            if let Some(v) = oi {
                f.push(format!(r#""oi": {v}"#));
            }
            if let Some(p) = ohlc {
                f.push(format!(
                    r#""ohlc": {{"open": {}, "high": {}, "low": {}, "close": {}}}"#,
                    p[0], p[1], p[2], p[3]
                ));
            }
            if let Some((buy, sell)) = depth {
                let sides: Vec<String> = [("buy", buy), ("sell", sell)]
                    .into_iter()
                    .filter_map(|(n, s)| s.map(|s| format!(r#""{n}": {s}"#)))
                    .collect();
                f.push(format!(r#""depth": {{{}}}"#, sides.join(", ")));
            }
            if extra {
                f.push(
                    r#""tradable": true, "meta": {"a": [1, {"b": null}], "c": "x\"y"}"#.to_string(),
                );
            }
            Just(f).prop_shuffle()
        },
    )
}

/// Joins fields into an object with random whitespace around every token.
fn tick_json() -> impl Strategy<Value = Vec<u8>> {
    (
        tick_fields(),
        proptest::collection::vec(
            prop::sample::select(vec!["", " ", "\n", "\t", "\r\n  "]),
            16,
        ),
    )
        .prop_map(|(fields, ws)| {
            let mut s = format!("{}{{{}", ws[0], ws[1]);
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    s.push_str(&format!("{},{}", ws[(2 * i) % 16], ws[(2 * i + 1) % 16]));
                }
                s.push_str(&f.replacen(": ", &format!("{}:{}", ws[i % 16], ws[(i + 5) % 16]), 1));
            }
            s.push_str(&format!("{}}}{}", ws[14], ws[15]));
            s.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Generated ticks: our parser and the serde_json oracle agree field for field.
    #[test]
    fn agrees_with_serde_json_oracle(json in tick_json()) {
        let (expect, present) = oracle(&json).expect("generated ticks are valid");
        let (got, info) = parse(&json).map_err(|r| TestCaseError::fail(format!("{r:?}: {}", String::from_utf8_lossy(&json))))?;
        prop_assert_eq!(got, expect, "{}", String::from_utf8_lossy(&json));
        prop_assert_eq!(info.present, present);
    }

    /// Arbitrary bytes never panic, and whatever we accept is JSON.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if parse(&bytes).is_ok() {
            prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
        }
    }

    /// Valid ticks with bytes replaced, inserted or deleted never panic, and whatever
    /// we accept is JSON.
    #[test]
    fn mutated_ticks_never_panic(
        json in tick_json(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = json;
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len().max(1));
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        if parse(&bytes).is_ok() {
            prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok(), "{}", String::from_utf8_lossy(&bytes));
        }
    }
}

#[test]
fn counts_reach_u64_max_and_no_further() {
    let with =
        |v: &str| format!(r#"{{"instrument_token":1,"last_price":1,"timestamp":0,"oi":{v}}}"#);
    assert_eq!(
        parse(with("18446744073709551615").as_bytes()).unwrap().0.oi,
        u64::MAX
    );
    assert_eq!(
        parse(with("18446744073709551616").as_bytes()).map(|_| ()),
        Err(BadNumber)
    );
    assert_eq!(
        parse(with("184467440737095516150").as_bytes()).map(|_| ()),
        Err(BadNumber)
    );
}

#[test]
fn swar_finds_the_first_special_byte() {
    // Every special byte at every position of a word, after plain bytes.
    for special in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff] {
        for at in 0..8 {
            let mut word = *b"abcdefgh";
            word[at] = special;
            let flags = swar_special(u64::from_le_bytes(word));
            assert_eq!(
                flags.trailing_zeros() / 8,
                at as u32,
                "{special:#x} at {at}"
            );
        }
    }
    assert_eq!(swar_special(u64::from_le_bytes(*b" ~!#[]{}")), 0);
}

#[test]
fn real_python_stack_output_parses() {
    // Verbatim `json.dumps(tick(777))` from python_stack.py (862 B), float noise included.
    let json = br#"{"instrument_token": 261704, "exchange": "NSE", "tradingsymbol": "SYM777", "last_price": 1779.69, "last_quantity": 434, "average_price": 1779.3400000000001, "volume_traded": 10101, "oi": 841235, "ohlc": {"open": 1774.69, "high": 1786.69, "low": 1770.69, "close": 1778.69}, "depth": {"buy": [{"price": 1779.64, "quantity": 517, "orders": 17}, {"price": 1779.59, "quantity": 966, "orders": 32}, {"price": 1779.54, "quantity": 3683, "orders": 31}, {"price": 1779.49, "quantity": 3110, "orders": 14}, {"price": 1779.44, "quantity": 769, "orders": 32}], "sell": [{"price": 1779.74, "quantity": 233, "orders": 25}, {"price": 1779.79, "quantity": 3546, "orders": 39}, {"price": 1779.84, "quantity": 18, "orders": 45}, {"price": 1779.89, "quantity": 3649, "orders": 18}, {"price": 1779.94, "quantity": 1875, "orders": 38}]}, "timestamp": "2025-11-24T16:00:00.388+00:00"}"#;
    let (t, info) = parse(json).unwrap();
    assert_eq!(info.missing(), 0);
    assert_eq!(t.average_price, Price(177_934_000_000));
    assert_eq!(t.depth_sell.levels[4].price, Price(177_994_000_000));
    assert_eq!(t.timestamp_ms, 1_764_000_000_388);
    assert_eq!(oracle(json).unwrap().0, t);
}

#[test]
fn digit_runs_read_every_length_at_every_offset() {
    // Runs of 0..=20 digits, ending in each kind of byte or at the end of the input,
    // after 0..8 bytes of padding (so every split between the word loop and the byte
    // loop is hit), against a byte-at-a-time reading.
    let digits = b"98765432109876543210";
    for len in 0..=digits.len() {
        for pad in 0..8 {
            for end in [
                &b""[..],
                b",",
                b".",
                b"e",
                b"/",
                b":",
                b"}",
                b"\x00",
                b"\xb5",
            ] {
                let mut text = vec![b' '; pad];
                text.extend_from_slice(&digits[..len]);
                text.extend_from_slice(end);
                text.extend_from_slice(if end.is_empty() { b"" } else { b"123456789" });
                let mut got = 7u64;
                let stop = digit_run(&text, pad, &mut got);
                let expect = digits[..len].iter().fold(7u64, |m, &d| {
                    m.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
                });
                assert_eq!(
                    (stop, got),
                    (pad + len, expect),
                    "{len} digits after {pad}, then {end:?}"
                );
            }
        }
    }
}

#[test]
fn swar_non_digit_flags_exactly_the_first_non_digit() {
    for b in 0..=255u8 {
        for at in 0..8 {
            let mut word = *b"01234567";
            word[at] = b;
            let values = u64::from_le_bytes(word).wrapping_sub(0x3030_3030_3030_3030);
            let first = (swar_non_digit(values).trailing_zeros() / 8) as usize;
            let expect = if b.is_ascii_digit() { 8 } else { at };
            assert_eq!(first, expect, "{b:#x} at {at}");
        }
    }
}

/// Runs the full reader on `text` from `pos`: the value and the end position.
fn full_read<T>(
    text: &[u8],
    convert: impl Fn(Number) -> Result<T, RejectReason>,
) -> Option<(T, usize)> {
    let mut scan = Scanner {
        bytes: text,
        pos: 0,
    };
    let value = convert(scan.number().ok()?).ok()?;
    Some((value, scan.pos))
}

/// What `read` (a canonical reader's number) takes from `text` is what the full reader
/// reads, whenever a `,` or `}` follows it.
fn canonical_read_agrees<T: PartialEq + std::fmt::Debug>(
    text: &[u8],
    read: impl Fn(&mut Scanner<'_>) -> Option<T>,
    convert: impl Fn(Number) -> Result<T, RejectReason>,
    what: &str,
) {
    let mut scan = Scanner {
        bytes: text,
        pos: 0,
    };
    if let Some(value) = read(&mut scan) {
        if matches!(text.get(scan.pos), Some(b',' | b'}')) {
            assert_eq!(Some((value, scan.pos)), full_read(text, convert), "{what}");
        }
    }
}

#[test]
fn plain_numbers_agree_with_the_full_reader() {
    // Every split of up to 9 integer and 9 fraction digits (with and without a leading
    // zero), each followed by every kind of byte or by the end of the payload: where
    // the one-word paths take a number they read what the full reader reads, and
    // they take every plain price and count of up to 7 + 7 digits.
    let followers: [&[u8]; 14] = [
        b"",
        b",",
        b"}",
        b" ",
        b"e5",
        b"E5",
        b".5",
        b"5",
        b", \"quantity\": 1",
        b".5, \"quantity\": 1",
        b"/5, \"quantity\": 1",
        b"e5, \"quantity\": 1",
        b"./, \"quantity\": 1",
        b"}, {\"price\": 1",
    ];
    for int_digits in 1..=9usize {
        for decimals in 0..=9usize {
            for zero in [false, true] {
                let mut number = String::new();
                for i in 0..int_digits {
                    number.push(char::from(b'0' + ((i as u8 * 7 + 3) % 10)));
                }
                if zero {
                    number.replace_range(..1, "0");
                }
                if decimals > 0 {
                    number.push('.');
                    for i in 0..decimals {
                        number.push(char::from(b'0' + ((i as u8 * 3 + 1) % 10)));
                    }
                }
                for follower in followers {
                    let mut text = number.clone().into_bytes();
                    text.extend_from_slice(follower);
                    let mut scan = Scanner {
                        bytes: &text,
                        pos: 0,
                    };
                    let plain = scan.plain_price().map(|p| (p, scan.pos));
                    if let Some(plain) = plain {
                        assert_eq!(
                            Some(plain),
                            full_read(&text, Number::to_price),
                            "{number:?} {follower:?}"
                        );
                    } else {
                        assert_eq!(scan.pos, 0);
                    }
                    let plain_form = !zero || int_digits == 1;
                    let room = text.len() >= int_digits + 9
                        || (decimals + int_digits < 7 && text.len() >= 8);
                    if plain_form
                        && decimals > 0
                        && int_digits < 8
                        && decimals < 8
                        && room
                        && matches!(follower.first(), Some(b',' | b'}' | b' '))
                    {
                        assert!(plain.is_some(), "plain price {number:?} {follower:?}");
                    }
                    // The canonical readers' variants leave the end of the number to
                    // their next literal: what they take must be the full reader's
                    // number whenever that literal (`,` or `}`) follows.
                    let what = format!("{number:?} {follower:?}");
                    canonical_read_agrees(
                        &text,
                        |s| s.price_run::<false>(),
                        Number::to_price,
                        &what,
                    );
                    canonical_read_agrees(&text, |s| s.count_run::<false>(), Number::to_u64, &what);
                    let mut scan = Scanner {
                        bytes: &text,
                        pos: 0,
                    };
                    let plain = scan.plain_count().map(|n| (n, scan.pos));
                    if let Some(plain) = plain {
                        assert_eq!(
                            Some(plain),
                            full_read(&text, Number::to_u64),
                            "{number:?} {follower:?}"
                        );
                    } else {
                        assert_eq!(scan.pos, 0);
                    }
                    if plain_form
                        && decimals == 0
                        && int_digits < 8
                        && text.len() >= 8
                        && matches!(follower.first(), Some(b',' | b'}' | b' '))
                    {
                        assert!(plain.is_some(), "plain count {number:?} {follower:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn plain_timestamps_agree_with_the_full_reader() {
    // The word-at-a-time path against `parse_iso8601_ms` on valid shapes, on every
    // byte of a valid shape spoiled, and on impossible dates and times.
    let mut cases: Vec<String> = vec![
        "2025-11-24T16:00:00.388Z".into(),
        "2025-11-24T16:00:00.388+00:00".into(),
        "2025-11-24T21:30:00.250+05:30".into(),
        "2025-11-24T11:00:00.000-05:00".into(),
        "1970-01-01T00:00:00.000Z".into(),
        "1970-01-01T00:00:00.000+00:01".into(),
        "2024-02-29T23:59:59.999Z".into(),
        "2025-02-29T00:00:00.000Z".into(),
        "2025-13-01T00:00:00.000Z".into(),
        "2025-00-01T00:00:00.000Z".into(),
        "2025-11-31T00:00:00.000Z".into(),
        "2025-11-00T00:00:00.000Z".into(),
        "2025-11-24T24:00:00.000Z".into(),
        "2025-11-24T23:60:00.000Z".into(),
        "2025-11-24T23:59:60.000Z".into(),
        "2025-11-24T16:00:00.000+24:00".into(),
        "2025-11-24T16:00:00.000+05:60".into(),
        "9999-12-31T23:59:59.999Z".into(),
        "9999-12-31T23:59:59.999-00:01".into(),
        "2025-11-24t16:00:00.388Z".into(),
        "2025-11-24 16:00:00.388Z".into(),
    ];
    let valid = "2025-11-24T16:00:00.388+05:30";
    for at in 0..valid.len() {
        for spoil in ["/", ":", "A", "9", "0", "Z", "\u{7f}", "\u{e9}"] {
            let mut text = valid.to_string();
            text.replace_range(at..at + 1, spoil);
            cases.push(text);
        }
    }
    for case in cases {
        for tail in ["\"}", "\"", ""] {
            let json = format!("\"{case}{tail}");
            let mut scan = Scanner {
                bytes: json.as_bytes(),
                pos: 0,
            };
            let Some(ms) = scan.plain_timestamp() else {
                assert_eq!(scan.pos, 0);
                continue;
            };
            assert_eq!(Some(ms), parse_iso8601_ms(case.as_bytes()), "{json}");
            assert_eq!(scan.pos, case.len() + 2, "{json}");
        }
    }
    // The common shapes do take the fast path.
    for json in [
        "\"2025-11-24T16:00:00.388Z\"}",
        "\"2025-11-24T16:00:00.388+00:00\"}",
    ] {
        let mut scan = Scanner {
            bytes: json.as_bytes(),
            pos: 0,
        };
        assert_eq!(scan.plain_timestamp(), Some(1_764_000_000_388), "{json}");
    }
    // Whatever the digits: the writer's timestamps over 1970..2100.
    for ms in (0..4_102_444_800_000i64)
        .step_by(7_777_777_777)
        .chain([4_102_444_799_999])
    {
        let mut json = b"\"".to_vec();
        crate::model::json::write_iso8601_ms(&mut json, ms);
        json.extend_from_slice(b"\"}");
        let mut scan = Scanner {
            bytes: &json,
            pos: 0,
        };
        let text = String::from_utf8_lossy(&json).into_owned();
        assert_eq!(scan.plain_timestamp(), Some(ms), "{text}");
    }
}

// ---- Fast paths against the full readers -----------------------------------------

/// [`parse`] with the fast paths off on this thread: the full readers alone.
fn parse_full(bytes: &[u8]) -> Result<(Tick, ParseInfo), RejectReason> {
    FAST_PATHS.with(|fast| fast.set(false));
    let parsed = parse(bytes);
    FAST_PATHS.with(|fast| fast.set(true));
    parsed
}

/// `value % 10^digits`, for drawing numbers of every length evenly.
fn of_digits(value: u64, digits: u32) -> u64 {
    value % 10u64.saturating_pow(digits).max(1)
}

/// A price as Python's `repr(float)` or our writer prints it, over every length the
/// fast paths split on: 1 to 12 integer digits and 1 to 10 decimals (leading zeros
/// and trailing zeros included); now and then an exponent, a minus sign or an integer.
fn wide_price_text() -> impl Strategy<Value = String> {
    prop_oneof![
        40 => (0u32..=10, any::<u64>(), 1u32..=10, any::<u64>()).prop_map(|(id, i, fd, f)| {
            format!("{}.{:0width$}", of_digits(i, id), of_digits(f, fd), width = fd as usize)
        }),
        // Past i64 at 10^-8 from 92233720368.54775808 up.
        1 => (11u32..=12, any::<u64>(), 1u32..=10, any::<u64>()).prop_map(|(id, i, fd, f)| {
            format!("{}.{:0width$}", of_digits(i, id), of_digits(f, fd), width = fd as usize)
        }),
        2 => (1u64..100_000, -12i32..12).prop_map(|(m, e)| format!("{m}e{e}")),
        2 => (0u64..100_000, 1u32..=3).prop_map(|(i, fd)| format!("-{i}.{}", "5".repeat(fd as usize))),
        2 => (0u32..=9, any::<u64>()).prop_map(|(id, i)| of_digits(i, id).to_string()),
    ]
}

/// A count of 1 to 9 digits (fits every count field), now and then 10 to 20 (may not):
/// refusals are rare enough that most ticks are read to the end.
fn wide_count_text() -> impl Strategy<Value = String> {
    prop_oneof![
        60 => (1u32..=9, any::<u64>()).prop_map(|(digits, value)| of_digits(value, digits).to_string()),
        1 => (10u32..=20, any::<u64>()).prop_map(|(digits, value)| of_digits(value, digits).to_string()),
    ]
}

/// A tick in the platform's exact spelling (`json.dumps` separators, its key order),
/// with `price`, `count` and `small` drawing the numbers; sides of 0 to 6 levels.
fn canonical_tick_json(
    price: BoxedStrategy<String>,
    count: BoxedStrategy<String>,
    small: BoxedStrategy<String>,
) -> impl Strategy<Value = Vec<u8>> {
    let level = (price.clone(), count.clone(), small.clone())
        .prop_map(|(p, q, o)| format!(r#"{{"price": {p}, "quantity": {q}, "orders": {o}}}"#));
    let side = proptest::collection::vec(level, 0..=6).prop_map(|l| format!("[{}]", l.join(", ")));
    let head = (
        count.clone(),
        symbol_text(),
        symbol_text(),
        price.clone(),
        count.clone(),
    );
    let body = (
        price.clone(),
        count.clone(),
        count,
        proptest::collection::vec(price, 4),
    );
    (head, body, side.clone(), side, timestamp_text()).prop_map(
        |((token, exchange, symbol, last, quantity), (average, volume, oi, ohlc), buy, sell, ts)| {
            format!(
                r#"{{"instrument_token": {token}, "exchange": {exchange}, "tradingsymbol": {symbol}, "last_price": {last}, "last_quantity": {quantity}, "average_price": {average}, "volume_traded": {volume}, "oi": {oi}, "ohlc": {{"open": {}, "high": {}, "low": {}, "close": {}}}, "depth": {{"buy": {buy}, "sell": {sell}}}, "timestamp": {ts}}}"#,
                ohlc[0], ohlc[1], ohlc[2], ohlc[3]
            )
            .into_bytes()
        },
    )
}

/// Canonical ticks whose numbers the serde_json oracle reads exactly and that fit.
fn canonical_valid_tick_json() -> impl Strategy<Value = Vec<u8>> {
    let count = any::<u32>().prop_map(|n| n.to_string());
    let small = any::<u16>().prop_map(|n| n.to_string());
    canonical_tick_json(price_text().boxed(), count.boxed(), small.boxed())
}

/// Canonical ticks with numbers of every length, in range or not.
fn canonical_wide_tick_json() -> impl Strategy<Value = Vec<u8>> {
    let small = (0u32..70_000).prop_map(|n| n.to_string());
    canonical_tick_json(
        wide_price_text().boxed(),
        wide_count_text().boxed(),
        small.boxed(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Ticks in the platform's exact spelling (the fast paths' home ground) read as
    /// serde_json reads them, and as the full readers alone read them.
    #[test]
    fn canonical_ticks_agree_with_serde_json_and_the_full_readers(json in canonical_valid_tick_json()) {
        let text = String::from_utf8_lossy(&json).into_owned();
        let got = parse(&json);
        prop_assert_eq!(&got, &parse_full(&json), "{}", text);
        let levels = |side: &str| {
            let v: Value = serde_json::from_slice(&json).unwrap();
            v["depth"][side].as_array().unwrap().len()
        };
        if levels("buy") > DEPTH_LEVELS || levels("sell") > DEPTH_LEVELS {
            prop_assert_eq!(got.map(|_| ()), Err(TooManyDepthLevels));
        } else {
            let (expect, present) = oracle(&json).expect("generated ticks are valid");
            let (tick, info) = got.map_err(|r| TestCaseError::fail(format!("{r:?}: {text}")))?;
            prop_assert_eq!(tick, expect, "{}", text);
            prop_assert_eq!(info.present, present);
        }
    }

    /// Numbers of every length and range, in the canonical spelling: accepted or
    /// refused, and read, exactly as by the full readers alone.
    #[test]
    fn fast_paths_agree_with_the_full_readers(json in canonical_wide_tick_json()) {
        prop_assert_eq!(parse(&json), parse_full(&json), "{}", String::from_utf8_lossy(&json));
    }

    /// Canonical ticks with bytes replaced, inserted or deleted (each fast path
    /// broken at every point): the same outcome, reason included, as the full readers.
    #[test]
    fn fast_paths_agree_on_mutated_ticks(
        json in canonical_wide_tick_json(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = json;
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len().max(1));
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        let got = parse(&bytes);
        prop_assert_eq!(&got, &parse_full(&bytes), "{}", String::from_utf8_lossy(&bytes));
        if got.is_ok() {
            prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
        }
    }

    /// Arbitrary bytes: no panic on either path, and the same outcome.
    #[test]
    fn arbitrary_bytes_agree_on_both_paths(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert_eq!(parse(&bytes), parse_full(&bytes));
    }
}

/// Reads a side's levels (after its `[`) by the canonical path only.
fn plain_levels(scan: &mut Scanner<'_>) {
    let mut levels = 0;
    while plain_level(scan).is_some() {
        levels += 1;
        if !scan.eat(b", ") {
            break;
        }
    }
    assert!(levels > 0);
    assert!(scan.eat(b"]"));
}

#[test]
fn bytes_after_a_canonical_tick_are_read_as_by_the_full_readers() {
    // The straight-through reader takes a tick only when its closing brace ends the
    // payload; whitespace after it is fine, anything else is malformed, either way as
    // the full readers say.
    let mut feed = SyntheticTicks::new(10, 3);
    let mut json = Vec::new();
    write_tick_json(&mut json, &feed.next_tick(1_764_000_000_123, 0, 0));
    for (after, ok) in [
        (&b""[..], true),
        (b" \n", true),
        (b"x", false),
        (b"}", false),
        (b",", false),
        (b"{}", false),
    ] {
        let mut text = json.clone();
        text.extend_from_slice(after);
        let got = parse(&text);
        assert_eq!(got, parse_full(&text), "{after:?}");
        assert_eq!(got.is_ok(), ok, "{after:?}");
        if !ok {
            assert_eq!(got.map(|_| ()), Err(MalformedJson), "{after:?}");
        }
    }
}

#[test]
fn a_symbol_must_end_at_its_quote() {
    // A symbol's closing quote replaced by a byte that ends a plain string early (a
    // control byte, a backslash, a UTF-8 lead byte): the straight-through reader must
    // not take that byte for the quote, though the literal after it matches.
    let mut feed = SyntheticTicks::new(10, 3);
    let mut json = Vec::new();
    write_tick_json(&mut json, &feed.next_tick(1_764_000_000_123, 0, 0));
    let at = json
        .windows(5)
        .position(|w| w == b"NSE\",")
        .expect("exchange")
        + 3;
    for byte in [0x01, b'\\', 0xc3, 0x7f] {
        let mut text = json.clone();
        text[at] = byte;
        assert_eq!(parse(&text), parse_full(&text), "{byte:#x}");
        assert!(parse(&text).is_err(), "{byte:#x}");
    }
}

#[test]
fn canonical_ticks_take_the_fast_paths() {
    // The differential tests above mean something only if the fast paths run: the
    // writer's ticks and python_stack.py's are read here end to end by nothing but
    // key guesses, the canonical level and `ohlc` readers and the one-word numbers
    // and timestamps.
    let python = br#"{"instrument_token": 261704, "exchange": "NSE", "tradingsymbol": "SYM777", "last_price": 1779.69, "last_quantity": 434, "average_price": 1779.34, "volume_traded": 10101, "oi": 841235, "ohlc": {"open": 1774.69, "high": 1786.69, "low": 1770.69, "close": 1778.69}, "depth": {"buy": [{"price": 1779.64, "quantity": 517, "orders": 17}, {"price": 1779.59, "quantity": 966, "orders": 32}], "sell": [{"price": 1779.74, "quantity": 233, "orders": 25}]}, "timestamp": "2025-11-24T16:00:00.388+00:00"}"#;
    let mut feed = SyntheticTicks::new(10, 3);
    let mut ours = Vec::new();
    write_tick_json(&mut ours, &feed.next_tick(1_764_000_000_123, 0, 0));
    // Ticks left over from another message, with flags and a score, and with five
    // levels a side or none: nothing of them may survive.
    let full = Tick {
        validation_flags: u32::MAX,
        data_quality_score: 0.5,
        ..feed.next_tick(1_764_000_000_000, 0, 0)
    };
    let bare = Tick {
        depth_buy: Depth::default(),
        depth_sell: Depth::default(),
        ..full
    };
    for json in [&python[..], &ours] {
        // The whole tick straight through, to what the full readers read.
        let text = String::from_utf8_lossy(json);
        assert!(plain_tick(json, &mut Tick::default()).is_some(), "{text}");
        for stale in [full, bare] {
            let mut tick = stale;
            let info = parse_json_tick(json, &mut tick);
            tick.received_at_ms = 0;
            tick.stream_seq = 0;
            assert_eq!(info.map(|info| (tick, info)), parse_full(json), "{text}");
        }
        // And member by member, as a tick not quite canonical is read.
        let mut scan = Scanner {
            bytes: json,
            pos: 0,
        };
        scan.open_top().unwrap();
        let mut guess = TickKey::FIRST;
        let mut keys = 0;
        while guess.eat(&mut scan) {
            keys += 1;
            match guess {
                TickKey::Exchange | TickKey::Symbol => {
                    let mut symbol = Symbol::EMPTY;
                    assert!(scan.symbol_into(&mut symbol).unwrap());
                    assert!(!symbol.as_bytes().is_empty());
                }
                TickKey::Ohlc => assert!(plain_ohlc(&mut scan).is_some()),
                TickKey::Depth => {
                    // Both the whole-side path and the level-by-level one (which
                    // reads a side the whole-side path gave back) take these sides.
                    let start = scan.pos;
                    let mut side = Depth::default();
                    assert!(scan.eat(b"{\"buy\": "));
                    assert!(plain_side(&mut scan, &mut side));
                    assert!(side.len > 0);
                    assert!(scan.eat(b", \"sell\": "));
                    side = Depth::default();
                    assert!(plain_side(&mut scan, &mut side));
                    assert!(side.len > 0);
                    assert!(scan.eat(b"}"));
                    let end = scan.pos;
                    scan.pos = start;
                    assert!(scan.eat(b"{\"buy\": ["));
                    plain_levels(&mut scan);
                    assert!(scan.eat(b", \"sell\": ["));
                    plain_levels(&mut scan);
                    assert!(scan.eat(b"}"));
                    assert_eq!(scan.pos, end);
                }
                TickKey::Timestamp => assert!(scan.plain_timestamp().is_some()),
                TickKey::LastPrice | TickKey::AveragePrice => assert!(scan.plain_price().is_some()),
                _ => assert!(scan.plain_count().is_some()),
            }
            guess = guess.next();
        }
        assert_eq!(keys, 11, "{}", String::from_utf8_lossy(json));
        assert!(scan.eat(b"}"));
        assert_eq!(scan.pos, json.len());
    }
}
