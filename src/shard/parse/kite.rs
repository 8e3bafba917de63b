//! Kite Connect binary ticks: the WebSocket frame of packets, the 184-byte "full"
//! packet and the 44-byte "quote" packet, and the inverse encoder for full packets
//! (load generator and tests).
//!
//! Source relied on: zerodha/pykiteconnect `kiteconnect/ticker.py`
//! (`KiteTicker._parse_binary`, `_split_packets`, `_unpack_int`), which reads every
//! field as a big-endian *unsigned* integer (`struct` formats `>I` and `>H`), and the
//! Kite Connect v3 WebSocket docs it implements.
//!
//! Frame (one WebSocket binary message; a 1-byte message is a heartbeat):
//!
//! | offset | size | field                                  |
//! |--------|------|----------------------------------------|
//! | 0      | 2    | packet count N (u16 BE)                |
//! | 2      | 2    | length L1 of packet 1 (u16 BE)         |
//! | 4      | L1   | packet 1                               |
//! | ...    |      | then length + bytes for packets 2..N   |
//!
//! Packet (all u32 big-endian unless noted; prices in the segment's unit, below):
//!
//! | offset | size | field                     | in [`Tick`]        |
//! |--------|------|---------------------------|--------------------|
//! | 0      | 4    | instrument token          | `instrument_token` |
//! | 4      | 4    | last traded price         | `last_price`       |
//! | 8      | 4    | last traded quantity      | `last_quantity`    |
//! | 12     | 4    | average traded price      | `average_price`    |
//! | 16     | 4    | volume traded             | `volume_traded`    |
//! | 20     | 4    | total buy quantity        | (not stored)       |
//! | 24     | 4    | total sell quantity       | (not stored)       |
//! | 28     | 4    | open                      | `ohlc.open`        |
//! | 32     | 4    | high                      | `ohlc.high`        |
//! | 36     | 4    | low                       | `ohlc.low`         |
//! | 40     | 4    | close                     | `ohlc.close`       |
//! |        |      | *quote packet ends: 44 B* |                    |
//! | 44     | 4    | last trade time (Unix s)  | fallback time      |
//! | 48     | 4    | open interest             | `oi`               |
//! | 52     | 4    | OI day high               | (not stored)       |
//! | 56     | 4    | OI day low                | (not stored)       |
//! | 60     | 4    | exchange timestamp (Unix s)| `timestamp_ms`    |
//! | 64     | 120  | 10 depth entries, 5 bids then 5 asks, 12 B each:  |
//! |        |      | u32 quantity, u32 price, u16 orders, 2 B padding  |
//! |        |      | *full packet ends: 184 B* |                    |
//!
//! Price unit by segment (`token & 0xff`): CDS (3) in 10^-7 rupees, BCD (6) in 10^-4,
//! everything else in paise (10^-2). Each is a whole number of our 10^-8 units, so the
//! conversion is one exact multiplication.
//!
//! Short packets: LTP mode is 8 B (token, last price). Index packets (segment 9) are
//! 28 B (quote) or 32 B (full): token, last price, then **high, low, open, close** (in
//! that order) at 8..24, the change at 24 (not stored), and in the full form the
//! exchange timestamp at 28. Any other length is [`RejectReason::BadKitePacket`].
//!
//! Kite packets carry no exchange or symbol; those stay empty for reference data to
//! fill. A packet without an exchange time takes the receive time and reports
//! [`FIELD_EXCHANGE_TIME`] missing.

use super::{reset_tick, ParseInfo};
use super::{
    FIELD_AVERAGE_PRICE, FIELD_DEPTH_BUY, FIELD_DEPTH_SELL, FIELD_EXCHANGE_TIME,
    FIELD_LAST_QUANTITY, FIELD_OHLC, FIELD_OI, FIELD_VOLUME,
};
use crate::model::quality::RejectReason;
use crate::model::{Depth, DepthLevel, Ohlc, Price, Symbol, Tick, DEPTH_LEVELS};

