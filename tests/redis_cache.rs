//! The Redis hot cache on the real servers: after a feed through JetStream,
//! `tick:{token}` is the last stored good tick of every instrument, the history holds
//! the newest ticks in exchange-time order, the 1m bar equals ClickHouse's for the same
//! minute (5m and 15m equal the raw ticks' bars), `signal:{strategy}:{token}` is the
//! latest signal, and `instrument:{token}` follows PostgreSQL's `instruments` through
//! an update and a delete. Then a private Redis is killed mid-feed and started again
//! empty: every tick still reaches ClickHouse, the appliance's memory stays flat, and
//! the cache is whole again within a second of Redis's return; at the end each history
//! is its instrument's newest stored ticks, no hole where Redis was away.

mod common;
mod ohlc_fixture;

use std::collections::{BTreeMap, HashMap};
use std::process::Child;
use std::time::{Duration, Instant};

use alphapt_storage::native::Connection;
use common::e2e::*;
use common::pg::PgDb;
use common::private_redis::PrivateRedis;
use common::{wait_until, TestDb};

const TICKS: u64 = 6_000;

/// The mid-feed fault tests run one at a time: four appliances at 50k ticks/s on two
/// cores would measure each other (memory, catch-up time), not the fault.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
const HISTORY_LEN: usize = 50;

fn redis(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

fn hgetall(conn: &mut redis::Connection, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query(conn).unwrap()
}

/// The exchange time in ms, on either schema.
fn ms(conn: &Connection) -> &'static str {
    if conn.server().is_modern() {
        "toUnixTimestamp64Milli(timestamp)"
    } else {
        "toInt64(toUnixTimestamp(timestamp)) * 1000 + timestamp_ms"
    }
}

