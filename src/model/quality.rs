//! Data quality vocabulary: why a message was rejected ([`RejectReason`]), which
//! checks a stored tick failed (the `FLAG_*` bits of `validation_flags`), and how the
//! flags become `data_quality_score` ([`data_quality_score`]).
//!
//! ```text
//!   payload ──parse──► Err(RejectReason) ──► rejected_messages (reason = as_str())
//!              │
//!              └─ Ok ──validate──► Tick { validation_flags, data_quality_score } ──► market_ticks
//! ```
//!
//! Both sets are fixed and small on purpose: a reason's text is a Prometheus label and
//! a column value, so it never carries the offending value (the raw bytes are stored
//! beside it instead). No I/O here.

/// Why a message could not be stored as a tick. `#[repr(u8)]` so it packs into a
/// counter index; [`RejectReason::as_str`] is the metric label and the
/// `rejected_messages.reason` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum RejectReason {
    /// Not JSON: a syntax error, truncated input, trailing bytes after the object, or
    /// nesting deeper than the skip bound.
    #[error("malformed JSON: fix the producer's serializer")]
    MalformedJson = 0,
    /// A JSON string holds bytes that are not UTF-8.
    #[error("invalid UTF-8 inside a JSON string: the producer must send UTF-8")]
    InvalidUtf8 = 1,
    /// A required field (`instrument_token`, `last_price`, `timestamp`, or a depth
    /// level's `price`/`quantity`) is absent or null.
    #[error("a required field is missing")]
    MissingField = 2,
    /// A known field holds the wrong JSON type (e.g. a string price, a top-level array).
    #[error("a field has the wrong JSON type")]
    WrongType = 3,
    /// A number that does not fit its field: overflow, a fraction or a negative sign in
    /// a count, a price beyond the fixed-point range.
    #[error("a number does not fit its field")]
    BadNumber = 4,
    /// A timestamp that is neither ISO-8601 nor integer epoch milliseconds in
    /// 1970..=9999.
    #[error("unreadable timestamp: send ISO-8601 or epoch milliseconds")]
    BadTimestamp = 5,
    /// `exchange` or `tradingsymbol` longer than [`crate::model::SYMBOL_BYTES_MAX`].
    #[error("symbol longer than the inline limit")]
    SymbolTooLong = 6,
    /// More than [`crate::model::DEPTH_LEVELS`] depth levels on one side.
    #[error("more depth levels than a tick holds")]
    TooManyDepthLevels = 7,
    /// The payload exceeds the parser's size cap; refused before reading it.
    #[error("payload larger than the parser's cap")]
    PayloadTooLarge = 8,
    /// A Kite binary packet or frame of an unknown length, or a frame whose packet
    /// lengths run past its end.
    #[error("Kite binary packet of unknown length or truncated frame")]
    BadKitePacket = 9,
    /// A subject outside the tick namespace, or without a readable token.
    #[error("subject is not market.ticks.<exchange>.<token>")]
    UnknownSubject = 10,
}

impl RejectReason {
    /// Every reason, in `repr` order (so `ALL[r as usize] == r`).
    pub const ALL: [RejectReason; 11] = [
        RejectReason::MalformedJson,
        RejectReason::InvalidUtf8,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::BadNumber,
        RejectReason::BadTimestamp,
        RejectReason::SymbolTooLong,
        RejectReason::TooManyDepthLevels,
        RejectReason::PayloadTooLarge,
        RejectReason::BadKitePacket,
        RejectReason::UnknownSubject,
    ];

    /// The snake_case label: metric label value and `rejected_messages.reason` text.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::BadNumber => "bad_number",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::SymbolTooLong => "symbol_too_long",
            RejectReason::TooManyDepthLevels => "too_many_depth_levels",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::BadKitePacket => "bad_kite_packet",
            RejectReason::UnknownSubject => "unknown_subject",
        }
    }
}

/// An optional field (`exchange`, `tradingsymbol`, `last_quantity`, `average_price`,
/// volume, `oi`, `ohlc`, a depth side, or a Kite quote packet's exchange time) that the
/// source format carries was absent.
pub const FLAG_MISSING_OPTIONAL: u32 = 1 << 0;
/// `last_price` or a depth level's price is zero or negative.
pub const FLAG_NONPOSITIVE_PRICE: u32 = 1 << 1;
/// Best bid above best ask (a locked book, bid == ask, is not flagged).
pub const FLAG_CROSSED_BOOK: u32 = 1 << 2;
/// Bids not in non-increasing or asks not in non-decreasing price order.
pub const FLAG_DEPTH_UNSORTED: u32 = 1 << 3;
/// `last_quantity` or a depth quantity above `ValidationConfig::quantity_max`.
pub const FLAG_QUANTITY_INSANE: u32 = 1 << 4;
/// Exchange time more than `future_skew_ms` ahead of our clock.
pub const FLAG_FUTURE_TIMESTAMP: u32 = 1 << 5;
/// Exchange time more than `stale_window_ms` behind our clock.
pub const FLAG_STALE_TIMESTAMP: u32 = 1 << 6;
/// Exchange time earlier than the instrument's latest seen so far.
pub const FLAG_OUT_OF_ORDER: u32 = 1 << 7;
/// `last_price` moved more than `price_jump_band_pct` from the instrument's previous.
pub const FLAG_PRICE_JUMP: u32 = 1 << 8;
/// `last_price` not a multiple of the instrument's tick size (checked only once
/// reference data gives a tick size).
pub const FLAG_OFF_TICK_SIZE: u32 = 1 << 9;
/// `last_price` outside the instrument's circuit limits (checked only when known).
pub const FLAG_OUTSIDE_CIRCUIT: u32 = 1 << 10;

