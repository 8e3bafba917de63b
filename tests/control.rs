//! The control endpoint of a running appliance: after a JetStream feed `/metrics`
//! parses (every sample `name{labels} value`, HELP and TYPE before it) and its
//! counters equal what ClickHouse holds; `/quality` counts the same rows; `/health`
//! turns degraded with Redis killed and names the lag. Bad requests (garbage, a 1 MB
//! head, one byte a second, 1,000 connections at once) are refused and counted while
//! ingestion goes on.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::e2e::*;
use common::private_redis::PrivateRedis;
use common::wait_until;

/// The exposition as name{labels} → value, checking its shape on the way.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "summary", "histogram"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad name: {line}"
        );
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|b| typed.contains(*b)))
            .unwrap_or(name);
        assert!(typed.contains(base), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples.insert(series.to_owned(), value.parse::<f64>().unwrap());
    }
    samples
}

fn count(conn: &mut alphapt_storage::native::Connection, sql: &str) -> f64 {
    conn.query(sql).unwrap().scalar().unwrap().as_u64().unwrap() as f64
}

#[test]
fn metrics_health_and_quality_tell_the_truth_and_bad_requests_are_refused() {
    const TICKS: u64 = 20_000;
    let (db, mut conn) = tables("ctl");
    let mut redis = PrivateRedis::start();
    let nats = Nats::new("ctl");
    feed_all(&db, &nats, TICKS, "0.02", "50");
    let report = std::env::temp_dir().join(format!("alphapt-latency-{}.hgrm", db.name));
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            &format!("redis.url={}", redis.url()),
            "--latency-report",
            report.to_str().unwrap(),
        ],
    );
    let addr = control_addr(&run);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));

    // Counters equal the store (the journal-first writer counts a row when journaled;
    // wait for the inserter to have them all in ClickHouse first: done above).
    let stored = count(&mut conn, "SELECT count() FROM market_ticks");
    let rejected = count(&mut conn, "SELECT count() FROM rejected_messages");
    let mut samples;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200);
        samples = parse_metrics(&body);
        let shown = (
            samples["alphapt_storage_ticks_stored_total"],
            samples["alphapt_storage_rejected_total"],
        );
        if shown == (stored, rejected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics say stored, rejected {shown:?}; ClickHouse has {:?}",
            (stored, rejected)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, lint) = common::promtool(&["check", "metrics"], Some(&get(addr, "/metrics").1));
    assert!(
        ok && lint.trim().is_empty(),
        "promtool check metrics: {lint}"
    );
    assert_eq!(
        samples["alphapt_storage_ticks_received_total"],
        TICKS as f64
    );
    assert_eq!(stored + rejected, TICKS as f64);
    for name in [
        "alphapt_storage_buffer_utilization_ratio",
        "alphapt_clickhouse_connection_pool_active",
        "alphapt_redis_cache_hit_rate",
    ] {
        assert!(samples.contains_key(name), "{name} missing");
    }
    // Rejects by reason add up, each as ClickHouse counts it; flags by kind likewise.
    let by_reason: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("alphapt_storage_rejected_by_reason_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(by_reason, rejected);
    let q = conn
        .query("SELECT reason, count() AS n FROM rejected_messages GROUP BY reason")
        .unwrap();
    for (reason, n) in q.column("reason").iter().zip(q.column("n")) {
        let series = format!(
            "alphapt_storage_rejected_by_reason_total{{reason=\"{}\"}}",
            reason.as_str().unwrap()
        );
        assert_eq!(
            samples.get(&series),
            Some(&(n.as_u64().unwrap() as f64)),
            "{series}"
        );
    }
    for (bit, name, _) in alphapt_storage::model::quality::FLAGS {
        let in_clickhouse = count(
            &mut conn,
            &format!("SELECT count() FROM market_ticks WHERE bitAnd(validation_flags, {bit}) != 0"),
        );
        let series = format!("alphapt_storage_flagged_by_flag_total{{flag=\"{name}\"}}");
        assert_eq!(samples[&series], in_clickhouse, "{series}");
    }

    // Latency: every stored tick counted once per stage, buckets cumulative.
    for stage in ["durable", "committed"] {
        let series = format!("stage=\"{stage}\",table=\"market_ticks\"");
        let count = samples[&format!("alphapt_storage_latency_seconds_count{{{series}}}")];
        assert_eq!(count, stored, "{stage}");
        let inf =
            samples[&format!("alphapt_storage_latency_seconds_bucket{{{series},le=\"+Inf\"}}")];
        let tenth =
            samples[&format!("alphapt_storage_latency_seconds_bucket{{{series},le=\"0.1\"}}")];
        assert!(
            tenth <= inf && inf == count,
            "{stage}: {tenth} {inf} {count}"
        );
    }
    let (status, body) = get(addr, "/quality");
    assert_eq!(status, 200, "{body}");
    let quality: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(quality["ticks_stored"].as_f64(), Some(stored), "{body}");

    let (status, body) = get(addr, "/health");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["components"]["redis"]["healthy"], true, "{body}");
    let nats_health = &health["components"]["nats"];
    assert_eq!(nats_health["healthy"], true, "{body}");
    assert!(
        nats_health["detail"]
            .as_str()
            .unwrap()
            .starts_with("consuming"),
        "{body}"
    );

    // The NATS session, the bytes and blocks written, the threads' CPU.
    let (_, body) = get(addr, "/metrics");
    let samples = parse_metrics(&body);
    assert_eq!(samples["alphapt_nats_up"], 1.0, "{body}");
    assert_eq!(
        samples["alphapt_nats_jetstream_pending"], 0.0,
        "all delivered"
    );
    assert_eq!(samples["alphapt_nats_redelivered_total"], 0.0);
    assert_eq!(samples["alphapt_reconnects_total{server=\"nats\"}"], 0.0);
    assert_eq!(
        samples["alphapt_reconnects_total{server=\"clickhouse\"}"],
        0.0
    );
    assert!(samples["alphapt_clickhouse_blocks_written_total"] > 0.0);
    let raw = samples["alphapt_storage_block_bytes_total{form=\"raw\"}"];
    let compressed = samples["alphapt_storage_block_bytes_total{form=\"compressed\"}"];
    assert!(
        raw > compressed && compressed > 0.0,
        "LZ4: {raw} > {compressed}"
    );
    assert!(
        samples.contains_key("alphapt_storage_thread_cpu_seconds_total{thread=\"receiver\"}"),
        "{body}"
    );

    // Bad requests, each refused with its status while the appliance runs on.
    assert_eq!(request(addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").0, 400);
    assert_eq!(get(addr, "/nowhere").0, 404);
    assert_eq!(request(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").0, 405);
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    huge.resize(1 << 20, b'a');
    assert_eq!(request(addr, &huge).0, 431);
    let slow = {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut response = Vec::new();
        for byte in b"GET /met" {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(400));
        }
        let _ = stream.read_to_end(&mut response);
        (
            String::from_utf8_lossy(&response).into_owned(),
            started.elapsed(),
        )
    };
    assert!(slow.0.starts_with("HTTP/1.1 408"), "{slow:?}");
    let burst: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    drop(burst);
    wait_until(
        "the endpoint answers after the burst",
        Duration::from_secs(10),
        || get(addr, "/health").0 == 200,
    );
    let after = parse_metrics(&get(addr, "/metrics").1);
    assert!(after["alphapt_control_requests_total{outcome=\"busy\"}"] > 0.0);
    assert!(after["alphapt_control_requests_total{outcome=\"refused\"}"] >= 5.0);

    // Redis killed: degraded, with the lag named.
    redis.kill();
    wait_until(
        "health to say Redis is down",
        Duration::from_secs(10),
        || {
            let health: serde_json::Value = serde_json::from_str(&get(addr, "/health").1).unwrap();
            health["overall_status"] == "degraded"
                && health["components"]["redis"]["healthy"] == false
        },
    );
    let summary = drain(run);
    assert!(summary.contains("redis cache"), "{summary}");

    // The exit report: HdrHistogram's percentile format, every stored message once.
    let text = std::fs::read_to_string(&report).unwrap();
    let _ = std::fs::remove_file(&report);
    let rows: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| {
            !l.trim().is_empty() && !l.starts_with('#') && !l.trim_start().starts_with("Value")
        })
        .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
        .collect();
    assert!(rows.len() >= 2, "{text}");
    assert!(
        rows.windows(2)
            .all(|w| w[0][0] <= w[1][0] && w[0][1] <= w[1][1]),
        "{text}"
    );
    let last = rows.last().unwrap();
    assert_eq!((last[1], last[2]), (1.0, TICKS as f64), "{text}");
}