/// ClickHouse's last good tick per instrument: token → (stream_seq, price, volume).
fn latest_good(conn: &mut Connection) -> BTreeMap<u32, (u64, f64, u64)> {
    let ms = ms(conn);
    let q = conn
        .query(&format!(
            "SELECT instrument_token AS t, argMax(stream_seq, ({ms}, stream_seq)) AS s, \
             argMax(last_price, ({ms}, stream_seq)) AS p, argMax(volume_traded, ({ms}, stream_seq)) AS v \
             FROM market_ticks WHERE bitAnd(validation_flags, 1086) = 0 GROUP BY t"
        ))
        .unwrap();
    let (t, s, p, v) = (q.column("t"), q.column("s"), q.column("p"), q.column("v"));
    (0..t.len())
        .map(|i| {
            (
                t[i].as_u64().unwrap() as u32,
                (
                    s[i].as_u64().unwrap(),
                    p[i].as_f64().unwrap(),
                    v[i].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Tokens of every `tick:{token}` key (histories left out).
fn cached_tokens(conn: &mut redis::Connection, prefix: &str) -> Vec<u32> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}tick:*"))
        .query(conn)
        .unwrap();
    let mut tokens: Vec<u32> = keys
        .iter()
        .filter(|k| !k.ends_with(":history"))
        .map(|k| k.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    tokens.sort_unstable();
    tokens
}

/// Differences between the cached latest ticks and ClickHouse's (empty when equal).
fn latest_mismatches(
    redis_conn: &mut redis::Connection,
    conn: &mut Connection,
    prefix: &str,
) -> Vec<String> {
    let expected = latest_good(conn);
    let mut wrong = Vec::new();
    let cached = cached_tokens(redis_conn, prefix);
    if cached != expected.keys().copied().collect::<Vec<_>>() {
        wrong.push(format!(
            "cached tokens {cached:?}, stored {:?}",
            expected.keys()
        ));
    }
    for (token, (seq, price, volume)) in &expected {
        let h = hgetall(redis_conn, &format!("{prefix}tick:{token}"));
        let got = (
            h.get("stream_seq").and_then(|v| v.parse::<u64>().ok()),
            h.get("last_price").and_then(|v| v.parse::<f64>().ok()),
            h.get("volume_traded").and_then(|v| v.parse::<u64>().ok()),
        );
        if got != (Some(*seq), Some(*price), Some(*volume)) {
            wrong.push(format!(
                "{token}: cached {got:?}, stored {:?}",
                (seq, price, volume)
            ));
        }
    }
    wrong
}

/// A run writing to `server`, with short Redis timeouts and backoff so a fault and
/// the return are seen within a fraction of a second.
fn start_on_private_redis(db: &TestDb, nats: &Nats, server: &PrivateRedis) -> Running {
    start_run(
        db,
        nats,
        &[
            "--set",
            &format!("redis.url={}", server.url()),
            "--set",
            "redis.timeout_ms=300",
            "--set",
            "redis.backoff_max_ms=200",
        ],
    )
}

/// Feeds `count` ticks at 50k/s in the background and waits until a third is stored:
/// the journal inserter has grown its buffers to a full second of blocks by then, so
/// a fault from here on is measured, not the warm-up.
fn feed_to_a_third(db: &TestDb, nats: &Nats, conn: &mut Connection, count: u64) -> Child {
    let feed = feeder(db, nats, count, 50_000, "json");
    wait_until("a third stored", Duration::from_secs(60), || {
        stored(conn).0 > count / 3
    });
    feed
}

/// Polls until every cached latest tick matches ClickHouse, at most 5 s; what still
/// differs, and how long it took.
fn cache_whole(
    r: &mut redis::Connection,
    conn: &mut Connection,
    prefix: &str,
) -> (Vec<String>, Duration) {
    let started = Instant::now();
    let mut wrong = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        wrong = latest_mismatches(r, conn, prefix);
        if wrong.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (wrong, started.elapsed())
}

/// Each instrument's `tick:{token}:history` holds exactly the times of its newest `len`
/// stored ticks, ascending, each member's time equal to its score.
fn assert_histories(
    conn: &mut Connection,
    r: &mut redis::Connection,
    prefix: &str,
    tokens: &[u32],
    len: usize,
) {
    let rows = alphapt_storage::query::ticks(
        conn,
        tokens,
        30 * 24 * 60,
        len as u64,
        alphapt_storage::runtime::clock::now_ms() + 86_400_000,
        false,
    )
    .unwrap();
    let mut newest: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
    for row in &rows {
        newest
            .entry(row.instrument_token)
            .or_default()
            .push((row.timestamp_ms, row.stream_seq));
    }
    assert_eq!(newest.len(), tokens.len(), "instruments stored");
    for (token, mut stored) in newest {
        let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("{prefix}tick:{token}:history"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(r)
            .unwrap();
        assert_eq!(entries.len(), len.min(stored.len()), "{token}");
        let cached: Vec<(i64, u64)> = entries
            .iter()
            .map(|(member, score)| {
                let j: serde_json::Value = serde_json::from_str(member).unwrap();
                assert_eq!(j["timestamp_ms"].as_i64(), Some(*score as i64));
                (*score as i64, j["stream_seq"].as_u64().unwrap())
            })
            .collect();
        assert!(cached.windows(2).all(|w| w[0].0 <= w[1].0), "{token} order");
        stored.sort_unstable();
        let times = |v: &[(i64, u64)]| v.iter().map(|e| e.0).collect::<Vec<_>>();
        assert_eq!(times(&cached), times(&stored), "{token} history times");
    }
}

fn publish_signals(nats: &Nats) -> u64 {
    const SIGNALS: u64 = 300;
    nats.publish_signals((0..SIGNALS).map(|i| {
        let strategy = ["mom", "rev"][(i % 2) as usize];
        let token = 256_265 + (i % 10) * 7;
        // Every 50th is stamped earlier than the ones before it: not the latest.
        let ts = if i % 50 == 49 {
            1_764_000_000_000 - 5_000
        } else {
            1_764_000_000_000 + i * 1_000
        };
        let payload = format!(
            r#"{{"strategy_id":"{strategy}","strategy_type":"ml","instrument_token":{token},"tradingsymbol":"SYM","signal_type":"S{i}","strength":0.5,"confidence":0.75,"price":{}.05,"quantity":{i},"timestamp":{ts}}}"#,
            1000 + i
        );
        (format!("{strategy}.{token}"), payload)
    }));
    SIGNALS
}

#[test]
fn the_cache_holds_what_clickhouse_stored() {
    let _serial = one_at_a_time();
    let db = TestDb::new("rcache");
    let mut conn = db.connect(None);
    ohlc_fixture::migrate_all(&mut conn);
    let pg = PgDb::new();
    pg.execute(
        "INSERT INTO instruments (instrument_token, tradingsymbol, exchange, segment, tick_size, lot_size, upper_circuit_limit, lower_circuit_limit) VALUES \
         (9000001, 'INFY', 'NSE', 'NSE', 0.05, 1, 2000, 1000), (9000002, 'TCS', 'NSE', 'NSE', 0.05, 150, NULL, NULL)",
    );
    let prefix = db.redis_prefix();
    let mut r = redis(&common::redis_url());
    let nats = Nats::new("rcache");
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            &format!("postgres.url={}", pg.url()),
            "--set",
            &format!("redis.history_len={HISTORY_LEN}"),
        ],
    );

    // Reference data: loaded, then an update and a delete followed through NOTIFY.
    let instrument =
        |r: &mut redis::Connection, token: u32| hgetall(r, &format!("{prefix}instrument:{token}"));
    wait_until("instrument:9000001", Duration::from_secs(20), || {
        instrument(&mut r, 9_000_001)
            .get("tradingsymbol")
            .map(String::as_str)
            == Some("INFY")
    });
    let tcs = instrument(&mut r, 9_000_002);
    assert_eq!(tcs["lot_size"], "150");
    assert_eq!(tcs["upper_circuit_limit"], "", "NULL is an empty field");
    pg.execute("UPDATE instruments SET tradingsymbol = 'INFY-EQ' WHERE instrument_token = 9000001");
    pg.execute("DELETE FROM instruments WHERE instrument_token = 9000002");
    wait_until("the update and the delete", Duration::from_secs(10), || {
        instrument(&mut r, 9_000_001)
            .get("tradingsymbol")
            .map(String::as_str)
            == Some("INFY-EQ")
            && instrument(&mut r, 9_000_002).is_empty()
    });

    // A feed gentle enough (30 ticks/s per instrument) that no history ring overflows.
    let feed = feeder(&db, &nats, TICKS, 3_000, "json");
    let signals = publish_signals(&nats);
    feeder_done(feed);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    wait_until("signals stored", Duration::from_secs(60), || {
        conn.query("SELECT count() FROM strategy_signals")
            .unwrap()
            .scalar()
            .unwrap()
            .as_u64()
            == Some(signals)
    });
    let summary = drain(run);
    assert!(summary.contains("redis cache: "), "{summary}");

    // Latest good tick per instrument.
    let wrong = latest_mismatches(&mut r, &mut conn, &prefix);
    assert!(wrong.is_empty(), "{wrong:#?}\n{summary}");
    let expected = latest_good(&mut conn);
    let token = *expected.keys().next().unwrap();
    let h = hgetall(&mut r, &format!("{prefix}tick:{token}"));
    for field in [
        "exchange",
        "tradingsymbol",
        "last_quantity",
        "average_price",
        "open",
        "high",
        "low",
        "close",
        "oi",
        "depth_buy",
        "depth_sell",
        "data_quality_score",
        "validation_flags",
        "timestamp",
        "timestamp_ms",
        "received_at",
        "received_at_ms",
    ] {
        assert!(h.contains_key(field), "tick hash lacks {field}: {h:?}");
    }
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}tick:{token}"))
        .query(&mut r)
        .unwrap();
    assert!(ttl > 0 && ttl <= 86_400, "ttl {ttl}");

    // History: the newest HISTORY_LEN ticks, ascending exchange time.
    let tokens: Vec<u32> = expected.keys().copied().collect();
    assert_histories(&mut conn, &mut r, &prefix, &tokens, HISTORY_LEN);

    // Bars: 1m against ohlc_1m, 5m and 15m against the raw ticks.
    let ms = ms(&conn);
    for token in &tokens {
        for (label, tf_ms) in [("1m", 60_000i64), ("5m", 300_000), ("15m", 900_000)] {
            let bar = hgetall(&mut r, &format!("{prefix}ohlc:{token}:{label}"));
            let start: i64 = bar["start_ms"].parse().unwrap();
            let sql = if label == "1m" {
                format!(
                    "SELECT argMinMerge(open) AS o, maxMerge(high) AS h, minMerge(low) AS l, argMaxMerge(close) AS c, \
                     sumMerge(volume) AS v, countMerge(tick_count) AS n FROM ohlc_1m \
                     WHERE instrument_token = {token} AND minute = toDateTime({}, 'UTC')",
                    start / 1000
                )
            } else {
                format!(
                    "SELECT argMin(last_price, ({ms}, stream_seq)) AS o, max(last_price) AS h, min(last_price) AS l, \
                     argMax(last_price, ({ms}, stream_seq)) AS c, sum(toUInt64(last_quantity)) AS v, count() AS n \
                     FROM market_ticks WHERE instrument_token = {token} AND bitAnd(validation_flags, 1086) = 0 \
                     AND {ms} >= {start} AND {ms} < {}",
                    start + tf_ms
                )
            };
            let q = conn.query(&sql).unwrap();
            let f = |name: &str| q.column(name)[0].as_f64().unwrap();
            let u = |name: &str| q.column(name)[0].as_u64().unwrap();
            let cached = |name: &str| bar[name].parse::<f64>().unwrap();
            assert_eq!(
                (
                    cached("open"),
                    cached("high"),
                    cached("low"),
                    cached("close")
                ),
                (f("o"), f("h"), f("l"), f("c")),
                "{token} {label} prices"
            );
            assert_eq!(
                (
                    bar["volume"].parse::<u64>().unwrap(),
                    bar["ticks"].parse::<u64>().unwrap()
                ),
                (u("v"), u("n")),
                "{token} {label} volume and ticks"
            );
        }
    }

    // Latest signal per (strategy, token).
    let q = conn
        .query(
            "SELECT strategy_id AS s, instrument_token AS t, argMax(stream_seq, (timestamp, stream_seq)) AS q \
             FROM strategy_signals GROUP BY s, t",
        )
        .unwrap();
    let (s, t, seq) = (q.column("s"), q.column("t"), q.column("q"));
    assert_eq!(s.len(), 10, "strategy and token go together: 10 pairs");
    for i in 0..s.len() {
        let h = hgetall(
            &mut r,
            &format!(
                "{prefix}signal:{}:{}",
                s[i].as_str().unwrap(),
                t[i].as_u64().unwrap()
            ),
        );
        assert_eq!(
            h.get("stream_seq").map(String::as_str),
            Some(seq[i].as_u64().unwrap().to_string().as_str()),
            "{h:?}"
        );
        assert_eq!(h["strategy_type"], "ml");
    }
}

/// A backlog consumed flat out with a flush every 200 ms: each instrument gets a
/// hundred or more ticks between two flushes, more than the 8-entry ring per slot the
/// history once was (which restarted nearly every history at each flush and lost
/// most entries). Every history is still exactly its instrument's newest
/// `history_len` stored ticks, and none was reported missing.
#[test]
fn histories_stay_whole_when_ticks_come_faster_than_flushes() {
    let _serial = one_at_a_time();
    const COUNT: u64 = 60_000;
    const LEN: usize = 300;
    let (db, mut conn) = tables("rhist");
    let prefix = db.redis_prefix();
    let nats = Nats::new("rhist");
    feeder_done(feeder(&db, &nats, COUNT, 0, "json"));
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            "redis.flush_interval_ms=200",
            "--set",
            &format!("redis.history_len={LEN}"),
        ],
    );
    wait_stored(&mut conn, COUNT, Duration::from_secs(120));
    let summary = drain(run);
    assert!(!summary.contains("missing from histories"), "{summary}");
    let tokens = cached_tokens(&mut redis(&common::redis_url()), &prefix);
    assert_eq!(tokens.len(), 100, "{tokens:?}");
    let mut r = redis(&common::redis_url());
    assert_histories(&mut conn, &mut r, &prefix, &tokens, LEN);
}

