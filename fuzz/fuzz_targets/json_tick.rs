//! `shard::parse::parse_json_tick`: the JSON tick parser every NATS tick payload goes
//! through (plus `parse_iso8601_ms`, which it calls, on the raw input).
//!
//! Asserts, from the parser's docs and tests:
//! - no panic (and no arithmetic overflow: built with debug assertions);
//! - the receiver's stamps (`received_at_ms`, `stream_seq`) survive, accept or refuse;
//! - a refusal carries a JSON reason (never a Kite/subject one), `PayloadTooLarge`
//!   exactly for payloads over `JSON_PAYLOAD_BYTES_MAX`, and never `MalformedJson`
//!   for valid JSON nested no deeper than `NESTING_MAX`;
//! - whatever is accepted is RFC 8259 JSON (`json_tests.rs`: "whatever we accept is
//!   JSON");
//! - every field is overwritten: parsing into a used tick gives the same tick;
//! - spelling does not change the outcome (the fast-path switch is `#[cfg(test)]`, so
//!   valid JSON is re-spelled three ways instead, see `alphapt_storage_fuzz`);
//! - an accepted tick written back by `model::json::write_tick_json` parses to the
//!   same tick with no field missing (the writer's doc: "the shard's parser reads this
//!   shape back"), when its symbols need no JSON escaping (the writer does not escape).
#![no_main]

use alphapt_storage::model::json::{write_iso8601_ms, write_tick_json};
use alphapt_storage::model::quality::RejectReason;
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::Tick;
use alphapt_storage::shard::parse::json::{
    parse_iso8601_ms, JSON_FIELDS_EXPECTED, JSON_PAYLOAD_BYTES_MAX, NESTING_MAX, TIMESTAMP_MS_MAX,
};
use alphapt_storage::shard::parse::{parse_json_tick, ParseInfo};
use alphapt_storage_fuzz::{
    check, known_long_integer_with_fraction, respell, show, skip_known, Spelling,
};
use libfuzzer_sys::fuzz_target;

const RECEIVED_AT_MS: i64 = 1_764_000_000_777;
const STREAM_SEQ: u64 = 4242;

type Outcome = Result<(ParseInfo, Tick), RejectReason>;

/// Parses into a fresh tick stamped by the "receiver".
fn parse_fresh(payload: &[u8]) -> Outcome {
    let mut tick = Tick {
        received_at_ms: RECEIVED_AT_MS,
        stream_seq: STREAM_SEQ,
        ..Tick::default()
    };
    let result = parse_json_tick(payload, &mut tick);
    assert_eq!(
        (tick.received_at_ms, tick.stream_seq),
        (RECEIVED_AT_MS, STREAM_SEQ),
        "the parser changed the receiver's stamps ({result:?}) on {}",
        show(payload)
    );
    result.map(|info| (info, tick))
}

/// Parses into a tick full of another instrument's data, same stamps.
fn parse_used(payload: &[u8]) -> Outcome {
    let mut tick =
        SyntheticTicks::new(2, 99).next_tick(1_700_000_000_123, RECEIVED_AT_MS, STREAM_SEQ);
    tick.data_quality_score = 0.25;
    tick.validation_flags = 0xdead;
    parse_json_tick(payload, &mut tick).map(|info| (info, tick))
}

fn needs_escaping(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

fuzz_target!(|data: &[u8]| {
    if skip_known() && known_long_integer_with_fraction(data) {
        return;
    }
    let outcome = parse_fresh(data);
    let json = check(data);
    match &outcome {
        Err(reason) => {
            assert!(
                !matches!(
                    reason,
                    RejectReason::BadKitePacket | RejectReason::UnknownSubject
                ),
                "JSON parser gave a non-JSON reason {reason:?}"
            );
            assert_eq!(
                *reason == RejectReason::PayloadTooLarge,
                data.len() > JSON_PAYLOAD_BYTES_MAX,
                "PayloadTooLarge must be exactly the size cap ({} B)",
                data.len()
            );
            if let Some(json) = &json {
                if json.depth <= NESTING_MAX as usize && data.len() <= JSON_PAYLOAD_BYTES_MAX {
                    assert_ne!(
                        *reason,
                        RejectReason::MalformedJson,
                        "valid JSON (depth {}) refused as malformed: {}",
                        json.depth,
                        show(data)
                    );
                }
            }
        }
        Ok((info, tick)) => {
            assert!(
                json.is_some(),
                "accepted bytes that are not JSON: {}",
                show(data)
            );
            assert_eq!(info.expected, JSON_FIELDS_EXPECTED);
            assert_eq!(
                info.present & !info.expected,
                0,
                "present bits beyond expected"
            );
            assert!(
                (0..=TIMESTAMP_MS_MAX).contains(&tick.timestamp_ms),
                "timestamp {} out of the documented range",
                tick.timestamp_ms
            );
            for depth in [&tick.depth_buy, &tick.depth_sell] {
                assert!(usize::from(depth.len) <= depth.levels.len());
                assert!(
                    depth.levels[usize::from(depth.len)..]
                        .iter()
                        .all(|l| *l == Default::default()),
                    "levels past len must be zero"
                );
            }
        }
    }

    // Every field is overwritten (or the same reason given) whatever the tick held.
    assert_eq!(
        outcome,
        parse_used(data),
        "used tick changed the outcome: {}",
        show(data)
    );

    // Same value, other spellings: same outcome.
    if let Some(json) = &json {
        for spelling in [Spelling::Python, Spelling::Compact, Spelling::Escaped] {
            let again = respell(json, spelling);
            if again.len() > JSON_PAYLOAD_BYTES_MAX || data.len() > JSON_PAYLOAD_BYTES_MAX {
                continue;
            }
            let other = parse_fresh(&again);
            assert_eq!(
                outcome,
                other,
                "spelling changed the outcome\n  input:   {}\n  {spelling:?}: {}",
                show(data),
                show(&again)
            );
        }
    }

    // Accepted ticks survive the platform's writer.
    if let Ok((_, tick)) = &outcome {
        if !needs_escaping(tick.exchange.as_bytes())
            && !needs_escaping(tick.tradingsymbol.as_bytes())
        {
            let mut written = Vec::new();
            write_tick_json(&mut written, tick);
            match parse_fresh(&written) {
                Ok((info, back)) => {
                    assert_eq!(info.missing(), 0, "writer output lacks fields: {}", show(&written));
                    assert_eq!(back, *tick, "writer round trip: {}", show(&written));
                }
                Err(reason) => panic!(
                    "the writer's output of an accepted tick is refused ({reason:?})\n  input:   {}\n  written: {}",
                    show(data),
                    show(&written)
                ),
            }
        }
    }

    // The ISO-8601 reader on its own: in range, and the canonical form reads back.
    if let Some(ms) = parse_iso8601_ms(data) {
        assert!(
            (0..=TIMESTAMP_MS_MAX).contains(&ms),
            "{ms} out of range for {}",
            show(data)
        );
        let mut canonical = Vec::new();
        write_iso8601_ms(&mut canonical, ms);
        assert_eq!(
            parse_iso8601_ms(&canonical),
            Some(ms),
            "{} -> {ms} -> {}",
            show(data),
            show(&canonical)
        );
    }
});
