//! The appliance end to end, as operators run it: `feed` publishes into the real
//! nats-server, `run` (the binary) consumes into the real ClickHouse, SIGTERM drains.
//! Each test has its own database, stream, subjects and durable, removed afterwards.
//!
//! - JetStream: 1,000,000 ticks, 1% bad → every stream sequence stored exactly once in
//!   `market_ticks` or `rejected_messages`, and the consumer has nothing pending.
//! - Drain: SIGTERM while the feed runs flat out → exit 0, everything routed is stored
//!   and acked; a second run takes the rest; still exactly once.
//! - Core NATS: a steady rate the box sustains, every message stored.
//! - NATS restart: a private nats-server killed (-9) and restarted mid-stream; the
//!   receiver reconnects and every message is still stored exactly once.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alphapt_storage::native::Value;
use common::e2e::*;

#[test]
fn jetstream_million_with_bad_messages_stored_exactly_once() {
    const TICKS: u64 = 1_000_000;
    let (db, mut conn) = tables("js");
    let nats = Nats::new("js");
    let published = feed(
        &db,
        &nats,
        &[
            "--count",
            "1000000",
            "--bad-ratio",
            "0.01",
            "--instruments",
            "500",
        ],
    );
    assert!(published.contains("published 1000000 "), "{published}");
    assert!(published.contains("acked 1000000 errors 0"), "{published}");
    let run = start_run(&db, &nats, &[]);
    wait_stored(&mut conn, TICKS, Duration::from_secs(600));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    let rejected = conn
        .query("SELECT count() FROM rejected_messages")
        .unwrap()
        .scalar()
        .unwrap();
    let rejected = rejected.as_u64().unwrap();
    assert!(
        (5_000..=20_000).contains(&rejected),
        "about 1% rejected: {rejected}"
    );
    consumer_settled(&nats, TICKS);
}

#[test]
fn sigterm_during_a_flat_out_feed_drains_and_a_restart_takes_the_rest() {
    const TICKS: u64 = 300_000;
    let (db, mut conn) = tables("drain");
    let nats = Nats::new("drain");
    // Create the stream and the consumer before publishing, so the run starts at once.
    feed(&db, &nats, &["--count", "1"]);
    let first = start_run(&db, &nats, &[]);
    let feeder = {
        let mut args = sets(&db, &nats);
        args.extend(["feed", "--count", "299999", "--rate", "0"].map(String::from));
        binary(&args).stdout(Stdio::piped()).spawn().unwrap()
    };
    std::thread::sleep(Duration::from_millis(1500));
    drain(first);
    let mid = stored(&mut conn);
    assert_eq!(mid.0, mid.1, "nothing doubled after the drain: {mid:?}");
    assert!(feeder.wait_with_output().unwrap().status.success());
    let second = start_run(&db, &nats, &[]);
    wait_stored(&mut conn, TICKS, Duration::from_secs(300));
    drain(second);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS));
    consumer_settled(&nats, TICKS);
}

#[test]
fn core_nats_at_a_steady_rate_stores_every_message() {
    const TICKS: u64 = 100_000;
    let (db, mut conn) = tables("core");
    let nats = Nats::new("core");
    let run = start_run(&db, &nats, &["--source", "core"]);
    // The subscription must exist before publishing: core NATS keeps nothing.
    std::thread::sleep(Duration::from_millis(700));
    let published = feed(
        &db,
        &nats,
        &["--core", "--count", "100000", "--rate", "20000"],
    );
    assert!(published.contains("published 100000"), "{published}");
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    drain(run);
    let q = conn.query("SELECT count() AS c FROM market_ticks").unwrap();
    assert_eq!(q.column("c")[0], Value::UInt(TICKS));
}

