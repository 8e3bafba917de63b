//! Reference data from the real PostgreSQL into the shards. Each test creates its own
//! database `alphapt_refdata_test_<pid>_<suffix>`, runs the PostgreSQL migrations into
//! it, and drops it afterwards; the pipeline test also gets its own ClickHouse
//! database. Covered: a loaded tick size and circuit flag the right ticks and leave
//! on-grid ones clean; an UPDATE and a DELETE delivered by NOTIFY change the outcome
//! for later ticks; a row that is not an exact price is skipped and counted; a dropped
//! connection reconnects and reloads; PostgreSQL unreachable is reported, never waited
//! for, and the run still stores every tick.

mod common;

use common::pg::PgDb;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alphapt_storage::config::Config;
use alphapt_storage::model::json::write_tick_json;
use alphapt_storage::model::quality::{FLAG_OFF_TICK_SIZE, FLAG_OUTSIDE_CIRCUIT};
use alphapt_storage::model::reference::{Reference, ReferenceUpdate};
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::Price;
use alphapt_storage::native::{Method, Value};
use alphapt_storage::pipeline::{self, Destination, PipelineStats};
use alphapt_storage::refdata::{
    reference_queue, Refdata, RefdataConfig, RefdataStats, ReferenceFeed, APPLICATION_NAME,
};
use alphapt_storage::ring::Kind;
use alphapt_storage::runtime::sizes::shard_of;
use alphapt_storage::runtime::Alert;
use common::{options, TestDb};

/// Longest wait for anything the refdata thread should do promptly.
const PATIENCE: Duration = Duration::from_secs(20);

/// Refdata settings for tests: fast backoff, so reconnects happen within the test.
fn refdata_config(url: String) -> RefdataConfig {
    RefdataConfig {
        url,
        connect_timeout: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        poll: Duration::from_millis(100),
        tls: Default::default(),
    }
}

/// Polls `done` until it holds or [`PATIENCE`] runs out, then asserts it.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn total(
    stats: &PipelineStats,
    field: fn(&alphapt_storage::shard::run::ShardStats) -> &AtomicU64,
) -> u64 {
    stats
        .shards
        .iter()
        .map(|s| field(s).load(Ordering::Relaxed))
        .sum()
}

/// Stops the thread and checks it noticed within a second.
fn stop_and_join(stop: &AtomicBool, handle: std::thread::JoinHandle<()>) {
    let asked = Instant::now();
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "the refdata thread took {:?} to stop",
        asked.elapsed()
    );
}

/// Routes one JSON tick of `token` at `price` (in 10^-8) with sequence `seq`.
struct Ticks {
    feed: SyntheticTicks,
    payload: Vec<u8>,
    now_ms: i64,
    seq: u64,
}

impl Ticks {
    fn route(&mut self, router: &mut pipeline::Router, token: u32, price: i64) -> u64 {
        self.seq += 1;
        let mut tick = self.feed.next_tick(self.now_ms, self.now_ms, self.seq);
        tick.instrument_token = token;
        tick.last_price = Price(price);
        self.payload.clear();
        write_tick_json(&mut self.payload, &tick);
        let subject = format!("market.ticks.NSE.{token}");
        let shard = shard_of(token, router.shards());
        let received_ns = self.now_ms * 1_000_000;
        assert!(router.route(
            shard,
            Kind::TickJson,
            self.seq,
            received_ns,
            subject.as_bytes(),
            &self.payload
        ));
        self.seq
    }
}

/// Rupees with two decimals as a fixed-point raw price.
const fn rupees(hundredths: i64) -> i64 {
    hundredths * 1_000_000
}

