//! The hot cache on a Redis Cluster (`redis.cluster`, DESIGN §8): three private
//! redis-servers in cluster mode, slots spread by `redis-cli --cluster create`.
//!
//! - The cache writer's pipeline is split by slot owner: keys land on every master,
//!   and a slot being migrated (ASK) or moved (MOVED) is followed, the map learning
//!   only from MOVED.
//! - The appliance over the cluster: slots are resharded by `redis-cli` in the middle
//!   of a feed, every instrument's cached latest tick still equals ClickHouse's, the
//!   writer counted the redirections it followed and no command was refused; `query`
//!   answers from the cluster, and `health` counts the masters (one killed: degraded).
//! - With a replica per master, the master `redis.url` names is killed mid-feed: its
//!   replica takes over, the writer reads the new map from another node, and the
//!   cache ends equal to ClickHouse.
//!
//! Each test has its own cluster, database, streams and key prefix.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alphapt_storage::cache::cluster::key_slot;
use alphapt_storage::cache::redis::Link;
use alphapt_storage::cache::resp::Pipeline;
use alphapt_storage::native::Connection;
use common::e2e::*;
use common::private_redis_cluster::{Node, PrivateRedisCluster};

fn link(cluster: &PrivateRedisCluster) -> Link {
    Link::connect(
        &cluster.url(),
        "",
        &Default::default(),
        Duration::from_secs(2),
        true,
        &[],
    )
    .expect("cluster link")
}

/// The appliance's `[redis]` for `cluster`, with short timeouts so a fault and the
/// return are seen within a fraction of a second.
fn cluster_sets(cluster: &PrivateRedisCluster) -> Vec<String> {
    vec![
        format!("redis.url={}", cluster.url()),
        "redis.cluster=true".into(),
        "redis.hash_tags=true".into(),
        "redis.timeout_ms=500".into(),
        "redis.backoff_max_ms=200".into(),
    ]
}

/// `--set` before each of `sets`.
fn flags(sets: &[String]) -> Vec<&str> {
    sets.iter().flat_map(|s| ["--set", s.as_str()]).collect()
}

fn keys_in_slot(node: &Node, slot: u16) -> u64 {
    redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut node.conn())
        .unwrap()
}

fn cluster_cmd(node: &Node, args: &[&str]) {
    let mut cmd = redis::cmd("CLUSTER");
    for a in args {
        cmd.arg(*a);
    }
    let _: String = cmd.query(&mut node.conn()).unwrap();
}

/// The node the link's map names for `key`.
fn mapped(link: &Link, key: &str) -> String {
    link.nodes()[link.node_of(key.as_bytes()).unwrap()].clone()
}

