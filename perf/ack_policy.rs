//! What the consumer's ack policy costs nats-server: `ack_policy: all` (the appliance's
//! durable pull consumer, acking at its durable watermark) against `ack_policy: none`
//! (the alternative where the appliance takes its position from the store, not acks).
//!
//! 1. Publishes N JSON ticks into a fresh stream `PERF_ACK` (the feed's code).
//! 2. Drains the whole stream with a bare pull consumer (our blocking NATS client, pulls
//!    of 1,000, the next pull once the previous batch has arrived), once per variant,
//!    each pass on a fresh durable from the stream start:
//!    - `all/1k`:  AckAll, one ack per pull (receiver_budget's bare subscriber),
//!    - `all/10k`: AckAll, one ack per 10,000 messages (near the appliance's cadence),
//!    - `none`:    AckNone, no acks.
//! 3. Per pass: messages/s (first pull to last message), nats-server CPU seconds
//!    (utime + stime of the nats-server process from `/proc/<pid>/stat`, read before the
//!    first pull and after the server has applied the last ack), and this process's own
//!    CPU (getrusage), both per million messages.
//!
//! The variants alternate, the order rotating each round, after one unrecorded warm-up
//! drain (the first pass over a freshly written stream reads colder); medians and the
//! min–max range over the passes are reported.
//!
//! Run: `cargo run --release --example ack_policy -- [N] [ROUNDS]` (defaults 500,000 and
//! 5; NATS up: `bash .ci/services.sh all`, `NATS_URL` or nats://127.0.0.1:4222;
//! `NATS_SERVER_PID` picks the server when several run). `PACE=<msgs/s>` holds every
//! pass to at most that rate (each pull waits until the pass is due for it): the
//! server's cost per message at the pace the appliance drains at when ClickHouse and
//! Redis share the cores, against the same consumer flat out.
//!
//! Reading it: `server CPU-s/M` is the server's CPU per million messages drained. It
//! includes the server's idle background (printed first, as CPU-s per second; multiply
//! by a pass's seconds to see what it adds) and anything else using the same server at
//! the time, so it is trustworthy when the ranges are narrow. `ratio` compares each
//! variant's medians with `all/1k`'s. The clock-tick resolution of /proc is 10 ms,
//! under 1% of a 500,000-message pass. One line per variant is appended to
//! perf/records/ack_policy.tsv.

use std::io::Write;
use std::time::{Duration, Instant};

use alphapt_storage::feed::{self, FeedOptions};
use alphapt_storage::receive::nats::jetstream::ack;
use alphapt_storage::receive::nats::{ConsumerSpec, JetStream, NatsConn, ServerOp};

#[path = "proc_cpu.rs"]
mod proc_cpu;
use proc_cpu::{clock_ticks_per_s, nats_server_pid, process_cpu_s};

const STREAM: &str = "PERF_ACK";
const SUBJECTS: &str = "perfack.ticks.>";
/// Messages asked for per pull.
const PULL_BATCH: u32 = 1000;
/// Passes of each variant (arg 2 overrides).
const ROUNDS: usize = 5;
/// Longest a drain may take.
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);

/// One way of consuming.
#[derive(Clone, Copy, Debug)]
struct Variant {
    /// Short name for the table and the record.
    name: &'static str,
    /// `Some(k)`: AckAll every k messages (and at the end); `None`: AckNone.
    ack_every: Option<u64>,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "all/1k",
        ack_every: Some(PULL_BATCH as u64),
    },
    Variant {
        name: "all/10k",
        ack_every: Some(10_000),
    },
    Variant {
        name: "none",
        ack_every: None,
    },
];

