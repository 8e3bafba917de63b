//! A deterministic generator of realistic ticks: a random walk on each instrument's
//! tick-size grid, five levels of depth a side, growing volume. Used by the built-in
//! synthetic feed of `run`, by tests and by benches. Allocation-free per tick.

use super::{Depth, DepthLevel, Ohlc, Price, Symbol, Tick, DEPTH_LEVELS, PRICE_SCALE};

/// SplitMix64 (Steele, Lea, Flood, *Fast splittable pseudorandom number generators*,
/// OOPSLA 2014): tiny, fast, and good enough for load generation.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0; the modulo bias is irrelevant here).
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// State of one synthetic instrument.
#[derive(Clone, Copy, Debug)]
struct Instrument {
    token: u32,
    symbol: Symbol,
    tick_size: i64,
    price: i64,
    volume: u64,
    open: i64,
    high: i64,
    low: i64,
}

/// Generates ticks for `K` instruments round-robin.
#[derive(Clone, Debug)]
pub struct SyntheticTicks {
    rng: SplitMix64,
    instruments: Vec<Instrument>,
    exchange: Symbol,
    next: usize,
}

/// First token handed out; tokens step by 7 like Kite's sparse numbering.
pub const FIRST_TOKEN: u32 = 256_265;

impl SyntheticTicks {
    /// A generator over `instruments` instruments (at least 1) with a fixed seed.
    pub fn new(instruments: usize, seed: u64) -> SyntheticTicks {
        let mut rng = SplitMix64::new(seed);
        let instruments = (0..instruments.max(1))
            .map(|i| {
                let tick_size = PRICE_SCALE / 20; // 0.05, the NSE equity tick.
                let steps = 2_000 + rng.below(60_000) as i64; // 100.00 to 3,100.00
                let price = steps * tick_size;
                let name = format!("SYN{i:05}");
                Instrument {
                    token: FIRST_TOKEN + 7 * i as u32,
                    symbol: Symbol::new(name.as_bytes()).expect("short name"),
                    tick_size,
                    price,
                    volume: rng.below(1_000_000),
                    open: price,
                    high: price,
                    low: price,
                }
            })
            .collect();
        SyntheticTicks {
            rng,
            instruments,
            exchange: Symbol::new(b"NSE").expect("short name"),
            next: 0,
        }
    }

    /// Number of instruments.
    pub fn instruments(&self) -> usize {
        self.instruments.len()
    }

    /// Token of instrument `index`.
    pub fn token(&self, index: usize) -> u32 {
        self.instruments[index].token
    }

    /// The next tick, stamped with the given times and stream sequence.
    pub fn next_tick(&mut self, timestamp_ms: i64, received_at_ms: i64, stream_seq: u64) -> Tick {
        let index = self.next;
        self.next = (self.next + 1) % self.instruments.len();
        let rng = &mut self.rng;
        let inst = &mut self.instruments[index];
        let step = rng.below(7) as i64 - 3;
        inst.price = (inst.price + step * inst.tick_size).max(inst.tick_size);
        inst.high = inst.high.max(inst.price);
        inst.low = inst.low.min(inst.price);
        let last_quantity = 1 + rng.below(500) as u32;
        inst.volume += u64::from(last_quantity);
        let mut depth_buy = Depth {
            len: DEPTH_LEVELS as u8,
            ..Depth::default()
        };
        let mut depth_sell = depth_buy;
        for level in 0..DEPTH_LEVELS {
            let offset = (level as i64 + 1) * inst.tick_size;
            depth_buy.levels[level] = DepthLevel {
                price: Price((inst.price - offset).max(inst.tick_size)),
                quantity: 1 + rng.below(5_000) as u32,
                orders: 1 + rng.below(50) as u16,
            };
            depth_sell.levels[level] = DepthLevel {
                price: Price(inst.price + offset),
                quantity: 1 + rng.below(5_000) as u32,
                orders: 1 + rng.below(50) as u16,
            };
        }
        Tick {
            timestamp_ms,
            received_at_ms,
            stream_seq,
            instrument_token: inst.token,
            exchange: self.exchange,
            tradingsymbol: inst.symbol,
            last_price: Price(inst.price),
            last_quantity,
            average_price: Price((inst.open + inst.price) / 2 / inst.tick_size * inst.tick_size),
            volume_traded: inst.volume,
            ohlc: Ohlc {
                open: Price(inst.open),
                high: Price(inst.high),
                low: Price(inst.low),
                close: Price(inst.open),
            },
            oi: rng.below(1_000_000),
            depth_buy,
            depth_sell,
            data_quality_score: 1.0,
            validation_flags: 0,
        }
    }
}

