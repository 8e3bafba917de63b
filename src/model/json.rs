//! Ticks as the platform's event bus publishes them in JSON (DESIGN §4; the shape of
//! `python_stack.py`'s `tick()`), written from the fixed-point model with integer
//! arithmetic into a reused buffer: no floats, no `format!`, no allocation once the
//! buffer has grown. Used by the built-in synthetic source, the load generator, tests
//! and benches; the shard's parser reads this shape back.
//!
//! ```text
//! {"instrument_token": 256265, "exchange": "NSE", "tradingsymbol": "INFY", "last_price": 1234.05,
//!  "last_quantity": 12, "average_price": 1233.9, "volume_traded": 123456, "oi": 0,
//!  "ohlc": {"open": .., "high": .., "low": .., "close": ..},
//!  "depth": {"buy": [{"price": .., "quantity": .., "orders": ..}, ...], "sell": [...]},
//!  "timestamp": "2026-11-25T09:15:00.123Z"}
//! ```

use super::{Depth, Price, Tick, PRICE_SCALE};

/// Ways a load generator spoils a tick's JSON, each one a reject or flag downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoil {
    /// The closing brace becomes `]`.
    MalformedJson,
    /// `last_price` is a string.
    WrongType,
    /// `last_price` is left out.
    MissingField,
    /// `last_price` is a million times too large.
    AbsurdPrice,
    /// Two bytes of the symbol are never-valid UTF-8.
    NonUtf8,
}

/// Appends `value` in decimal. Up to eight digits at a time, all converted at once
/// ([`eight_digit_values`]) and stored as one word, the leading zeros cut off by
/// shortening the vector afterwards: no division loop and no variable-length copy.
/// The synthetic source writes ~75 numbers a tick, the Redis cache ~40.
///
/// Inlined for the common case (below 10^8: every quantity, count and price unit a
/// feed sends); out of line, the call cost as much as the conversion.
#[inline(always)]
pub fn write_u64(out: &mut Vec<u8>, value: u64) {
    if value < E8 {
        put_trimmed(out, value as u32);
    } else {
        write_u64_long(out, value);
    }
}

const E8: u64 = 100_000_000;

/// [`write_u64`] from 10^8 up: two or three words of digits.
#[inline(never)]
fn write_u64_long(out: &mut Vec<u8>, value: u64) {
    if value < E8 * E8 {
        put_trimmed(out, (value / E8) as u32);
        put_eight(out, (value % E8) as u32);
    } else {
        // At most 1844 above the two words.
        put_trimmed(out, (value / (E8 * E8)) as u32);
        put_eight(out, (value / E8 % E8) as u32);
        put_eight(out, (value % E8) as u32);
    }
}

/// `'0'` in every byte.
const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

/// The eight decimal digits of `n` (below 10^8, leading zeros included) as the values
/// 0..=9, most significant in the lowest byte, which is the order they are written
/// in. The divisions run in parallel lanes: 10^4 splits `n` into two 32-bit lanes,
/// then `q * 5243 >> 19` (= q / 100 for q < 43,699) splits each into 16-bit pairs,
/// then `p * 103 >> 10` (= p / 10 for p < 179) each pair into its two digits. No lane
/// carries into the next: every product stays below its lane's width.
#[inline(always)]
fn eight_digit_values(n: u32) -> u64 {
    debug_assert!(n < 100_000_000);
    let n = u64::from(n);
    let high = n / 10_000;
    let quads = high | ((n - high * 10_000) << 32);
    let hundreds = ((quads * 5243) >> 19) & 0x0000_007f_0000_007f;
    let pairs = hundreds | ((quads - hundreds * 100) << 16);
    let tens = ((pairs * 103) >> 10) & 0x000f_000f_000f_000f;
    tens | ((pairs - tens * 10) << 8)
}

/// Appends `n` (below 10^8) as exactly eight digits, leading zeros included.
#[inline(always)]
fn put_eight(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&(eight_digit_values(n) + ASCII_ZEROS).to_le_bytes());
}

