//! Zero heap allocations per message on the NATS path after warm-up: a counting global
//! allocator watches feed encoding, `publish`, and `poll` handing received messages to
//! a callback (parse included), through a real nats-server (NATS_URL). One test in its
//! own binary, so no other test's allocations are counted.

use std::time::{Duration, Instant};

use alphapt_storage::model::json::write_tick_json;
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::receive::nats::{parse_ack_subject, NatsConn, ServerOp};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

/// Publishes `count` ticks to `subject` and polls until all came back; returns the
/// payload bytes received.
fn round(
    conn: &mut NatsConn,
    feed: &mut SyntheticTicks,
    subject: &[u8],
    payload: &mut Vec<u8>,
    count: usize,
) -> usize {
    let mut received = 0;
    let mut bytes = 0;
    for index in 0..count {
        payload.clear();
        write_tick_json(
            payload,
            &feed.next_tick(1_764_000_000_000 + index as i64, 0, 0),
        );
        conn.publish(subject, None, payload).unwrap();
    }
    conn.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while received < count && Instant::now() < deadline {
        conn.poll(Duration::from_millis(100), |op| {
            if let ServerOp::Msg(msg) = op {
                received += 1;
                bytes += msg.payload.len();
                // The receiver's per-message work on a reply subject, allocation-free too.
                assert!(parse_ack_subject(msg.subject).is_none());
            }
        })
        .unwrap();
    }
    assert_eq!(received, count);
    bytes
}

#[test]
fn publish_and_poll_allocate_nothing_after_warm_up() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut conn =
        NatsConn::connect(&url, Duration::from_secs(5)).expect("nats-server on NATS_URL");
    let subject = format!("allocfree.{}.ticks", std::process::id());
    conn.subscribe(&subject, None).unwrap();
    conn.round_trip(Duration::from_secs(5)).unwrap();
    let mut feed = SyntheticTicks::new(100, 5);
    let mut payload = Vec::with_capacity(4096);
    // Warm-up: grows nothing we know of, but lets lazy statics settle.
    round(
        &mut conn,
        &mut feed,
        subject.as_bytes(),
        &mut payload,
        1_000,
    );

    let before = counting_alloc::allocations();
    let bytes = round(
        &mut conn,
        &mut feed,
        subject.as_bytes(),
        &mut payload,
        20_000,
    );
    let after = counting_alloc::allocations();
    assert!(bytes > 20_000 * 400);
    assert_eq!(
        after - before,
        0,
        "allocations during 20,000 messages out and back"
    );
}
