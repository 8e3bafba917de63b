//! Plain data the hot path carries: a tick is a small `Copy` struct with fixed-point
//! prices, inline symbols and fixed depth arrays. No `String`, `Vec` or `Box` per
//! message, so moving ticks through rings never touches the allocator. No I/O here.

pub mod block;
pub mod json;
pub mod quality;
pub mod reference;
pub mod synthetic;

pub use block::{BlockId, ReceivedSpread, SealedBlock, Table};

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

/// Why a decimal text is not a [`Price`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not `[+-]digits[.digits]` (empty, a letter, an exponent, `NaN`, `Infinity`).
    #[error("not a plain decimal number")]
    Syntax,
    /// A non-zero digit past the 8th decimal: the price grid is 10^-8, so the value
    /// would be rounded, and a rounded tick size flags every price.
    #[error("more than 8 decimals")]
    TooManyDecimals,
    /// Beyond the fixed-point range (about ±9.2·10^10).
    #[error("out of the fixed-point price range")]
    OutOfRange,
}

impl Price {
    /// The price a decimal text denotes, exactly, or why it has none: PostgreSQL
    /// `numeric` read as text, so a tick size of `0.05` is `Price(5_000_000)` with no
    /// binary-float detour. Trailing zeros past the 8th decimal (`0.0500000000`) are
    /// exact and accepted; any other digit there is refused, never rounded.
    pub fn from_decimal(text: &str) -> Result<Price, DecimalError> {
        let (negative, unsigned) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
            return Err(DecimalError::Syntax);
        }
        let (kept, dropped) = fraction.split_at(fraction.len().min(PRICE_DECIMALS));
        if dropped.bytes().any(|b| b != b'0') {
            return Err(DecimalError::TooManyDecimals);
        }
        // Accumulate negatively: i64::MIN has no positive twin, so this reaches the
        // whole range and overflow is the one range check needed.
        let mut raw: i64 = 0;
        let padding = PRICE_DECIMALS - kept.len();
        let scaled = whole
            .bytes()
            .chain(kept.bytes())
            .chain((0..padding).map(|_| b'0'));
        for byte in scaled {
            raw = raw
                .checked_mul(10)
                .and_then(|r| r.checked_sub(i64::from(byte - b'0')))
                .ok_or(DecimalError::OutOfRange)?;
        }
        if negative {
            Ok(Price(raw))
        } else {
            raw.checked_neg().map(Price).ok_or(DecimalError::OutOfRange)
        }
    }
}

/// Decimals of [`PRICE_SCALE`].
pub const PRICE_DECIMALS: usize = 8;