/// Bytes of a full-mode packet.
pub const KITE_FULL_BYTES: usize = 184;
/// Bytes of a quote-mode packet.
pub const KITE_QUOTE_BYTES: usize = 44;
/// Bytes of an LTP-mode packet (token and last price only).
pub const KITE_LTP_BYTES: usize = 8;
/// Bytes of an index quote packet.
pub const KITE_INDEX_QUOTE_BYTES: usize = 28;
/// Bytes of an index full packet (quote + exchange timestamp).
pub const KITE_INDEX_FULL_BYTES: usize = 32;
/// Offset of the first depth entry in a full packet.
const DEPTH_OFFSET: usize = 64;
/// Bytes of one depth entry.
const DEPTH_ENTRY_BYTES: usize = 12;

const _: () = assert!(DEPTH_OFFSET + 2 * DEPTH_LEVELS * DEPTH_ENTRY_BYTES == KITE_FULL_BYTES);

/// Segment code of currency derivatives (NSE CDS).
pub const SEGMENT_CDS: u32 = 3;
/// Segment code of BSE currency derivatives.
pub const SEGMENT_BCD: u32 = 6;

/// Optional fields a quote packet carries (no depth, no OI; its exchange time is
/// never there, so a quote tick is always flagged incomplete).
pub const KITE_QUOTE_FIELDS: u16 =
    FIELD_LAST_QUANTITY | FIELD_AVERAGE_PRICE | FIELD_VOLUME | FIELD_OHLC | FIELD_EXCHANGE_TIME;
/// Optional fields a full packet carries.
pub const KITE_FULL_FIELDS: u16 = KITE_QUOTE_FIELDS | FIELD_OI | FIELD_DEPTH_BUY | FIELD_DEPTH_SELL;

/// Optional fields an index packet carries (the quote form lacks the time).
pub const KITE_INDEX_FIELDS: u16 = FIELD_OHLC | FIELD_EXCHANGE_TIME;

/// Our 10^-8 units per unit of the packet's price, by segment.
#[inline]
pub fn price_multiplier(instrument_token: u32) -> i64 {
    match instrument_token & 0xff {
        SEGMENT_CDS => 10,     // 10^-7 rupees
        SEGMENT_BCD => 10_000, // 10^-4 rupees
        _ => 1_000_000,        // paise
    }
}

#[inline]
fn be32<const N: usize>(p: &[u8; N], offset: usize) -> u32 {
    u32::from_be_bytes([p[offset], p[offset + 1], p[offset + 2], p[offset + 3]])
}

/// Parses one packet (184-byte full, 44-byte quote, 32/28-byte index, 8-byte LTP)
/// into `tick`. The time is the
/// exchange timestamp, else the last trade time, else (quote packets, or both zero)
/// the receive time, and then [`FIELD_EXCHANGE_TIME`] is reported missing.
pub fn parse_kite_packet(packet: &[u8], tick: &mut Tick) -> Result<ParseInfo, RejectReason> {
    if let Ok(p) = <&[u8; KITE_FULL_BYTES]>::try_from(packet) {
        let multiplier = quote_fields(p, tick);
        let seconds = match be32(p, 60) {
            0 => be32(p, 44),
            s => s,
        };
        let mut present = KITE_FULL_FIELDS;
        if seconds == 0 {
            tick.timestamp_ms = tick.received_at_ms;
            present &= !FIELD_EXCHANGE_TIME;
        } else {
            tick.timestamp_ms = i64::from(seconds) * 1000;
        }
        tick.oi = u64::from(be32(p, 48));
        read_depth(p, DEPTH_OFFSET, multiplier, &mut tick.depth_buy);
        let sell = DEPTH_OFFSET + DEPTH_LEVELS * DEPTH_ENTRY_BYTES;
        read_depth(p, sell, multiplier, &mut tick.depth_sell);
        Ok(ParseInfo {
            present,
            expected: KITE_FULL_FIELDS,
        })
    } else if let Ok(p) = <&[u8; KITE_QUOTE_BYTES]>::try_from(packet) {
        quote_fields(p, tick);
        tick.timestamp_ms = tick.received_at_ms;
        tick.oi = 0;
        tick.depth_buy = Depth::default();
        tick.depth_sell = Depth::default();
        Ok(ParseInfo {
            present: KITE_QUOTE_FIELDS & !FIELD_EXCHANGE_TIME,
            expected: KITE_QUOTE_FIELDS,
        })
    } else {
        parse_short_packet(packet, tick)
    }
}