/// Appends `n` (below 10^8) without leading zeros (`0` for zero).
#[inline(always)]
fn put_trimmed(out: &mut Vec<u8>, n: u32) {
    let values = eight_digit_values(n);
    // The leading zeros are the low zero bytes; the last digit always stays.
    let skip = ((values | 1 << 56).trailing_zeros() / 8) as usize;
    out.extend_from_slice(&((values + ASCII_ZEROS) >> (8 * skip)).to_le_bytes());
    out.truncate(out.len() - skip);
}

/// Appends `value` in decimal, `-` first when negative.
#[inline]
pub fn write_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    write_u64(out, value.unsigned_abs());
}

/// Appends the text `format!("{}", price.to_f64())` gives (`1012.35`, `1011`, `-0.05`),
/// without going through `f64` and `core::fmt` (the Redis cache writes ~15 prices a
/// tick, and the float formatter was a tenth of the appliance's CPU). Up to 15
/// significant digits (|price| < 10^7) the double nearest a decimal prints as that
/// decimal, shortest form, so the fixed-point digits are the answer; larger prices
/// take the formatter.
pub fn write_price_f64_text(out: &mut Vec<u8>, price: Price) {
    const EXACT_BELOW: u64 = 1_000_000_000_000_000;
    let raw = price.0.unsigned_abs();
    if raw >= EXACT_BELOW {
        use std::io::Write as _;
        let _ = write!(out, "{}", price.to_f64());
        return;
    }
    write_fixed(out, price, false);
}

/// Appends a quality score (always `n / 100` for an integer `n` in 0..=100,
/// `model::quality::data_quality_score`) as `format!("{}", score)` would (`1`, `0.9`,
/// `0.85`, `0`): two decimals, trailing zeros dropped. Any other value takes the
/// formatter.
pub fn write_score(out: &mut Vec<u8>, score: f32) {
    let hundredths = (score * 100.0).round();
    if (0.0..=100.0).contains(&hundredths) && hundredths as u32 as f32 / 100.0 == score {
        let n = hundredths as u64;
        write_u64(out, n / 100);
        if n % 100 != 0 {
            out.push(b'.');
            write_fraction8(out, n % 100 * 1_000_000);
        }
        return;
    }
    use std::io::Write as _;
    let _ = write!(out, "{score}");
}

/// Appends `fraction` (non-zero, below 10^8) as eight decimals with the trailing
/// zeros dropped: `5_000_000` is `05`.
#[inline(always)]
fn write_fraction8(out: &mut Vec<u8>, fraction: u64) {
    debug_assert!(fraction != 0 && fraction < 100_000_000);
    let values = eight_digit_values(fraction as u32);
    // The trailing zeros are the high zero bytes; a non-zero fraction keeps one digit.
    let drop = (values.leading_zeros() / 8) as usize;
    out.extend_from_slice(&(values + ASCII_ZEROS).to_le_bytes());
    out.truncate(out.len() - drop);
}

/// The civil date `(year, month, day)` of a day count from 1970-01-01: Howard
/// Hinnant, *chrono-Compatible Low-Level Date Algorithms* (`civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Appends a price in decimal from its fixed-point integer: shortest form with at least
/// one fraction digit (`1012.35`, `1011.0`, `-0.05`).
#[inline]
pub fn write_price(out: &mut Vec<u8>, price: Price) {
    write_fixed(out, price, true);
}

