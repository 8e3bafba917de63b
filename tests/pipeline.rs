//! The hot path without NATS: a source routes 20,000 messages (JSON, and every 7th good
//! one a Kite frame), 2% of them bad in every way the receiver and shards must survive,
//! through 2 shards and a writer into the real ClickHouse. Afterwards every sequence is
//! stored exactly once, in `market_ticks` or `rejected_messages` with the right reason,
//! and the durable watermark covers them all.

mod common;

use std::sync::Arc;
use std::time::Duration;

use alphapt_storage::config::Config;
use alphapt_storage::model::json::write_tick_json;
use alphapt_storage::model::quality::FLAG_OUT_OF_ORDER;
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::native::{Method, Value};
use alphapt_storage::pipeline::{self, Destination};
use alphapt_storage::ring::Kind;
use alphapt_storage::runtime::sizes::shard_of;
use alphapt_storage::runtime::Alert;
use alphapt_storage::shard::parse::encode_kite_full;
use alphapt_storage::shard::parse::kite::KITE_FULL_BYTES;
use common::{options, TestDb};

const MESSAGES: u64 = 20_000;

/// The bad message for sequence `seq`, if it is one of every 50.
fn bad(seq: u64) -> Option<(Kind, Vec<u8>, &'static str)> {
    if seq % 50 != 0 {
        return None;
    }
    Some(match (seq / 50) % 6 {
        0 => (
            Kind::TickJson,
            b"{\"instrument_token\": 1, \"last_pri".to_vec(),
            "malformed_json",
        ),
        1 => (
            Kind::TickJson,
            br#"{"instrument_token":1,"timestamp":1764000000000}"#.to_vec(),
            "missing_field",
        ),
        2 => (
            Kind::TickJson,
            br#"{"instrument_token":"x","last_price":1,"timestamp":1764000000000}"#.to_vec(),
            "wrong_type",
        ),
        3 => (Kind::TickJson, vec![b'7'; 100_000], "payload_too_large"),
        // Not JSON (no leading `{`), so the shard reads it as a Kite frame, a bad one.
        4 => (
            Kind::TickJson,
            vec![0xff, 0xfe, b'{', 0x80],
            "bad_kite_packet",
        ),
        _ => (Kind::Unknown, b"{}".to_vec(), "unknown_subject"),
    })
}

#[test]
fn every_message_lands_exactly_once_in_ticks_or_rejects() {
    let db = TestDb::new("pipeline");
    let mut conn = db.connect(None);
    db.create_market_ticks(&mut conn);
    db.create_from_migration(&mut conn, "003_strategy_signals");
    db.create_from_migration(&mut conn, "004_rejected_messages");

    let mut config = Config::default();
    config.ingest.shards = 2;
    config.ingest.writers = 1;
    config.ingest.block_rows_max = 4096;
    config.ingest.flush_interval_ms = 50;
    config.ingest.ring_slots = 1024;
    config.ingest.payload_bytes_max = 65_536;
    config.spill.dir = db.spill_dir().display().to_string();
    let destination = Destination::resolve(&options(&db.name, Some(Method::Lz4))).unwrap();
    // 18.16 takes no insert_deduplication_token: the start log says so.
    let dedup = destination.dedup.describe();
    assert!(dedup.starts_with("off: ClickHouse 18.16"), "{dedup}");
    let alert = Arc::new(Alert::new(Duration::from_secs(30)));
    let (pipeline, mut router) = pipeline::start(&config, &destination, alert).unwrap();

    let mut feed = SyntheticTicks::new(100, 21);
    let mut payload = Vec::new();
    let mut expected_rejects = std::collections::BTreeMap::<&str, u64>::new();
    let now_ms = alphapt_storage::runtime::clock::now_ms();
    for seq in 1..=MESSAGES {
        // Exchange times rise with the sequence (Kite packets carry whole seconds),
        // so any reordering within an instrument would raise FLAG_OUT_OF_ORDER.
        let tick = feed.next_tick(now_ms - 60_000 + seq as i64 * 1000, now_ms, seq);
        let shard = shard_of(tick.instrument_token, router.shards());
        let subject = format!("market.ticks.NSE.{}", tick.instrument_token);
        let routed = match bad(seq) {
            Some((kind, bytes, reason)) => {
                *expected_rejects.entry(reason).or_default() += 1;
                router.route(
                    shard,
                    kind,
                    seq,
                    now_ms * 1_000_000,
                    subject.as_bytes(),
                    &bytes,
                )
            }
            None => {
                payload.clear();
                if seq % 7 == 0 {
                    // Every 7th good message is a Kite frame of one full packet.
                    let mut packet = [0u8; KITE_FULL_BYTES];
                    encode_kite_full(&tick, &mut packet);
                    payload.extend_from_slice(&1u16.to_be_bytes());
                    payload.extend_from_slice(&(KITE_FULL_BYTES as u16).to_be_bytes());
                    payload.extend_from_slice(&packet);
                } else {
                    write_tick_json(&mut payload, &tick);
                }
                router.route(
                    shard,
                    Kind::TickJson,
                    seq,
                    now_ms * 1_000_000,
                    subject.as_bytes(),
                    &payload,
                )
            }
        };
        assert!(routed);
    }
    router.finish_input();
    assert!(pipeline.join().is_clean(), "every block stored");
    assert_eq!(
        router.watermark(),
        MESSAGES,
        "the watermark covers every message"
    );

    let counts = conn
        .query(
            "SELECT count() AS c, uniqExact(s) AS u, min(s) AS lo, max(s) AS hi FROM \
             (SELECT stream_seq AS s FROM market_ticks UNION ALL SELECT stream_seq AS s FROM rejected_messages)",
        )
        .unwrap();
    assert_eq!(counts.column("c")[0], Value::UInt(MESSAGES));
    assert_eq!(counts.column("u")[0], Value::UInt(MESSAGES));
    assert_eq!(counts.column("lo")[0], Value::UInt(1));
    assert_eq!(counts.column("hi")[0], Value::UInt(MESSAGES));
    let reasons = conn
        .query("SELECT reason, count() AS n FROM rejected_messages GROUP BY reason ORDER BY reason")
        .unwrap();
    let got: std::collections::BTreeMap<String, u64> = reasons
        .column("reason")
        .iter()
        .zip(reasons.column("n"))
        .map(|(r, n)| (r.as_str().unwrap().to_string(), n.as_u64().unwrap()))
        .collect();
    let expected: std::collections::BTreeMap<String, u64> = expected_rejects
        .into_iter()
        .map(|(r, n)| (r.to_string(), n))
        .collect();
    assert_eq!(got, expected);
    let big = conn
        .query("SELECT length(payload) AS kept, payload_size AS size FROM rejected_messages WHERE reason = 'payload_too_large' LIMIT 1")
        .unwrap();
    assert_eq!(big.column("kept")[0], Value::UInt(4096));
    assert_eq!(big.column("size")[0], Value::UInt(100_000));
    // Per-instrument order survives routing through two shards.
    let out_of_order = conn
        .query(&format!(
            "SELECT count() FROM market_ticks WHERE bitAnd(validation_flags, {FLAG_OUT_OF_ORDER}) != 0"
        ))
        .unwrap();
    assert_eq!(out_of_order.scalar(), Some(Value::UInt(0)));
}
