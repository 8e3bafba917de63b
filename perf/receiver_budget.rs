//! The receiver budget (DESIGN §7, issue 4): with the shards only discarding, the
//! receiver must take messages at ≥ 90% of the rate a bare subscriber reaches against
//! the same local nats-server, in the same run.
//!
//! 1. Publishes N JSON ticks into a fresh stream `PERF_RX` (the feed's code).
//! 2. Bare subscriber: a durable pull consumer drained with our NATS client alone
//!    (pull 1,000 at a time, count, AckAll once per pull).
//! 3. Receiver: the appliance's receiver loop (routing by subject into frame rings,
//!    acks at the watermark) with discarding shards, on a durable of its own.
//!
//! 2 and 3 alternate, three passes each, and the means are compared.
//!
//! Run: `cargo run --release --example receiver_budget -- [N]` (after `make services`).
//! Prints both rates and the ratio, and appends a line to perf/records/receiver.tsv.

use std::io::Write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alphapt_storage::feed::{self, FeedOptions};
use alphapt_storage::pipeline;
use alphapt_storage::receive::nats::jetstream::ack;
use alphapt_storage::receive::nats::{
    parse_ack_subject, ConsumerSpec, JetStream, NatsConn, ServerOp,
};
use alphapt_storage::receive::receiver::{self, ReceiverConfig};
use alphapt_storage::runtime::Alert;

const STREAM: &str = "PERF_RX";
const SUBJECTS: &str = "perfrx.ticks.>";

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Drains the stream through a bare pull consumer; returns messages per second.
fn bare_subscriber(n: u64, durable: &str) -> f64 {
    let timeout = Duration::from_secs(5);
    let mut conn = NatsConn::connect(&url(), timeout).expect("NATS is up (make services)");
    let mut js = JetStream::new(timeout);
    let spec = ConsumerSpec {
        stream: STREAM,
        durable,
        filter_subject: "",
        ack_wait: Duration::from_secs(60),
        max_ack_pending: 1_000_000,
        ack_none: false,
    };
    js.ensure_consumer(&mut conn, &spec).expect("consumer");
    let inbox = conn.new_inbox("bare");
    let sid = conn.subscribe(&inbox, None).expect("subscribe");
    let started = Instant::now();
    let (mut received, mut outstanding) = (0u64, 0u64);
    let mut last_reply = Vec::with_capacity(256);
    // Bounded by n and by a 120 s deadline.
    while received < n && started.elapsed() < Duration::from_secs(120) {
        if outstanding == 0 {
            // AckAll once per pull (DESIGN §7's reference: AckAll per 1000), so the
            // server's pending set stays small, as it would for any real consumer.
            if !last_reply.is_empty() {
                ack(&mut conn, &last_reply).expect("ack");
            }
            js.pull(
                &mut conn,
                STREAM,
                durable,
                1000,
                Duration::from_millis(500),
                &inbox,
            )
            .expect("pull");
            outstanding = 1000;
        }
        conn.poll(Duration::from_millis(2), |op| {
            let ServerOp::Msg(msg) = op else { return };
            if msg.sid != sid {
                return;
            }
            if msg.status().is_some_and(|s| s != 100) {
                outstanding = 0;
                return;
            }
            if let Some(reply) = msg.reply {
                if parse_ack_subject(reply).is_some() {
                    received += 1;
                    outstanding = outstanding.saturating_sub(1);
                    last_reply.clear();
                    last_reply.extend_from_slice(reply);
                }
            }
        })
        .expect("poll");
    }
    let rate = received as f64 / started.elapsed().as_secs_f64();
    ack(&mut conn, &last_reply).expect("ack");
    conn.flush().expect("flush");
    assert_eq!(received, n, "bare subscriber got every message");
    rate
}

