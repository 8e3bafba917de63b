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
//! Each pass also charges nats-server's CPU (utime + stime from `/proc`, read before
//! the pass and after its last ack) to the messages it drained: DESIGN §7 asks that
//! the appliance cost the server at most 1.1x a bare consumer per message. Both
//! consumers use one ack policy (AckAll unless `ACK_POLICY=none`: the bare one acks
//! per pull, the receiver at its watermark), so the comparison is the consumer
//! pattern alone, with nothing else on the cores. The figure includes the server's
//! idle background, the same for both.
//!
//! Run: `cargo run --release --example receiver_budget -- [N]` (after `make services`).
//! `ACK_POLICY=none` runs both consumers AckNone (the appliance's default): the bare
//! one then never acks, and neither does the receiver.
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

#[path = "proc_cpu.rs"]
mod proc_cpu;
use proc_cpu::{clock_ticks_per_s, nats_server_pid, process_cpu_s};

const STREAM: &str = "PERF_RX";
const SUBJECTS: &str = "perfrx.ticks.>";

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// What one pass measured.
#[derive(Clone, Copy)]
struct Pass {
    /// Messages per second.
    rate: f64,
    /// nats-server CPU seconds per million messages drained.
    server_cpu_per_m: f64,
}

/// nats-server's pid and /proc's clock ticks per second.
type Server = (u32, f64);

/// Runs `drain` (which returns messages per second over `n` messages) and charges
/// nats-server's CPU meanwhile to those messages.
fn charged(server: Server, n: u64, drain: impl FnOnce() -> f64) -> Pass {
    let before = process_cpu_s(server.0, server.1);
    let rate = drain();
    let cpu = process_cpu_s(server.0, server.1) - before;
    Pass {
        rate,
        server_cpu_per_m: cpu * 1e6 / n as f64,
    }
}

/// `ACK_POLICY=none`: both consumers AckNone; `all` or unset: AckAll. Read once.
fn ack_none() -> bool {
    match std::env::var("ACK_POLICY").as_deref() {
        Ok("none") => true,
        Ok("all") | Err(_) => false,
        Ok(other) => panic!("ACK_POLICY is 'all' or 'none', not '{other}'"),
    }
}

/// Drains the stream through a bare pull consumer; returns messages per second.
fn bare_subscriber(n: u64, durable: &str, ack_none: bool) -> f64 {
    let timeout = Duration::from_secs(5);
    let mut conn = NatsConn::connect(&url(), timeout).expect("NATS is up (make services)");
    let mut js = JetStream::new(timeout);
    let spec = ConsumerSpec {
        stream: STREAM,
        durable,
        filter_subject: "",
        ack_wait: Duration::from_secs(60),
        max_ack_pending: 1_000_000,
        ack_none,
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
            if !spec.ack_none && !last_reply.is_empty() {
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
    if !spec.ack_none {
        ack(&mut conn, &last_reply).expect("ack");
    }
    // A round trip, so the server has taken the last ack before its CPU is read.
    conn.round_trip(timeout).expect("flush");
    assert_eq!(received, n, "bare subscriber got every message");
    rate
}

/// The appliance's receiver with discarding shards; returns messages per second.
fn appliance_receiver(n: u64, durable: &str, ring_bytes: usize, ack_none: bool) -> f64 {
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
        ack_none,
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
    // Before publishing: a wrong ACK_POLICY fails at once.
    let ack_none = ack_none();
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
    let server = (nats_server_pid(), clock_ticks_per_s());
    let mut bares = Vec::new();
    let mut ours: [Vec<Pass>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        bares.push(charged(server, n, || {
            bare_subscriber(n, &format!("bare{round}"), ack_none)
        }));
        for (size, passes) in RING_BYTES.iter().zip(ours.iter_mut()) {
            let durable = format!("receiver{round}r{}", size >> 20);
            passes.push(charged(server, n, || {
                appliance_receiver(n, &durable, *size, ack_none)
            }));
        }
    }
    let show = |values: &[f64], digits: usize| {
        values
            .iter()
            .map(|v| format!("{v:.digits$}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    let rates = |passes: &[Pass]| passes.iter().map(|p| p.rate).collect::<Vec<_>>();
    let cpus = |passes: &[Pass]| {
        passes
            .iter()
            .map(|p| p.server_cpu_per_m)
            .collect::<Vec<_>>()
    };
    let (bare, bare_cpu) = (mean(&rates(&bares)), mean(&cpus(&bares)));
    let policy = if ack_none { "none" } else { "all" };
    println!("both consumers ack_policy={policy}");
    println!(
        "bare subscriber {bare:.0} msgs/s ({}) | nats-server {bare_cpu:.2} CPU-s per million ({})",
        show(&rates(&bares), 0),
        show(&cpus(&bares), 2)
    );
    let mut line =
        format!("N={n}\tack={policy}\tbare={bare:.0}\tbare_server_cpu_per_m={bare_cpu:.2}");
    for (size, passes) in RING_BYTES.iter().zip(&ours) {
        let (rate, cpu) = (mean(&rates(passes)), mean(&cpus(passes)));
        let (ratio, cpu_ratio) = (rate / bare, cpu / bare_cpu);
        println!(
            "receiver (shards discarding, {} MiB ring) {rate:.0} msgs/s ({}) | ratio {ratio:.2} (budget >= 0.90) | nats-server {cpu:.2} CPU-s per million ({}), {cpu_ratio:.2}x the bare subscriber's (budget <= 1.1)",
            size >> 20,
            show(&rates(passes), 0),
            show(&cpus(passes), 2)
        );
        line.push_str(&format!(
            "\treceiver_{mib}MiB={rate:.0}\tratio={ratio:.2}\tserver_cpu_per_m_{mib}MiB={cpu:.2}\tserver_cpu_ratio_{mib}MiB={cpu_ratio:.2}",
            mib = size >> 20
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