/// A price's fixed-point digits: sign, units, then the fraction with its trailing
/// zeros dropped; a whole price ends in `.0` when `point_zero`, else in its units.
#[inline(always)]
fn write_fixed(out: &mut Vec<u8>, price: Price, point_zero: bool) {
    if price.0 < 0 {
        out.push(b'-');
    }
    const _: () = assert!(
        PRICE_SCALE == 100_000_000,
        "write_fraction8 writes 8 decimals"
    );
    let raw = price.0.unsigned_abs();
    let scale = PRICE_SCALE as u64;
    write_u64(out, raw / scale);
    let fraction = raw % scale;
    if fraction != 0 {
        out.push(b'.');
        write_fraction8(out, fraction);
    } else if point_zero {
        out.extend_from_slice(b".0");
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix milliseconds `ms`, as a String (off the hot
/// path: reports and query output).
pub fn iso8601_ms(ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    write_iso8601_ms(&mut out, ms);
    String::from_utf8(out).expect("ASCII digits and separators")
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix milliseconds `ms` (years 0..=9999).
/// Civil date from days: Howard Hinnant, *chrono-Compatible Low-Level Date Algorithms*.
pub fn write_iso8601_ms(out: &mut Vec<u8>, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (month, day) = (i64::from(month), i64::from(day));
    let two = |value: i64, out: &mut Vec<u8>| {
        out.push(b'0' + (value / 10) as u8);
        out.push(b'0' + (value % 10) as u8);
    };
    let year = year.clamp(0, 9999);
    two(year / 100, out);
    two(year % 100, out);
    out.push(b'-');
    two(month, out);
    out.push(b'-');
    two(day, out);
    out.push(b'T');
    two(in_day / 3_600_000, out);
    out.push(b':');
    two(in_day / 60_000 % 60, out);
    out.push(b':');
    two(in_day / 1000 % 60, out);
    out.push(b'.');
    let millis = in_day % 1000;
    out.push(b'0' + (millis / 100) as u8);
    two(millis % 100, out);
    out.push(b'Z');
}

#[inline(always)] // `name` is a literal: inlined, its copy has a fixed length
fn write_field(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(b", \"");
    out.extend_from_slice(name);
    out.extend_from_slice(b"\": ");
}

fn write_depth(out: &mut Vec<u8>, depth: &Depth) {
    out.push(b'[');
    for (index, level) in depth.as_slice().iter().enumerate() {
        if index > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(b"{\"price\": ");
        write_price(out, level.price);
        out.extend_from_slice(b", \"quantity\": ");
        write_u64(out, u64::from(level.quantity));
        out.extend_from_slice(b", \"orders\": ");
        write_u64(out, u64::from(level.orders));
        out.push(b'}');
    }
    out.push(b']');
}

/// Appends `tick` as the platform's JSON.
pub fn write_tick_json(out: &mut Vec<u8>, tick: &Tick) {
    write_tick_json_spoiled(out, tick, None);
}

/// Appends `tick` as the platform's JSON, spoiled in the given way (for load tests
/// and fixtures). No allocation once `out` has grown.
pub fn write_tick_json_spoiled(out: &mut Vec<u8>, tick: &Tick, bad: Option<Spoil>) {
    out.extend_from_slice(b"{\"instrument_token\": ");
    write_u64(out, u64::from(tick.instrument_token));
    write_field(out, b"exchange");
    out.push(b'"');
    out.extend_from_slice(tick.exchange.as_bytes());
    out.push(b'"');
    write_field(out, b"tradingsymbol");
    out.push(b'"');
    let symbol_at = out.len();
    out.extend_from_slice(tick.tradingsymbol.as_bytes());
    // 0xFF and 0xFE never occur in UTF-8; the rest of the message stays valid JSON.
    if bad == Some(Spoil::NonUtf8) && out.len() >= symbol_at + 3 {
        out[symbol_at + 1] = 0xff;
        out[symbol_at + 2] = 0xfe;
    }
    out.push(b'"');
    match bad {
        Some(Spoil::MissingField) => {}
        Some(Spoil::WrongType) => {
            write_field(out, b"last_price");
            out.push(b'"');
            write_price(out, tick.last_price);
            out.push(b'"');
        }
        Some(Spoil::AbsurdPrice) => {
            write_field(out, b"last_price");
            write_price(out, Price(tick.last_price.0.saturating_mul(1_000_000)));
        }
        _ => {
            write_field(out, b"last_price");
            write_price(out, tick.last_price);
        }
    }
    write_field(out, b"last_quantity");
    write_u64(out, u64::from(tick.last_quantity));
    write_field(out, b"average_price");
    write_price(out, tick.average_price);
    write_field(out, b"volume_traded");
    write_u64(out, tick.volume_traded);
    write_field(out, b"oi");
    write_u64(out, tick.oi);
    write_field(out, b"ohlc");
    out.extend_from_slice(b"{\"open\": ");
    write_price(out, tick.ohlc.open);
    out.extend_from_slice(b", \"high\": ");
    write_price(out, tick.ohlc.high);
    out.extend_from_slice(b", \"low\": ");
    write_price(out, tick.ohlc.low);
    out.extend_from_slice(b", \"close\": ");
    write_price(out, tick.ohlc.close);
    out.push(b'}');
    write_field(out, b"depth");
    out.extend_from_slice(b"{\"buy\": ");
    write_depth(out, &tick.depth_buy);
    out.extend_from_slice(b", \"sell\": ");
    write_depth(out, &tick.depth_sell);
    out.push(b'}');
    write_field(out, b"timestamp");
    out.push(b'"');
    write_iso8601_ms(out, tick.timestamp_ms);
    out.extend_from_slice(b"\"}");
    if bad == Some(Spoil::MalformedJson) {
        *out.last_mut().expect("just written") = b']';
    }
}

#[cfg(test)]
mod tests {
    //! The writer against serde_json as the oracle, prices and dates against known
    //! text, every spoil bad in its way, and round trips through the shard's parser.
    use super::*;
    use crate::model::synthetic::SyntheticTicks;

    /// What a writer puts into an empty buffer, as text.
    fn text(f: &dyn Fn(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn sample() -> Tick {
        SyntheticTicks::new(3, 9).next_tick(1_764_000_000_123, 0, 0)
    }

    #[test]
    fn prices_print_from_fixed_point() {
        let cases = [
            (101_235_000_000, "1012.35"),
            (101_100_000_000, "1011.0"),
            (5_000_000, "0.05"),
            (-5_000_000, "-0.05"),
            (1, "0.00000001"),
            (0, "0.0"),
            (7_325_250_000, "73.2525"),
        ];
        for (raw, text) in cases {
            let mut out = Vec::new();
            write_price(&mut out, Price(raw));
            assert_eq!(String::from_utf8(out).unwrap(), text);
            assert_eq!(Price::from_f64(text.parse().unwrap()), Some(Price(raw)));
        }
    }

    /// The cache's number writers print exactly what `core::fmt` prints for the same
    /// value: readers of Redis saw that text before, and must see it still.
    #[test]
    fn cache_number_text_is_what_the_formatter_prints() {
        let mut raws = vec![
            0,
            1,
            -1,
            5_000_000,
            -5_000_000,
            101_100_000_000,
            101_235_000_000,
            7_325_250_000,
            999_999_999_999_999,
            -999_999_999_999_999,
            1_000_000_000_000_000,
            123_456_789_012_345_678,
            i64::MAX,
            i64::MIN,
        ];
        // A deterministic spread over every magnitude and fraction length.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 18) as u32;
            let raw = (x >> 8) % 10u64.pow(digits + 1);
            let raw = raw as i64 * if x & 1 == 0 { 1 } else { -1 };
            raws.push(raw);
        }
        for raw in raws {
            let price = Price(raw);
            assert_eq!(
                text(&|out| write_price_f64_text(out, price)),
                format!("{}", price.to_f64()),
                "{raw}"
            );
        }
        for n in 0..=100u32 {
            // The scores the validator gives, and near misses (a product, not a
            // quotient, can land a bit off n / 100) that must take the formatter.
            for score in [n as f32 / 100.0, n as f32 * 0.01] {
                assert_eq!(text(&|out| write_score(out, score)), format!("{score}"));
            }
        }
        for odd in [0.333f32, -0.5, 2.5, f32::NAN, 1e-9] {
            assert_eq!(text(&|out| write_score(out, odd)), format!("{odd}"));
        }
        for v in [0, 1, -1, 42, i64::MAX, i64::MIN, -1_764_000_000_123] {
            assert_eq!(text(&|out| write_i64(out, v)), format!("{v}"));
        }
        let mut unsigned = vec![u64::MAX, x];
        for p in 0..20 {
            let power = 10u64.pow(p);
            unsigned.extend([power - 1, power, power + 1, (power / 3).saturating_mul(7)]);
        }
        for v in unsigned {
            assert_eq!(text(&|out| write_u64(out, v)), format!("{v}"));
        }
    }

    /// The lane arithmetic against the formatter: every value below 10^5 (every
    /// carry pattern of the low lanes), a stride through the rest, and both ends.
    #[test]
    fn eight_digit_words_are_the_formatters_digits() {
        let values = (0..100_000u32)
            .chain((100_000..100_000_000).step_by(9_973))
            .chain([99_999_999, 10_000_000, 9_999_999, 50_000_000]);
        for n in values {
            assert_eq!(text(&|out| put_eight(out, n)), format!("{n:08}"));
            assert_eq!(text(&|out| put_trimmed(out, n)), format!("{n}"));
            if n != 0 {
                let trimmed = format!("{n:08}").trim_end_matches('0').to_string();
                assert_eq!(text(&|out| write_fraction8(out, u64::from(n))), trimmed);
            }
        }
    }

    #[test]
    fn timestamps_are_iso_utc_with_millis() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_764_000_000_123, "2025-11-24T16:00:00.123Z"),
            (951_782_400_007, "2000-02-29T00:00:00.007Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ] {
            let mut out = Vec::new();
            write_iso8601_ms(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn good_tick_is_json_of_the_platform_shape() {
        let tick = sample();
        let mut out = Vec::new();
        write_tick_json(&mut out, &tick);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["instrument_token"], tick.instrument_token);
        assert_eq!(json["exchange"], "NSE");
        assert_eq!(json["tradingsymbol"], "SYN00000");
        assert_eq!(
            Price::from_f64(json["last_price"].as_f64().unwrap()),
            Some(tick.last_price)
        );
        assert_eq!(json["volume_traded"], tick.volume_traded);
        assert_eq!(json["depth"]["buy"].as_array().unwrap().len(), 5);
        assert_eq!(
            json["depth"]["sell"][4]["orders"],
            tick.depth_sell.levels[4].orders
        );
        assert_eq!(json["ohlc"]["high"].as_f64(), Some(tick.ohlc.high.to_f64()));
        assert_eq!(json["timestamp"], "2025-11-24T16:00:00.123Z");
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 11);
        assert!(out.starts_with(b"{\"instrument_token\": "));
    }

    #[test]
    fn each_bad_kind_is_bad_in_its_way() {
        let tick = sample();
        let encode = |kind| {
            let mut out = Vec::new();
            write_tick_json_spoiled(&mut out, &tick, Some(kind));
            out
        };
        assert!(
            serde_json::from_slice::<serde_json::Value>(&encode(Spoil::MalformedJson)).is_err()
        );
        let wrong: serde_json::Value = serde_json::from_slice(&encode(Spoil::WrongType)).unwrap();
        assert!(wrong["last_price"].is_string());
        let missing: serde_json::Value =
            serde_json::from_slice(&encode(Spoil::MissingField)).unwrap();
        assert!(missing.get("last_price").is_none());
        let absurd: serde_json::Value =
            serde_json::from_slice(&encode(Spoil::AbsurdPrice)).unwrap();
        assert!(absurd["last_price"].as_f64().unwrap() > 1e7);
        assert!(std::str::from_utf8(&encode(Spoil::NonUtf8)).is_err());
    }

    #[test]
    fn ticks_round_trip_through_the_shard_parser() {
        let mut feed = SyntheticTicks::new(20, 4);
        let mut out = Vec::new();
        for i in 0..500 {
            let tick = feed.next_tick(1_764_000_000_000 + i * 7, 0, 0);
            out.clear();
            write_tick_json(&mut out, &tick);
            let mut back = Tick::default();
            crate::shard::parse::json::parse_json_tick(&out, &mut back)
                .expect("our parser reads it");
            assert_eq!(back.last_price, tick.last_price);
            assert_eq!(back.depth_buy, tick.depth_buy);
            assert_eq!(back.depth_sell, tick.depth_sell);
            assert_eq!(back.timestamp_ms, tick.timestamp_ms);
            assert_eq!(back.volume_traded, tick.volume_traded);
            assert_eq!(back.tradingsymbol, tick.tradingsymbol);
        }
    }

    #[test]
    fn dates_agree_with_a_day_by_day_walk() {
        let (mut year, mut month, mut day) = (1970i64, 1u32, 1u32);
        for days in 0..60_000 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let length = [
                31,
                if leap { 29 } else { 28 },
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
            ][month as usize - 1];
            day += 1;
            if day > length {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
