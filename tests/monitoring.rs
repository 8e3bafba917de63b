//! The operators' files agree with what the appliance serves: `promtool` accepts the
//! alert rules (`tuning/prometheus/alerts.yml`) and the `/metrics` exposition, and every
//! metric the rules and the Grafana dashboard (`tuning/grafana/alphapt-storage.json`)
//! name is one `/metrics` has. promtool comes from Debian's prometheus package, which
//! `.ci/services.sh` installs.

use std::collections::BTreeSet;

mod common;

use alphapt_storage::app::{CacheSnapshot, Snapshot};
use alphapt_storage::control::metrics::{render, Extra};
use alphapt_storage::runtime::latency::LatencyTotals;
use common::promtool;

fn exposition() -> String {
    let snapshot = Snapshot {
        received: 5,
        ticks_stored: 4,
        cache: Some(CacheSnapshot::default()),
        nats_state: alphapt_storage::pipeline::NATS_UP,
        ..Snapshot::default()
    };
    render(
        &snapshot,
        &Extra {
            writers_up: 1,
            writers: 1,
            ring_fill: vec![0.25],
            http: [1, 0, 0],
            latency: [[LatencyTotals::default(); 3]; 2],
            spill_sync: LatencyTotals::default(),
            threads: vec![("shard-0".into(), 1.0)],
            // A cluster's series too, so promtool checks them.
            clickhouse_shards: vec![alphapt_storage::control::metrics::ShardSeries {
                up: true,
                inserts: 3,
                replicas: vec![("ch-1a:9000".into(), true), ("ch-1b:9000".into(), false)],
            }],
        },
    )
}

/// Metric families the exposition declares.
fn served() -> BTreeSet<String> {
    exposition()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// Every `alphapt_…` name in `text`, histogram suffixes folded into their family.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("alphapt_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
            .unwrap_or(name);
        names.insert(family.to_owned());
        i = end;
    }
    names
}

#[test]
fn promtool_accepts_the_alert_rules_and_the_exposition() {
    let (ok, text) = promtool(&["check", "rules", "tuning/prometheus/alerts.yml"], None);
    assert!(ok, "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
    let (ok, text) = promtool(&["check", "metrics"], Some(&exposition()));
    assert!(
        ok && text.trim().is_empty(),
        "promtool check metrics: {text}"
    );
}

#[test]
fn rules_and_dashboard_name_only_served_metrics() {
    let served = served();
    let rules = std::fs::read_to_string("tuning/prometheus/alerts.yml").unwrap();
    let dashboard = std::fs::read_to_string("tuning/grafana/alphapt-storage.json").unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let exprs: Vec<&str> = parsed["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    for (what, text) in [("alerts.yml", rules), ("dashboard", exprs.join("\n"))] {
        let used = names_in(&text);
        assert!(!used.is_empty(), "{what} names no metric");
        let unknown: Vec<_> = used.difference(&served).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics /metrics lacks: {unknown:?}"
        );
    }
    // The six names the platform's dashboards already watch.
    for name in [
        "alphapt_storage_ticks_received_total",
        "alphapt_storage_ticks_stored_total",
        "alphapt_storage_latency_seconds",
        "alphapt_storage_buffer_utilization_ratio",
        "alphapt_clickhouse_connection_pool_active",
        "alphapt_redis_cache_hit_rate",
    ] {
        assert!(served.contains(name), "{name}");
    }
}
