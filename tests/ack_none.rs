//! `nats.ack_policy = "none"` on the real servers: nothing is acknowledged, so the store
//! alone (ClickHouse and the spill journal) decides where delivery resumes. What it must
//! never do, tried here:
//!
//! - store a tick twice or lose one across kill -9 and restarts, including restarts
//!   that switch the ack policy either way (the consumer is recreated each time);
//! - run on a stream that drops messages once delivered (work-queue or interest
//!   retention): refused at start with the reason and the fix;
//! - trust a local durable mark that is damaged: the whole store is read instead;
//! - pull past its window: nats-server keeps no pending set under AckNone, so the
//!   receiver's own count is the only bound on what is delivered and not durable.
//!
//! "Stored once" is checked as a set: count = distinct = highest = published, lowest 1.

mod common;

use std::time::Duration;

use alphapt_storage::receive::nats::{JetStream, NatsConn};
use common::e2e::*;
use common::proxy::Proxy;
use common::wait_settled;

const ACK_NONE: [&str; 4] = [
    "--set",
    "nats.ack_policy=none",
    "--set",
    "ingest.block_rows_max=4096",
];
const ACK_ALL: [&str; 4] = [
    "--set",
    "nats.ack_policy=all",
    "--set",
    "ingest.block_rows_max=4096",
];