/// Anonymous resident memory: the heap, not the spill's mapped file pages.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn redis_killed_mid_feed_costs_no_tick_and_the_cache_refills_on_return() {
    let _serial = one_at_a_time();
    const COUNT: u64 = 300_000;
    let (db, mut conn) = tables("rdown");
    let mut server = PrivateRedis::start();
    let prefix = db.redis_prefix();
    let nats = Nats::new("rdown");
    let run = start_on_private_redis(&db, &nats, &server);
    // 50k ticks/s for 6 s: the outage falls in the middle of it (the perf harness
    // measures the flat-out rate with Redis down).
    let feed = feed_to_a_third(&db, &nats, &mut conn, COUNT);
    server.kill();
    let at_kill = stored(&mut conn).0;
    // Memory over two seconds of the outage, after the first second's warm-up of
    // blocks and buffers: the cache tables are fixed, so nothing may pile up. Alone
    // on the box it grows 1–3 MB here; the bound leaves room for the journal
    // inserter's buffers on a loaded CI box, and still catches anything kept per
    // tick (100k ticks pass in those two seconds).
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(run.pid());
    std::thread::sleep(Duration::from_secs(2));
    let during = rss_kib(run.pid());
    assert!(
        stored(&mut conn).0 > at_kill || at_kill == COUNT,
        "ingestion went on with Redis down"
    );
    assert!(
        during < before + 64 * 1024,
        "memory grew from {before} KiB to {during} KiB with Redis down"
    );
    feeder_done(feed);
    wait_stored(&mut conn, COUNT, Duration::from_secs(120));
    assert_eq!(stored(&mut conn), (COUNT, COUNT, 1, COUNT));
    // Back, empty: the latest state of every instrument is written again at once.
    server.spawn();
    let mut r = redis(&server.url());
    let (wrong, caught_up) = cache_whole(&mut r, &mut conn, &prefix);
    let summary = drain(run);
    eprintln!("stored {at_kill} of {COUNT} at the kill; cache whole {caught_up:?} after Redis returned; anonymous RSS {before} -> {during} KiB\n{summary}");
    assert!(wrong.is_empty(), "{wrong:#?}\n{summary}");
    // The histories came back whole too: each is its instrument's newest stored
    // ticks, with no hole where Redis was away.
    let tokens = cached_tokens(&mut r, &prefix);
    let len = alphapt_storage::config::Config::default().redis.history_len as usize;
    assert_histories(&mut conn, &mut r, &prefix, &tokens, len);
    assert!(
        caught_up < Duration::from_secs(2),
        "cache whole again {caught_up:?} after Redis returned"
    );
    assert!(summary.contains("failed writes"), "{summary}");
}