/// LTP (8 B) and index quote/full (28/32 B) packets; anything else is refused.
fn parse_short_packet(packet: &[u8], tick: &mut Tick) -> Result<ParseInfo, RejectReason> {
    reset_tick(tick);
    let (present, expected) = match packet.len() {
        KITE_LTP_BYTES => (0, FIELD_EXCHANGE_TIME),
        KITE_INDEX_QUOTE_BYTES | KITE_INDEX_FULL_BYTES => (FIELD_OHLC, KITE_INDEX_FIELDS),
        _ => return Err(RejectReason::BadKitePacket),
    };
    let word = |offset: usize| {
        u32::from_be_bytes([
            packet[offset],
            packet[offset + 1],
            packet[offset + 2],
            packet[offset + 3],
        ])
    };
    tick.instrument_token = word(0);
    let multiplier = price_multiplier(tick.instrument_token);
    let price = |offset| Price(i64::from(word(offset)) * multiplier);
    tick.last_price = price(4);
    tick.timestamp_ms = tick.received_at_ms;
    let mut info = ParseInfo { present, expected };
    if packet.len() >= KITE_INDEX_QUOTE_BYTES {
        // Index packets order the day's prices high, low, open, close.
        tick.ohlc = Ohlc {
            high: price(8),
            low: price(12),
            open: price(16),
            close: price(20),
        };
    }
    if packet.len() == KITE_INDEX_FULL_BYTES && word(28) != 0 {
        tick.timestamp_ms = i64::from(word(28)) * 1000;
        info.present |= FIELD_EXCHANGE_TIME;
    }
    Ok(info)
}

/// Writes the fields of the first 44 bytes (common to quote and full packets) and
/// clears the ones no packet carries; returns the price multiplier. Field by field
/// rather than a struct literal: the tick is ~350 B and the caller fills the rest, so
/// nothing is written twice.
#[inline]
fn quote_fields<const N: usize>(p: &[u8; N], tick: &mut Tick) -> i64 {
    debug_assert!(N >= KITE_QUOTE_BYTES);
    tick.instrument_token = be32(p, 0);
    let multiplier = price_multiplier(tick.instrument_token);
    let price = |offset| Price(i64::from(be32(p, offset)) * multiplier);
    tick.exchange = Symbol::EMPTY;
    tick.tradingsymbol = Symbol::EMPTY;
    tick.last_price = price(4);
    tick.last_quantity = be32(p, 8);
    tick.average_price = price(12);
    tick.volume_traded = u64::from(be32(p, 16));
    tick.ohlc = Ohlc {
        open: price(28),
        high: price(32),
        low: price(36),
        close: price(40),
    };
    tick.data_quality_score = 0.0;
    tick.validation_flags = 0;
    multiplier
}

/// Five entries from `offset` into `depth`; trailing empty entries (all zero, as Kite
/// sends for an illiquid book) are not counted as levels.
#[inline]
fn read_depth(p: &[u8; KITE_FULL_BYTES], offset: usize, multiplier: i64, depth: &mut Depth) {
    depth.len = 0;
    for (i, level) in depth.levels.iter_mut().enumerate() {
        let at = offset + i * DEPTH_ENTRY_BYTES;
        *level = DepthLevel {
            quantity: be32(p, at),
            price: Price(i64::from(be32(p, at + 4)) * multiplier),
            orders: u16::from_be_bytes([p[at + 8], p[at + 9]]),
        };
        if *level != DepthLevel::default() {
            depth.len = i as u8 + 1;
        }
    }
    // Entries past `len` are zero by the rule above, as `Depth` requires.
    debug_assert!(depth.len as usize <= DEPTH_LEVELS);
}

