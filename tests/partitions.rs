//! Subject partitions (DESIGN §8) on a real nats-server.
//!
//! - The partition function: a private server runs the `mappings` block that
//!   `alphapt-storage partitions 12` prints, 2,000 instruments are published under
//!   `market.ticks.<exchange>.<token>`, and every message arrives under
//!   `market.ticks.<p>.<exchange>.<token>` with the `p` the appliance computes
//!   (`receive::partition::partition_of`), in the order it was published.
//! - Partitioned consumption: two appliances, one partition each, on one stream and one
//!   database, store a feed exactly once between them (count = distinct `stream_seq`),
//!   each taking only its own instruments; one killed with -9 mid-feed and started
//!   again resumes its partition exactly once while the other runs on; a third started
//!   on a served partition is refused, naming why.
//! - The pull window counts the partition's own deliveries: with ClickHouse away, a
//!   partition's consumer fills `max_ack_pending` of its own messages, not the share
//!   of it the other partitions' stream sequences would leave.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use alphapt_storage::receive::nats::wire::ServerOp;
use alphapt_storage::receive::nats::JetStream;
use alphapt_storage::receive::partition::{partition_of, Mapping};
use common::e2e::*;
use common::proxy::Proxy;

const PARTITIONS: u32 = 12;

#[test]
fn nats_server_puts_each_instrument_in_the_partition_the_appliance_computes() {
    let printed = binary(&["partitions".into(), PARTITIONS.to_string()])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let config = String::from_utf8(printed.stdout).unwrap();
    assert!(config.contains("mappings = {"), "{config}");
    let server = PrivateNats::start_with_config(&config);

    let mut sub = server.connect().unwrap();
    sub.subscribe("market.ticks.>", None).unwrap();
    sub.subscribe("strategy.signals.>", None).unwrap();
    sub.round_trip(Duration::from_secs(5)).unwrap();

    // Tokens as a feed has them (steps of 7 from a real NSE token), plus the edges.
    let mut tokens: Vec<u32> = (0..2_000u32).map(|i| 256_265 + 7 * i).collect();
    tokens.extend([0, 1, 9, 10, 99_999, u32::MAX]);
    let mut publisher = server.connect().unwrap();
    for token in &tokens {
        let exchange = if token % 2 == 0 { "NSE" } else { "BSE" };
        publisher
            .publish(
                format!("market.ticks.{exchange}.{token}").as_bytes(),
                None,
                b"{}",
            )
            .unwrap();
    }
    publisher
        .publish(b"strategy.signals.momentum.408065", None, b"{}")
        .unwrap();
    publisher.flush().unwrap();

    let mut subjects = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while subjects.len() < tokens.len() + 1 && Instant::now() < deadline {
        sub.poll(Duration::from_millis(50), |op| {
            if let ServerOp::Msg(msg) = op {
                subjects.push(String::from_utf8_lossy(msg.subject).into_owned());
            }
        })
        .unwrap();
    }
    assert_eq!(subjects.len(), tokens.len() + 1, "messages arrived");

    let ticks = Mapping::new("market.ticks.>", PARTITIONS).unwrap();
    let mut used = vec![0u32; PARTITIONS as usize];
    for (subject, token) in subjects.iter().zip(&tokens) {
        let exchange = if token % 2 == 0 { "NSE" } else { "BSE" };
        assert_eq!(
            subject,
            &ticks.mapped_subject(exchange, *token),
            "token {token}"
        );
        used[partition_of(*token, PARTITIONS) as usize] += 1;
    }
    assert!(
        used.iter().all(|&n| n > 0),
        "every partition used: {used:?}"
    );
    let signals = Mapping::new("strategy.signals.>", PARTITIONS).unwrap();
    assert_eq!(
        subjects.last().unwrap(),
        &signals.mapped_subject("momentum", 408_065)
    );
}

