//! Data quality through the real pipeline: a crafted corpus published into JetStream,
//! consumed by the appliance (`run`, reference data from its own PostgreSQL
//! database), stored in ClickHouse; then `quality --json` against a reference
//! computed from the corpus, and the `quality_snapshots` rows the run wrote.
//!
//! The corpus: instruments ticking with only the platform's fields (all clean), one
//! instrument per flag (each flag exactly on the ticks that should carry it), a tick
//! stamped 2099 and one outside its circuit in the middle of their instruments'
//! streams (the ticks after them clean), and one message per reject reason a tick
//! subject can give (`unknown_subject` needs a subject outside the tick streams).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alphapt_storage::model::quality::{data_quality_score, FLAGS, FLAG_MISSING_OPTIONAL};
use alphapt_storage::receive::nats::{JetStream, NatsConn, PublishWindow};
use common::e2e::*;
use common::pg::PgDb;
use serde_json::Value as Json;

/// What one published message must become.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Stored { token: u32, flags: u32 },
    Rejected { reason: &'static str },
}

struct Message {
    token: u32,
    payload: Vec<u8>,
    expect: Expect,
}

/// A tick with the platform's fields only; `extra` appends more (`"depth": ...`).
fn tick(token: u32, price: &str, ts_ms: i64, extra: &str) -> String {
    format!(
        r#"{{"instrument_token": {token}, "tradingsymbol": "SYM{token}", "last_price": {price}, "last_quantity": 5, "volume": 1000, "timestamp": {ts_ms}{extra}}}"#
    )
}

