//! Scale-out into a sharded ClickHouse cluster (DESIGN §8): two private ClickHouse
//! 18.16 servers, one shard each, defining the cluster in their `<remote_servers>`.
//!
//! - `migrate up --cluster` migrates both servers and gives each a `Distributed`
//!   `<table>_all` over the cluster;
//! - the appliance, with `clickhouse.shards` naming both, writes each instrument's rows
//!   to the shard `intHash64(instrument_token) % 2`, which the server's own hash says;
//! - kill -9 mid-feed and a restart: the stored set is read from both shards, so every
//!   message is stored once cluster-wide (read through the `Distributed` tables);
//! - `quality`, `query` and `health` read the cluster: the `Distributed` tables, and
//!   each shard's server (one killed makes ClickHouse degraded, naming it);
//! - a shard whose schema lags the first is refused at start, naming it;
//! - replicas (ReplicatedMergeTree over a private ZooKeeper): the replica a writer
//!   inserts into killed mid-feed, the writer fails over to its twin, every message
//!   is stored once, and the killed replica catches up when it is back.
//!
//! - a shard whose only server dies mid-feed spills its blocks while the other shard
//!   stores on, and catches up when the server is back;
//! - the whole scale-out at once: two partitioned appliances into a replicated
//!   cluster, a replica killed and one appliance killed with -9 and restarted (while
//!   that replica is still down): every message once, each instrument on its shard,
//!   received in stream order.
//!
//! Each test has its own cluster, database, streams and durable, removed afterwards.

mod common;

use std::time::{Duration, Instant};

use alphapt_storage::native::Connection;
use common::e2e::*;
use common::pg::PgDb;
use common::private_clickhouse::{PrivateCluster, PrivateZooKeeper};
use common::TestDb;

const CLUSTER: &str = "alphapt_ct";