#[test]
fn a_bad_partition_count_is_refused_with_one_line() {
    for (count, says) in [("0", "1 to 1024"), ("5000", "1 to 1024"), ("x", "invalid")] {
        let out = binary(&["partitions".into(), count.into()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{count}: {stderr}");
        assert!(stderr.contains(says), "{count}: {stderr}");
    }
}

/// Messages the run routed, from its summary ("... after N messages: ...").
fn routed(summary: &str) -> u64 {
    let at = summary.find(" messages: ").expect(summary);
    summary[..at]
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect(summary)
}

#[test]
fn two_appliances_on_two_partitions_store_every_tick_once() {
    const TICKS: u64 = 20_000;
    let (db, mut conn) = tables("parts");
    let nats = Nats::new("parts");
    let server = partitioned_server(&db, &nats, 2);
    let url = format!("nats.url={}", server.url());
    let published = feed(
        &db,
        &nats,
        &["--set", &url, "--count", "20000", "--instruments", "200"],
    );
    assert!(published.contains("acked 20000 errors 0"), "{published}");
    let a_flags = partition_flags(&db, &server, 0);
    let b_flags = partition_flags(&db, &server, 1);
    let a = start_run(&db, &nats, &strs(&a_flags));
    let b = start_run(&db, &nats, &strs(&b_flags));
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));

    // A third appliance on partition 0 while it is served: refused, naming why.
    let mut args = sets(&db, &nats);
    args.extend(partition_flags(&db, &server, 0));
    args.extend([
        "--set".into(),
        format!("spill.dir={}", db.spill_dir().join("third").display()),
    ]);
    args.extend(["run".into(), "--quiet".into()]);
    let third = binary(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, text) = wait_exit(third, Duration::from_secs(60), "third appliance");
    assert!(
        !status.success(),
        "a third appliance ran on a served partition: {text}"
    );
    assert!(
        text.contains("another client is pulling from durable"),
        "{text}"
    );
    assert!(text.contains("-p0"), "{text}");

    let (a, b) = (drain(a), drain(b));
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{a}\n{b}");
    let (from_a, from_b) = (routed(&a), routed(&b));
    assert_eq!(from_a + from_b, TICKS, "{a}\n{b}");
    assert!(from_a > 0 && from_b > 0, "{a}\n{b}");
    // Each instrument went to one appliance only: its partition's.
    let q = conn
        .query("SELECT toUInt64(count()) AS n FROM (SELECT instrument_token FROM market_ticks GROUP BY instrument_token)")
        .unwrap();
    assert_eq!(q.column("n")[0].as_u64(), Some(200));
    let tokens = conn
        .query("SELECT toUInt64(instrument_token) AS t, toUInt64(count()) AS n FROM market_ticks GROUP BY instrument_token")
        .unwrap();
    let on_a: u64 = tokens
        .column("t")
        .iter()
        .zip(tokens.column("n"))
        .filter(|(t, _)| partition_of(t.as_u64().unwrap() as u32, 2) == 0)
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    // Rejected rows have no token to check; the feed here sends none.
    assert_eq!(on_a, from_a, "appliance 0 took exactly partition 0's ticks");

    // `health` lists every partition's consumer with its lag: both caught up.
    let mut args = sets(&db, &nats);
    args.extend(partition_flags(&db, &server, 0));
    args.extend(["health".into(), "--json".into()]);
    let out = binary(&args).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nats_report = &report["components"][1];
    assert_eq!(nats_report["status"], "up", "{report}");
    let consumers = nats_report["consumers"].as_array().unwrap();
    assert_eq!(consumers.len(), 4, "two streams, two partitions: {report}");
    for consumer in consumers
        .iter()
        .filter(|c| c["stream"] == nats.stream.as_str())
    {
        assert_eq!(consumer["exists"], true, "{consumer}");
        assert_eq!(consumer["pending"], 0, "{consumer}");
        assert_eq!(consumer["unacked"], 0, "{consumer}");
        assert!(consumer["ack_floor"].as_u64().unwrap() > 0, "{consumer}");
    }
    // Asked about three partitions, the third (never served) is missing: degraded.
    args.extend(["--set".into(), "nats.partitions=3".into()]);
    let out = binary(&args).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["components"][1]["status"], "degraded", "{report}");
    assert!(
        report["components"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("2 of 6 partition consumers missing"),
        "{report}"
    );
}

#[test]
fn a_partition_killed_mid_feed_resumes_exactly_once_beside_the_other() {
    let (db, mut conn) = tables("partkill");
    let nats = Nats::new("partkill");
    let server = partitioned_server(&db, &nats, 2);
    let a_flags = partition_flags(&db, &server, 0);
    let b_flags = partition_flags(&db, &server, 1);
    kill_one_mid_feed(&db, &nats, &server, &mut conn, &a_flags, &b_flags);
}

/// Two appliances (`a_flags`, `b_flags`) on `server` under a feed of 40,000 ticks at
/// 10,000/s over 200 instruments: the first is killed with -9 when a fifth is stored
/// (nothing doubled by then) and started again; every tick ends stored once. Returns
/// both drained summaries.
fn kill_one_mid_feed(
    db: &common::TestDb,
    nats: &Nats,
    server: &PrivateNats,
    conn: &mut alphapt_storage::native::Connection,
    a_flags: &[String],
    b_flags: &[String],
) -> (String, String) {
    const TICKS: u64 = 40_000;
    let a = start_run(db, nats, &strs(a_flags));
    let b = start_run(db, nats, &strs(b_flags));
    let mut args = sets(db, nats);
    args.extend(["--set".into(), format!("nats.url={}", server.url())]);
    args.extend(
        [
            "feed",
            "--count",
            "40000",
            "--rate",
            "10000",
            "--instruments",
            "200",
        ]
        .map(String::from),
    );
    let feeder = binary(&args).stdout(Stdio::piped()).spawn().unwrap();
    // Mid-feed: the first appliance dies without a drain or a last ack.
    common::wait_until("a fifth stored", Duration::from_secs(60), || {
        stored(conn).0 >= TICKS / 5
    });
    let killed = kill(a);
    assert!(!killed.contains("panicked"), "{killed}");
    let (count, distinct, _, _) = stored(conn);
    assert_eq!(count, distinct, "doubled before the restart");
    let a = start_run(db, nats, &strs(a_flags));
    feeder_done(feeder);
    wait_stored(conn, TICKS, Duration::from_secs(120));
    let (a, b) = (drain(a), drain(b));
    assert_eq!(stored(conn), (TICKS, TICKS, 1, TICKS), "{a}\n{b}");
    (a, b)
}