#[test]
fn a_pipeline_goes_to_each_slot_owner_and_follows_ask_then_moved() {
    let cluster = PrivateRedisCluster::start(3);
    let mut link = link(&cluster);
    let mut p = Pipeline::new();
    for token in 0..300u32 {
        let key = format!("t:tick:{{{token}}}");
        p.command(4)
            .arg(b"HSET")
            .arg(key.as_bytes())
            .arg(b"v")
            .arg_fmt(format_args!("{token}"));
    }
    p.command(1).arg(b"PING");
    let replies = link.request(&p).unwrap();
    assert_eq!(replies.len(), 301);
    assert!(
        replies[..300].iter().all(|r| *r == redis::Value::Int(1)),
        "{replies:?}"
    );
    let sizes: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| redis::cmd("DBSIZE").query(&mut n.conn()).unwrap())
        .collect();
    assert_eq!(sizes.iter().sum::<u64>(), 300, "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n > 50),
        "spread over every master: {sizes:?}"
    );

    // Slot of token 7 being migrated from its owner to another master: a key the
    // owner does not hold gets ASK, the command goes to the importing node once, and
    // the map keeps the owner.
    let key = "t:tick:{7}";
    let slot = key_slot(key.as_bytes());
    let owner = cluster
        .nodes
        .iter()
        .position(|n| keys_in_slot(n, slot) == 1)
        .expect("some master holds token 7");
    let target = (owner + 1) % 3;
    let (from, to) = (&cluster.nodes[owner], &cluster.nodes[target]);
    let owner_addr = format!("127.0.0.1:{}", from.port);
    assert_eq!(mapped(&link, key), owner_addr);
    cluster_cmd(to, &["SETSLOT", &slot.to_string(), "IMPORTING", &from.id()]);
    cluster_cmd(from, &["SETSLOT", &slot.to_string(), "MIGRATING", &to.id()]);
    let mut p = Pipeline::new();
    p.command(4)
        .arg(b"HSET")
        .arg(b"t:tick:{7}:history")
        .arg(b"v")
        .arg(b"new");
    p.command(4)
        .arg(b"HSET")
        .arg(key.as_bytes())
        .arg(b"v")
        .arg(b"old");
    let replies = link.request(&p).unwrap();
    assert_eq!(replies, [redis::Value::Int(1), redis::Value::Int(0)]);
    assert_eq!(
        keys_in_slot(to, slot),
        1,
        "the new key went to the importing node"
    );
    assert_eq!(
        keys_in_slot(from, slot),
        1,
        "the old key stayed with the owner"
    );
    assert_eq!(mapped(&link, key), owner_addr, "ASK does not move the map");

    // The migration finished: the owner answers MOVED, which the map learns.
    let _: String = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to.port)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(key)
        .query(&mut from.conn())
        .unwrap();
    for node in &cluster.nodes {
        cluster_cmd(node, &["SETSLOT", &slot.to_string(), "NODE", &to.id()]);
    }
    let mut p = Pipeline::new();
    p.command(4)
        .arg(b"HSET")
        .arg(key.as_bytes())
        .arg(b"v")
        .arg(b"moved");
    assert_eq!(link.request(&p).unwrap(), [redis::Value::Int(0)]);
    assert_eq!(mapped(&link, key), format!("127.0.0.1:{}", to.port));
    assert_eq!(link.take_redirects(), 2, "one ASK, one MOVED");
    let value: String = redis::cmd("HGET")
        .arg(key)
        .arg("v")
        .query(&mut to.conn())
        .unwrap();
    assert_eq!(value, "moved");
    // The next request goes straight to the new owner.
    assert_eq!(link.request(&p).unwrap(), [redis::Value::Int(0)]);
    assert_eq!(link.take_redirects(), 0);
}

/// `HGETALL key` from whichever master owns it (the others answer MOVED; a dead
/// node does not answer).
fn hgetall(cluster: &PrivateRedisCluster, key: &str) -> HashMap<String, String> {
    cluster
        .nodes
        .iter()
        .find_map(|n| {
            redis::cmd("HGETALL")
                .arg(key)
                .query::<HashMap<String, String>>(&mut n.try_conn().ok()?)
                .ok()
        })
        .unwrap_or_default()
}