/// `--set` flags for the cluster: both servers, two pipeline shards and two writers
/// (one per ClickHouse shard), and the test's PostgreSQL database.
fn cluster_sets(cluster: &PrivateCluster, pg: &PgDb) -> Vec<String> {
    let shards: Vec<String> = cluster
        .shard_addrs()
        .iter()
        .map(|replicas| replicas.join(","))
        .collect();
    [
        format!("clickhouse.shards={}", shards.join(";")),
        "ingest.shards=2".into(),
        "ingest.writers=2".into(),
        format!("postgres.url={}", pg.url()),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

fn migrate(db: &TestDb, nats: &Nats, extra: &[String], action: &[&str]) -> (bool, String) {
    let mut args = sets(db, nats);
    args.extend(extra.iter().cloned());
    args.push("migrate".into());
    args.extend(action.iter().map(|s| s.to_string()));
    let out = binary(&args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `(count, distinct, min, max)` of stream sequences over ticks and rejects, read
/// through the `Distributed` tables.
fn stored_cluster_wide(conn: &mut Connection) -> (u64, u64, u64, u64) {
    let q = conn
        .query(
            "SELECT count() AS c, uniqExact(s) AS u, min(s) AS lo, max(s) AS hi FROM \
             (SELECT stream_seq AS s FROM market_ticks_all UNION ALL SELECT stream_seq AS s FROM rejected_messages_all)",
        )
        .unwrap();
    let get = |name: &str| q.column(name)[0].as_u64().unwrap();
    (get("c"), get("u"), get("lo"), get("hi"))
}

fn scalar(conn: &mut Connection, sql: &str) -> u64 {
    conn.query(sql)
        .unwrap()
        .scalar()
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("{sql}: no number"))
}

fn wait_cluster_stored(conn: &mut Connection, expected: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while stored_cluster_wide(conn).0 < expected {
        assert!(
            Instant::now() < deadline,
            "only {:?} of {expected} stored",
            stored_cluster_wide(conn)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for `count` messages cluster-wide, drains `run`, and checks each is stored
/// once and the consumer settled.
fn drain_stored_once_cluster_wide(reader: &mut Connection, run: Running, nats: &Nats, count: u64) {
    wait_cluster_stored(reader, count, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(
        stored_cluster_wide(reader),
        (count, count, 1, count),
        "{summary}"
    );
    consumer_settled(nats, count);
}

/// Rows on `conn`'s server whose instrument the server's own hash gives another of
/// two shards than `shard`.
fn misplaced(conn: &mut Connection, shard: usize) -> u64 {
    scalar(
        conn,
        &format!(
            "SELECT count() FROM market_ticks WHERE intHash64(instrument_token) % 2 != {shard}"
        ),
    )
}

/// A private cluster migrated with `migrate up --cluster`, and the test's database,
/// streams and PostgreSQL.
struct Setup {
    // Dropped after the servers that use it.
    cluster: PrivateCluster,
    _zookeeper: Option<PrivateZooKeeper>,
    db: TestDb,
    nats: Nats,
    pg: PgDb,
    extra: Vec<String>,
}

/// Two shards of one server each.
fn sharded(name: &str, tag: &str) -> Setup {
    migrated(PrivateCluster::start(name, 2), None, name, tag)
}

/// Shards [2 replicas, 1] over a private ZooKeeper: shard 1 is servers 0 and 1, shard 2
/// is server 2.
fn replicated(name: &str, tag: &str) -> Setup {
    let zookeeper = PrivateZooKeeper::start();
    let cluster = PrivateCluster::start_replicated(name, &[2, 1], &zookeeper);
    migrated(cluster, Some(zookeeper), name, tag)
}

fn migrated(
    cluster: PrivateCluster,
    zookeeper: Option<PrivateZooKeeper>,
    name: &str,
    tag: &str,
) -> Setup {
    let db = TestDb::new(tag);
    let nats = Nats::new(tag);
    let pg = PgDb::new();
    let extra = cluster_sets(&cluster, &pg);
    let (ok, text) = migrate(&db, &nats, &extra, &["up", "--cluster", name]);
    assert!(ok, "{text}");
    assert_eq!(
        text.matches("distributed on").count(),
        cluster.servers.len(),
        "{text}"
    );
    Setup {
        cluster,
        _zookeeper: zookeeper,
        db,
        nats,
        pg,
        extra,
    }
}

#[test]
fn each_instrument_lands_on_its_shard_once_across_a_kill_and_restart() {
    const HALF: u64 = 10_000;
    let cluster = PrivateCluster::start(CLUSTER, 2);
    let db = TestDb::new("cluster");
    let nats = Nats::new("cluster");
    let pg = PgDb::new();
    let extra = cluster_sets(&cluster, &pg);
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();

    let (ok, text) = migrate(&db, &nats, &extra, &["up", "--cluster", CLUSTER]);
    assert!(ok, "{text}");
    assert_eq!(text.matches("distributed on").count(), 2, "{text}");
    assert!(text.contains("market_ticks_all"), "{text}");

    let mut feed_args = extra_refs.clone();
    feed_args.extend([
        "--count",
        "10000",
        "--instruments",
        "200",
        "--bad-ratio",
        "0.02",
    ]);
    assert!(feed(&db, &nats, &feed_args).contains("errors 0"));
    let mut reader = cluster.servers[0].connect(&db.name);
    let run = start_run(&db, &nats, &extra_refs);
    wait_cluster_stored(&mut reader, 2_000, Duration::from_secs(120));
    let killed = kill(run);
    let mid = stored_cluster_wide(&mut reader);
    assert_eq!(
        mid.0, mid.1,
        "nothing doubled before the kill: {mid:?} {killed}"
    );

    assert!(feed(&db, &nats, &feed_args).contains("errors 0"));
    let run = start_run(&db, &nats, &extra_refs);
    wait_cluster_stored(&mut reader, 2 * HALF, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(
        stored_cluster_wide(&mut reader),
        (2 * HALF, 2 * HALF, 1, 2 * HALF),
        "{summary}"
    );
    consumer_settled(&nats, 2 * HALF);

    // Each server holds only the instruments the server's own hash gives it, and
    // both hold some.
    for (index, server) in cluster.servers.iter().enumerate() {
        let mut conn = server.connect(&db.name);
        assert_eq!(
            misplaced(&mut conn, index),
            0,
            "shard {index} holds other shards' instruments"
        );
        let held = scalar(&mut conn, "SELECT count() FROM market_ticks");
        assert!(held > 2_000, "shard {index} holds only {held} ticks");
    }
    // Readers go through the Distributed tables: the quality report counts both
    // shards, and `query` finds an instrument of the second shard.
    let cli = |args: &[&str]| {
        let mut all = sets(&db, &nats);
        all.extend(extra.iter().cloned());
        all.extend(["--set".to_string(), "redis.enabled=false".into()]);
        all.extend(args.iter().map(|s| s.to_string()));
        let out = binary(&all).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let report: serde_json::Value =
        serde_json::from_str(&cli(&["quality", "--json", "--since", "1h"])).unwrap();
    assert_eq!(report["ticks_received"], 2 * HALF, "{report}");
    let token = scalar(
        &mut cluster.servers[1].connect(&db.name),
        "SELECT toUInt64(any(instrument_token)) FROM market_ticks",
    );
    let rows = cli(&[
        "query",
        "ticks",
        "--tokens",
        &token.to_string(),
        "--minutes",
        "1440",
        "--limit",
        "3",
        "--format",
        "csv",
    ]);
    assert_eq!(
        rows.lines()
            .filter(|l| l.starts_with(&format!("{token},")))
            .count(),
        3,
        "{rows}"
    );
    let health: serde_json::Value = serde_json::from_str(&cli(&["health", "--json"])).unwrap();
    let shards = &health["components"][0]["shards"];
    assert_eq!(shards.as_array().map(Vec::len), Some(2), "{health}");
    assert!(
        shards
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "up"),
        "{health}"
    );

    // Migrated down, nothing is left on either server, the Distributed tables first.
    let (ok, text) = migrate(&db, &nats, &extra, &["down", "--to", "0"]);
    assert!(ok, "{text}");
    for server in &cluster.servers {
        let mut conn = server.connect("");
        let left = scalar(
            &mut conn,
            &format!(
                "SELECT count() FROM system.tables WHERE database = '{}'",
                db.name
            ),
        );
        assert_eq!(left, 0, "{text}");
    }
}

#[test]
fn a_shard_down_or_behind_is_named_by_health_and_at_start() {
    let mut cluster = PrivateCluster::start("alphapt_ct_lag", 2);
    let db = TestDb::new("clusterlag");
    let nats = Nats::new("clusterlag");
    let pg = PgDb::new();
    let extra = cluster_sets(&cluster, &pg);
    let (ok, text) = migrate(&db, &nats, &extra, &["up"]);
    assert!(ok, "{text}");
    // `health` names each shard's server; one killed makes ClickHouse degraded, not
    // down (the other shard still stores).
    let health = |cluster: &PrivateCluster| {
        let mut args = sets(&db, &nats);
        args.extend(cluster_sets(cluster, &pg));
        args.extend(["health".to_string(), "--json".into()]);
        let out = binary(&args).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), report["components"][0].clone())
    };
    let (_, up) = health(&cluster);
    assert_eq!(up["status"], "up", "{up}");
    cluster.servers[1].kill();
    let (code, degraded) = health(&cluster);
    assert_eq!(code, Some(1), "{degraded}");
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert_eq!(degraded["shards"][1]["status"], "down", "{degraded}");
    assert_eq!(
        degraded["shards"][1]["server"],
        cluster.addrs()[1],
        "{degraded}"
    );
    cluster.servers[1].spawn();
    // The second shard loses a column the first has.
    let mut second = cluster.servers[1].connect(&db.name);
    second
        .execute("ALTER TABLE rejected_messages DROP COLUMN detail")
        .unwrap();
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut args = sets(&db, &nats);
    args.extend(extra.iter().cloned());
    args.extend(["run".to_string(), "--count".into(), "1".into()]);
    let child = binary(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, text) = wait_exit(child, Duration::from_secs(60), "refuse the lagging shard");
    assert!(!status.success(), "{text}");
    let second_addr = &cluster.addrs()[1];
    assert!(
        text.contains("ClickHouse shard 2") && text.contains(second_addr.as_str()),
        "{text}"
    );
    assert!(text.contains("migrate up"), "{text}");
    drop(extra_refs);
    // `--cluster` names a cluster the servers do not define: refused, saying so.
    let (ok, text) = migrate(&db, &nats, &extra, &["up", "--cluster", "nope"]);
    assert!(!ok, "{text}");
    assert!(text.contains("defines no cluster `nope`"), "{text}");
}

#[test]
fn a_replica_killed_mid_feed_fails_over_and_nothing_is_lost_or_doubled() {
    const TICKS: u64 = 20_000;
    // Every field bound: what a pattern leaves out is dropped at once (ZooKeeper).
    let Setup {
        mut cluster,
        _zookeeper,
        db,
        nats,
        pg: _pg,
        extra,
    } = replicated("alphapt_ctr", "replicas");
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let engine = scalar_text(
        &mut cluster.servers[1].connect(&db.name),
        "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'market_ticks'",
    );
    assert_eq!(engine, "ReplicatedMergeTree");

    let feeder = feeder(&db, &nats, TICKS, 4_000, "json");
    let run = start_run(&db, &nats, &extra_refs);
    let mut reader = cluster.servers[2].connect(&db.name);
    wait_cluster_stored(&mut reader, 3_000, Duration::from_secs(120));
    // The replica shard 1's writer inserts into: the first listed. Writes go on
    // through its twin (what it alone held when killed reaches the twin once it is
    // back: a block a replica committed is in ZooKeeper, so a resend is dropped).
    cluster.servers[0].kill();
    wait_cluster_stored(&mut reader, 12_000, Duration::from_secs(120));
    // /metrics names the replica the writer moved to.
    let (_, metrics) = get(control_addr(&run), "/metrics");
    let twin_addr = &cluster.shard_addrs()[0][1];
    assert!(
        metrics.contains(&format!(
            "alphapt_clickhouse_replica_in_use{{shard=\"1\",replica=\"{twin_addr}\"}} 1\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("alphapt_clickhouse_shard_up{shard=\"2\"} 1\n"),
        "{metrics}"
    );
    feeder_done(feeder);
    cluster.servers[0].spawn();
    wait_cluster_stored(&mut reader, TICKS, Duration::from_secs(180));
    let summary = drain(run);
    assert_eq!(
        stored_cluster_wide(&mut reader),
        (TICKS, TICKS, 1, TICKS),
        "{summary}"
    );
    assert!(summary.contains("ClickHouse replica failover"), "{summary}");
    consumer_settled(&nats, TICKS);

    // Back, the killed replica fetches what its twin took meanwhile.
    let mut twin = cluster.servers[1].connect(&db.name);
    let expected = scalar(&mut twin, "SELECT count() FROM market_ticks");
    let mut back = cluster.servers[0].connect(&db.name);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = scalar(&mut back, "SELECT count() FROM market_ticks");
        if held == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica caught up to {held} of {expected}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (server, shard) in [(0, 0), (2, 1)] {
        let mut conn = cluster.servers[server].connect(&db.name);
        assert_eq!(
            misplaced(&mut conn, shard),
            0,
            "server {server} holds other shards' instruments"
        );
    }
}

fn scalar_text(conn: &mut Connection, sql: &str) -> String {
    match conn.query(sql).unwrap().scalar() {
        Some(alphapt_storage::native::Value::Bytes(bytes)) => String::from_utf8(bytes).unwrap(),
        other => panic!("{sql}: {other:?}"),
    }
}

/// The whole scale-out at once (issue 18's check): a nats-server mapping the ticks over
/// two partitions, two appliances with one partition each, a ClickHouse cluster of two
/// shards whose first is a replicated pair. Mid-feed the replica in use is killed, then
/// one appliance dies with -9 and is started again. Every message is stored once
/// cluster-wide (through the `Distributed` tables), each instrument on the shard the
/// server's hash gives it, and each instrument's rows were received in stream order.
#[test]
fn two_partitioned_appliances_into_a_replicated_cluster_store_each_tick_once() {
    const TICKS: u64 = 40_000;
    // Every field bound: what a pattern leaves out is dropped at once (ZooKeeper).
    let Setup {
        mut cluster,
        _zookeeper,
        db,
        nats,
        pg: _pg,
        extra,
    } = replicated("alphapt_ctp", "scaleout");
    let server = partitioned_server(&db, &nats, 2);
    let appliance = |id: u32| {
        let mut flags = extra.clone();
        flags.extend(partition_flags(&db, &server, id));
        flags
    };
    let (a_flags, b_flags) = (appliance(0), appliance(1));
    let mut args = sets(&db, &nats);
    args.extend(["--set".into(), format!("nats.url={}", server.url())]);
    args.extend(
        [
            "feed",
            "--count",
            &TICKS.to_string(),
            "--rate",
            "8000",
            "--instruments",
            "2000",
        ]
        .map(String::from),
    );
    let feeder = binary(&args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let a = start_run(&db, &nats, &strs(&a_flags));
    let b = start_run(&db, &nats, &strs(&b_flags));
    let mut reader = cluster.servers[2].connect(&db.name);
    wait_cluster_stored(&mut reader, 6_000, Duration::from_secs(120));
    cluster.servers[0].kill();
    wait_cluster_stored(&mut reader, 12_000, Duration::from_secs(120));
    let killed = kill(a);
    let at_kill = stored_cluster_wide(&mut reader);
    assert_eq!(
        at_kill.0, at_kill.1,
        "nothing doubled before the kill: {killed}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let a = start_run(&db, &nats, &strs(&a_flags));
    feeder_done(feeder);
    cluster.servers[0].spawn();
    wait_cluster_stored(&mut reader, TICKS, Duration::from_secs(180));
    let (a, b) = (drain(a), drain(b));
    assert_eq!(
        stored_cluster_wide(&mut reader),
        (TICKS, TICKS, 1, TICKS),
        "{a}\n{b}"
    );
    assert!(
        a.contains("ClickHouse replica failover") || b.contains("ClickHouse replica failover"),
        "{a}\n{b}"
    );
    for id in 0..2 {
        let durable = format!("{}-p{id}", nats.durable);
        let floor = ack_floor_of(&server, &nats, &durable);
        assert!(floor > 0, "partition {id} acked nothing");
    }
    let instruments = scalar(
        &mut reader,
        "SELECT toUInt64(uniqExact(instrument_token)) FROM market_ticks_all",
    );
    assert_eq!(instruments, 2_000);
    for (server, shard) in [(1, 0), (2, 1)] {
        let mut conn = cluster.servers[server].connect(&db.name);
        assert_eq!(
            misplaced(&mut conn, shard),
            0,
            "server {server} holds other shards' instruments"
        );
    }
    // Per instrument, sorted by stream sequence, the receive times never go back:
    // one appliance received each instrument's messages in stream order.
    let out_of_order = scalar(
        &mut reader,
        "SELECT count() FROM (SELECT arraySort((r, s) -> s, groupArray(toUInt64(received_at) * 1000 + received_at_ms), groupArray(stream_seq)) AS rs \
         FROM market_ticks_all GROUP BY instrument_token) \
         WHERE arrayExists((r, i) -> i > 1 AND r < rs[i - 1], rs, arrayEnumerate(rs))",
    );
    assert_eq!(out_of_order, 0, "instruments received out of stream order");
}

/// The ack floor of `durable` on `server`.
fn ack_floor_of(server: &PrivateNats, nats: &Nats, durable: &str) -> u64 {
    let js = alphapt_storage::receive::nats::JetStream::new(Duration::from_secs(2));
    let mut nc = server.connect().unwrap();
    js.consumer_info(&mut nc, &nats.stream, durable)
        .unwrap()
        .expect("the partition's durable exists")
        .ack_floor
        .stream_seq
}

/// A shard whose only server dies mid-feed: its instruments' blocks wait in the
/// spill journal while the other shard goes on storing its own, `/metrics` shows the
/// shard down; when the server is back, the journal drains into it and every message
/// is stored once cluster-wide.
#[test]
fn a_shard_with_no_live_replica_spills_and_catches_up_when_back() {
    const TICKS: u64 = 20_000;
    let Setup {
        mut cluster,
        _zookeeper,
        db,
        nats,
        pg: _pg,
        extra,
    } = sharded("alphapt_ct_spill", "clusterspill");
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let feeder = feeder(&db, &nats, TICKS, 4_000, "json");
    // Overflow mode: a block reaches the journal only when its shard cannot take it.
    let mut flags = extra_refs.clone();
    flags.extend(["--set", "spill.mode=overflow"]);
    let run = start_run(&db, &nats, &flags);
    let mut first = cluster.servers[0].connect(&db.name);
    let local = |conn: &mut Connection| scalar(conn, "SELECT count() FROM market_ticks");
    common::wait_until("the first shard stores", Duration::from_secs(60), || {
        local(&mut first) > 1_000
    });
    cluster.servers[1].kill();
    let at_kill = local(&mut first);
    // The live shard is not held back by the dead one.
    common::wait_until(
        "the first shard stores on with the second down",
        Duration::from_secs(60),
        || local(&mut first) > at_kill + 3_000,
    );
    let (_, metrics) = get(control_addr(&run), "/metrics");
    assert!(
        metrics.contains("alphapt_clickhouse_shard_up{shard=\"2\"} 0\n"),
        "{metrics}"
    );
    let pending = metrics
        .lines()
        .find_map(|l| l.strip_prefix("alphapt_spill_pending_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        pending > 0.0,
        "the second shard's blocks wait in the journal: {metrics}"
    );
    feeder_done(feeder);
    cluster.servers[1].spawn();
    let mut reader = cluster.servers[0].connect(&db.name);
    drain_stored_once_cluster_wide(&mut reader, run, &nats, TICKS);
}

/// A spill journaled for one shard count, started with another: refused (each block
/// would go to its writer's shard under the new count, not its instruments' shard),
/// naming the fix; replayed with the config that wrote it, the new layout starts and
/// every message is stored once.
#[test]
fn a_spill_written_for_another_shard_count_is_refused_until_replayed() {
    const TICKS: u64 = 10_000;
    let Setup {
        mut cluster,
        _zookeeper,
        db,
        nats,
        pg,
        extra: two,
    } = sharded("alphapt_ct_layout", "clusterlayout");
    let one: Vec<String> = [
        format!("clickhouse.shards={}", cluster.addrs()[0]),
        format!("postgres.url={}", pg.url()),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect();
    // One shard: its server dies mid-feed, blocks stay journaled, the appliance is
    // killed.
    let feeder = feeder(&db, &nats, TICKS, 2_500, "json");
    let run = start_run(&db, &nats, &strs(&one));
    let mut first = cluster.servers[0].connect(&db.name);
    common::wait_until("some stored", Duration::from_secs(60), || {
        scalar(&mut first, "SELECT count() FROM market_ticks") > 1_000
    });
    cluster.servers[0].kill();
    std::thread::sleep(Duration::from_millis(1500));
    let killed = kill(run);
    feeder_done(feeder);
    cluster.servers[0].spawn();

    // Two shards over that journal: refused, naming the way out.
    let mut args = sets(&db, &nats);
    args.extend(two.iter().cloned());
    args.extend(["run".to_string(), "--quiet".into()]);
    let child = binary(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, text) = wait_exit(child, Duration::from_secs(60), "the other layout");
    assert!(!status.success(), "{text}\n{killed}");
    assert!(
        text.contains("written for 1 ClickHouse shard(s)") && text.contains("spill replay"),
        "{text}"
    );

    // Replayed with the config that wrote it, then the two-shard run finishes the job.
    let mut args = sets(&db, &nats);
    args.extend(one.iter().cloned());
    args.extend(["spill".to_string(), "replay".into()]);
    let out = binary(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = start_run(&db, &nats, &strs(&two));
    let mut reader = cluster.servers[0].connect(&db.name);
    drain_stored_once_cluster_wide(&mut reader, run, &nats, TICKS);
}