const _: () = assert!(10i64.pow(PRICE_DECIMALS as u32) == PRICE_SCALE);

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

    /// The symbol made of the first `len` bytes of `words` (32 bytes of text in order),
    /// or `None` when `len` is above [`SYMBOL_BYTES_MAX`]. For a parser that has read
    /// the bytes after the text too: four masked words, where [`Symbol::new`] copies a
    /// variable length.
    #[inline(always)]
    pub fn from_text_words(words: [u64; 4], len: usize) -> Option<Symbol> {
        if len > SYMBOL_BYTES_MAX {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, (chunk, word)) in out.chunks_exact_mut(8).zip(words).enumerate() {
            // Bytes of this word inside the symbol, 0..=8; a shift by 64 keeps none.
            let keep = len.saturating_sub(8 * i).min(8) as u32;
            let mask = u64::MAX.checked_shr(64 - 8 * keep).unwrap_or(0);
            chunk.copy_from_slice(&(word & mask).to_le_bytes());
        }
        Some(Symbol {
            len: len as u8,
            bytes: *out.first_chunk().expect("31 of 32 bytes"),
        })
    }

    /// The used bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The symbol as four words (length, then the zero-padded bytes): fixed-size
    /// loads, no copy of a variable length (the Redis hand-off writes these per tick).
    #[inline]
    pub fn to_words(&self) -> [u64; 4] {
        let mut first = [0u8; 8];
        first[0] = self.len;
        first[1..].copy_from_slice(&self.bytes[..7]);
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.bytes[7 + 8 * i..15 + 8 * i]);
            u64::from_le_bytes(w)
        };
        [u64::from_le_bytes(first), word(0), word(1), word(2)]
    }

    /// The inverse of [`Symbol::to_words`]; a length past the maximum is cut to it,
    /// and bytes past the length are dropped.
    pub fn from_words(words: [u64; 4]) -> Symbol {
        let first = words[0].to_le_bytes();
        let mut bytes = [0u8; SYMBOL_BYTES_MAX];
        bytes[..7].copy_from_slice(&first[1..]);
        for i in 0..3 {
            bytes[7 + 8 * i..15 + 8 * i].copy_from_slice(&words[1 + i].to_le_bytes());
        }
        let len = first[0].min(SYMBOL_BYTES_MAX as u8);
        bytes[len as usize..].fill(0);
        Symbol { len, bytes }
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
    fn decimals_convert_exactly_or_say_why_not() {
        let ok = [
            ("0.05", 5_000_000),
            ("0.050000", 5_000_000),
            ("1700", 170_000_000_000),
            ("1700.000000", 170_000_000_000),
            ("0.00000001", 1),
            ("0.0500000000", 5_000_000),
            (".5", 50_000_000),
            ("5.", 500_000_000),
            ("+2.5", 250_000_000),
            ("-2.5", -250_000_000),
            ("92233720368.54775807", i64::MAX),
            ("-92233720368.54775808", i64::MIN),
        ];
        for (text, raw) in ok {
            assert_eq!(Price::from_decimal(text), Ok(Price(raw)), "{text}");
        }
        let bad = [
            ("", DecimalError::Syntax),
            (".", DecimalError::Syntax),
            ("-", DecimalError::Syntax),
            ("NaN", DecimalError::Syntax),
            ("Infinity", DecimalError::Syntax),
            ("1e5", DecimalError::Syntax),
            ("1.2.3", DecimalError::Syntax),
            (" 1", DecimalError::Syntax),
            ("--1", DecimalError::Syntax),
            ("0.000000001", DecimalError::TooManyDecimals),
            ("0.123456789", DecimalError::TooManyDecimals),
            ("92233720368.54775808", DecimalError::OutOfRange),
            ("100000000000", DecimalError::OutOfRange),
            ("999999999999.999999", DecimalError::OutOfRange),
        ];
        for (text, error) in bad {
            assert_eq!(Price::from_decimal(text), Err(error), "{text:?}");
        }
    }

    proptest::proptest! {
        /// Printing a raw price as a decimal and reading it back is the identity
        /// (the oracle is integer formatting, which cannot round).
        #[test]
        fn decimal_round_trips_every_raw_price(raw in proptest::num::i64::ANY, zeros in 0usize..4) {
            let sign = if raw < 0 { "-" } else { "" };
            let magnitude = raw.unsigned_abs();
            let scale = PRICE_SCALE as u64;
            let text = format!("{sign}{}.{:08}{}", magnitude / scale, magnitude % scale, "0".repeat(zeros));
            proptest::prop_assert_eq!(Price::from_decimal(&text), Ok(Price(raw)));
        }
    }

    #[test]
    fn symbols_refuse_overlong_text() {
        assert_eq!(Symbol::new(b"NIFTY").unwrap().as_bytes(), b"NIFTY");
        assert!(Symbol::new(&[b'x'; SYMBOL_BYTES_MAX + 1]).is_none());
        assert_eq!(Symbol::default().as_bytes(), b"");
    }

    #[test]
    fn symbols_from_text_words_equal_symbols_from_text() {
        // Text of every length followed by bytes that must not leak into the symbol.
        let window: Vec<u8> = (0..32u8).map(|i| b'A' + i).collect();
        let word = |i: usize| u64::from_le_bytes(window[8 * i..8 * i + 8].try_into().unwrap());
        let words = [word(0), word(1), word(2), word(3)];
        for len in 0..=SYMBOL_BYTES_MAX {
            assert_eq!(
                Symbol::from_text_words(words, len),
                Symbol::new(&window[..len]),
                "{len}"
            );
        }
        assert!(Symbol::from_text_words(words, SYMBOL_BYTES_MAX + 1).is_none());
    }
}
