//! Kite packets decode per the layout table, frames split exactly or not at all, and
//! encode → parse is the identity on representable ticks.
use super::*;
use crate::model::synthetic::SyntheticTicks;
use proptest::prelude::*;

fn full_packet(tick: &Tick) -> [u8; KITE_FULL_BYTES] {
    let mut out = [0u8; KITE_FULL_BYTES];
    encode_kite_full(tick, &mut out);
    out
}

#[test]
fn full_packet_fields_sit_at_their_offsets() {
    let tick = SyntheticTicks::new(1, 5).next_tick(1_764_000_000_000, 0, 0);
    let p = full_packet(&tick);
    assert_eq!(&p[0..4], &tick.instrument_token.to_be_bytes());
    assert_eq!(be32(&p, 4), (tick.last_price.0 / 1_000_000) as u32, "paise");
    assert_eq!(be32(&p, 60), 1_764_000_000, "exchange time in seconds");
    assert_eq!(be32(&p, 64), tick.depth_buy.levels[0].quantity);
    assert_eq!(be32(&p, 64 + 60), tick.depth_sell.levels[0].quantity);
    assert_eq!(
        &p[64 + 8..64 + 10],
        &tick.depth_buy.levels[0].orders.to_be_bytes()
    );
}

#[test]
fn segment_sets_the_price_unit() {
    // 1 rupee in each segment's unit.
    for (token, raw) in [(0x0101, 100u32), (0x0103, 10_000_000), (0x0106, 10_000)] {
        let mut p = [0u8; KITE_QUOTE_BYTES];
        p[0..4].copy_from_slice(&(token as u32).to_be_bytes());
        p[4..8].copy_from_slice(&raw.to_be_bytes());
        let mut tick = Tick::default();
        parse_kite_packet(&p, &mut tick).unwrap();
        assert_eq!(tick.last_price, Price(100_000_000), "token {token:#x}");
    }
}

#[test]
fn quote_packet_takes_the_receive_time_and_reports_it_missing() {
    let mut p = [0u8; KITE_QUOTE_BYTES];
    p[0..4].copy_from_slice(&256_265u32.to_be_bytes());
    let mut tick = Tick {
        received_at_ms: 42,
        ..Tick::default()
    };
    let info = parse_kite_packet(&p, &mut tick).unwrap();
    assert_eq!(tick.timestamp_ms, 42);
    assert_eq!(info.missing(), FIELD_EXCHANGE_TIME);
    assert_eq!(tick.depth_buy.len, 0);
}

#[test]
fn full_packet_falls_back_to_last_trade_time_and_trims_empty_levels() {
    let mut tick = SyntheticTicks::new(1, 5).next_tick(1_764_000_000_000, 0, 0);
    tick.depth_sell.len = 2;
    for level in &mut tick.depth_sell.levels[2..] {
        *level = DepthLevel::default();
    }
    let mut p = full_packet(&tick);
    p[60..64].fill(0);
    let mut got = Tick::default();
    let info = parse_kite_packet(&p, &mut got).unwrap();
    assert_eq!(info.missing(), 0);
    assert_eq!(got.timestamp_ms, 1_764_000_000_000);
    assert_eq!(got.depth_sell.len, 2);
    assert_eq!(got.depth_buy.len, 5);
}

#[test]
fn other_lengths_are_bad_packets() {
    let mut tick = Tick::default();
    for len in [0, 4, 7, 9, 27, 29, 31, 33, 43, 45, 183, 185] {
        let p = vec![0u8; len];
        assert_eq!(
            parse_kite_packet(&p, &mut tick),
            Err(RejectReason::BadKitePacket)
        );
    }
}

#[test]
fn frames_split_exactly_or_not_at_all() {
    let frame = [0, 2, 0, 3, 1, 2, 3, 0, 1, 9];
    let mut seen = Vec::new();
    assert_eq!(parse_kite_message(&frame, |p| seen.push(p.to_vec())), Ok(2));
    assert_eq!(seen, vec![vec![1, 2, 3], vec![9]]);
    assert_eq!(parse_kite_message(&[7], |_| panic!("heartbeat")), Ok(0));
    assert_eq!(parse_kite_message(&[], |_| panic!("empty")), Ok(0));
    for bad in [
        &frame[..9],
        &[0, 2, 0, 3, 1, 2, 3][..],
        &[0, 1, 0, 1, 5, 6][..],
        &[0, 1, 0][..],
    ] {
        assert_eq!(
            parse_kite_message(bad, |_| panic!("nothing from a bad frame")),
            Err(RejectReason::BadKitePacket)
        );
    }
}