fn corpus(now_ms: i64) -> Vec<Message> {
    let mut out = Vec::new();
    let mut push = |token: u32, payload: String, flags: u32| {
        out.push(Message {
            token,
            payload: payload.into_bytes(),
            expect: Expect::Stored { token, flags },
        })
    };
    let t0 = now_ms - 20_000;
    // 40 instruments × 10 ticks with the platform's fields only: clean.
    for token in 1001..=1040u32 {
        for i in 0..10i64 {
            let price = format!("{}.{:02}", 100 + token % 7, (i * 5) % 100);
            push(token, tick(token, &price, t0 + i * 100, ""), 0);
        }
    }
    push(
        2001,
        tick(2001, "100", t0, "").replace(r#", "volume": 1000"#, ""),
        1,
    );
    push(2002, tick(2002, "100", t0, ""), 0);
    push(2002, tick(2002, "0", t0 + 1, ""), 2);
    push(2002, tick(2002, "100.5", t0 + 2, ""), 0);
    let depth =
        |buy: &str, sell: &str| format!(r#", "depth": {{"buy": [{buy}], "sell": [{sell}]}}"#);
    push(
        2003,
        tick(
            2003,
            "100",
            t0,
            &depth(
                r#"{"price": 101, "quantity": 1}"#,
                r#"{"price": 100.5, "quantity": 1}"#,
            ),
        ),
        4,
    );
    push(
        2004,
        tick(
            2004,
            "100",
            t0,
            &depth(
                r#"{"price": 99.5, "quantity": 1}, {"price": 99.9, "quantity": 1}"#,
                r#"{"price": 100.5, "quantity": 1}"#,
            ),
        ),
        8,
    );
    push(
        2005,
        tick(2005, "100", t0, "").replace(r#""last_quantity": 5"#, r#""last_quantity": 20000000"#),
        16,
    );
    // A tick stamped 2099 between clean ones: only it is flagged.
    push(2006, tick(2006, "100", t0, ""), 0);
    push(2006, tick(2006, "100", 4_070_908_800_000, ""), 32);
    for i in 1..=5 {
        push(2006, tick(2006, "100", t0 + i, ""), 0);
    }
    push(2007, tick(2007, "100", now_ms - 600_000, ""), 64);
    push(2008, tick(2008, "100", t0 + 1_000, ""), 0);
    push(2008, tick(2008, "100", t0, ""), 128);
    push(2009, tick(2009, "100", t0, ""), 0);
    push(2009, tick(2009, "150", t0 + 1, ""), 256);
    push(2009, tick(2009, "150", t0 + 2, ""), 0);
    // PostgreSQL: tick size 0.10.
    push(2010, tick(2010, "100.05", t0, ""), 512);
    // PostgreSQL: circuit 90..110. 120 is outside (and a 20% jump); it moves nothing,
    // so 100 after it is neither a jump nor out of order.
    push(2011, tick(2011, "100", t0, ""), 0);
    push(2011, tick(2011, "120", t0 + 1, ""), 1024 | 256);
    push(2011, tick(2011, "100", t0 + 2, ""), 0);
    let mut reject = |token: u32, payload: Vec<u8>, reason: &'static str| {
        out.push(Message {
            token,
            payload,
            expect: Expect::Rejected { reason },
        })
    };
    let t = |token: u32| tick(token, "100", t0, "");
    reject(
        3001,
        br#"{"instrument_token": 3001,"#.to_vec(),
        "malformed_json",
    );
    reject(
        3002,
        t(3002).replace(r#""last_price": 100, "#, "").into_bytes(),
        "missing_field",
    );
    reject(
        3003,
        tick(3003, r#""abc""#, t0, "").into_bytes(),
        "wrong_type",
    );
    reject(
        3004,
        t(3004)
            .replace(&format!("{t0}"), r#""yesterday""#)
            .into_bytes(),
        "bad_timestamp",
    );
    // 0xff inside the symbol string.
    let mut not_utf8 = t(3005).into_bytes();
    let at = not_utf8.windows(7).position(|w| w == b"SYM3005").unwrap();
    not_utf8[at + 3] = 0xff;
    reject(3005, not_utf8, "invalid_utf8");
    reject(
        3006,
        t(3006)
            .replace(r#""volume": 1000"#, r#""volume": -3"#)
            .into_bytes(),
        "bad_number",
    );
    reject(
        3007,
        t(3007).replace("SYM3007", &"X".repeat(40)).into_bytes(),
        "symbol_too_long",
    );
    let level = r#"{"price": 99, "quantity": 1}"#;
    let six = [level; 6].join(", ");
    reject(
        3008,
        tick(3008, "100", t0, &depth(&six, "")).into_bytes(),
        "too_many_depth_levels",
    );
    let padding = format!(r#", "note": "{}""#, "p".repeat(17 * 1024));
    reject(
        3009,
        tick(3009, "100", t0, &padding).into_bytes(),
        "payload_too_large",
    );
    reject(3010, b"\x01\x02 not a tick".to_vec(), "bad_kite_packet");
    out
}

/// Waits (at most 40 s) until a `quality_snapshots` window ends past `published_s`,
/// so the rows together cover everything published by then.
fn wait_snapshot_past(client: &mut postgres::Client, published_s: i64) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let until: Option<f64> = client
            .query_one(
                "SELECT extract(epoch FROM max(window_until))::float8 FROM quality_snapshots",
                &[],
            )
            .unwrap()
            .get(0);
        if until.is_some_and(|u| u as i64 > published_s + 1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot past {published_s} yet (the last window ends {until:?})"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn quality_json(db: &common::TestDb, nats: &Nats, extra: &[&str]) -> Json {
    let mut args = sets(db, nats);
    args.push("quality".into());
    args.push("--json".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    let output = binary(&args).output().unwrap();
    assert!(
        output.status.success(),
        "quality failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The report `quality` must give for `messages`.
struct Reference {
    stored: u64,
    rejected: BTreeMap<&'static str, u64>,
    flags: BTreeMap<&'static str, u64>,
    score_sum: f64,
    flagged: u64,
    incomplete: u64,
}

fn reference(messages: &[&Message]) -> Reference {
    let mut r = Reference {
        stored: 0,
        rejected: BTreeMap::new(),
        flags: BTreeMap::new(),
        score_sum: 0.0,
        flagged: 0,
        incomplete: 0,
    };
    for m in messages {
        match m.expect {
            Expect::Stored { flags, .. } => {
                r.stored += 1;
                r.score_sum += f64::from(data_quality_score(flags));
                r.flagged += u64::from(flags != 0);
                r.incomplete += u64::from(flags & FLAG_MISSING_OPTIONAL != 0);
                for (bit, name, _) in FLAGS {
                    *r.flags.entry(name).or_default() += u64::from(flags & bit != 0);
                }
            }
            Expect::Rejected { reason, .. } => *r.rejected.entry(reason).or_default() += 1,
        }
    }
    r
}

fn assert_report(label: &str, got: &Json, want: &Reference) {
    let rejected: u64 = want.rejected.values().sum();
    let received = want.stored + rejected;
    assert_eq!(got["ticks_stored"], want.stored, "{label}: stored");
    assert_eq!(got["ticks_rejected"], rejected, "{label}: rejected");
    assert_eq!(got["ticks_received"], received, "{label}: received");
    assert_eq!(
        got["validation_failures"],
        want.flagged + rejected,
        "{label}: failures"
    );
    let score = got["overall_score"].as_f64().unwrap();
    let want_score = want.score_sum / received as f64;
    assert!(
        (score - want_score).abs() < 1e-9,
        "{label}: score {score} vs {want_score}"
    );
    let completeness = got["completeness_percentage"].as_f64().unwrap();
    let want_completeness = 100.0 * (want.stored - want.incomplete) as f64 / received as f64;
    assert!(
        (completeness - want_completeness).abs() < 1e-9,
        "{label}: completeness {completeness} vs {want_completeness}"
    );
    for (name, count) in &want.flags {
        assert_eq!(got["flags"][name], *count, "{label}: flag {name}");
    }
    for (reason, count) in &want.rejected {
        assert_eq!(got["rejected"][reason], *count, "{label}: reason {reason}");
    }
}

#[test]
fn every_flag_lands_on_its_ticks_and_the_report_matches_the_corpus() {
    let (db, mut conn) = tables("quality");
    let nats = Nats::new("quality");
    let pg = PgDb::new();
    pg.execute(
        "INSERT INTO instruments (instrument_token, tradingsymbol, exchange, tick_size, lower_circuit_limit, upper_circuit_limit) VALUES
           (2010, 'GRID', 'NSE', 0.10, NULL, NULL),
           (2011, 'CIRCUIT', 'NSE', 0.05, 90, 110)",
    );
    let pg_url = format!("postgres.url={}", pg.url());
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            &pg_url,
            "--set",
            "postgres.quality_snapshot_interval_ms=1000",
        ],
    );
    // The reference data must be in the shards before the ticks that need it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run.output().contains("Reference data loaded") {
        assert!(Instant::now() < deadline, "reference data never loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut publisher = NatsConn::connect(&Nats::url(), Duration::from_secs(2)).unwrap();
    let js = JetStream::new(Duration::from_secs(2));
    while js
        .stream_info(&mut publisher, &nats.stream)
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "ticks stream never created");
        std::thread::sleep(Duration::from_millis(50));
    }
    let now_ms = alphapt_storage::runtime::clock::now_ms();
    let messages = corpus(now_ms);
    let prefix = nats.subjects.trim_end_matches(".>");
    let mut window = PublishWindow::new(&mut publisher, 256).unwrap();
    for m in &messages {
        let subject = format!("{prefix}.NSE.{}", m.token);
        window
            .publish(
                &mut publisher,
                subject.as_bytes(),
                &m.payload,
                Duration::from_secs(10),
            )
            .unwrap();
    }
    window
        .finish(&mut publisher, Duration::from_secs(10))
        .unwrap();
    let published_s = alphapt_storage::runtime::clock::now_ms() / 1000;
    let count = |conn: &mut alphapt_storage::native::Connection, sql: &str| {
        conn.query(sql).unwrap().scalar().unwrap().as_u64().unwrap()
    };
    let total = messages.len() as u64;
    while count(&mut conn, "SELECT count() FROM market_ticks")
        + count(&mut conn, "SELECT count() FROM rejected_messages")
        < total
    {
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "corpus not stored in time"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Each message, by stream sequence (publish order): its flags or its reason.
    let stored = conn
        .query("SELECT stream_seq, validation_flags, data_quality_score FROM market_ticks")
        .unwrap();
    let mut got: BTreeMap<u64, String> = BTreeMap::new();
    let seqs = stored.column("stream_seq");
    let flags = stored.column("validation_flags");
    let scores = stored.column("data_quality_score");
    for i in 0..seqs.len() {
        got.insert(
            seqs[i].as_u64().unwrap(),
            format!(
                "flags {} score {:.2}",
                flags[i].as_u64().unwrap(),
                scores[i].as_f64().unwrap()
            ),
        );
    }
    let rejected = conn
        .query("SELECT stream_seq, reason FROM rejected_messages")
        .unwrap();
    let seqs = rejected.column("stream_seq");
    let reasons = rejected.column("reason");
    for i in 0..seqs.len() {
        got.insert(
            seqs[i].as_u64().unwrap(),
            format!("rejected {}", reasons[i].as_str().unwrap()),
        );
    }
    for (i, m) in messages.iter().enumerate() {
        let want = match m.expect {
            Expect::Stored { flags, .. } => {
                format!("flags {flags} score {:.2}", data_quality_score(flags))
            }
            Expect::Rejected { reason, .. } => format!("rejected {reason}"),
        };
        let seq = i as u64 + 1;
        assert_eq!(
            got.get(&seq),
            Some(&want),
            "message {seq} (token {}): {}",
            m.token,
            String::from_utf8_lossy(&m.payload)
        );
    }
    assert_eq!(got.len(), messages.len(), "nothing stored twice or extra");

    // The report over everything, and over two instruments.
    let all: Vec<&Message> = messages.iter().collect();
    let report = quality_json(&db, &nats, &["--since", "1h"]);
    assert_report("all", &report, &reference(&all));
    let worst = report["worst_instruments"].as_array().unwrap();
    assert_eq!(
        worst.len(),
        10,
        "11 instruments have flags; the 10 worst are listed"
    );
    let mut previous = 0.0;
    for w in worst {
        let token = w["instrument_token"].as_u64().unwrap() as u32;
        let mine: Vec<u32> = messages
            .iter()
            .filter_map(|m| match m.expect {
                Expect::Stored { token: t, flags } if t == token => Some(flags),
                _ => None,
            })
            .collect();
        assert_eq!(w["ticks"], mine.len(), "{w}");
        assert_eq!(
            w["flagged"],
            mine.iter().filter(|f| **f != 0).count(),
            "{w}"
        );
        // The most frequent flag, the lowest bit on a tie.
        let (dominant, _) = FLAGS
            .iter()
            .map(|(bit, name, _)| (*name, mine.iter().filter(|f| **f & bit != 0).count()))
            .fold(
                ("", 0),
                |best, (name, n)| if n > best.1 { (name, n) } else { best },
            );
        assert_eq!(w["dominant_flag"], dominant, "{w}");
        let score = w["mean_score"].as_f64().unwrap();
        assert!(score >= previous, "worst first: {worst:?}");
        previous = score;
    }
    let two: Vec<&Message> = messages
        .iter()
        .filter(|m| [2006, 2011].contains(&m.token))
        .collect();
    let report = quality_json(&db, &nats, &["--tokens", "2011,2006"]);
    assert_report("tokens", &report, &reference(&two));

    // The run's snapshots: windows back to back, together every message.
    let mut client = pg.client();
    wait_snapshot_past(&mut client, published_s);
    drain(run);
    let rows = client
        .query(
            "SELECT extract(epoch FROM window_from)::float8, extract(epoch FROM window_until)::float8, \
             ticks_received, ticks_rejected, report->>'ticks_stored' FROM quality_snapshots ORDER BY window_from",
            &[],
        )
        .unwrap();
    let (mut received, mut rejected) = (0i64, 0i64);
    for pair in rows.windows(2) {
        assert_eq!(
            pair[0].get::<_, f64>(1),
            pair[1].get::<_, f64>(0),
            "windows follow each other"
        );
    }
    for row in &rows {
        received += row.get::<_, i64>(2);
        rejected += row.get::<_, i64>(3);
    }
    assert_eq!(received, messages.len() as i64);
    assert_eq!(rejected, 10);
}

#[test]
fn bad_quality_flags_get_one_line_errors() {
    let db = common::TestDb::new("quality_flags");
    let nats = Nats::new("quality_flags");
    for (flags, says) in [
        (&["--since", "7x"][..], "--since '7x' is not a duration"),
        (&["--since", "0m"][..], "at least 1s"),
        (
            &["--tokens", "2011,abc"][..],
            "--tokens: 'abc' is not an instrument token",
        ),
    ] {
        let mut args = sets(&db, &nats);
        args.push("quality".into());
        args.extend(flags.iter().map(|s| s.to_string()));
        let output = binary(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} accepted");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{flags:?}: {stderr}");
    }
    // ClickHouse unreachable: `quality` and `query` say so in one line, exit non-zero.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("clickhouse.port={}", closed.local_addr().unwrap().port());
    drop(closed);
    for command in [&["quality"][..], &["query", "ticks", "--tokens", "1"][..]] {
        let mut args = sets(&db, &nats);
        args.extend(["--set".to_string(), port.clone()]);
        args.extend(command.iter().map(|s| s.to_string()));
        let output = binary(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command:?} with ClickHouse away");
        assert!(
            stderr.contains("connecting to ClickHouse"),
            "{command:?}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{command:?}: {stderr}");
    }
}

#[test]
fn snapshots_cover_a_postgres_outage_without_a_gap() {
    // The snapshot table disappears for a few intervals (every INSERT fails) while
    // ticks arrive; once it is back, the next row covers the whole outage: windows
    // stay back to back and together count every message once.
    const TICKS: u64 = 3_000;
    let (db, _conn) = tables("qsnap");
    let nats = Nats::new("qsnap");
    let pg = PgDb::new();
    let pg_url = format!("postgres.url={}", pg.url());
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            &pg_url,
            "--set",
            "postgres.quality_snapshot_interval_ms=1000",
        ],
    );
    let mut client = pg.client();
    let rows = |client: &mut postgres::Client| -> i64 {
        client
            .query_one("SELECT count(*) FROM quality_snapshots", &[])
            .unwrap()
            .get(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(&mut client) == 0 {
        assert!(Instant::now() < deadline, "no first snapshot");
        std::thread::sleep(Duration::from_millis(100));
    }
    client
        .batch_execute("ALTER TABLE quality_snapshots RENAME TO quality_snapshots_away")
        .unwrap();
    let published = feed(
        &db,
        &nats,
        &["--count", &TICKS.to_string(), "--instruments", "20"],
    );
    assert!(
        published.contains(&format!("acked {TICKS} errors 0")),
        "{published}"
    );
    let published_s = alphapt_storage::runtime::clock::now_ms() / 1000;
    // Several intervals fail meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        run.output().contains("Quality snapshot not written"),
        "the outage is reported"
    );
    client
        .batch_execute("ALTER TABLE quality_snapshots_away RENAME TO quality_snapshots")
        .unwrap();
    wait_snapshot_past(&mut client, published_s);
    let text = drain(run);
    assert!(
        text.contains("Quality snapshots are written again"),
        "{text}"
    );
    let rows = client
        .query(
            "SELECT extract(epoch FROM window_from)::float8, extract(epoch FROM window_until)::float8, \
             ticks_received FROM quality_snapshots ORDER BY window_from",
            &[],
        )
        .unwrap();
    let longest = rows
        .iter()
        .map(|r| r.get::<_, f64>(1) - r.get::<_, f64>(0))
        .fold(0.0, f64::max);
    assert!(longest >= 3.0, "one row spans the outage: {longest} s");
    for pair in rows.windows(2) {
        assert_eq!(pair[0].get::<_, f64>(1), pair[1].get::<_, f64>(0));
    }
    let received: i64 = rows.iter().map(|r| r.get::<_, i64>(2)).sum();
    assert_eq!(received, TICKS as i64);
}