#[test]
fn ack_none_stores_every_tick_once_across_kills_and_policy_switches() {
    const TICKS: u64 = 120_000;
    let (db, mut conn) = tables("acknone");
    let nats = Nats::new("acknone");
    feed(&db, &nats, &["--count", "1", "--format", "kite"]);
    let feed = feeder(&db, &nats, TICKS - 1, 40_000, "kite");
    let mut counts = Vec::new();
    // none, killed; none again, killed; all (the consumer recreated with acks), killed;
    // then none to the end: each restart resumes from what is stored.
    for (round, settings) in [&ACK_NONE, &ACK_NONE, &ACK_ALL].into_iter().enumerate() {
        let run = start_run(&db, &nats, settings);
        std::thread::sleep(Duration::from_millis(900));
        kill(run);
        let (count, distinct, ..) = stored(&mut conn);
        assert_eq!(count, distinct, "round {round}: a tick stored twice");
        counts.push(count);
    }
    feeder_done(feed);
    // The last run switches from AckAll back to AckNone: the AckAll consumer's floor is
    // durable, so it bounds the read of the store (rather than the whole store). Unless
    // the AckAll run was killed before it set up its consumer: then the consumer is
    // still AckNone, and its floor (what was delivered) must not count.
    let acked_before = if consumer_ack_policy(&nats) == "all" {
        ack_floor(&nats)
    } else {
        0
    };
    let run = start_run(&db, &nats, &ACK_NONE);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    if acked_before > 0 {
        assert!(
            summary.contains("floor_from=\"consumer ack floor\""),
            "the switch read the store above AckAll's floor ({acked_before}): {summary}"
        );
    }
    assert_eq!(
        stored(&mut conn),
        (TICKS, TICKS, 1, TICKS),
        "stored after each kill: {counts:?}\n{summary}"
    );
    assert!(
        counts.iter().any(|&c| c > 0 && c < TICKS),
        "a kill landed mid-stream: {counts:?}"
    );
    // The consumer is AckNone now: nothing pending on the server.
    let mut nc = NatsConn::connect(&Nats::url(), Duration::from_secs(2)).unwrap();
    let info = JetStream::new(Duration::from_secs(2))
        .consumer_info(&mut nc, &nats.stream, &nats.durable)
        .unwrap()
        .expect("the durable exists");
    assert_eq!(info.ack_policy, "none", "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    assert_eq!(info.delivered.stream_seq, TICKS, "{info:?}");
}

#[test]
fn ack_none_refuses_a_work_queue_stream_and_says_why() {
    let (db, _conn) = tables("acknwq");
    let nats = Nats::new("acknwq");
    let mut nc = NatsConn::connect(&Nats::url(), Duration::from_secs(2)).unwrap();
    let create = serde_json::json!({
        "name": nats.stream,
        "subjects": [nats.subjects],
        "retention": "workqueue",
        "storage": "memory",
        "num_replicas": 1,
    });
    let reply = nc
        .request(
            &format!("$JS.API.STREAM.CREATE.{}", nats.stream),
            create.to_string().as_bytes(),
            Duration::from_secs(2),
        )
        .unwrap();
    let answer = String::from_utf8_lossy(&reply.payload).into_owned();
    assert!(!answer.contains("\"error\""), "{answer}");
    let run = start_run(&db, &nats, &ACK_NONE);
    let (status, text) = run.exit_within(Duration::from_secs(60), "refuse the stream");
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("workqueue retention") && text.contains("nats.ack_policy = \"all\""),
        "names the retention and the fix: {text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

/// The local durable mark stands in for an ack floor: a clean stop leaves it at the end
/// and the next start reads the store above it only; a damaged mark is ignored (whole
/// store read) and rewritten. Every tick stored once throughout.
#[test]
fn ack_none_resumes_above_its_local_mark_and_ignores_a_damaged_one() {
    let (db, mut conn) = tables("acknmark");
    let nats = Nats::new("acknmark");
    let mark = db
        .spill_dir()
        .join(format!("mark-{}-{}-{}", db.name, nats.stream, nats.durable));
    let mut total = 0;
    for (round, more) in [20_000u64, 10_000, 5_000].into_iter().enumerate() {
        if round == 2 {
            std::fs::write(&mark, "alphapt-mark v1 torn").unwrap();
        }
        feed(
            &db,
            &nats,
            &["--count", &more.to_string(), "--format", "kite"],
        );
        let run = start_run(&db, &nats, &ACK_NONE);
        wait_stored(&mut conn, total + more, Duration::from_secs(120));
        let summary = drain(run);
        let all = total + more;
        assert_eq!(
            stored(&mut conn),
            (all, all, 1, all),
            "round {round}: {summary}"
        );
        let read_from = match round {
            0 => "ack_floor=0".to_string(),
            1 => format!("ack_floor={total}"),
            _ => "ack_floor=0".to_string(),
        };
        assert!(summary.contains(&read_from), "round {round}: {summary}");
        if round == 1 {
            assert!(summary.contains("local mark"), "{summary}");
        }
        if round == 2 {
            assert!(
                summary.contains("Local durable mark is damaged"),
                "{summary}"
            );
        }
        total += more;
        let text = std::fs::read_to_string(&mark).unwrap();
        assert!(
            text.contains(&format!(" through={total} ")),
            "round {round}: the drain leaves the mark at the end: {text}"
        );
    }
}

/// With ClickHouse away and a spill too small for a block nothing becomes durable, so
/// delivery must stop at `nats.max_ack_pending` above the durable point (AckAll's
/// server-side window, kept by the receiver alone under AckNone); once ClickHouse is
/// back every tick is stored once.
#[test]
fn ack_none_delivery_stops_at_its_window_above_the_durable_point() {
    const WINDOW: u64 = 2_000;
    const TICKS: u64 = 20_000;
    let (db, mut conn) = tables("acknwin");
    let nats = Nats::new("acknwin");
    feed(&db, &nats, &["--count", "2000", "--format", "kite"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    // NATS through a proxy that can make each pull reach the server late.
    let nats_proxy = Proxy::start(Nats::port());
    let nats_url = format!("nats.url=nats://127.0.0.1:{}", nats_proxy.port);
    let window = format!("nats.max_ack_pending={WINDOW}");
    // A pull may ask for the whole window: then any second pull the server still
    // serves overshoots it.
    let fetch = format!("nats.fetch_batch_max={WINDOW}");
    let mut settings = ACK_NONE.to_vec();
    settings.extend(["--set", &port, "--set", &window, "--set", &fetch]);
    settings.extend(["--set", &nats_url]);
    settings.extend(SPILL_HOLDS_NO_BLOCK);
    let run = start_run(&db, &nats, &settings);
    let addr = control_addr(&run);
    wait_stored(&mut conn, 2_000, Duration::from_secs(60));
    proxy.down();
    // An idle second first, each pull reaching the server 30 ms late (a starved
    // server): every pull expires empty on our clock first, and the server's 408 for
    // it comes after the next pull went out. Those must not open more pulls than the
    // window holds when the burst comes.
    nats_proxy.delay_client(Duration::from_millis(30));
    std::thread::sleep(Duration::from_secs(1));
    feed(&db, &nats, &["--count", "18000", "--format", "kite"]);
    let delivered = || {
        let mut nc = NatsConn::connect(&Nats::url(), Duration::from_secs(2)).unwrap();
        JetStream::new(Duration::from_secs(2))
            .consumer_info(&mut nc, &nats.stream, &nats.durable)
            .unwrap()
            .expect("the durable exists")
            .delivered
            .stream_seq
    };
    let last = wait_settled(
        "delivery",
        Duration::from_secs(2),
        Duration::from_secs(60),
        delivered,
    );
    let durable = metric(addr, "alphapt_storage_durable_watermark");
    assert_eq!(
        durable, 2_000,
        "nothing became durable with ClickHouse away"
    );
    assert!(
        last <= durable + WINDOW,
        "delivered through {last}, past the {WINDOW} window above {durable}"
    );
    assert!(
        last >= durable + WINDOW * 9 / 10,
        "delivered only through {last}: the window above {durable} never filled"
    );
    proxy.up();
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
}