/// The appliance's receiver with discarding shards; returns messages per second.
fn appliance_receiver(n: u64, durable: &str, ring_bytes: usize) -> f64 {
    let alert = Arc::new(Alert::new(Duration::from_secs(10)));
    let (mut router, drains) = pipeline::discarding(1, ring_bytes, alert.clone());
    let config = ReceiverConfig {
        url: url(),
        jetstream: true,
        kind: alphapt_storage::ring::Kind::TickJson,
        stream: STREAM.into(),
        subject: SUBJECTS.into(),
        filter_subject: String::new(),
        partition: None,
        durable: durable.into(),
        fetch_batch_max: 1000,
        ack_wait: Duration::from_secs(60),
        max_ack_pending: 1_000_000,
        ack_none: false,
        connect_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(10),
        stream_max_bytes: 0,
        tls: None,
        count: None,
        store: None,
    };
    let started = Instant::now();
    let watcher = {
        let alert = alert.clone();
        let stats = router.stats();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while stats
                .messages_total
                .load(std::sync::atomic::Ordering::Relaxed)
                < n
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            let elapsed = started.elapsed();
            alert.request_stop();
            elapsed
        })
    };
    let report = receiver::run(&mut router, &config).expect("receiver");
    let elapsed = watcher.join().unwrap();
    let discarded: u64 = drains.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(report.routed, n, "receiver routed every message");
    assert_eq!(discarded, n);
    n as f64 / elapsed.as_secs_f64()
}

/// The discarding shard's ring: the default (`ingest.ring_slots` 65,536 x 1 KiB) and a
/// small one. The receiver writes every message into the ring, and a 64 MiB ring cycles
/// through more memory than the caches hold, so each write misses; 4 MiB stays cached.
const RING_BYTES: [usize; 2] = [64 << 20, 4 << 20];

/// Passes of each, alternated.
const ROUNDS: usize = 3;

fn mean(rates: &[f64]) -> f64 {
    rates.iter().sum::<f64>() / rates.len().max(1) as f64
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let timeout = Duration::from_secs(5);
    let mut conn = NatsConn::connect(&url(), timeout).expect("NATS is up (make services)");
    let js = JetStream::new(timeout);
    let _ = js.delete_stream(&mut conn, STREAM);
    js.ensure_stream(&mut conn, STREAM, &[SUBJECTS], 0)
        .expect("stream");
    let options = FeedOptions {
        count: n,
        instruments: 500,
        subject_prefix: "perfrx.ticks".into(),
        ..FeedOptions::default()
    };
    let published = feed::run(&mut conn, &options).expect("feed");
    println!("{}", published.summary_line());
    // Alternate bare and receiver passes, each on a fresh durable from the stream start,
    // so none gets all the warm server caches: the first pass over a stream reads colder.
    let mut bares = Vec::new();
    let mut ours: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        bares.push(bare_subscriber(n, &format!("bare{round}")));
        for (size, rates) in RING_BYTES.iter().zip(ours.iter_mut()) {
            rates.push(appliance_receiver(
                n,
                &format!("receiver{round}r{}", size >> 20),
                *size,
            ));
        }
    }
    let show = |rates: &[f64]| {
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    let bare = mean(&bares);
    println!("bare subscriber {bare:.0} msgs/s ({})", show(&bares));
    let mut line = format!("N={n}\tbare={bare:.0}");
    for (size, rates) in RING_BYTES.iter().zip(&ours) {
        let rate = mean(rates);
        let ratio = rate / bare;
        println!(
            "receiver (shards discarding, {} MiB ring) {rate:.0} msgs/s ({}) | ratio {ratio:.2} (budget >= 0.90)",
            size >> 20,
            show(rates)
        );
        line.push_str(&format!(
            "\treceiver_{}MiB={rate:.0}\tratio={ratio:.2}",
            size >> 20
        ));
    }
    let _ = js.delete_stream(&mut conn, STREAM);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/perf/records/receiver.tsv");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let date = std::process::Command::new("date")
            .args(["-u", "+%FT%TZ"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let _ = writeln!(file, "{date}\t{line}");
    }
}