/// Splits one Kite WebSocket frame and hands each packet to `out`; returns the packet
/// count. The whole frame is checked before the first packet is handed out, so a
/// truncated or overlong frame yields nothing and [`RejectReason::BadKitePacket`]. A
/// frame under 2 bytes is Kite's heartbeat: `Ok(0)`.
pub fn parse_kite_message(frame: &[u8], mut out: impl FnMut(&[u8])) -> Result<usize, RejectReason> {
    if frame.len() < 2 {
        return Ok(0);
    }
    let count = usize::from(u16::from_be_bytes([frame[0], frame[1]]));
    // Pass 1: the lengths must tile the frame exactly.
    let mut pos = 2usize;
    for _ in 0..count {
        let header = frame.get(pos..pos + 2).ok_or(RejectReason::BadKitePacket)?;
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        pos += 2 + len;
        if pos > frame.len() {
            return Err(RejectReason::BadKitePacket);
        }
    }
    if pos != frame.len() {
        return Err(RejectReason::BadKitePacket);
    }
    // Pass 2: hand out the packets.
    let mut pos = 2usize;
    for _ in 0..count {
        let len = usize::from(u16::from_be_bytes([frame[pos], frame[pos + 1]]));
        out(&frame[pos + 2..pos + 2 + len]);
        pos += 2 + len;
    }
    debug_assert_eq!(pos, frame.len());
    Ok(count)
}

/// Writes `tick` as a full packet. Prices are truncated toward zero to the segment's
/// unit and, like every other field, saturate at the u32 range (negatives become 0);
/// times are whole seconds, written both as last trade time and exchange timestamp;
/// total buy/sell quantity are the depth sums. Levels past a side's `len` are zero.
pub fn encode_kite_full(tick: &Tick, out: &mut [u8; KITE_FULL_BYTES]) {
    let multiplier = price_multiplier(tick.instrument_token);
    let sat = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
    let price = |p: Price| sat(p.0 / multiplier);
    let put = |out: &mut [u8; KITE_FULL_BYTES], offset: usize, v: u32| {
        out[offset..offset + 4].copy_from_slice(&v.to_be_bytes());
    };
    let sum = |d: &Depth| {
        d.as_slice()
            .iter()
            .map(|l| i64::from(l.quantity))
            .sum::<i64>()
    };
    let seconds = sat(tick.timestamp_ms.div_euclid(1000));
    let oi = sat(i64::try_from(tick.oi).unwrap_or(i64::MAX));
    *out = [0; KITE_FULL_BYTES];
    put(out, 0, tick.instrument_token);
    put(out, 4, price(tick.last_price));
    put(out, 8, tick.last_quantity);
    put(out, 12, price(tick.average_price));
    put(
        out,
        16,
        sat(i64::try_from(tick.volume_traded).unwrap_or(i64::MAX)),
    );
    put(out, 20, sat(sum(&tick.depth_buy)));
    put(out, 24, sat(sum(&tick.depth_sell)));
    put(out, 28, price(tick.ohlc.open));
    put(out, 32, price(tick.ohlc.high));
    put(out, 36, price(tick.ohlc.low));
    put(out, 40, price(tick.ohlc.close));
    put(out, 44, seconds);
    put(out, 48, oi);
    put(out, 52, oi);
    put(out, 56, oi);
    put(out, 60, seconds);
    let sides = [(&tick.depth_buy, 0), (&tick.depth_sell, DEPTH_LEVELS)];
    for (side, first) in sides {
        for (i, level) in side.as_slice().iter().enumerate() {
            let at = DEPTH_OFFSET + (first + i) * DEPTH_ENTRY_BYTES;
            put(out, at, level.quantity);
            put(out, at + 4, price(level.price));
            out[at + 8..at + 10].copy_from_slice(&level.orders.to_be_bytes());
        }
    }
}

#[cfg(test)]
#[path = "kite_tests.rs"]
mod tests;