/// Writes `price` as the shortest decimal that reads back exactly (`1234.05`, `100`).
pub fn write_price(price: Price, out: &mut Vec<u8>) {
    use std::io::Write;
    let sign = if price.0 < 0 { "-" } else { "" };
    let units = price.0.unsigned_abs();
    let scale = PRICE_SCALE as u64;
    let (whole, mut frac) = (units / scale, units % scale);
    let _ = write!(out, "{sign}{whole}");
    if frac != 0 {
        let mut digits = 8;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        let _ = write!(out, ".{frac:0digits$}");
    }
}

/// The civil date `(year, month, day)` of a day count from 1970-01-01, after Howard
/// Hinnant's `civil_from_days` (<http://howardhinnant.github.io/date_algorithms.html>).
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

/// Writes Unix milliseconds as Python's `isoformat(timespec="milliseconds")` of a UTC
/// datetime: `2025-11-24T16:00:00.500+00:00`.
pub fn write_iso8601(timestamp_ms: i64, out: &mut Vec<u8>) {
    use std::io::Write;
    let (seconds, millis) = (timestamp_ms.div_euclid(1000), timestamp_ms.rem_euclid(1000));
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}+00:00"
    );
}

/// Writes string contents with `"`, `\\` and control bytes escaped.
fn write_json_string(text: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    for &b in text {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0..=0x1f => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
}

/// Writes `tick` as the platform's JSON tick (the shape of `python_stack.py`
/// `tick()`), for the load generator, tests and benches. Appends to `out`.
pub fn write_json_tick(tick: &Tick, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(
        out,
        r#"{{"instrument_token": {}, "exchange": ""#,
        tick.instrument_token
    );
    write_json_string(tick.exchange.as_bytes(), out);
    out.extend_from_slice(br#"", "tradingsymbol": ""#);
    write_json_string(tick.tradingsymbol.as_bytes(), out);
    out.extend_from_slice(br#"", "last_price": "#);
    write_price(tick.last_price, out);
    let _ = write!(
        out,
        r#", "last_quantity": {}, "average_price": "#,
        tick.last_quantity
    );
    write_price(tick.average_price, out);
    let _ = write!(
        out,
        r#", "volume_traded": {}, "oi": {}, "ohlc": {{"open": "#,
        tick.volume_traded, tick.oi
    );
    let o = &tick.ohlc;
    for (i, (name, price)) in [("high", o.high), ("low", o.low), ("close", o.close)]
        .into_iter()
        .enumerate()
    {
        if i == 0 {
            write_price(o.open, out);
        }
        let _ = write!(out, r#", "{name}": "#);
        write_price(price, out);
    }
    out.extend_from_slice(br#"}, "depth": {"buy": ["#);
    for (side, depth) in [("buy", &tick.depth_buy), ("sell", &tick.depth_sell)] {
        if side == "sell" {
            out.extend_from_slice(br#"], "sell": ["#);
        }
        for (i, level) in depth.as_slice().iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(br#"{"price": "#);
            write_price(level.price, out);
            let _ = write!(
                out,
                r#", "quantity": {}, "orders": {}}}"#,
                level.quantity, level.orders
            );
        }
    }
    out.extend_from_slice(br#"]}, "timestamp": ""#);
    write_iso8601(tick.timestamp_ms, out);
    out.extend_from_slice(b"\"}");
}

#[cfg(test)]
mod tests {
    //! The generator keeps prices on the tick grid and the book uncrossed.
    use super::*;

    #[test]
    fn prices_stay_on_grid_and_book_is_uncrossed() {
        let mut feed = SyntheticTicks::new(10, 7);
        for seq in 0..10_000 {
            let tick = feed.next_tick(1_764_000_000_000 + seq as i64, 0, seq);
            assert_eq!(tick.last_price.0 % (PRICE_SCALE / 20), 0);
            assert!(tick.depth_buy.levels[0].price < tick.depth_sell.levels[0].price);
            assert!(tick.last_price.0 > 0);
        }
    }

    #[test]
    fn json_writer_matches_the_python_shape() {
        let tick = SyntheticTicks::new(1, 7).next_tick(1_764_000_000_500, 0, 1);
        let mut out = Vec::new();
        write_json_tick(&tick, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2025-11-24T16:00:00.500+00:00");
        assert_eq!(v["depth"]["sell"].as_array().unwrap().len(), DEPTH_LEVELS);
        assert_eq!(
            Price::from_f64(v["last_price"].as_f64().unwrap()),
            Some(tick.last_price)
        );
        let mut text = Vec::new();
        write_price(Price(123_405_000_000), &mut text);
        write_price(Price(-5), &mut text);
        assert_eq!(text, b"1234.05-0.00000005");
    }
}
