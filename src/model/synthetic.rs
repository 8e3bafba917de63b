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
}