/// Polls until every instrument's cached latest tick is ClickHouse's (at most 10 s);
/// what still differs.
fn cache_mismatches(
    cluster: &PrivateRedisCluster,
    conn: &mut Connection,
    prefix: &str,
) -> Vec<String> {
    let expected = latest_good(conn);
    assert_eq!(expected.len(), 100);
    let started = Instant::now();
    let mut wrong = Vec::new();
    while started.elapsed() < Duration::from_secs(10) {
        wrong = expected
            .iter()
            .filter_map(|(token, seq)| {
                let h = hgetall(cluster, &format!("{prefix}tick:{{{token}}}"));
                let got = h.get("stream_seq").and_then(|s| s.parse::<u64>().ok());
                (got != Some(*seq)).then(|| format!("{token}: cached {got:?}, stored {seq}"))
            })
            .collect();
        if wrong.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wrong
}

/// ClickHouse's last good tick per instrument: token → stream_seq.
fn latest_good(conn: &mut Connection) -> HashMap<u32, u64> {
    let q = conn
        .query(
            "SELECT instrument_token AS t, argMax(stream_seq, \
             (toInt64(toUnixTimestamp(timestamp)) * 1000 + timestamp_ms, stream_seq)) AS s \
             FROM market_ticks WHERE bitAnd(validation_flags, 1086) = 0 GROUP BY t",
        )
        .unwrap();
    let (t, s) = (q.column("t"), q.column("s"));
    (0..t.len())
        .map(|i| (t[i].as_u64().unwrap() as u32, s[i].as_u64().unwrap()))
        .collect()
}

#[test]
fn the_cache_follows_a_reshard_mid_feed_and_query_and_health_read_the_cluster() {
    const COUNT: u64 = 30_000;
    let (db, mut conn) = tables("rclus");
    let mut cluster = PrivateRedisCluster::start(3);
    let nats = Nats::new("rclus");
    let redis_sets = cluster_sets(&cluster);
    let run = start_run(&db, &nats, &flags(&redis_sets));
    let control = control_addr(&run);
    // 3,000 ticks/s over 100 instruments for 10 s: every instrument is written again
    // after the reshard (a few seconds), so its cached tick can only be right if the
    // writer followed it.
    let feed = feeder(&db, &nats, COUNT, 3_000, "json");
    wait_until_stored(&mut conn, COUNT / 4);
    let (from, to) = (&cluster.nodes[0], &cluster.nodes[1]);
    let prefix = db.redis_prefix();
    let slot_of = |t: &u32| key_slot(format!("{prefix}tick:{{{t}}}").as_bytes());
    let on_from: Vec<u32> = latest_good(&mut conn)
        .into_keys()
        .filter(|t| keys_in_slot(from, slot_of(t)) > 0)
        .collect();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{}", from.port)])
        .args(["--cluster-from", &from.id(), "--cluster-to", &to.id()])
        .args(["--cluster-slots", "1500", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reshard: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let resharded_at = stored(&mut conn).0;
    assert!(
        resharded_at < COUNT * 9 / 10,
        "the reshard ended before the feed: {resharded_at}"
    );
    feeder_done(feed);
    wait_stored(&mut conn, COUNT, Duration::from_secs(120));

    // Every instrument's cached latest tick is ClickHouse's, wherever its slot went.
    let wrong = cache_mismatches(&cluster, &mut conn, &prefix);
    assert!(wrong.is_empty(), "{wrong:#?}");
    let expected = latest_good(&mut conn);
    let moved = on_from
        .iter()
        .filter(|t| keys_in_slot(to, slot_of(t)) > 0 && keys_in_slot(from, slot_of(t)) == 0)
        .count();
    let redirects = metric(control, "alphapt_redis_redirects_total");
    let refused = metric(control, "alphapt_redis_refused_total");
    eprintln!("stored {resharded_at} of {COUNT} when the reshard ended; redirects followed {redirects}; instruments moved {moved} of the {} on the source node", on_from.len());
    assert!(
        moved > 0,
        "the reshard moved none of the feed's instruments"
    );
    assert!(
        redirects > 0,
        "the writer followed the reshard's redirections"
    );
    assert_eq!(refused, 0);

    // `query` reads each instrument from its master; `health` counts the masters.
    let cli = |args: &[&str]| {
        let mut all = sets(&db, &nats);
        for s in &redis_sets {
            all.extend(["--set".to_string(), s.clone()]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let out = binary(&all).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let both = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.success(), stdout, both)
    };
    let mut tokens: Vec<u32> = expected.keys().copied().collect();
    tokens.sort_unstable();
    let list: Vec<String> = tokens.iter().take(30).map(u32::to_string).collect();
    let (ok, rows, said) = cli(&[
        "query",
        "ticks",
        "--tokens",
        &list.join(","),
        "--minutes",
        "1440",
        "--limit",
        "2",
        "--format",
        "csv",
    ]);
    assert!(ok, "{said}");
    let from_redis = rows.lines().filter(|l| l.ends_with(",redis")).count();
    assert_eq!(
        from_redis, 60,
        "two rows of each of 30 instruments from Redis:\n{rows}"
    );
    assert!(!said.contains("Redis unreachable"), "{said}");
    let summary = drain(run);
    let health = || {
        let (_, text, said) = cli(&["health", "--json"]);
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {said}"));
        let redis = json["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "redis")
            .cloned()
            .unwrap();
        (
            redis["status"].as_str().unwrap().to_owned(),
            redis.to_string(),
        )
    };
    let (status, detail) = health();
    assert_eq!(status, "up", "{detail}");
    assert!(detail.contains("3 of 3 masters"), "{detail}");
    cluster.nodes[2].kill();
    let (status, detail) = health();
    assert_eq!(status, "degraded", "{detail}");
    assert!(detail.contains("2 of 3 masters"), "{detail}");
    assert!(summary.contains("stored"), "{summary}");
}

fn wait_until_stored(conn: &mut Connection, at_least: u64) {
    common::wait_until("a quarter stored", Duration::from_secs(60), || {
        stored(conn).0 >= at_least
    });
}

/// The seed master (the node `redis.url` names) killed mid-feed: its replica takes
/// over, the writer reads the new map from another node and rewrites every
/// instrument, and the cache ends equal to ClickHouse; no tick is lost to ClickHouse.
#[test]
fn the_seed_master_killed_mid_feed_fails_over_to_its_replica() {
    const COUNT: u64 = 30_000;
    let (db, mut conn) = tables("rclfail");
    let mut cluster = PrivateRedisCluster::start_with_replicas(3, 1);
    assert_eq!(cluster.nodes[0].role(), "master");
    let nats = Nats::new("rclfail");
    let run = start_run(&db, &nats, &flags(&cluster_sets(&cluster)));
    let control = control_addr(&run);
    // 10 s of feed: the failover (2 s node timeout, then an election) ends inside it.
    let feed = feeder(&db, &nats, COUNT, 3_000, "json");
    wait_until_stored(&mut conn, COUNT / 4);
    let errors_before = metric(control, "alphapt_redis_write_errors_total");
    cluster.nodes[0].kill();
    // The replica of the dead master is promoted (cluster-node-timeout 2 s).
    let survivors: Vec<&Node> = cluster.nodes[1..].iter().collect();
    common::wait_until(
        "a replica took over the dead master's slots",
        Duration::from_secs(30),
        || survivors.iter().filter(|n| n.role() == "master").count() == 3,
    );
    cluster.wait_ok_on(&survivors);
    let promoted_at = stored(&mut conn).0;
    feeder_done(feed);
    wait_stored(&mut conn, COUNT, Duration::from_secs(120));
    let wrong = cache_mismatches(&cluster, &mut conn, &db.redis_prefix());
    let errors = metric(control, "alphapt_redis_write_errors_total") - errors_before;
    let summary = drain(run);
    eprintln!("failover done at {promoted_at} of {COUNT} stored; {errors} failed writes during it");
    assert!(wrong.is_empty(), "{wrong:#?}\n{summary}");
    assert!(
        promoted_at < COUNT,
        "the failover ended after the feed: {promoted_at}"
    );
    assert!(errors > 0, "the dead master was noticed");
    assert_eq!(stored(&mut conn), (COUNT, COUNT, 1, COUNT), "{summary}");
}

/// A cluster node configured as one server (`redis.cluster` off): the writer stops at
/// the first MOVED and says which setting is wrong, instead of counting every other
/// node's key as refused for ever; `health` says the same.
#[test]
fn a_cluster_node_written_as_one_server_is_named_as_a_misconfiguration() {
    const COUNT: u64 = 2_000;
    let (db, mut conn) = tables("rclmis");
    let cluster = PrivateRedisCluster::start(3);
    let nats = Nats::new("rclmis");
    let url = format!("redis.url={}", cluster.url());
    let run = start_run(
        &db,
        &nats,
        &["--set", &url, "--set", "redis.backoff_max_ms=200"],
    );
    feed_all(&db, &nats, COUNT, "0", "100");
    wait_stored(&mut conn, COUNT, Duration::from_secs(60));
    common::wait_until(
        "the misconfiguration logged",
        Duration::from_secs(10),
        || run.output().contains("set `redis.cluster = true`"),
    );
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (COUNT, COUNT, 1, COUNT), "{summary}");
    let mut args = sets(&db, &nats);
    args.extend(["--set".into(), url, "health".into(), "--json".into()]);
    let out = binary(&args).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let redis = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "redis")
        .unwrap();
    assert_eq!(redis["status"], "degraded", "{redis}");
    assert!(
        redis["detail"]
            .as_str()
            .unwrap()
            .contains("redis.cluster = true"),
        "{redis}"
    );
}