#[test]
fn reference_data_flags_ticks_and_follows_changes() {
    let pg = PgDb::new();
    // A: tick 0.05, circuit 95..104. B: tick 0.10, no circuit. C: an upper circuit
    // beyond the fixed-point range, so skipped: its ticks are never reference-checked.
    pg.execute(
        "INSERT INTO instruments (instrument_token, tradingsymbol, exchange, tick_size, lower_circuit_limit, upper_circuit_limit) VALUES
           (408065, 'INFY', 'NSE', 0.05, 95, 104),
           (738561, 'RELIANCE', 'NSE', 0.10, NULL, NULL),
           (81153, 'BAJFINANCE', 'NSE', 0.05, 1, 100000000000)",
    );
    let (a, b, c) = (408_065, 738_561, 81_153);
    let ch = TestDb::new("refdata");
    let mut conn = ch.connect(None);
    ch.create_market_ticks(&mut conn);
    ch.create_from_migration(&mut conn, "003_strategy_signals");
    ch.create_from_migration(&mut conn, "004_rejected_messages");

    let mut config = Config::default();
    config.ingest.shards = 2;
    config.ingest.block_rows_max = 1024;
    config.ingest.flush_interval_ms = 50;
    config.ingest.ring_slots = 1024;
    config.ingest.payload_bytes_max = 65_536;
    config.spill.dir = ch.spill_dir().display().to_string();
    let destination = Destination::resolve(&options(&ch.name, Some(Method::Lz4))).unwrap();
    let (mut pipeline, mut router) = pipeline::start(
        &config,
        &destination,
        Arc::new(Alert::new(Duration::from_secs(30))),
    )
    .unwrap();
    let shards = pipeline.stats.clone();
    let stats = Arc::new(RefdataStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let feed = pipeline
        .take_reference_feed()
        .expect("the feed is there once");
    assert!(pipeline.take_reference_feed().is_none());
    let refdata = Refdata::new(refdata_config(pg.url()), feed, stats.clone(), stop.clone())
        .spawn(None)
        .unwrap();
    wait_for("A and B to reach their shards", || {
        total(&shards, |s| &s.references_applied_total) == 2
    });
    assert_eq!(stats.loads_total.load(Ordering::Relaxed), 1);
    assert_eq!(stats.instruments.load(Ordering::Relaxed), 2);
    assert_eq!(stats.rows_skipped_total.load(Ordering::Relaxed), 1);
    assert!(stats.connected.load(Ordering::Relaxed));

    let mut ticks = Ticks {
        feed: SyntheticTicks::new(1, 5),
        payload: Vec::new(),
        now_ms: alphapt_storage::runtime::clock::now_ms(),
        seq: 0,
    };
    let mut expected = Vec::new();
    for (token, price, flags) in [
        (a, rupees(10_005), 0),
        (a, rupees(10_003), FLAG_OFF_TICK_SIZE),
        (a, rupees(10_450), FLAG_OUTSIDE_CIRCUIT),
        (a, rupees(10_000), 0),
        (b, rupees(5_005), FLAG_OFF_TICK_SIZE),
        (b, rupees(5_010), 0),
        (c, rupees(1_003), 0),
    ] {
        expected.push((ticks.route(&mut router, token, price), flags));
    }
    // The shards must have validated these before the changes reach them.
    let routed = ticks.seq;
    wait_for("the first ticks to be validated", || {
        total(&shards, |s| &s.ticks_total) == routed
    });

    // A's tick size becomes 0.01 and B is deleted; both arrive by NOTIFY.
    pg.execute("UPDATE instruments SET tick_size = 0.01 WHERE instrument_token = 408065");
    pg.execute("DELETE FROM instruments WHERE instrument_token = 738561");
    wait_for("the update and the delete to reach the shards", || {
        total(&shards, |s| &s.references_applied_total) == 4
    });
    assert_eq!(stats.changes_total.load(Ordering::Relaxed), 2);
    assert_eq!(stats.instruments.load(Ordering::Relaxed), 1);
    for (token, price, flags) in [
        (a, rupees(10_003), 0),
        (a, rupees(10_450), FLAG_OUTSIDE_CIRCUIT),
        (b, rupees(5_005), 0),
    ] {
        expected.push((ticks.route(&mut router, token, price), flags));
    }

    router.finish_input();
    assert!(pipeline.join().is_clean(), "every block stored");
    stop_and_join(&stop, refdata);
    assert_eq!(total(&shards, |s| &s.references_refused_total), 0);

    let result = conn
        .query("SELECT stream_seq, validation_flags FROM market_ticks ORDER BY stream_seq")
        .unwrap();
    let got: Vec<(u64, u32)> = result
        .column("stream_seq")
        .iter()
        .zip(result.column("validation_flags"))
        .map(|(seq, flags)| (seq.as_u64().unwrap(), flags.as_u64().unwrap() as u32))
        .collect();
    assert_eq!(got, expected);
}

/// Applies every queued update to a map, as a validator would.
fn drain(consumer: &mut rtrb::Consumer<ReferenceUpdate>, seen: &mut HashMap<u32, Reference>) {
    while let Ok(update) = consumer.pop() {
        if update.reference == Reference::default() {
            seen.remove(&update.token);
        } else {
            seen.insert(update.token, update.reference);
        }
    }
}

#[test]
fn a_dropped_connection_reconnects_and_reloads() {
    // The server ends the thread's session; it counts the error, reconnects, loads the
    // table again, and a row deleted around the outage ends up cleared.
    let pg = PgDb::new();
    pg.execute(
        "INSERT INTO instruments (instrument_token, tradingsymbol, exchange, tick_size) VALUES
           (1, 'ONE', 'NSE', 0.05), (2, 'TWO', 'NSE', 0.0025)",
    );
    let (producer, mut consumer) = reference_queue();
    let stats = Arc::new(RefdataStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let refdata = Refdata::new(
        refdata_config(pg.url()),
        ReferenceFeed::new(vec![producer]),
        stats.clone(),
        stop.clone(),
    )
    .spawn(None)
    .unwrap();
    let mut seen = HashMap::new();
    wait_for("the first load", || {
        drain(&mut consumer, &mut seen);
        seen.len() == 2
    });
    assert_eq!(seen[&2].tick_size, Price(250_000));

    let mut session = pg.client();
    let ended: i64 = session
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
            &[&APPLICATION_NAME],
        )
        .unwrap()
        .get(0);
    assert_eq!(ended, 1);
    session
        .batch_execute("DELETE FROM instruments WHERE instrument_token = 1")
        .unwrap();
    wait_for("the reload after reconnecting", || {
        drain(&mut consumer, &mut seen);
        stats.loads_total.load(Ordering::Relaxed) >= 2 && seen.len() == 1
    });
    assert!(seen.contains_key(&2));
    assert!(stats.errors_total.load(Ordering::Relaxed) >= 1);
    assert!(stats.connected.load(Ordering::Relaxed));
    stop_and_join(&stop, refdata);
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn unreachable_postgres_is_counted_retried_and_never_waited_for() {
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", closed_port());
    let (producer, mut consumer) = reference_queue();
    let stats = Arc::new(RefdataStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let refdata = Refdata::new(
        refdata_config(url),
        ReferenceFeed::new(vec![producer]),
        stats.clone(),
        stop.clone(),
    )
    .spawn(None)
    .unwrap();
    wait_for("a few failed connects", || {
        stats.errors_total.load(Ordering::Relaxed) >= 3
    });
    assert!(!stats.connected.load(Ordering::Relaxed));
    assert_eq!(stats.loads_total.load(Ordering::Relaxed), 0);
    assert!(consumer.pop().is_err(), "nothing was sent");
    stop_and_join(&stop, refdata);
}

#[test]
fn run_goes_on_without_postgres_and_says_so() {
    // The binary, with PostgreSQL at a closed port: it stores every synthetic tick,
    // warns once, reports the outage in its summary and exits 0 promptly. The feed
    // is paced (2 s for 2,000 ticks): flat out the run ended in 0.11 s on a loaded
    // CI box before the refdata thread had failed its first connect, and the summary
    // then said, truthfully, "not loaded before exit".
    let ch = TestDb::new("refdata_run");
    let mut conn = ch.connect(None);
    ch.create_market_ticks(&mut conn);
    ch.create_from_migration(&mut conn, "003_strategy_signals");
    ch.create_from_migration(&mut conn, "004_rejected_messages");
    let port = std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "9000".into());
    let url = format!(
        "postgres.url=postgres://postgres@127.0.0.1:{}/x",
        closed_port()
    );
    let database = format!("clickhouse.database={}", ch.name);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_alphapt-storage"))
        .args(["run", "--synthetic", "1000", "--count", "2000", "--quiet"])
        .args(["--set", &url, "--set", &database])
        .args(["--set", "ingest.flush_interval_ms=50"])
        .args(["--set", "postgres.backoff_initial_ms=10"])
        .args(["--set", &format!("redis.key_prefix={}", ch.redis_prefix())])
        .args(["--set", "http.addr=127.0.0.1:0"])
        .env("CLICKHOUSE_PORT", &port)
        .env("RUST_LOG", "warn")
        .env_remove("POSTGRES_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(stdout.contains("2000 rows stored"), "{stdout}");
    assert!(stdout.contains("PostgreSQL unreachable"), "{stdout}");
    assert_eq!(
        stderr.matches("Reference data unavailable").count(),
        1,
        "warned once: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let stored = conn.query("SELECT count() FROM market_ticks").unwrap();
    assert_eq!(stored.scalar(), Some(Value::UInt(2000)));
}