/// What one drain cost.
#[derive(Clone, Copy, Debug)]
struct Pass {
    /// Messages per second, first pull to last message.
    rate: f64,
    /// nats-server CPU seconds per million messages.
    server_cpu_per_m: f64,
    /// This process's CPU seconds per million messages.
    client_cpu_per_m: f64,
    /// Acks sent.
    acks: u64,
}

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// This process's user + system CPU seconds.
fn self_cpu_s() -> f64 {
    // SAFETY: getrusage only writes the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Creates the durable for `variant`: AckAll through the library (the appliance's own
/// consumer config), AckNone as a raw `CONSUMER.DURABLE.CREATE` (the library only makes
/// AckAll consumers). AckNone takes no `ack_wait` or `max_ack_pending` (the server
/// refuses a max_ack_pending without an ack policy).
fn create_consumer(js: &JetStream, control: &mut NatsConn, variant: Variant, durable: &str) {
    let _ = js.delete_consumer(control, STREAM, durable);
    if variant.ack_every.is_some() {
        let spec = ConsumerSpec {
            stream: STREAM,
            durable,
            filter_subject: "",
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 1_000_000,
            ack_none: false,
        };
        js.ensure_consumer(control, &spec).expect("AckAll consumer");
    } else {
        let body = serde_json::json!({
            "stream_name": STREAM,
            "config": {
                "durable_name": durable,
                "deliver_policy": "all",
                "ack_policy": "none",
                "max_deliver": -1,
                "replay_policy": "instant",
            },
        });
        let subject = format!("$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{durable}");
        let reply = control
            .request(
                &subject,
                body.to_string().as_bytes(),
                Duration::from_secs(5),
            )
            .expect("AckNone consumer create");
        let answer: serde_json::Value =
            serde_json::from_slice(&reply.payload).expect("consumer create answer is JSON");
        assert!(
            answer.get("error").is_none(),
            "AckNone consumer create refused: {answer}"
        );
    }
    let info = js
        .consumer_info(control, STREAM, durable)
        .expect("consumer info")
        .expect("consumer exists");
    let wanted = if variant.ack_every.is_some() {
        "all"
    } else {
        "none"
    };
    assert_eq!(info.ack_policy, wanted, "consumer {durable}'s ack policy");
}

/// `PACE`: the most messages a second a pass may drain; unset, flat out. Read once.
fn pace() -> Option<f64> {
    let text = std::env::var("PACE").ok()?;
    match text.parse::<f64>() {
        Ok(pace) if pace > 0.0 => Some(pace),
        _ => panic!("PACE is a positive number of messages a second, not '{text}'"),
    }
}

/// Drains the stream's `n` messages on `durable` as `variant` says, measuring the pass.
fn drain(
    js_control: &JetStream,
    control: &mut NatsConn,
    n: u64,
    variant: Variant,
    durable: &str,
    server: (u32, f64),
    pace: Option<f64>,
) -> Pass {
    let (server_pid, ticks_per_s) = server;
    create_consumer(js_control, control, variant, durable);
    let timeout = Duration::from_secs(5);
    let mut conn = NatsConn::connect(&url(), timeout).expect("NATS is up");
    let mut js = JetStream::new(timeout);
    let inbox = conn.new_inbox("ackperf");
    let sid = conn.subscribe(&inbox, None).expect("subscribe");
    conn.round_trip(timeout).expect("subscribed");

    let server_before = process_cpu_s(server_pid, ticks_per_s);
    let client_before = self_cpu_s();
    let started = Instant::now();
    let (mut received, mut outstanding, mut acks, mut since_ack) = (0u64, 0u64, 0u64, 0u64);
    let mut without_reply = 0u64;
    let mut last_reply = Vec::with_capacity(256);
    // Bounded by n and by the deadline.
    while received < n && started.elapsed() < DRAIN_DEADLINE {
        if outstanding == 0 {
            if let Some(pace) = pace {
                let due = Duration::from_secs_f64(received as f64 / pace);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            if let Some(every) = variant.ack_every {
                if since_ack >= every && !last_reply.is_empty() {
                    ack(&mut conn, &last_reply).expect("ack");
                    acks += 1;
                    since_ack = 0;
                }
            }
            js.pull(
                &mut conn,
                STREAM,
                durable,
                PULL_BATCH,
                Duration::from_millis(500),
                &inbox,
            )
            .expect("pull");
            outstanding = u64::from(PULL_BATCH);
        }
        conn.poll(Duration::from_millis(2), |op| {
            let ServerOp::Msg(msg) = op else { return };
            if msg.sid != sid {
                return;
            }
            if msg.status().is_some() {
                // 100 is a heartbeat; 404/408 end the pull.
                if msg.status() != Some(100) {
                    outstanding = 0;
                }
                return;
            }
            received += 1;
            since_ack += 1;
            outstanding = outstanding.saturating_sub(1);
            match msg.reply {
                Some(reply) => {
                    last_reply.clear();
                    last_reply.extend_from_slice(reply);
                }
                None => without_reply += 1,
            }
        })
        .expect("poll");
    }
    let elapsed = started.elapsed();
    assert_eq!(
        received, n,
        "{} on {durable} got every message",
        variant.name
    );
    if variant.ack_every.is_some() && since_ack > 0 {
        ack(&mut conn, &last_reply).expect("ack");
        acks += 1;
    }
    conn.flush().expect("flush");
    let client_cpu = self_cpu_s() - client_before;
    // The server's share ends once it has applied the last ack: poll the ack floor.
    let settle = Instant::now();
    loop {
        let info = js_control
            .consumer_info(control, STREAM, durable)
            .expect("consumer info")
            .expect("consumer exists");
        let done = variant.ack_every.is_none() || info.num_ack_pending == 0;
        if done || settle.elapsed() > Duration::from_secs(5) {
            assert!(done, "{durable}: acks not applied: {info:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let server_cpu = process_cpu_s(server_pid, ticks_per_s) - server_before;
    if without_reply > 0 {
        eprintln!(
            "{durable}: {without_reply} deliveries had no reply subject ({})",
            variant.name
        );
    }
    drop(conn);
    js_control
        .delete_consumer(control, STREAM, durable)
        .expect("delete consumer");
    let per_m = 1e6 / n as f64;
    Pass {
        rate: n as f64 / elapsed.as_secs_f64(),
        server_cpu_per_m: server_cpu * per_m,
        client_cpu_per_m: client_cpu * per_m,
        acks,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// Medians and ranges of one variant's passes.
struct Summary {
    rate: f64,
    rate_range: (f64, f64),
    server: f64,
    server_range: (f64, f64),
    client: f64,
    client_range: (f64, f64),
    acks: u64,
}

fn summarise(passes: &[Pass]) -> Summary {
    let pick = |f: fn(&Pass) -> f64| passes.iter().map(f).collect::<Vec<_>>();
    let (rates, servers, clients) = (
        pick(|p| p.rate),
        pick(|p| p.server_cpu_per_m),
        pick(|p| p.client_cpu_per_m),
    );
    Summary {
        rate: median(&rates),
        rate_range: range(&rates),
        server: median(&servers),
        server_range: range(&servers),
        client: median(&clients),
        client_range: range(&clients),
        acks: passes.first().map_or(0, |p| p.acks),
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let rounds: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(ROUNDS)
        .max(1);
    // Before publishing: a wrong PACE fails at once.
    let pace = pace();
    let server = (nats_server_pid(), clock_ticks_per_s());
    let timeout = Duration::from_secs(5);
    let mut control = NatsConn::connect(&url(), timeout).expect("NATS is up (services.sh)");
    let js = JetStream::new(timeout);
    let _ = js.delete_stream(&mut control, STREAM);
    js.ensure_stream(&mut control, STREAM, &[SUBJECTS], 0)
        .expect("stream");
    let options = FeedOptions {
        count: n,
        instruments: 500,
        subject_prefix: "perfack.ticks".into(),
        ..FeedOptions::default()
    };
    let published = feed::run(&mut control, &options).expect("feed");
    println!("{}", published.summary_line());
    if let Some(pace) = pace {
        println!("every pass held to {pace:.0} msgs/s (PACE)");
    }

    // The server's background: CPU while nobody here uses it.
    let idle_before = process_cpu_s(server.0, server.1);
    std::thread::sleep(Duration::from_secs(2));
    let idle = (process_cpu_s(server.0, server.1) - idle_before) / 2.0;
    println!(
        "nats-server pid {} idle: {idle:.3} CPU-s per second",
        server.0
    );

    let warm = drain(&js, &mut control, n, VARIANTS[2], "ackwarm", server, pace);
    println!(
        "warm-up (unrecorded, {}): {:.0} msgs/s",
        VARIANTS[2].name, warm.rate
    );
    let mut passes: Vec<Vec<Pass>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let index = (round + k) % VARIANTS.len();
            let variant = VARIANTS[index];
            let durable = format!("ack_{}_{round}", variant.name.replace('/', "_"));
            let pass = drain(&js, &mut control, n, variant, &durable, server, pace);
            println!(
                "round {round} {:<8} {:>9.0} msgs/s  server {:>6.3} CPU-s/M  client {:>6.3} CPU-s/M  acks {}",
                variant.name, pass.rate, pass.server_cpu_per_m, pass.client_cpu_per_m, pass.acks
            );
            passes[index].push(pass);
        }
    }
    let _ = js.delete_stream(&mut control, STREAM);

    let summaries: Vec<Summary> = passes.iter().map(|p| summarise(p)).collect();
    let base = &summaries[0];
    println!();
    println!("N={n}, {rounds} passes each; medians (min–max)");
    println!(
        "{:<8} {:>7} {:>22} {:>6} {:>24} {:>6} {:>22}",
        "variant", "acks", "msgs/s", "ratio", "server CPU-s/M", "ratio", "client CPU-s/M"
    );
    let date = command_output("date", &["-u", "+%FT%TZ"]);
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/perf/records/ack_policy.tsv");
    let new_file = !std::path::Path::new(path).exists();
    let mut record = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok();
    if new_file {
        if let Some(file) = record.as_mut() {
            let _ = writeln!(
                file,
                "date\tcommit\tticks\tvariant\tpasses\tmsgs_per_s_median\tmsgs_per_s_range\tserver_cpu_s_per_M_median\tserver_cpu_s_per_M_range\tclient_cpu_s_per_M_median\tclient_cpu_s_per_M_range\tserver_idle_cpu_s_per_s"
            );
        }
    }
    for (variant, s) in VARIANTS.iter().zip(&summaries) {
        println!(
            "{:<8} {:>7} {:>8.0} ({:>6.0}–{:>6.0}) {:>6.2} {:>7.3} ({:>6.3}–{:>6.3}) {:>6.2} {:>6.3} ({:>5.3}–{:>5.3})",
            variant.name,
            s.acks,
            s.rate,
            s.rate_range.0,
            s.rate_range.1,
            s.rate / base.rate,
            s.server,
            s.server_range.0,
            s.server_range.1,
            s.server / base.server,
            s.client,
            s.client_range.0,
            s.client_range.1,
        );
        if let Some(file) = record.as_mut() {
            // A paced pass is recorded under its variant and pace: `none@250000/s`.
            let label = match pace {
                Some(pace) => format!("{}@{pace:.0}/s", variant.name),
                None => variant.name.to_string(),
            };
            let _ = writeln!(
                file,
                "{date}\t{commit}\tN={n}\t{label}\t{rounds}\t{:.0}\t{:.0}-{:.0}\t{:.3}\t{:.3}-{:.3}\t{:.3}\t{:.3}-{:.3}\t{idle:.4}",
                s.rate,
                s.rate_range.0,
                s.rate_range.1,
                s.server,
                s.server_range.0,
                s.server_range.1,
                s.client,
                s.client_range.0,
                s.client_range.1,
            );
        }
    }
}