/// PostgreSQL "stopped" mid-feed: a proxy in front of it cuts every connection and
/// refuses new ones for three seconds, and an instrument changes meanwhile (its NOTIFY
/// goes nowhere). ClickHouse gets every tick, memory stays flat, the audit rows kept
/// during the outage are written when it ends (they add up to ClickHouse's rows), and
/// `instrument:{token}` in Redis shows the change soon after the return (the refdata
/// thread reloads everything on reconnect).
#[test]
fn postgres_cut_mid_feed_costs_no_tick_and_the_slow_paths_catch_up() {
    let _serial = one_at_a_time();
    const COUNT: u64 = 300_000;
    let (db, mut conn) = tables("pgdown");
    let pg = PgDb::new();
    pg.execute(
        "INSERT INTO instruments (instrument_token, tradingsymbol, exchange, tick_size) VALUES (9000003, 'WIPRO', 'NSE', 0.05)",
    );
    let admin = url::Url::parse(&common::pg::admin_url()).unwrap();
    let proxy = common::proxy::Proxy::start(admin.port().unwrap_or(5432));
    let mut via_proxy = url::Url::parse(&pg.url()).unwrap();
    via_proxy.set_port(Some(proxy.port)).unwrap();
    let prefix = db.redis_prefix();
    let mut r = redis(&common::redis_url());
    let nats = Nats::new("pgdown");
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            &format!("postgres.url={via_proxy}"),
            "--set",
            "postgres.backoff_max_ms=200",
            "--set",
            "postgres.connect_timeout_ms=500",
        ],
    );
    let symbol = |r: &mut redis::Connection| {
        hgetall(r, &format!("{prefix}instrument:9000003"))
            .get("tradingsymbol")
            .cloned()
    };
    wait_until("instrument:9000003", Duration::from_secs(20), || {
        symbol(&mut r).as_deref() == Some("WIPRO")
    });
    let feed = feed_to_a_third(&db, &nats, &mut conn, COUNT);
    proxy.down();
    let at_cut = stored(&mut conn).0;
    pg.execute(
        "UPDATE instruments SET tradingsymbol = 'WIPRO-EQ' WHERE instrument_token = 9000003",
    );
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(run.pid());
    std::thread::sleep(Duration::from_secs(2));
    let during = rss_kib(run.pid());
    assert!(
        stored(&mut conn).0 > at_cut || at_cut == COUNT,
        "ingestion went on with PostgreSQL away"
    );
    assert!(
        during < before + 64 * 1024,
        "memory grew from {before} KiB to {during} KiB with PostgreSQL away"
    );
    proxy.up();
    let back = Instant::now();
    wait_until(
        "the change after PostgreSQL's return",
        Duration::from_secs(10),
        || symbol(&mut r).as_deref() == Some("WIPRO-EQ"),
    );
    let caught_up = back.elapsed();
    feeder_done(feed);
    wait_stored(&mut conn, COUNT, Duration::from_secs(120));
    let summary = drain(run);
    eprintln!("stored {at_cut} of {COUNT} at the cut; instrument whole {caught_up:?} after PostgreSQL returned; anonymous RSS {before} -> {during} KiB\n{summary}");
    assert_eq!(stored(&mut conn), (COUNT, COUNT, 1, COUNT));
    let audited: i64 = pg
        .client()
        .query_one(
            "SELECT coalesce(sum(rows), 0)::bigint FROM ingest_audit \
             WHERE table_name = 'market_ticks' AND destination = 'clickhouse'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        audited as u64, COUNT,
        "audit rows kept through the outage: {summary}"
    );
}