#[test]
fn strategy_signals_arrive_in_their_table_and_bad_ones_in_rejects() {
    const SIGNALS: u64 = 2_000;
    let (db, mut conn) = tables("sig");
    let nats = Nats::new("sig");
    let run = start_run(&db, &nats, &[]);
    let mut bad = 0;
    let messages: Vec<(String, String)> = (0..SIGNALS)
        .map(|i| {
            let token = 256_265 + (i % 20) * 7;
            let payload = if i % 100 == 99 {
                bad += 1;
                format!(r#"{{"strategy_id":"mom","instrument_token":{token}}}"#)
            } else {
                let kind = ["traditional", "ml", "hybrid"][(i % 3) as usize];
                format!(
                    r#"{{"strategy_id":"mom","strategy_type":"{kind}","instrument_token":{token},"tradingsymbol":"SYM","signal_type":"BUY","strength":0.5,"confidence":0.75,"price":1234.05,"quantity":10,"metadata":{{"i":{i}}},"timestamp":1764000000000}}"#
                )
            };
            (format!("mom.{token}"), payload)
        })
        .collect();
    // Waits for the appliance to create the signals stream first.
    nats.publish_signals(messages);
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = |conn: &mut alphapt_storage::native::Connection, sql: &str| {
        conn.query(sql).unwrap().scalar().unwrap().as_u64().unwrap()
    };
    while count(&mut conn, "SELECT count() FROM strategy_signals")
        + count(&mut conn, "SELECT count() FROM rejected_messages")
        < SIGNALS
    {
        assert!(Instant::now() < deadline, "signals not stored in time");
        std::thread::sleep(Duration::from_millis(200));
    }
    drain(run);
    assert_eq!(
        count(&mut conn, "SELECT count() FROM strategy_signals"),
        SIGNALS - bad
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT uniqExact(stream_seq) FROM strategy_signals"
        ),
        SIGNALS - bad
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count() FROM rejected_messages WHERE reason = 'missing_field'"
        ),
        bad
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count() FROM strategy_signals WHERE toString(strategy_type) = 'ml'"
        ),
        660
    );
    let metadata = conn
        .query("SELECT metadata FROM strategy_signals WHERE stream_seq = 1")
        .unwrap()
        .scalar()
        .unwrap();
    assert_eq!(metadata.as_str(), Some(r#"{"i":0}"#));
}

/// `run --count N` stops by itself once N are stored and acked, with tiny rings and
/// blocks keeping the receiver on back-pressure; a second run takes the rest, each
/// message exactly once. (A sleep() view to slow INSERTs further made 18.16 stall
/// queries under CPU starvation, so it is not used.)
#[test]
fn run_with_count_stops_by_itself_under_back_pressure() {
    let (db, mut conn) = tables("count");
    let nats = Nats::new("count");
    let published = feed(&db, &nats, &["--count", "60000", "--instruments", "50"]);
    assert!(published.contains("acked 60000 errors 0"), "{published}");
    let tight = [
        "--set",
        "ingest.ring_slots=4096",
        "--set",
        "ingest.block_rows_max=1024",
        "--set",
        "ingest.flush_interval_ms=50",
    ];
    let first = start_run(&db, &nats, &[&tight[..], &["--count", "50000"]].concat());
    let (status, text) = first.exit_within(Duration::from_secs(180), "finish --count");
    assert!(status.success(), "run exited {status}: {text}");
    assert!(text.contains("Done: 50000 messages"), "{text}");
    assert_eq!(stored(&mut conn), (50_000, 50_000, 1, 50_000), "{text}");

    let run = start_run(&db, &nats, &[]);
    wait_stored(&mut conn, 60_000, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (60_000, 60_000, 1, 60_000), "{summary}");
    consumer_settled(&nats, 60_000);
}

/// nats-server killed with SIGKILL while the appliance consumes, restarted on the same
/// port and store: the receiver reconnects, restarts delivery at the ack floor, skips
/// what it had already routed, and every message is stored exactly once.
#[test]
fn nats_server_killed_mid_stream_reconnects_and_stores_each_message_once() {
    const TICKS: u64 = 300_000;
    let (db, mut conn) = tables("reconnect");
    let mut server = PrivateNats::start();
    let nats = Nats::new("reconnect");
    let url = format!("nats.url={}", server.url());
    let published = feed(
        &db,
        &nats,
        &["--set", &url, "--count", "300000", "--instruments", "200"],
    );
    assert!(published.contains("acked 300000 errors 0"), "{published}");

    let run = start_run(
        &db,
        &nats,
        &["--set", &url, "--set", "ingest.block_rows_max=8192"],
    );
    let addr = control_addr(&run);
    wait_stored(&mut conn, 30_000, Duration::from_secs(120));
    assert!(stored(&mut conn).0 < TICKS, "the kill must land mid-stream");
    server.kill();
    // While the server is away, /health and /metrics say so.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, health) = get(addr, "/health");
        let (_, metrics) = get(addr, "/metrics");
        if health.contains("connection lost, reconnecting") {
            assert!(metrics.contains("\nalphapt_nats_up 0\n"), "{metrics}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health never saw NATS away: {health}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    server.spawn();
    let deadline = Instant::now() + Duration::from_secs(300);
    while stored(&mut conn).0 < TICKS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // The reconnect may come after the last store (all was routed before the kill).
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (_, metrics) = get(addr, "/metrics");
        if metrics.contains("\nalphapt_nats_up 1\n") {
            break metrics;
        }
        assert!(Instant::now() < deadline, "never reconnected: {metrics}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let reconnects = metrics
        .lines()
        .find_map(|l| l.strip_prefix("alphapt_reconnects_total{server=\"nats\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(reconnects.is_some_and(|n| n >= 1.0), "{metrics}");
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    assert!(
        summary.contains("NATS connection lost; reconnecting"),
        "{summary}"
    );
    consumer_settled_at(&server.url(), &nats, TICKS);
}

/// nats-server frozen (SIGSTOP) while the appliance starts: its handshake and
/// JetStream requests time out; the first session is tried again rather than ending
/// the run, and once the server answers every message is stored once.
#[test]
fn a_nats_server_too_slow_at_start_is_asked_again() {
    const TICKS: u64 = 20_000;
    let (db, mut conn) = tables("slowstart");
    let server = PrivateNats::start();
    let nats = Nats::new("slowstart");
    let url = format!("nats.url={}", server.url());
    feed(
        &db,
        &nats,
        &["--set", &url, "--count", "20000", "--instruments", "100"],
    );
    let pid = server.child.as_ref().expect("running").id().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let run = start_run(&db, &nats, &["--set", &url]);
    std::thread::sleep(Duration::from_secs(3));
    signal("-CONT");
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    assert!(
        summary.contains("NATS too slow to answer at start; trying again"),
        "{summary}"
    );
    consumer_settled_at(&server.url(), &nats, TICKS);
}

/// The stream deleted and recreated while the appliance is disconnected (here: the
/// server's store wiped): its sequences restart, so skipping "already routed" ones
/// would drop messages. The run ends with an error naming the cause instead, after
/// storing what it had routed.
#[test]
fn a_stream_recreated_while_disconnected_stops_the_run_with_a_clear_error() {
    let (db, mut conn) = tables("reset");
    let mut server = PrivateNats::start();
    let nats = Nats::new("reset");
    let url = format!("nats.url={}", server.url());
    let published = feed(
        &db,
        &nats,
        &["--set", &url, "--count", "20000", "--instruments", "50"],
    );
    assert!(published.contains("acked 20000 errors 0"), "{published}");
    let run = start_run(&db, &nats, &["--set", &url]);
    wait_stored(&mut conn, 20_000, Duration::from_secs(60));
    server.kill();
    std::fs::remove_dir_all(&server.dir).unwrap();
    server.spawn();
    let (status, stderr) = run.exit_within(Duration::from_secs(60), "stop on a recreated stream");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("was created again while we were disconnected"),
        "{stderr}"
    );
    assert_eq!(stored(&mut conn), (20_000, 20_000, 1, 20_000), "{stderr}");
}

/// With `ingest.insert_linger_ms`, a writer gathers blocks sealed on size into one
/// INSERT (one part each, merges stopped to count them) and still stores every row;
/// the end of input makes what is held due at once.
#[test]
fn insert_linger_gathers_blocks_into_fewer_inserts() {
    let (db, mut conn) = tables("linger");
    conn.query("SYSTEM STOP MERGES market_ticks").unwrap();
    let nats = Nats::new("linger");
    let mut args = sets(&db, &nats);
    args.extend(
        [
            "--set",
            "ingest.block_rows_max=4096",
            "--set",
            "ingest.flush_interval_ms=5000",
            "--set",
            "ingest.insert_linger_ms=60000",
            "--set",
            "nats.ack_wait_ms=120000",
            "run",
            "--quiet",
            "--synthetic",
            "20000",
            "--count",
            "40960",
        ]
        .map(String::from),
    );
    let output = binary(&args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    let mut count = |sql: &str| conn.query(sql).unwrap().scalar().unwrap().as_u64().unwrap();
    assert_eq!(count("SELECT count() FROM market_ticks"), 40_960, "{text}");
    // 10 blocks of 4,096 rows, one every ~200 ms at 20k ticks/s (without a linger each
    // is its own INSERT: 10 parts); at most 8 per INSERT, so 2 parts, unless the shard
    // ran short of free blocks first: still far fewer than one part per block.
    let parts = count(&format!(
        "SELECT count() FROM system.parts WHERE database = '{}' AND table = 'market_ticks' AND active",
        db.name
    ));
    assert!((2..=4).contains(&parts), "{parts} parts: {text}");
}

/// Each message's receive-to-durable is its own: at a steady 5,000 ticks/s with blocks
/// sealed every 400 ms, the messages of a block were received over those 400 ms, so the
/// median message waits about half of what its block's oldest does. The summary shows
/// both; the per-message figure must be the lower, by about 200 ms, and the oldest's
/// at least the flush interval. The span from the first tick in to the last INSERT
/// done is the feed's two seconds and the last block's wait.
#[test]
fn each_message_waits_from_its_own_receive_stamp() {
    let (db, mut conn) = tables("ownwait");
    let nats = Nats::new("ownwait");
    let mut args = sets(&db, &nats);
    args.extend(
        [
            "--set",
            "ingest.flush_interval_ms=400",
            "run",
            "--quiet",
            "--synthetic",
            "5000",
            "--count",
            "10000",
        ]
        .map(String::from),
    );
    let output = binary(&args).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{text}");
    assert_eq!(stored(&mut conn), (10_000, 10_000, 1, 10_000), "{text}");
    let figure = |after: &str, label: &str| summary_figure(&text, after, label);
    let own = figure("receive-to-durable ms", "p50");
    let oldest = figure("from its block's oldest:", "p50");
    assert!(oldest >= 400.0, "block-oldest p50 {oldest} ms: {text}");
    assert!(
        own + 100.0 <= oldest,
        "own p50 {own} ms, block-oldest {oldest} ms: {text}"
    );
    assert!(
        figure("receive-to-durable ms", "p99") <= figure("from its block's oldest:", "p99"),
        "{text}"
    );
    // The consumer-loop span: 10,000 ticks at 5,000/s arrive over ~2 s, and the last
    // INSERT comes after the last tick's block seals (400 ms later at most, plus the
    // INSERT); start-up and exit are not in it.
    let span = figure("first tick in to last INSERT done", "in");
    assert!((1.9..10.0).contains(&span), "span {span} s: {text}");
}

/// Pinned, with the spin wait: the ticks path's threads go to their cores and the
/// signals path's (named `sig-…`) to none, so no two spinning threads share a core;
/// the feed is stored all the same.
#[test]
fn pinning_places_the_ticks_path_and_leaves_the_signals_path_unpinned() {
    const TICKS: u64 = 2_000;
    let (db, mut conn) = tables("pin");
    let nats = Nats::new("pin");
    feed_all(&db, &nats, TICKS, "0", "20");
    let settings = [
        "--set",
        "threads.pin=true",
        "--set",
        "threads.receiver_core=0",
        "--set",
        "threads.shard_cores=1",
        "--set",
        "threads.writer_cores=0",
        "--set",
        "threads.wait=hybrid",
    ];
    let run = start_run(&db, &nats, &settings);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let log = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{log}");
    let placed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Pinned thread") || l.contains("Could not pin thread"))
        .collect();
    // Once each: the signals path's shard and writer must not land on these cores too.
    for name in ["thread=receiver ", "thread=shard-0 ", "thread=writer-0 "] {
        let times = placed.iter().filter(|l| l.contains(name)).count();
        assert_eq!(times, 1, "{name}: {placed:?}");
    }
    assert!(
        !placed.iter().any(|l| l.contains("thread=sig-")),
        "the signals path was pinned: {placed:?}"
    );
    assert!(log.contains("Reading the resume point"), "{log}");
}

#[test]
fn hot_path_threads_run_at_their_own_nice_value() {
    // threads.hot_nice applies to the receivers, shards and writers only: the slow paths
    // keep the process's value. 5 rather than the shipped -10: raising a nice value
    // needs no privilege, so the test means the same as root or not.
    let (db, _conn) = tables("hotnice");
    let nats = Nats::new("hotnice");
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            "threads.hot_nice=5",
            "--set",
            "threads.writer_io_class=realtime",
        ],
    );
    control_addr(&run);
    // The signals path's threads start once its consumer is ready, which may be after
    // the control endpoint serves: read the threads until both writers are there.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (nice_of, io_of) = loop {
        let read = thread_priorities(run.pid());
        if ["writer-0", "sig-writer-0"]
            .iter()
            .all(|w| read.1.contains_key(*w))
            || std::time::Instant::now() > deadline
        {
            break read;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let summary = format!("{nice_of:?}");
    // threads.writer_io_class = "realtime": the writers, and only they, in the realtime
    // class (1), level 4. The tests run as root, which may set it.
    let io_summary = format!("{io_of:?}");
    for writer in ["writer-0", "sig-writer-0"] {
        assert_eq!(io_of.get(writer), Some(&(1, 4)), "{writer}: {io_summary}");
    }
    for other in ["receiver", "shard-0", "inserter-0", "redis", "control"] {
        let class = io_of.get(other).map(|io| io.0);
        assert!(class.is_some_and(|c| c != 1), "{other}: {io_summary}");
    }
    for hot in [
        "receiver",
        "shard-0",
        "writer-0",
        "receiver-signal",
        "sig-shard-0",
        "sig-writer-0",
    ] {
        assert_eq!(nice_of.get(hot), Some(&5), "{hot}: {summary}");
    }
    for slow in ["redis", "control", "audit"] {
        assert_eq!(nice_of.get(slow), Some(&0), "{slow}: {summary}");
    }
    drain(run);
}

#[test]
fn a_nice_value_and_io_class_the_system_refuses_warn_once_each_and_store_everything() {
    // CAP_SYS_NICE and CAP_SYS_ADMIN out of the bounding set: even root may not lower a
    // nice value or take the realtime I/O class, as for a service started without
    // LimitNICE or the capability. The shipped -10 is refused by each hot thread and
    // the realtime class (asked for here) by each writer; the run must say so once each
    // and store every tick as usual.
    let (db, mut conn) = tables("nicedenied");
    let nats = Nats::new("nicedenied");
    let mut args = sets(&db, &nats);
    args.extend(["--set", "threads.writer_io_class=realtime"].map(String::from));
    args.extend(["run", "--quiet", "--synthetic", "5000", "--count", "4000"].map(String::from));
    let output = Command::new("setpriv")
        .arg("--bounding-set=-sys_nice,-sys_admin")
        .arg(env!("CARGO_BIN_EXE_alphapt-storage"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("setpriv (util-linux) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert_eq!(
        text.matches("Could not set the hot threads' nice value")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("LimitNICE=-10"),
        "the warning names the fix: {text}"
    );
    assert_eq!(
        text.matches("Could not put the writers in the realtime I/O class")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("AmbientCapabilities=CAP_SYS_NICE") && text.contains("writer_io_class"),
        "the warning names the fix: {text}"
    );
    assert_eq!(stored(&mut conn), (4_000, 4_000, 1, 4_000), "{text}");
}

/// Each thread's nice value and I/O priority, by name.
#[allow(clippy::type_complexity)]
fn thread_priorities(
    pid: u32,
) -> (
    std::collections::BTreeMap<String, i32>,
    std::collections::BTreeMap<String, (i32, i32)>,
) {
    let mut nice_of = std::collections::BTreeMap::new();
    let mut io_of = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let tid: i32 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue; // a thread that ended meanwhile
        };
        // Field 19 of stat; the name in parentheses may hold spaces, so count after it.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i32 = after_name.split(' ').nth(16).unwrap().parse().unwrap();
        nice_of.insert(comm.trim().to_string(), nice);
        if let Ok(io) = alphapt_storage::runtime::thread_io_priority(tid) {
            io_of.insert(comm.trim().to_string(), io);
        }
    }
    (nice_of, io_of)
}