/// Every flag with its label and its weight in hundredths of a score point.
///
/// Weights: a flag that makes the price itself doubtful (non-positive, outside the
/// circuit, a jump) costs most; book-shape and quantity problems cost less; timing and
/// completeness flags least, since the price is still the exchange's.
pub const FLAGS: [(u32, &str, u32); 11] = [
    (FLAG_MISSING_OPTIONAL, "missing_optional", 10),
    (FLAG_NONPOSITIVE_PRICE, "nonpositive_price", 60),
    (FLAG_CROSSED_BOOK, "crossed_book", 30),
    (FLAG_DEPTH_UNSORTED, "depth_unsorted", 20),
    (FLAG_QUANTITY_INSANE, "quantity_insane", 30),
    (FLAG_FUTURE_TIMESTAMP, "future_timestamp", 20),
    (FLAG_STALE_TIMESTAMP, "stale_timestamp", 10),
    (FLAG_OUT_OF_ORDER, "out_of_order", 10),
    (FLAG_PRICE_JUMP, "price_jump", 40),
    (FLAG_OFF_TICK_SIZE, "off_tick_size", 20),
    (FLAG_OUTSIDE_CIRCUIT, "outside_circuit", 50),
];

/// The hard flags: the tick's price, book, quantity or time cannot be trusted. A tick
/// with one is stored (bad input is data) but does not move its instrument's
/// out-of-order or price-jump reference (`shard::validate`) and does not feed the bars
/// (`ohlc_1m`, `ml_features`, `market_depth_snapshots`: migration
/// `009_views_trusted_ticks` filters on this value, 1086). The others are soft: the
/// price is still the exchange's (a late, stale, jumping or off-grid print, or an
/// absent optional field).
pub const FLAGS_HARD: u32 = FLAG_NONPOSITIVE_PRICE
    | FLAG_CROSSED_BOOK
    | FLAG_DEPTH_UNSORTED
    | FLAG_QUANTITY_INSANE
    | FLAG_FUTURE_TIMESTAMP
    | FLAG_OUTSIDE_CIRCUIT;
const _: () = assert!(FLAGS_HARD == 1086, "migration 009 filters on 1086");

/// The four checks the platform reports, each the flags it is made of: completeness
/// (an expected field absent), consistency (the book or the price against itself and
/// its history), timeliness (the exchange time against our clock and the
/// instrument's order), accuracy (a value that cannot be right).
pub const CHECKS: [(&str, u32); 4] = [
    ("completeness", FLAG_MISSING_OPTIONAL),
    (
        "consistency",
        FLAG_CROSSED_BOOK | FLAG_DEPTH_UNSORTED | FLAG_PRICE_JUMP,
    ),
    (
        "timeliness",
        FLAG_FUTURE_TIMESTAMP | FLAG_STALE_TIMESTAMP | FLAG_OUT_OF_ORDER,
    ),
    (
        "accuracy",
        FLAG_NONPOSITIVE_PRICE | FLAG_QUANTITY_INSANE | FLAG_OFF_TICK_SIZE | FLAG_OUTSIDE_CIRCUIT,
    ),
];
const _: () = {
    // Every flag belongs to exactly one check.
    let mut all = 0;
    let mut i = 0;
    while i < CHECKS.len() {
        assert!(all & CHECKS[i].1 == 0, "a flag is in two checks");
        all |= CHECKS[i].1;
        i += 1;
    }
    assert!(all == FLAGS_ALL, "a flag is in no check");
};

/// All flag bits together.
pub const FLAGS_ALL: u32 = (1 << FLAGS.len()) - 1;

const _: () = {
    let mut i = 0;
    while i < FLAGS.len() {
        assert!(FLAGS[i].0 == 1 << i, "FLAGS lists the bits in order");
        i += 1;
    }
};

/// The score a tick with `flags` gets: start at 1.0, subtract each set flag's weight
/// from [`FLAGS`], clamp to `[0, 1]`. Summed in integer hundredths so the same flags
/// always give the bit-identical `f32`.
#[inline]
pub fn data_quality_score(flags: u32) -> f32 {
    if flags == 0 {
        return 1.0;
    }
    let mut penalty = 0u32;
    for (bit, _, weight) in FLAGS {
        if flags & bit != 0 {
            penalty += weight;
        }
    }
    SCORES[100u32.saturating_sub(penalty) as usize]
}

/// `SCORES[n]` is `n as f32 / 100.0`, computed once: a table read where a division
/// sat on every flagged tick's path (`divss` was ~10% of the validator's samples).
const SCORES: [f32; 101] = {
    let mut table = [0.0; 101];
    let mut n = 0;
    while n < table.len() {
        table[n] = n as f32 / 100.0;
        n += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    //! Labels are unique snake_case, `ALL` matches the repr, and the score follows its rule.
    use super::*;

    #[test]
    fn reasons_are_listed_in_repr_order_with_unique_labels() {
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            let label = reason.as_str();
            assert!(label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert_eq!(
                RejectReason::ALL
                    .iter()
                    .filter(|r| r.as_str() == label)
                    .count(),
                1
            );
        }
    }

    #[test]
    fn score_table_is_the_division() {
        for n in 0..=100u32 {
            assert_eq!(SCORES[n as usize].to_bits(), (n as f32 / 100.0).to_bits());
        }
    }

    #[test]
    fn score_subtracts_weights_and_clamps() {
        assert_eq!(data_quality_score(0), 1.0);
        assert_eq!(data_quality_score(FLAG_MISSING_OPTIONAL), 0.9);
        assert_eq!(
            data_quality_score(FLAG_CROSSED_BOOK | FLAG_DEPTH_UNSORTED),
            0.5
        );
        assert_eq!(data_quality_score(FLAGS_ALL), 0.0);
        assert_eq!(FLAGS_ALL, 0x7ff);
    }
}