/// Redis refusing our password (REDIS_PASSWORD wrong): every write is refused and
/// retried with backoff, ClickHouse gets every tick, the summary says the cache is
/// behind, and nothing was written.
#[test]
fn redis_refusing_auth_costs_no_tick_and_is_reported() {
    let _serial = one_at_a_time();
    const COUNT: u64 = 20_000;
    let (db, mut conn) = tables("rauth");
    let server = PrivateRedis::start_with(Some("right-one"));
    let nats = Nats::new("rauth");
    let run = start_run_env(
        &db,
        &nats,
        &[
            "--set",
            &format!("redis.url={}", server.url()),
            "--set",
            "redis.backoff_max_ms=100",
        ],
        &[("REDIS_PASSWORD", "wrong-one")],
    );
    let feed = feeder(&db, &nats, COUNT, 0, "json");
    feeder_done(feed);
    wait_stored(&mut conn, COUNT, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (COUNT, COUNT, 1, COUNT));
    assert!(summary.contains("failed writes"), "{summary}");
    assert!(summary.contains("the cache is behind"), "{summary}");
    assert!(
        !summary.contains("wrong-one"),
        "a secret in the output: {summary}"
    );
    let mut r = redis(&format!("redis://:right-one@127.0.0.1:{}", server.port));
    let keys: u64 = redis::cmd("DBSIZE").query(&mut r).unwrap();
    assert_eq!(keys, 0);
}