/// A tick every field of which a full packet represents exactly.
fn representable_tick() -> impl Strategy<Value = Tick> {
    let segment = prop::sample::select(vec![1u32, 2, 3, 4, 6, 7]);
    let side = proptest::collection::vec((1u32.., 0u32.., any::<u16>()), 0..=5);
    (
        (any::<u32>(), segment, 1u32..u32::MAX),
        proptest::collection::vec(any::<u32>(), 6),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (side.clone(), side),
    )
        .prop_map(
            |((token, segment, seconds), prices, (lq, volume, oi), (buy, sell))| {
                let token = token & !0xff | segment;
                let m = price_multiplier(token);
                let price = |raw: u32| Price(i64::from(raw) * m);
                let depth = |levels: Vec<(u32, u32, u16)>| {
                    let mut d = Depth {
                        len: levels.len() as u8,
                        ..Depth::default()
                    };
                    for (i, (q, p, o)) in levels.into_iter().enumerate() {
                        d.levels[i] = DepthLevel {
                            price: price(p),
                            quantity: q,
                            orders: o,
                        };
                    }
                    d
                };
                Tick {
                    timestamp_ms: i64::from(seconds) * 1000,
                    instrument_token: token,
                    last_price: price(prices[0]),
                    last_quantity: lq,
                    average_price: price(prices[1]),
                    volume_traded: u64::from(volume),
                    ohlc: Ohlc {
                        open: price(prices[2]),
                        high: price(prices[3]),
                        low: price(prices[4]),
                        close: price(prices[5]),
                    },
                    oi: u64::from(oi),
                    depth_buy: depth(buy),
                    depth_sell: depth(sell),
                    ..Tick::default()
                }
            },
        )
}

use crate::model::Ohlc;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// parse(encode(t)) == t for every representable tick.
    #[test]
    fn encode_then_parse_is_identity(tick in representable_tick()) {
        let p = full_packet(&tick);
        let mut got = Tick::default();
        let info = parse_kite_packet(&p, &mut got).unwrap();
        prop_assert_eq!(got, tick);
        prop_assert_eq!(info.missing(), 0);
    }

    /// Any bytes as a frame or as a packet: no panic, and every packet handed out
    /// lies inside the frame.
    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut tick = Tick::default();
        let mut total = 0;
        let result = parse_kite_message(&bytes, |p| {
            total += p.len() + 2;
            let _ = parse_kite_packet(p, &mut tick);
        });
        if let Ok(n) = result {
            if n > 0 {
                prop_assert_eq!(total + 2, bytes.len());
            }
        }
        let _ = parse_kite_packet(&bytes, &mut tick);
    }
}

#[test]
fn parsing_overwrites_every_field_of_a_used_tick() {
    // A tick left over from a JSON message must not leak into a Kite one.
    let used = SyntheticTicks::new(1, 5).next_tick(1_764_000_000_000, 7, 9);
    let used = Tick {
        validation_flags: 0x7ff,
        data_quality_score: 0.5,
        ..used
    };
    let mut source = SyntheticTicks::new(3, 8).next_tick(1_764_000_100_000, 0, 0);
    source.instrument_token = source.instrument_token & !0xff | 1;
    let packet = full_packet(&source);
    for bytes in [&packet[..], &packet[..KITE_QUOTE_BYTES]] {
        let mut fresh = Tick {
            received_at_ms: 7,
            stream_seq: 9,
            ..Tick::default()
        };
        let mut reused = used;
        assert_eq!(
            parse_kite_packet(bytes, &mut fresh),
            parse_kite_packet(bytes, &mut reused)
        );
        assert_eq!(fresh, reused);
    }
}

#[test]
fn index_and_ltp_packets_read_their_fields() {
    // NIFTY 50 (token 256265, segment 9): prices in paise, OHLC ordered high, low, open, close.
    let mut p = Vec::new();
    for word in [
        256_265u32,
        2_400_005,
        2_410_000,
        2_390_000,
        2_395_000,
        2_398_000,
        7,
        1_764_000_000,
    ] {
        p.extend_from_slice(&word.to_be_bytes());
    }
    let mut tick = Tick {
        received_at_ms: 42,
        ..Tick::default()
    };
    let info = parse_kite_packet(&p, &mut tick).unwrap();
    assert_eq!(info.missing(), 0);
    assert_eq!(tick.last_price, Price(2_400_005_000_000));
    assert_eq!(tick.ohlc.high, Price(2_410_000_000_000));
    assert_eq!(tick.ohlc.open, Price(2_395_000_000_000));
    assert_eq!(tick.timestamp_ms, 1_764_000_000_000);
    let info = parse_kite_packet(&p[..KITE_INDEX_QUOTE_BYTES], &mut tick).unwrap();
    assert_eq!(
        (info.missing(), tick.timestamp_ms),
        (FIELD_EXCHANGE_TIME, 42)
    );
    assert_eq!(tick.ohlc.close, Price(2_398_000_000_000));
    let info = parse_kite_packet(&p[..KITE_LTP_BYTES], &mut tick).unwrap();
    assert_eq!(info.missing(), FIELD_EXCHANGE_TIME);
    assert_eq!(tick.ohlc, Ohlc::default());
    assert_eq!(tick.last_price, Price(2_400_005_000_000));
}