#[test]
fn a_partition_fills_its_own_window_not_a_share_of_the_stream() {
    const WINDOW: u64 = 2_000;
    let (db, mut conn) = tables("window");
    let nats = Nats::new("window");
    let server = partitioned_server(&db, &nats, 2);
    let url = format!("nats.url={}", server.url());
    let publish = |count: &str| {
        let out = feed(
            &db,
            &nats,
            &["--set", &url, "--count", count, "--instruments", "200"],
        );
        assert!(out.contains("errors 0"), "{out}");
    };
    publish("2000");
    let proxy = Proxy::start(clickhouse_port());
    let mut flags = partition_flags(&db, &server, 0);
    for set in [
        // The window counted here is AckAll's (nats-server's pending set).
        "nats.ack_policy=all".to_owned(),
        format!("clickhouse.port={}", proxy.port),
        format!("nats.max_ack_pending={WINDOW}"),
    ] {
        flags.extend(["--set".to_owned(), set]);
    }
    // With ClickHouse away nothing routed becomes durable, so nothing is acknowledged
    // and the window fills.
    flags.extend(SPILL_HOLDS_NO_BLOCK.map(str::to_owned));
    let run = start_run(&db, &nats, &strs(&flags));
    wait_stored(&mut conn, 500, Duration::from_secs(60));
    proxy.down();
    // Both partitions' messages, interleaved in the stream: ~10,000 of partition 0.
    publish("20000");
    let durable = format!("{}-p0", nats.durable);
    let js = JetStream::new(Duration::from_secs(2));
    let mut nc = server.connect().unwrap();
    let mut pending = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let info = js
            .consumer_info(&mut nc, &nats.stream, &durable)
            .unwrap()
            .expect("the partition's durable exists");
        pending = info.num_ack_pending;
        if pending >= WINDOW * 9 / 10 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Counted in stream sequences, the other partition's half of them would hold
    // this at about WINDOW / 2.
    assert!(
        pending >= WINDOW * 9 / 10,
        "partition 0 holds only {pending} unacknowledged of a {WINDOW} window"
    );
    assert!(
        pending <= WINDOW,
        "{pending} pending over a {WINDOW} window"
    );
    proxy.up();
    let summary = drain(run);
    let routed = routed(&summary);
    let (count, distinct, _, _) = stored(&mut conn);
    assert_eq!((count, distinct), (routed, routed), "{summary}");
}

/// Two appliances with two partitions each (of four): each process runs a receiver
/// and a group of shards per partition. One is killed with -9 mid-feed and started
/// again: every tick is stored once, each appliance took exactly its partitions'
/// instruments, and every partition's consumer ends settled.
#[test]
fn appliances_serving_two_partitions_each_store_every_tick_once_across_a_kill() {
    let (db, mut conn) = tables("partmulti");
    let nats = Nats::new("partmulti");
    let server = partitioned_server(&db, &nats, 4);
    let a_flags = partitions_flags(&db, &server, 4, &[0, 2]);
    let b_flags = partitions_flags(&db, &server, 4, &[1, 3]);
    let (_, b) = kill_one_mid_feed(&db, &nats, &server, &mut conn, &a_flags, &b_flags);
    // The second appliance was never stopped: it routed exactly its partitions' ticks.
    let tokens = conn
        .query("SELECT toUInt64(instrument_token) AS t, toUInt64(count()) AS n FROM market_ticks GROUP BY instrument_token")
        .unwrap();
    let on_b: u64 = tokens
        .column("t")
        .iter()
        .zip(tokens.column("n"))
        .filter(|(t, _)| partition_of(t.as_u64().unwrap() as u32, 4) % 2 == 1)
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    assert_eq!(on_b, routed(&b), "{b}");
    // Every partition's consumer of the ticks stream is settled.
    let mut args = sets(&db, &nats);
    args.extend(partitions_flags(&db, &server, 4, &[0]));
    args.extend(["health".into(), "--json".into()]);
    let out = binary(&args).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let consumers: Vec<&serde_json::Value> = report["components"][1]["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["stream"] == nats.stream.as_str())
        .collect();
    assert_eq!(consumers.len(), 4, "{report}");
    for consumer in consumers {
        assert_eq!(consumer["exists"], true, "{consumer}");
        assert_eq!(consumer["pending"], 0, "{consumer}");
        assert_eq!(consumer["unacked"], 0, "{consumer}");
    }
}