/// Redis hung (SIGSTOP: connections open, nothing answered) for three seconds mid-feed:
/// the Redis thread's writes time out (`redis.timeout_ms`) and are retried, ClickHouse
/// gets every tick, and once Redis answers again (SIGCONT) the cache is whole.
#[test]
fn redis_hung_mid_feed_costs_no_tick_and_the_cache_catches_up() {
    let _serial = one_at_a_time();
    const COUNT: u64 = 150_000;
    let (db, mut conn) = tables("rhung");
    let server = PrivateRedis::start();
    let prefix = db.redis_prefix();
    let nats = Nats::new("rhung");
    let run = start_on_private_redis(&db, &nats, &server);
    let feed = feed_to_a_third(&db, &nats, &mut conn, COUNT);
    let pid = server.pid().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let at_stop = stored(&mut conn).0;
    std::thread::sleep(Duration::from_secs(3));
    let during = stored(&mut conn).0;
    signal("-CONT");
    assert!(
        during > at_stop || at_stop == COUNT,
        "ingestion went on with Redis hung ({at_stop} then {during})"
    );
    feeder_done(feed);
    wait_stored(&mut conn, COUNT, Duration::from_secs(120));
    assert_eq!(stored(&mut conn), (COUNT, COUNT, 1, COUNT));
    let mut r = redis(&server.url());
    let (wrong, _) = cache_whole(&mut r, &mut conn, &prefix);
    let summary = drain(run);
    assert!(wrong.is_empty(), "{wrong:#?}\n{summary}");
    assert!(summary.contains("failed writes"), "{summary}");
}
