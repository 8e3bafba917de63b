//! Parsers: bytes off the wire into a [`Tick`], or a [`RejectReason`]. Pure functions
//! over byte slices: no I/O, no clock, no allocation.
//!
//! ```text
//!   NATS payload ──► json::parse_json_tick ──┐
//!                                            ├─► Ok(ParseInfo) + Tick ──► validate ──► columns
//!   Kite frame ─split─► kite::parse_kite_packet ┘
//!                                            └─► Err(RejectReason) ──► rejected_messages
//! ```
//!
//! A parser overwrites every field of the tick it is given except `received_at_ms` and
//! `stream_seq`, which the receiver stamped before the shard saw the message. It
//! returns which optional fields the message carried ([`ParseInfo`]) so the validator
//! can flag incomplete ticks without the parser knowing the flag policy.
//!
//! Must never: panic on any input, allocate, or take more than linear time in the
//! payload length (every loop advances the read position).

use crate::model::quality::RejectReason;
use crate::model::{Symbol, Tick};

pub mod json;
pub mod kite;

pub use json::parse_json_tick;
pub use kite::{encode_kite_full, parse_kite_message, parse_kite_packet};

/// `exchange` was present.
pub const FIELD_EXCHANGE: u16 = 1 << 0;
/// `tradingsymbol` was present.
pub const FIELD_TRADINGSYMBOL: u16 = 1 << 1;
/// `last_quantity` was present.
pub const FIELD_LAST_QUANTITY: u16 = 1 << 2;
/// `average_price` was present.
pub const FIELD_AVERAGE_PRICE: u16 = 1 << 3;
/// `volume_traded` (or `volume`) was present.
pub const FIELD_VOLUME: u16 = 1 << 4;
/// `oi` was present.
pub const FIELD_OI: u16 = 1 << 5;
/// `ohlc` was present with all four prices.
pub const FIELD_OHLC: u16 = 1 << 6;
/// `depth.buy` was present (it may hold zero levels).
pub const FIELD_DEPTH_BUY: u16 = 1 << 7;
/// `depth.sell` was present (it may hold zero levels).
pub const FIELD_DEPTH_SELL: u16 = 1 << 8;
/// The exchange's own event time was present (a Kite quote packet has none, and the
/// receive time stands in for it).
pub const FIELD_EXCHANGE_TIME: u16 = 1 << 9;

/// Each `FIELD_*` bit with its name in `validation.expected_fields`, in bit order.
pub const FIELD_NAMES: [(u16, &str); 10] = [
    (FIELD_EXCHANGE, "exchange"),
    (FIELD_TRADINGSYMBOL, "tradingsymbol"),
    (FIELD_LAST_QUANTITY, "last_quantity"),
    (FIELD_AVERAGE_PRICE, "average_price"),
    (FIELD_VOLUME, "volume"),
    (FIELD_OI, "oi"),
    (FIELD_OHLC, "ohlc"),
    (FIELD_DEPTH_BUY, "depth_buy"),
    (FIELD_DEPTH_SELL, "depth_sell"),
    (FIELD_EXCHANGE_TIME, "exchange_time"),
];

/// What a parser learned about a message beyond the tick itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseInfo {
    /// `FIELD_*` bits of the optional fields the message carried; set by the parser.
    pub present: u16,
    /// `FIELD_*` bits of the optional fields the message's format can carry (a Kite
    /// packet never carries a symbol); set by the parser from the format alone.
    pub expected: u16,
}

impl ParseInfo {
    /// Fields the format carries but this message lacked.
    #[inline]
    pub fn missing(self) -> u16 {
        self.expected & !self.present
    }
}

/// Resets `tick` for a new message, keeping the receiver's stamps.
#[inline]
pub(crate) fn reset_tick(tick: &mut Tick) {
    *tick = Tick {
        received_at_ms: tick.received_at_ms,
        stream_seq: tick.stream_seq,
        ..Tick::default()
    };
}

/// Subject prefix of ticks (DESIGN §4).
pub const TICK_SUBJECT_PREFIX: &[u8] = b"market.ticks.";

/// What a tick subject `market.ticks.<exchange>.<token>` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickSubject {
    /// The `<exchange>` token of the subject.
    pub exchange: Symbol,
    /// The `<token>` of the subject.
    pub instrument_token: u32,
}

/// Reads a tick subject; anything else is [`RejectReason::UnknownSubject`]. Kite
/// packets carry no exchange, so the shard takes it from here.
pub fn parse_tick_subject(subject: &[u8]) -> Result<TickSubject, RejectReason> {
    let rest = subject
        .strip_prefix(TICK_SUBJECT_PREFIX)
        .ok_or(RejectReason::UnknownSubject)?;
    let dot = rest
        .iter()
        .position(|&b| b == b'.')
        .ok_or(RejectReason::UnknownSubject)?;
    let (exchange, token) = (&rest[..dot], &rest[dot + 1..]);
    if exchange.is_empty() || token.is_empty() || token.len() > 10 {
        return Err(RejectReason::UnknownSubject);
    }
    let mut value: u64 = 0;
    for &b in token {
        if !b.is_ascii_digit() {
            return Err(RejectReason::UnknownSubject);
        }
        value = value * 10 + u64::from(b - b'0');
    }
    Ok(TickSubject {
        exchange: Symbol::new(exchange).ok_or(RejectReason::UnknownSubject)?,
        instrument_token: u32::try_from(value).map_err(|_| RejectReason::UnknownSubject)?,
    })
}

#[cfg(test)]
mod tests {
    //! Subjects outside `market.ticks.<exchange>.<token>` are refused.
    use super::*;

    #[test]
    fn tick_subjects_are_read_and_others_refused() {
        let s = parse_tick_subject(b"market.ticks.NSE.256265").unwrap();
        assert_eq!(s.exchange.as_bytes(), b"NSE");
        assert_eq!(s.instrument_token, 256_265);
        for bad in [
            &b"strategy.signals.x.1"[..],
            b"market.ticks.NSE",
            b"market.ticks..1",
            b"market.ticks.NSE.",
            b"market.ticks.NSE.12a",
            b"market.ticks.NSE.4294967296",
            b"market.ticks.NSE.1.2",
        ] {
            assert_eq!(parse_tick_subject(bad), Err(RejectReason::UnknownSubject));
        }
    }
}
