//! Ticks as the platform's event bus publishes them in JSON (DESIGN §4), written from
//! the fixed-point model without floats, into a reused buffer. Used by the synthetic
//! source, the load generator and tests; the shard's parser reads this shape back.
//!
//! ```text
//! {"instrument_token":256265,"exchange":"NSE","tradingsymbol":"INFY","last_price":1234.05,
//!  "last_quantity":12,"average_price":1233.9,"volume_traded":123456,"oi":0,
//!  "ohlc":{"open":..,"high":..,"low":..,"close":..},
//!  "depth":{"buy":[{"price":..,"quantity":..,"orders":..},...],"sell":[...]},
//!  "timestamp":"2026-11-25T09:15:00.123Z"}
//! ```

use std::io::Write;

use super::{Depth, Price, Tick, PRICE_SCALE};

/// Appends `price` as a JSON number with the fewest decimals that are exact.
pub fn write_price(out: &mut Vec<u8>, price: Price) {
    let raw = price.0;
    if raw < 0 {
        out.push(b'-');
    }
    let magnitude = raw.unsigned_abs();
    let scale = PRICE_SCALE as u64;
    let whole = magnitude / scale;
    let mut fraction = magnitude % scale;
    let _ = write!(out, "{whole}");
    if fraction == 0 {
        return;
    }
    let mut digits = 8;
    while fraction % 10 == 0 {
        fraction /= 10;
        digits -= 1;
    }
    let _ = write!(out, ".{fraction:0digits$}");
}

/// Appends Unix milliseconds as ISO-8601 UTC with milliseconds, e.g.
/// `2026-11-25T09:15:00.123Z`. Civil date from days by Hinnant's algorithm
/// (*chrono-Compatible Low-Level Date Algorithms*, 2013).
pub fn write_iso8601_ms(out: &mut Vec<u8>, unix_ms: i64) {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z"
    );
}

fn write_depth(out: &mut Vec<u8>, depth: &Depth) {
    out.push(b'[');
    for (i, level) in depth.as_slice().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"price\":");
        write_price(out, level.price);
        let _ = write!(
            out,
            ",\"quantity\":{},\"orders\":{}}}",
            level.quantity, level.orders
        );
    }
    out.push(b']');
}

/// Appends `tick` as one JSON object. Symbols are written raw: the synthetic and
/// exchange symbols are plain ASCII without quotes or backslashes.
pub fn write_tick_json(out: &mut Vec<u8>, tick: &Tick) {
    let _ = write!(
        out,
        "{{\"instrument_token\":{},\"exchange\":\"",
        tick.instrument_token
    );
    out.extend_from_slice(tick.exchange.as_bytes());
    out.extend_from_slice(b"\",\"tradingsymbol\":\"");
    out.extend_from_slice(tick.tradingsymbol.as_bytes());
    out.extend_from_slice(b"\",\"last_price\":");
    write_price(out, tick.last_price);
    let _ = write!(
        out,
        ",\"last_quantity\":{},\"average_price\":",
        tick.last_quantity
    );
    write_price(out, tick.average_price);
    let _ = write!(
        out,
        ",\"volume_traded\":{},\"oi\":{},\"ohlc\":{{\"open\":",
        tick.volume_traded, tick.oi
    );
    write_price(out, tick.ohlc.open);
    out.extend_from_slice(b",\"high\":");
    write_price(out, tick.ohlc.high);
    out.extend_from_slice(b",\"low\":");
    write_price(out, tick.ohlc.low);
    out.extend_from_slice(b",\"close\":");
    write_price(out, tick.ohlc.close);
    out.extend_from_slice(b"},\"depth\":{\"buy\":");
    write_depth(out, &tick.depth_buy);
    out.extend_from_slice(b",\"sell\":");
    write_depth(out, &tick.depth_sell);
    out.extend_from_slice(b"},\"timestamp\":\"");
    write_iso8601_ms(out, tick.timestamp_ms);
    out.extend_from_slice(b"\"}");
}

#[cfg(test)]
mod tests {
    //! Prices and times against known text; a whole tick parses with serde_json and
    //! reads back through the shard's own parser unchanged.
    use super::*;
    use crate::model::synthetic::SyntheticTicks;

    #[test]
    fn prices_and_times_format_exactly() {
        let cases = [
            (123_405_000_000, "1234.05"),
            (5_000_000, "0.05"),
            (100_000_000, "1"),
            (-250_000_000, "-2.5"),
        ];
        for (raw, text) in cases {
            let mut out = Vec::new();
            write_price(&mut out, Price(raw));
            assert_eq!(out, text.as_bytes());
        }
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_764_000_000_123, "2025-11-24T16:00:00.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        ] {
            let mut out = Vec::new();
            write_iso8601_ms(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn ticks_round_trip_through_the_shard_parser() {
        let mut feed = SyntheticTicks::new(20, 4);
        let mut out = Vec::new();
        for i in 0..500 {
            let tick = feed.next_tick(1_764_000_000_000 + i * 7, 0, 0);
            out.clear();
            write_tick_json(&mut out, &tick);
            let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(value["instrument_token"], tick.instrument_token);
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
}
