//! `/metrics` in the Prometheus text format (0.0.4), written from one [`Snapshot`]:
//! the stages keep their own counters; nothing here touches the hot path.

use std::fmt::Write as _;

use crate::app::Snapshot;
use crate::model::quality::{RejectReason, FLAGS};
use crate::runtime::latency::{LatencyTotals, BOUNDS_US};

/// What a scrape shows besides the snapshot: the writers' states.
pub struct Extra {
    /// Writers whose ClickHouse connection is up (not retrying).
    pub writers_up: u64,
    /// Writers in all.
    pub writers: u64,
    /// Fill of each shard's frame ring, 0..1.
    pub ring_fill: Vec<f64>,
    /// The control endpoint's own counters: answered, refused, busy.
    pub http: [u64; 3],
    /// Merged latency histograms, `[durable, committed]` × table.
    pub latency: [[LatencyTotals; 3]; 2],
    /// Journal syncs (group commits), merged over writers.
    pub spill_sync: LatencyTotals,
    /// CPU seconds per thread name ([`thread_cpu_seconds`]).
    pub threads: Vec<(String, f64)>,
    /// A ClickHouse cluster (`clickhouse.shards`), per shard in order; empty for one
    /// server.
    pub clickhouse_shards: Vec<ShardSeries>,
}

/// One ClickHouse shard's series: its writers, and which replica they insert into.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardSeries {
    /// Every writer of the shard reaches ClickHouse.
    pub up: bool,
    /// INSERTs its writers committed.
    pub inserts: u64,
    /// Its replicas (`host:port`), each with whether a writer inserts into it now.
    pub replicas: Vec<(String, bool)>,
}

/// CPU time (user + system) of each of the process's threads, by thread name, from
/// `/proc/self/task/*/stat`: the kernel's own accounting, so the hot threads pay
/// nothing for it. `rate()` of it is a thread's busy ratio. A thread that spins on an
/// empty ring (`threads.wait = "spin"`, or hybrid's spin phase) counts as busy: it is
/// using the core. Empty off Linux or when `/proc` is unreadable.
pub fn thread_cpu_seconds() -> Vec<(String, f64)> {
    // `/proc` counts in USER_HZ, which the kernel ABI fixes at 100 on the architectures
    // this runs on (x86-64, arm64), whatever CONFIG_HZ the kernel was built with.
    const USER_HZ: f64 = 100.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut threads: Vec<(String, f64)> = Vec::new();
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // The thread ended meanwhile.
        };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so the
        // fields after it are found from the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let mut fields = stat[close + 1..].split_ascii_whitespace();
        // After comm: state is field 3; utime and stime are fields 14 and 15.
        let (Some(utime), Some(stime)) = (fields.nth(11), fields.next()) else {
            continue;
        };
        let (Ok(utime), Ok(stime)) = (utime.parse::<u64>(), stime.parse::<u64>()) else {
            continue;
        };
        let seconds = (utime + stime) as f64 / USER_HZ;
        match threads.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += seconds,
            None => threads.push((name, seconds)),
        }
    }
    threads.sort_by(|a, b| a.0.cmp(&b.0));
    threads
}

/// A label value with `\`, `"` and newlines escaped (text format 0.0.4).
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

const TABLES: [&str; 3] = ["market_ticks", "strategy_signals", "rejected_messages"];
const STAGES: [&str; 2] = ["durable", "committed"];

/// One histogram series: cumulative buckets (seconds), then sum and count.
fn histogram_series(out: &mut String, name: &str, labels: &str, totals: &LatencyTotals) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, count) in BOUNDS_US.iter().zip(&totals.counts) {
        cumulative += count;
        let le = *bound as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        totals.count
    );
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braced} {}", totals.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{braced} {}", totals.count);
}

