//! Plain data the hot path carries: a tick is a small `Copy` struct with fixed-point
//! prices, inline symbols and fixed depth arrays. No `String`, `Vec` or `Box` per
//! message, so moving ticks through rings never touches the allocator. No I/O here.

pub mod json;
pub mod quality;
pub mod synthetic;

/// Fixed-point scale of [`Price`]: 10^-8 of the quote currency.
///
/// `i64` at 10^-8 holds prices up to ~9.2·10^10; exact integer raws stay below 2^53
/// (so the conversion to `Float64` for ClickHouse is exact to the last digit) for
/// prices below ~9·10^7, far above any listed instrument.
pub const PRICE_SCALE: i64 = 100_000_000;

/// Depth levels per side in a Kite full-mode tick.
pub const DEPTH_LEVELS: usize = 5;

/// Bytes an inline symbol can hold. Kite trading symbols run to ~25 characters
/// (`BANKNIFTY25JAN52000CE` is 21); exchanges are 3–4.
pub const SYMBOL_BYTES_MAX: usize = 31;

/// A price as an integer count of 10^-8 units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(pub i64);

impl Price {
    /// Zero.
    pub const ZERO: Price = Price(0);

    /// The price nearest to `value`, or `None` for NaN, infinities and values beyond
    /// the fixed-point range.
    pub fn from_f64(value: f64) -> Option<Price> {
        let scaled = (value * PRICE_SCALE as f64).round();
        if scaled.is_finite() && scaled.abs() < i64::MAX as f64 {
            Some(Price(scaled as i64))
        } else {
            None
        }
    }

    /// The price as `Float64`, the column type ClickHouse stores.
    #[inline]
    pub fn to_f64(self) -> f64 {
        // Division, not multiplication by 1e-8: the quotient of two exact values is
        // correctly rounded, so 123405000000 / 1e8 is exactly the double of 1234.05.
        self.0 as f64 / PRICE_SCALE as f64
    }
}

/// A short string stored inline: trading symbol or exchange code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    /// Used bytes.
    len: u8,
    /// The bytes, zero past `len`.
    bytes: [u8; SYMBOL_BYTES_MAX],
}

impl Symbol {
    /// The empty symbol.
    pub const EMPTY: Symbol = Symbol {
        len: 0,
        bytes: [0; SYMBOL_BYTES_MAX],
    };

    /// A symbol from bytes, or `None` when longer than [`SYMBOL_BYTES_MAX`].
    pub fn new(text: &[u8]) -> Option<Symbol> {
        if text.len() > SYMBOL_BYTES_MAX {
            return None;
        }
        let mut bytes = [0; SYMBOL_BYTES_MAX];
        bytes[..text.len()].copy_from_slice(text);
        Some(Symbol {
            len: text.len() as u8,
            bytes,
        })
    }

    /// The used bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::hash::Hash for Symbol {
    /// Hashes the 32 bytes as four words: the block builder hashes a symbol per row,
    /// and four `write_u64` calls are cheaper than the derived byte-slice walk.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word[0] = self.len;
        word[1..].copy_from_slice(&self.bytes[..7]);
        state.write_u64(u64::from_le_bytes(word));
        for chunk in self.bytes[7..].chunks_exact(8) {
            word.copy_from_slice(chunk);
            state.write_u64(u64::from_le_bytes(word));
        }
    }
}

impl Default for Symbol {
    fn default() -> Self {
        Symbol::EMPTY
    }
}

impl std::fmt::Debug for Symbol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// One level of market depth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DepthLevel {
    /// Price of the level.
    pub price: Price,
    /// Quantity at the level.
    pub quantity: u32,
    /// Number of orders at the level.
    pub orders: u16,
}

/// Up to five levels of one side of the book.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    /// Levels in use, best first.
    pub len: u8,
    /// The levels; entries past `len` are zero.
    pub levels: [DepthLevel; DEPTH_LEVELS],
}

impl Depth {
    /// The levels in use.
    #[inline]
    pub fn as_slice(&self) -> &[DepthLevel] {
        &self.levels[..self.len as usize]
    }
}

/// Open, high, low and close of the day as the exchange reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ohlc {
    /// Day open.
    pub open: Price,
    /// Day high.
    pub high: Price,
    /// Day low.
    pub low: Price,
    /// Previous close.
    pub close: Price,
}

/// One market tick, as parsed and validated, ready to be appended to a block.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tick {
    /// Exchange event time, Unix milliseconds.
    pub timestamp_ms: i64,
    /// When the receiver took the message off the socket, Unix milliseconds.
    pub received_at_ms: i64,
    /// JetStream stream sequence (0 for core NATS).
    pub stream_seq: u64,
    /// Kite instrument token.
    pub instrument_token: u32,
    /// Exchange code, e.g. `NSE`.
    pub exchange: Symbol,
    /// Trading symbol, e.g. `INFY`.
    pub tradingsymbol: Symbol,
    /// Last traded price.
    pub last_price: Price,
    /// Last traded quantity.
    pub last_quantity: u32,
    /// Volume-weighted average price of the day.
    pub average_price: Price,
    /// Volume traded in the day.
    pub volume_traded: u64,
    /// Day OHLC.
    pub ohlc: Ohlc,
    /// Open interest (derivatives).
    pub oi: u64,
    /// Bid side.
    pub depth_buy: Depth,
    /// Ask side.
    pub depth_sell: Depth,
    /// Quality score in `[0, 1]` set by validation.
    pub data_quality_score: f32,
    /// Validation flag bits.
    pub validation_flags: u32,
}

#[cfg(test)]
mod tests {
    //! Fixed-point conversions are exact where the module doc promises it.
    use super::*;

    #[test]
    fn price_round_trips_exchange_prices_exactly() {
        for text in ["1234.05", "0.05", "152000.95", "73.2525", "0.0025"] {
            let value: f64 = text.parse().unwrap();
            let price = Price::from_f64(value).unwrap();
            assert_eq!(price.to_f64(), value, "{text}");
        }
        assert_eq!(Price::from_f64(1234.05), Some(Price(123_405_000_000)));
        assert_eq!(Price::from_f64(f64::NAN), None);
        assert_eq!(Price::from_f64(1e300), None);
    }

    #[test]
    fn symbols_refuse_overlong_text() {
        assert_eq!(Symbol::new(b"NIFTY").unwrap().as_bytes(), b"NIFTY");
        assert!(Symbol::new(&[b'x'; SYMBOL_BYTES_MAX + 1]).is_none());
        assert_eq!(Symbol::default().as_bytes(), b"");
    }
}
