//! The NATS client against a real nats-server with JetStream (NATS_URL, default
//! 127.0.0.1:4222): provisioning, feed then pull-consume exactly once with AckAll,
//! redelivery of the unacknowledged window after a reconnect, and ack subjects as the
//! server writes them. Each test owns a stream and subjects with a random suffix and
//! deletes them after.

mod common;

use std::time::{Duration, Instant};

use alphapt_storage::feed::{self, FeedOptions};
use alphapt_storage::receive::nats::jetstream::{ack_sync, ConsumerOutcome, ConsumerSpec};
use alphapt_storage::receive::nats::{
    parse_ack_subject, AckInfo, JetStream, NatsConn, NatsError, ServerOp,
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn connect() -> NatsConn {
    NatsConn::connect(&url(), TIMEOUT).expect("nats-server with JetStream on NATS_URL")
}

/// A stream named `T_<suffix>` on `t<suffix>.ticks.>`, deleted on drop.
struct TestStream {
    name: String,
    prefix: String,
}

impl TestStream {
    fn new(conn: &mut NatsConn) -> TestStream {
        let suffix = common::suffix();
        let stream = TestStream {
            name: format!("T_{suffix}"),
            prefix: format!("t{suffix}.ticks"),
        };
        let (info, created) = JetStream::new(TIMEOUT)
            .ensure_stream(conn, &stream.name, &[&stream.subjects()], 0)
            .unwrap();
        assert!(created);
        assert_eq!(info.messages, 0);
        stream
    }

    fn subjects(&self) -> String {
        format!("{}.>", self.prefix)
    }

    fn feed(&self, conn: &mut NatsConn, count: u64) -> feed::FeedReport {
        let options = FeedOptions {
            count,
            instruments: 50,
            subject_prefix: self.prefix.clone(),
            ..FeedOptions::default()
        };
        let report = feed::run(conn, &options).unwrap();
        assert_eq!(report.published, count);
        assert_eq!(report.acked, count, "{}", report.summary_line());
        assert_eq!(report.errors, 0);
        report
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        if let Ok(mut conn) = NatsConn::connect(&url(), TIMEOUT) {
            let _ = JetStream::new(TIMEOUT).delete_stream(&mut conn, &self.name);
        }
    }
}

/// Pulls until `want` messages came or `deadline` passed; returns each delivery's ack
/// metadata in arrival order and the reply subject of the last one.
fn consume(
    conn: &mut NatsConn,
    stream: &str,
    durable: &str,
    want: usize,
    deadline: Instant,
) -> (Vec<AckInfo>, Vec<u8>) {
    let mut js = JetStream::new(TIMEOUT);
    let inbox = conn.new_inbox("pull");
    let sid = conn.subscribe(&inbox, None).unwrap();
    let batch = 1_000u32;
    let mut got = Vec::with_capacity(want);
    let mut last_reply = Vec::new();
    let mut in_pull = 0u32;
    let mut pull_open = false;
    while got.len() < want && Instant::now() < deadline {
        if !pull_open {
            js.pull(
                conn,
                stream,
                durable,
                batch,
                Duration::from_millis(500),
                &inbox,
            )
            .unwrap();
            conn.flush().unwrap();
            pull_open = true;
            in_pull = 0;
        }
        conn.poll(Duration::from_millis(200), |op| match op {
            ServerOp::Msg(msg) if msg.sid == sid => match msg.status() {
                Some(_) => pull_open = false,
                None => {
                    let reply = msg
                        .reply
                        .expect("JetStream deliveries carry an ack subject");
                    got.push(parse_ack_subject(reply).expect("an ack subject"));
                    last_reply.clear();
                    last_reply.extend_from_slice(reply);
                    in_pull += 1;
                    if in_pull == batch {
                        pull_open = false;
                    }
                }
            },
            other => panic!("unexpected {other:?}"),
        })
        .unwrap();
    }
    conn.unsubscribe(sid).unwrap();
    (got, last_reply)
}

#[test]
fn provisioning_is_idempotent_and_the_ack_window_is_what_we_set() {
    let mut conn = connect();
    let stream = TestStream::new(&mut conn);
    let js = JetStream::new(TIMEOUT);
    let (again, created) = js
        .ensure_stream(&mut conn, &stream.name, &[&stream.subjects()], 0)
        .unwrap();
    assert!(!created);
    assert_eq!(again.subjects, vec![stream.subjects()]);
    let mismatch = js
        .ensure_stream(&mut conn, &stream.name, &["elsewhere.>"], 0)
        .unwrap_err();
    assert!(
        matches!(mismatch, NatsError::StreamMismatch { .. }),
        "{mismatch}"
    );

    let filter = stream.subjects();
    let mut spec = ConsumerSpec {
        stream: &stream.name,
        durable: "store",
        filter_subject: &filter,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 65_536 * 3,
        ack_none: false,
    };
    let (info, outcome) = js.ensure_consumer(&mut conn, &spec).unwrap();
    assert_eq!(outcome, ConsumerOutcome::Created);
    assert_eq!(info.max_ack_pending, 65_536 * 3);
    assert_eq!(info.ack_wait, Duration::from_secs(30));
    assert_eq!(info.ack_policy, "all");
    assert_eq!(
        js.ensure_consumer(&mut conn, &spec).unwrap().1,
        ConsumerOutcome::Unchanged
    );

    spec.max_ack_pending = 50_000;
    spec.ack_wait = Duration::from_secs(45);
    let (_, outcome) = js.ensure_consumer(&mut conn, &spec).unwrap();
    // nats-server 2.9 updates ack_wait and max_ack_pending of a durable in place.
    assert_eq!(outcome, ConsumerOutcome::Updated);
    let info = js
        .consumer_info(&mut conn, &stream.name, "store")
        .unwrap()
        .unwrap();
    assert_eq!(info.max_ack_pending, 50_000);
    assert_eq!(info.ack_wait, Duration::from_secs(45));

    let narrower = format!("{}.NSE.>", stream.prefix);
    spec.filter_subject = &narrower;
    assert_eq!(
        js.ensure_consumer(&mut conn, &spec).unwrap().1,
        ConsumerOutcome::Recreated
    );
    assert!(js
        .delete_consumer(&mut conn, &stream.name, "store")
        .unwrap());
    assert!(js
        .consumer_info(&mut conn, &stream.name, "store")
        .unwrap()
        .is_none());
    assert!(js
        .stream_info(&mut conn, "NO_SUCH_STREAM_X")
        .unwrap()
        .is_none());
}

#[test]
fn feed_then_pull_consume_sees_every_sequence_once_and_ack_all_clears_it() {
    const COUNT: u64 = 20_000;
    let mut conn = connect();
    let stream = TestStream::new(&mut conn);
    let report = stream.feed(&mut conn, COUNT);
    assert_eq!(report.seq_last, COUNT);
    let js = JetStream::new(TIMEOUT);
    let info = js.stream_info(&mut conn, &stream.name).unwrap().unwrap();
    assert_eq!(
        (info.first_seq, info.last_seq, info.messages),
        (1, COUNT, COUNT)
    );

    let filter = stream.subjects();
    let spec = ConsumerSpec {
        stream: &stream.name,
        durable: "store",
        filter_subject: &filter,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 25_000,
        ack_none: false,
    };
    js.ensure_consumer(&mut conn, &spec).unwrap();
    let started = Instant::now();
    let (got, last_reply) = consume(
        &mut conn,
        &stream.name,
        "store",
        COUNT as usize,
        started + Duration::from_secs(15),
    );
    assert_eq!(got.len(), COUNT as usize);
    let mut seen = vec![false; COUNT as usize + 1];
    for (index, ack) in got.iter().enumerate() {
        assert!(
            !seen[ack.stream_seq as usize],
            "stream seq {} twice",
            ack.stream_seq
        );
        seen[ack.stream_seq as usize] = true;
        assert_eq!(ack.consumer_seq, index as u64 + 1);
        assert_eq!(ack.delivered, 1);
        assert_eq!(ack.pending, COUNT - 1 - index as u64);
        assert!(ack.timestamp_ns > 1_700_000_000_000_000_000);
    }
    assert!(seen[1..].iter().all(|&s| s));

    let before = js
        .consumer_info(&mut conn, &stream.name, "store")
        .unwrap()
        .unwrap();
    assert_eq!(before.num_ack_pending, COUNT);
    ack_sync(
        &mut conn,
        std::str::from_utf8(&last_reply).unwrap(),
        TIMEOUT,
    )
    .unwrap();
    let after = js
        .consumer_info(&mut conn, &stream.name, "store")
        .unwrap()
        .unwrap();
    assert_eq!(after.num_pending, 0);
    assert_eq!(after.num_ack_pending, 0);
    assert_eq!(after.ack_floor.stream_seq, COUNT);
    assert_eq!(after.ack_floor.consumer_seq, COUNT);
    assert_eq!(after.delivered.stream_seq, COUNT);
}

#[test]
fn unacknowledged_window_is_redelivered_after_reconnect() {
    let mut conn = connect();
    let stream = TestStream::new(&mut conn);
    stream.feed(&mut conn, 300);
    let filter = stream.subjects();
    let spec = ConsumerSpec {
        stream: &stream.name,
        durable: "store",
        filter_subject: &filter,
        ack_wait: Duration::from_secs(3),
        max_ack_pending: 100,
        ack_none: false,
    };
    let js = JetStream::new(TIMEOUT);
    js.ensure_consumer(&mut conn, &spec).unwrap();
    // max_ack_pending stops delivery at 100 while nothing is acked.
    let (first, _) = consume(
        &mut conn,
        &stream.name,
        "store",
        300,
        Instant::now() + Duration::from_millis(1_500),
    );
    assert_eq!(first.len(), 100);
    assert!(first.iter().all(|a| a.delivered == 1));
    drop(conn);

    let mut conn = connect();
    let (again, last_reply) = consume(
        &mut conn,
        &stream.name,
        "store",
        100,
        Instant::now() + Duration::from_secs(5),
    );
    let mut seqs: Vec<u64> = again.iter().map(|a| a.stream_seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    assert!(again.iter().all(|a| a.delivered >= 2));
    let newest = again.iter().max_by_key(|a| a.consumer_seq).unwrap();
    assert_eq!(parse_ack_subject(&last_reply).unwrap(), *newest);
    // Redelivered and not yet acked: the server still holds the whole window.
    let pending = js
        .consumer_info(&mut conn, &stream.name, "store")
        .unwrap()
        .unwrap();
    assert!(pending.num_redelivered > 0);
    assert_eq!(pending.num_ack_pending, 100);
    ack_sync(
        &mut conn,
        std::str::from_utf8(&last_reply).unwrap(),
        TIMEOUT,
    )
    .unwrap();
    let info = js
        .consumer_info(&mut conn, &stream.name, "store")
        .unwrap()
        .unwrap();
    assert_eq!(info.ack_floor.stream_seq, 100, "{info:?} newest {newest:?}");
    assert_eq!(info.num_ack_pending, 0);
}

#[test]
fn core_publish_and_bad_messages_reach_the_stream() {
    let mut conn = connect();
    let stream = TestStream::new(&mut conn);
    let options = FeedOptions {
        count: 2_000,
        bad_ratio: 0.3,
        core: true,
        subject_prefix: stream.prefix.clone(),
        ..FeedOptions::default()
    };
    let report = feed::run(&mut conn, &options).unwrap();
    let bad: u64 = report.bad.iter().sum();
    assert!(bad > 400 && bad < 800, "{}", report.summary_line());
    assert!(
        report.bad.iter().take(6).all(|&n| n > 0),
        "{}",
        report.summary_line()
    );
    let info = JetStream::new(TIMEOUT)
        .stream_info(&mut conn, &stream.name)
        .unwrap()
        .unwrap();
    assert_eq!(info.messages, 2_000);
}

#[test]
fn dead_or_absent_server_is_an_error_not_a_hang() {
    let started = Instant::now();
    let error = NatsConn::connect("nats://127.0.0.1:1", Duration::from_millis(500)).unwrap_err();
    assert!(error.to_string().contains("nats-server running"), "{error}");
    // A listener that accepts and never speaks: the handshake times out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("nats://{}", listener.local_addr().unwrap());
    let error = NatsConn::connect(&silent, Duration::from_millis(300)).unwrap_err();
    assert!(matches!(error, NatsError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// `poll_held`: an operation the caller holds stays first in line, is offered again at
/// the next call, and that call returns at once (no socket wait) while it holds; every
/// message is taken exactly once, in order.
#[test]
fn a_held_message_is_offered_again_first_and_nothing_is_lost_or_doubled() {
    let mut publisher = connect();
    let mut conn = connect();
    let subject = format!("held{}.x", common::suffix());
    let sid = conn.subscribe(&subject, None).unwrap();
    conn.flush().unwrap();
    // The subscription is registered once a round trip passed.
    conn.round_trip(TIMEOUT).unwrap();
    for i in 0..50u32 {
        publisher
            .publish(subject.as_bytes(), None, i.to_string().as_bytes())
            .unwrap();
    }
    publisher.flush().unwrap();
    let mut taken: Vec<u32> = Vec::new();
    let mut offered_once = std::collections::HashSet::new();
    let mut holds = 0;
    let deadline = Instant::now() + TIMEOUT;
    while taken.len() < 50 {
        assert!(Instant::now() < deadline, "took only {taken:?}");
        let mut held = false;
        let started = Instant::now();
        conn.poll_held(Duration::from_millis(500), |op| match op {
            ServerOp::Msg(msg) if msg.sid == sid => {
                let i: u32 = std::str::from_utf8(msg.payload).unwrap().parse().unwrap();
                // Hold every third message the first time it comes.
                if i % 3 == 0 && offered_once.insert(i) {
                    held = true;
                    return false;
                }
                taken.push(i);
                true
            }
            _ => true,
        })
        .unwrap();
        if held {
            holds += 1;
            assert!(
                started.elapsed() < Duration::from_millis(400),
                "a call that holds returns without waiting on the socket"
            );
        }
    }
    assert_eq!(taken, (0..50).collect::<Vec<_>>());
    assert_eq!(holds, 17, "0, 3, .., 48 each held once");
}