/// The latency histogram: cumulative buckets per (stage, table), then sum and count.
fn latency_histogram(out: &mut String, latency: &[[LatencyTotals; 3]; 2]) {
    let name = "alphapt_storage_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Receive to durable (ClickHouse or the journal) and to committed in ClickHouse, per message (durable: from its own receive stamp; committed from the journal: from its block's oldest), merged over writers."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (stage, per_table) in STAGES.iter().zip(latency) {
        for (table, totals) in TABLES.iter().zip(per_table) {
            let labels = format!("stage=\"{stage}\",table=\"{table}\"");
            histogram_series(out, name, &labels, totals);
        }
    }
}

/// The journal's group commits: how long each `fdatasync` kept its writer waiting.
fn spill_sync_histogram(out: &mut String, totals: &LatencyTotals) {
    let name = "alphapt_spill_sync_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Each journal sync (fdatasync of a group of blocks), merged over writers: a long tail here and in receive-to-durable means the spill disk is shared or slow."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    histogram_series(out, name, "", totals);
}

/// Renders the exposition.
pub fn render(s: &Snapshot, extra: &Extra) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    let f = |v: u64| v as f64;
    metric(
        "alphapt_storage_ticks_received_total",
        "counter",
        "Tick messages taken off NATS (or the synthetic source) and routed to shards.",
        &[("", f(s.received))],
    );
    metric(
        "alphapt_storage_ticks_stored_total",
        "counter",
        "Rows stored in market_ticks (in ClickHouse).",
        &[("", f(s.ticks_stored))],
    );
    metric(
        "alphapt_storage_rejected_total",
        "counter",
        "Messages stored in rejected_messages.",
        &[("", f(s.rejected))],
    );
    let by_reason: Vec<(String, f64)> = RejectReason::ALL
        .iter()
        .zip(s.rejected_by_reason.iter().chain(std::iter::repeat(&0)))
        .map(|(reason, n)| (format!("reason=\"{}\"", reason.as_str()), *n as f64))
        .collect();
    let by_reason: Vec<(&str, f64)> = by_reason.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "alphapt_storage_rejected_by_reason_total",
        "counter",
        "Messages stored in rejected_messages, by reason.",
        &by_reason,
    );
    let by_flag: Vec<(String, f64)> = FLAGS
        .iter()
        .zip(s.flagged_by_flag.iter().chain(std::iter::repeat(&0)))
        .map(|((_, name, _), n)| (format!("flag=\"{name}\""), *n as f64))
        .collect();
    let by_flag: Vec<(&str, f64)> = by_flag.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "alphapt_storage_flagged_by_flag_total",
        "counter",
        "Stored ticks carrying each validation flag (a tick may carry several).",
        &by_flag,
    );
    metric(
        "alphapt_storage_flagged_total",
        "counter",
        "Stored ticks with at least one validation flag.",
        &[("", f(s.flagged))],
    );
    metric(
        "alphapt_storage_signals_stored_total",
        "counter",
        "Rows stored in strategy_signals.",
        &[("", f(s.signal_rows))],
    );
    metric(
        "alphapt_storage_dropped_total",
        "counter",
        "Core NATS messages dropped on a full ring (JetStream never drops).",
        &[("", f(s.dropped))],
    );
    metric(
        "alphapt_storage_buffer_utilization_ratio",
        "gauge",
        "Bytes waiting in the shards' frame rings over their capacity.",
        &[("", s.queued_bytes as f64 / s.ring_bytes.max(1) as f64)],
    );
    let rings: Vec<(String, f64)> = extra
        .ring_fill
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("shard=\"{i}\""), *v))
        .collect();
    let rings: Vec<(&str, f64)> = rings.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "alphapt_storage_ring_utilization_ratio",
        "gauge",
        "Fill of each shard's frame ring.",
        &rings,
    );
    metric(
        "alphapt_storage_rows_open",
        "gauge",
        "Rows in blocks not sealed yet.",
        &[("", f(s.open))],
    );
    metric(
        "alphapt_clickhouse_connection_pool_active",
        "gauge",
        "Writer connections to ClickHouse that are up (not retrying).",
        &[("", f(extra.writers_up))],
    );
    metric(
        "alphapt_clickhouse_connection_pool_size",
        "gauge",
        "Writer connections to ClickHouse.",
        &[("", f(extra.writers))],
    );
    metric(
        "alphapt_clickhouse_inserts_total",
        "counter",
        "INSERTs committed by the ticks path.",
        &[("", f(s.inserts))],
    );
    metric(
        "alphapt_clickhouse_sorted_inserts_total",
        "counter",
        "Of those, journal-first INSERTs sent as one block in table-key order (spill.sort_inserts), which ClickHouse need not sort.",
        &[("", f(s.sorted_inserts))],
    );
    metric(
        "alphapt_clickhouse_insert_errors_total",
        "counter",
        "Failed INSERTs (retried with backoff, or refused).",
        &[("", f(s.errors))],
    );
    if !extra.clickhouse_shards.is_empty() {
        // A cluster: `shard` is the ClickHouse shard, 1-based as in `clickhouse.shards`
        // and `health`; `replica` its `host:port` from the config: small fixed sets.
        let mut up = Vec::new();
        let mut inserts = Vec::new();
        let mut in_use = Vec::new();
        for (index, shard) in extra.clickhouse_shards.iter().enumerate() {
            let label = format!("shard=\"{}\"", index + 1);
            up.push((label.clone(), f(u64::from(shard.up))));
            inserts.push((label.clone(), f(shard.inserts)));
            for (replica, used) in &shard.replicas {
                let replica = replica.replace('\\', "\\\\").replace('"', "\\\"");
                in_use.push((
                    format!("{label},replica=\"{replica}\""),
                    f(u64::from(*used)),
                ));
            }
        }
        for (name, kind, help, samples) in [
            (
                "alphapt_clickhouse_shard_up",
                "gauge",
                "1 when every writer of the ClickHouse shard reaches one of its replicas.",
                &up,
            ),
            (
                "alphapt_clickhouse_shard_inserts_total",
                "counter",
                "INSERTs committed into the ClickHouse shard by the ticks path.",
                &inserts,
            ),
            (
                "alphapt_clickhouse_replica_in_use",
                "gauge",
                "1 for the replica of its shard a writer inserts into (failover moves it).",
                &in_use,
            ),
        ] {
            let samples: Vec<(&str, f64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            metric(name, kind, help, &samples);
        }
    }
    metric(
        "alphapt_spill_rows_total",
        "counter",
        "Rows made durable in the spill journal.",
        &[("", f(s.spilled_rows))],
    );
    metric(
        "alphapt_spill_replayed_rows_total",
        "counter",
        "Spilled rows replayed into ClickHouse.",
        &[("", f(s.replayed_rows))],
    );
    metric(
        "alphapt_spill_pending_bytes",
        "gauge",
        "Bytes of journal records not yet in ClickHouse.",
        &[("", f(s.spill_pending_bytes))],
    );
    metric(
        "alphapt_spill_refusing",
        "gauge",
        "1 while a spill refuses blocks (full or failing): intake stopped.",
        &[("", f(u64::from(s.spill_refusing)))],
    );
    metric(
        "alphapt_spill_faults_total",
        "counter",
        "Journal faults after the append, each logged: marks whose sync failed, records found damaged when read back (set aside; the next start has them delivered again).",
        &[("", f(s.spill_faults))],
    );
    metric(
        "alphapt_storage_durable_watermark",
        "gauge",
        "Highest stream sequence durable (in ClickHouse or the spill) with all below it: acknowledged up to it under AckAll, the resume floor under AckNone.",
        &[("", f(s.watermark))],
    );
    let cache = s.cache.unwrap_or_default();
    metric(
        "alphapt_redis_up",
        "gauge",
        "1 when the Redis thread's last write went through (0 too when the cache is off).",
        &[("", f(u64::from(cache.up)))],
    );
    metric(
        "alphapt_redis_lag_seconds",
        "gauge",
        "Age of the oldest change not yet written to Redis.",
        &[("", cache.lag_ms as f64 / 1e3)],
    );
    metric(
        "alphapt_redis_keys_written_total",
        "counter",
        "Keys written to Redis.",
        &[("", f(cache.keys_written))],
    );
    metric(
        "alphapt_redis_conflated_total",
        "counter",
        "Cache updates overwritten before a flush (only the latest state is written).",
        &[("", f(cache.conflated))],
    );
    metric(
        "alphapt_redis_refused_total",
        "counter",
        "Commands Redis refused for one key (e.g. WRONGTYPE), not retried.",
        &[("", f(cache.refused))],
    );
    metric(
        "alphapt_redis_redirects_total",
        "counter",
        "MOVED/ASK redirections followed (a Redis Cluster resharding or failing over).",
        &[("", f(cache.redirects))],
    );
    metric(
        "alphapt_redis_history_missed_total",
        "counter",
        "History entries a shard dropped, its history queue full, before the Redis thread read them.",
        &[("", f(cache.history_missed))],
    );
    metric(
        "alphapt_redis_bars_late_total",
        "counter",
        "Good ticks for a bar older than the cached one (ClickHouse has them).",
        &[("", f(cache.bars_late))],
    );
    metric(
        "alphapt_redis_write_errors_total",
        "counter",
        "Failed Redis requests and connects.",
        &[("", f(cache.errors))],
    );
    metric(
        "alphapt_redis_cache_hit_rate",
        "gauge",
        "Share of instruments `query` answered from Redis (its {prefix}query:stats hash), 0..1.",
        &[("", cache.hit_rate_ppm as f64 / 1e6)],
    );
    metric(
        "alphapt_postgres_up",
        "gauge",
        "1 when the reference-data thread is connected to PostgreSQL.",
        &[("", f(u64::from(s.references_up)))],
    );
    let [written, dropped, errors] = s.audit_counts;
    metric(
        "alphapt_audit_rows_written_total",
        "counter",
        "ingest_audit rows written to PostgreSQL.",
        &[("", f(written))],
    );
    metric(
        "alphapt_audit_dropped_total",
        "counter",
        "Audit records dropped (rings full, rows refused, left at exit).",
        &[("", f(dropped))],
    );
    metric(
        "alphapt_audit_write_errors_total",
        "counter",
        "Failed audit writes (retried).",
        &[("", f(errors))],
    );
    metric(
        "alphapt_control_requests_total",
        "counter",
        "Control endpoint requests, by outcome.",
        &[
            ("outcome=\"ok\"", f(extra.http[0])),
            ("outcome=\"refused\"", f(extra.http[1])),
            ("outcome=\"busy\"", f(extra.http[2])),
        ],
    );
    metric(
        "alphapt_clickhouse_blocks_written_total",
        "counter",
        "Blocks committed in ClickHouse by the ticks path.",
        &[("", f(s.blocks))],
    );
    metric(
        "alphapt_clickhouse_sent_bytes_total",
        "counter",
        "Bytes sent to ClickHouse in INSERTs by the ticks path (compressed when on).",
        &[("", f(s.sent_bytes))],
    );
    metric(
        "alphapt_storage_block_bytes_total",
        "counter",
        "Bytes of the blocks made durable (ClickHouse or the journal), raw and as encoded: raw over compressed is the compression ratio.",
        &[
            ("form=\"raw\"", f(s.durable_bytes[0])),
            ("form=\"compressed\"", f(s.durable_bytes[1])),
        ],
    );
    metric(
        "alphapt_spill_blocks_total",
        "counter",
        "Blocks made durable in the spill journal, and spilled blocks replayed (rate() is the replay rate).",
        &[
            ("event=\"spilled\"", f(s.spill_blocks[0])),
            ("event=\"replayed\"", f(s.spill_blocks[1])),
        ],
    );
    // With subject partitions on, the NATS series name the one this appliance serves.
    let partition = s
        .nats_partition
        .map_or_else(String::new, |id| format!("partition=\"{id}\""));
    let partition = partition.as_str();
    metric(
        "alphapt_nats_jetstream_pending",
        "gauge",
        "Messages in the ticks stream not yet delivered to the consumer (the backlog).",
        &[(partition, f(s.jetstream_pending))],
    );
    let nats_up: Vec<(&str, f64)> = match s.nats_state {
        crate::pipeline::NATS_UP => vec![(partition, 1.0)],
        crate::pipeline::NATS_DOWN => vec![(partition, 0.0)],
        // No session yet, or the synthetic source: no sample rather than a false 0.
        _ => Vec::new(),
    };
    metric(
        "alphapt_nats_up",
        "gauge",
        "1 while the ticks receiver's NATS session consumes, 0 while it is reconnecting (absent without a NATS source).",
        &nats_up,
    );
    metric(
        "alphapt_nats_redelivered_total",
        "counter",
        "JetStream deliveries that were redeliveries (not acknowledged in time, or after a restart).",
        &[(partition, f(s.redelivered))],
    );
    metric(
        "alphapt_reconnects_total",
        "counter",
        "Connections re-opened after a loss, per server.",
        &[
            ("server=\"nats\"", f(s.reconnects[0])),
            ("server=\"clickhouse\"", f(s.reconnects[1])),
            ("server=\"redis\"", f(s.reconnects[2])),
            ("server=\"postgres\"", f(s.reconnects[3])),
        ],
    );
    let threads: Vec<(String, f64)> = extra
        .threads
        .iter()
        .map(|(name, seconds)| (format!("thread=\"{}\"", label_value(name)), *seconds))
        .collect();
    let threads: Vec<(&str, f64)> = threads.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "alphapt_storage_thread_cpu_seconds_total",
        "counter",
        "CPU time of each thread, by name; rate() is its busy ratio (a spinning wait counts as busy).",
        &threads,
    );
    metric(
        "alphapt_storage_build_info",
        "gauge",
        "The build: version.",
        &[(concat!("version=\"", env!("CARGO_PKG_VERSION"), "\""), 1.0)],
    );
    latency_histogram(&mut out, &extra.latency);
    spill_sync_histogram(&mut out, &extra.spill_sync);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_line_is_name_labels_value() {
        let snapshot = Snapshot {
            received: 10,
            ticks_stored: 9,
            ..Snapshot::default()
        };
        let text = render(
            &snapshot,
            &Extra {
                writers_up: 1,
                writers: 2,
                ring_fill: vec![0.5, 0.0],
                http: [3, 1, 0],
                latency: [[LatencyTotals::default(); 3]; 2],
                spill_sync: LatencyTotals::default(),
                threads: vec![("shard-0".into(), 1.5), ("we\"ird".into(), 0.0)],
                clickhouse_shards: Vec::new(),
            },
        );
        assert!(text.contains("alphapt_storage_ticks_received_total 10\n"));
        assert!(text.contains("alphapt_storage_ring_utilization_ratio{shard=\"0\"} 0.5\n"));
        assert!(text.contains("alphapt_storage_thread_cpu_seconds_total{thread=\"shard-0\"} 1.5\n"));
        assert!(text.contains("{thread=\"we\\\"ird\"} 0\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(name.starts_with("alphapt_"), "{line}");
        }
    }

    #[test]
    fn journal_syncs_render_as_a_histogram_without_labels() {
        let buckets = crate::runtime::latency::LatencyBuckets::default();
        buckets.observe(300, 1);
        buckets.observe(300, 1);
        buckets.observe(80_000, 1);
        let mut spill_sync = LatencyTotals::default();
        buckets.add_to(&mut spill_sync);
        let extra = Extra {
            spill_sync,
            ..one_writer()
        };
        let text = render(&Snapshot::default(), &extra);
        for line in [
            "# TYPE alphapt_spill_sync_seconds histogram\n",
            "alphapt_spill_sync_seconds_bucket{le=\"0.00025\"} 0\n",
            "alphapt_spill_sync_seconds_bucket{le=\"0.0005\"} 2\n",
            "alphapt_spill_sync_seconds_bucket{le=\"0.05\"} 2\n",
            "alphapt_spill_sync_seconds_bucket{le=\"0.1\"} 3\n",
            "alphapt_spill_sync_seconds_bucket{le=\"+Inf\"} 3\n",
            "alphapt_spill_sync_seconds_sum 0.0806\n",
            "alphapt_spill_sync_seconds_count 3\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
    }

    /// One writer, up; every histogram empty; one ClickHouse server.
    fn one_writer() -> Extra {
        Extra {
            writers_up: 1,
            writers: 1,
            ring_fill: vec![0.0],
            http: [0; 3],
            latency: [[LatencyTotals::default(); 3]; 2],
            spill_sync: LatencyTotals::default(),
            threads: Vec::new(),
            clickhouse_shards: Vec::new(),
        }
    }

    #[test]
    fn a_cluster_has_series_per_shard_and_replica() {
        let extra = Extra {
            writers: 2,
            clickhouse_shards: vec![
                ShardSeries {
                    up: true,
                    inserts: 5,
                    replicas: vec![("ch-1a:9000".into(), false), ("ch-1b:9000".into(), true)],
                },
                ShardSeries {
                    up: false,
                    inserts: 2,
                    replicas: vec![("ch-2:9000".into(), true)],
                },
            ],
            ..one_writer()
        };
        let text = render(&Snapshot::default(), &extra);
        for line in [
            "alphapt_clickhouse_shard_up{shard=\"1\"} 1\n",
            "alphapt_clickhouse_shard_up{shard=\"2\"} 0\n",
            "alphapt_clickhouse_shard_inserts_total{shard=\"1\"} 5\n",
            "alphapt_clickhouse_replica_in_use{shard=\"1\",replica=\"ch-1a:9000\"} 0\n",
            "alphapt_clickhouse_replica_in_use{shard=\"1\",replica=\"ch-1b:9000\"} 1\n",
            "alphapt_clickhouse_replica_in_use{shard=\"2\",replica=\"ch-2:9000\"} 1\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
        let single = Extra {
            clickhouse_shards: Vec::new(),
            ..extra
        };
        assert!(!render(&Snapshot::default(), &single).contains("alphapt_clickhouse_shard_up"));
    }

    #[test]
    fn nats_series_name_the_partition_served() {
        let extra = one_writer();
        let served = Snapshot {
            nats_state: crate::pipeline::NATS_UP,
            nats_partition: Some(7),
            jetstream_pending: 4,
            ..Snapshot::default()
        };
        let text = render(&served, &extra);
        assert!(
            text.contains("alphapt_nats_up{partition=\"7\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("alphapt_nats_jetstream_pending{partition=\"7\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("alphapt_nats_redelivered_total{partition=\"7\"} 0\n"),
            "{text}"
        );
        let whole = Snapshot {
            nats_state: crate::pipeline::NATS_UP,
            ..Snapshot::default()
        };
        assert!(render(&whole, &extra).contains("alphapt_nats_up 1\n"));
    }

    #[test]
    fn thread_cpu_time_is_read_per_named_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let probe = std::thread::Builder::new()
            .name("cpu-probe".into())
            .spawn(move || {
                let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                tx.send(()).unwrap();
                let _ = stop_rx.recv();
            })
            .unwrap();
        rx.recv().unwrap();
        let threads = thread_cpu_seconds();
        stop_tx.send(()).unwrap();
        probe.join().unwrap();
        let probe = threads.iter().find(|(name, _)| name == "cpu-probe");
        assert!(probe.is_some_and(|(_, s)| *s >= 0.0), "{threads:?}");
    }
}
