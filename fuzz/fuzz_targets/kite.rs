//! `shard::parse::kite`: the Kite WebSocket frame splitter (`parse_kite_message`) and
//! the packet parser (`parse_kite_packet`), fed the input as a frame and as a packet.
//!
//! Asserts, from the module docs:
//! - no panic;
//! - a frame is checked whole before any packet is handed out: on error nothing was
//!   handed out; on success the count is the number handed out, and the length
//!   prefixes tile the frame exactly; under 2 bytes is a heartbeat, `Ok(0)`;
//! - a packet of a length other than 8/28/32/44/184 is `BadKitePacket`, and no other
//!   reason ever comes back;
//! - every field but the receiver's stamps is overwritten: a used tick parses the same;
//! - a full packet re-encoded by `encode_kite_full` parses to the same tick (the
//!   tests' "encode → parse is the identity", here parse → encode → parse);
//! - expected/present bits are those the module documents per packet length.
#![no_main]

use alphapt_storage::model::quality::RejectReason;
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::Tick;
use alphapt_storage::shard::parse::kite::{
    KITE_FULL_BYTES, KITE_FULL_FIELDS, KITE_INDEX_FIELDS, KITE_INDEX_FULL_BYTES,
    KITE_INDEX_QUOTE_BYTES, KITE_LTP_BYTES, KITE_QUOTE_BYTES, KITE_QUOTE_FIELDS,
};
use alphapt_storage::shard::parse::{
    encode_kite_full, parse_kite_message, parse_kite_packet, ParseInfo, FIELD_EXCHANGE_TIME,
};
use libfuzzer_sys::fuzz_target;

const RECEIVED_AT_MS: i64 = 1_764_000_000_777;
const STREAM_SEQ: u64 = 4242;

fn parse_fresh(packet: &[u8]) -> Result<(ParseInfo, Tick), RejectReason> {
    let mut tick = Tick {
        received_at_ms: RECEIVED_AT_MS,
        stream_seq: STREAM_SEQ,
        ..Tick::default()
    };
    let result = parse_kite_packet(packet, &mut tick);
    assert_eq!(
        (tick.received_at_ms, tick.stream_seq),
        (RECEIVED_AT_MS, STREAM_SEQ)
    );
    result.map(|info| (info, tick))
}

fn parse_used(packet: &[u8]) -> Result<(ParseInfo, Tick), RejectReason> {
    let mut tick =
        SyntheticTicks::new(2, 7).next_tick(1_700_000_000_000, RECEIVED_AT_MS, STREAM_SEQ);
    tick.data_quality_score = 0.5;
    tick.validation_flags = 0xbeef;
    parse_kite_packet(packet, &mut tick).map(|info| (info, tick))
}

fn check_packet(packet: &[u8]) {
    let outcome = parse_fresh(packet);
    let known = matches!(
        packet.len(),
        KITE_FULL_BYTES
            | KITE_QUOTE_BYTES
            | KITE_LTP_BYTES
            | KITE_INDEX_QUOTE_BYTES
            | KITE_INDEX_FULL_BYTES
    );
    match &outcome {
        Err(reason) => {
            assert!(
                !known,
                "a {}-byte packet was refused: {reason:?}",
                packet.len()
            );
            assert_eq!(*reason, RejectReason::BadKitePacket);
        }
        Ok((info, tick)) => {
            assert!(known, "a {}-byte packet was accepted", packet.len());
            let expected = match packet.len() {
                KITE_FULL_BYTES => KITE_FULL_FIELDS,
                KITE_QUOTE_BYTES => KITE_QUOTE_FIELDS,
                KITE_LTP_BYTES => FIELD_EXCHANGE_TIME,
                _ => KITE_INDEX_FIELDS,
            };
            assert_eq!(info.expected, expected);
            assert_eq!(info.present & !info.expected, 0);
            if info.present & FIELD_EXCHANGE_TIME == 0 {
                assert_eq!(
                    tick.timestamp_ms, RECEIVED_AT_MS,
                    "no exchange time: the receive time stands in"
                );
            }
            assert!(
                tick.exchange.as_bytes().is_empty() && tick.tradingsymbol.as_bytes().is_empty()
            );
            for depth in [&tick.depth_buy, &tick.depth_sell] {
                let len = usize::from(depth.len);
                assert!(len <= depth.levels.len());
                assert!(depth.levels[len..].iter().all(|l| *l == Default::default()));
                if len > 0 {
                    assert_ne!(
                        depth.levels[len - 1],
                        Default::default(),
                        "trailing empty levels are trimmed"
                    );
                }
            }
            if packet.len() == KITE_FULL_BYTES {
                let mut encoded = [0u8; KITE_FULL_BYTES];
                encode_kite_full(tick, &mut encoded);
                let again = parse_fresh(&encoded).expect("an encoded full packet parses");
                let mut expect = *tick;
                if info.present & FIELD_EXCHANGE_TIME == 0 {
                    // The receive time stood in; the encoder writes it in whole seconds.
                    expect.timestamp_ms = RECEIVED_AT_MS / 1000 * 1000;
                }
                assert_eq!(again.1, expect, "parse -> encode -> parse changed the tick");
            }
        }
    }
    assert_eq!(
        outcome,
        parse_used(packet),
        "a used tick changed the outcome"
    );
}

fuzz_target!(|data: &[u8]| {
    // The input as one WebSocket frame.
    // The callback's slices cannot outlive it: keep where each lies in the frame.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let base = data.as_ptr() as usize;
    let result = parse_kite_message(data, |packet| {
        let start = (packet.as_ptr() as usize).wrapping_sub(base);
        assert!(
            start <= data.len() && packet.len() <= data.len() - start,
            "packet outside the frame"
        );
        spans.push((start, packet.len()));
    });
    let handed: Vec<&[u8]> = spans
        .iter()
        .map(|&(start, len)| &data[start..start + len])
        .collect();
    match result {
        Ok(count) => {
            assert_eq!(count, handed.len());
            if data.len() < 2 {
                assert_eq!(count, 0, "a frame under 2 bytes is a heartbeat");
            } else {
                assert_eq!(count, usize::from(u16::from_be_bytes([data[0], data[1]])));
                let tiled: usize = 2 + handed.iter().map(|p| 2 + p.len()).sum::<usize>();
                assert_eq!(tiled, data.len(), "packets must tile the frame exactly");
                // Each packet is the slice right after its length prefix.
                let mut pos = 2;
                for packet in &handed {
                    let len = usize::from(u16::from_be_bytes([data[pos], data[pos + 1]]));
                    assert_eq!(packet.len(), len);
                    assert_eq!(packet.as_ptr(), data[pos + 2..].as_ptr());
                    pos += 2 + len;
                }
            }
        }
        Err(reason) => {
            assert_eq!(reason, RejectReason::BadKitePacket);
            assert!(
                handed.is_empty(),
                "a refused frame handed out {} packets",
                handed.len()
            );
        }
    }
    for packet in handed {
        check_packet(packet);
    }
    // The input as one packet.
    check_packet(data);
});
