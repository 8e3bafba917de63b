//! The control endpoint: `GET /metrics`, `/health` and `/quality` on `http.addr`
//! (127.0.0.1:9464 by default), served by one unpinned thread.
//!
//! ```text
//!   stages' counters (per thread, relaxed) ──StatsSource::snapshot──┐
//!                                                                  ▼
//!   client ──► control thread (mio, http.rs limits) ──route──► /metrics  Prometheus text (metrics.rs)
//!                                                          ├─► /health   JSON, components + overall
//!                                                          └─► /quality  the quality report (ClickHouse,
//!                                                                        one query per scrape, bounded)
//! ```
//!
//! Every answer is computed on this thread from a snapshot: a scrape costs the hot
//! path nothing but the counters it already keeps. The thread starts with the app
//! and stops after the drain, so `/health` answers while the appliance drains.

pub mod http;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::{json, Value as Json};

use crate::app::{Snapshot, StatsSource};
use crate::native::Options;
use crate::quality::{self, Window};
use crate::runtime::clock::now_ms;

use http::{Response, Server, ServerStats};

/// The running endpoint.
pub struct Control {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Wakes the thread's poll once `stop` is set.
    waker: Arc<mio::Waker>,
    /// Where it listens (the port chosen when `http.addr` has port 0).
    pub addr: SocketAddr,
    /// Its request counters.
    pub stats: Arc<ServerStats>,
}

/// What `/quality` needs to read ClickHouse.
#[derive(Clone)]
pub struct QualitySource {
    /// ClickHouse connection options.
    pub options: Options,
    /// The ticks subject pattern (rejects are attributed by it).
    pub tick_subject_prefix: String,
    /// A cluster (`clickhouse.shards`): read the `Distributed` `_all` tables.
    pub distributed: bool,
}

/// The endpoint's socket, bound before anything else starts (a port in use stops the
/// start before a thread runs), served once the stats exist.
pub struct Bound(Server);

impl Control {
    /// Binds `addr` (port 0: any free port).
    pub fn bind(addr: SocketAddr) -> std::io::Result<Bound> {
        Server::bind(addr).map(Bound)
    }
}

impl Bound {
    /// Starts serving `source`.
    pub fn start(self, source: StatsSource, quality: QualitySource) -> std::io::Result<Control> {
        let server = self.0;
        let addr = server.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ServerStats::default());
        let counters = stats.clone();
        let route = move |path: &str| route(path, &source, &quality, &counters);
        let waker = server.waker();
        let handle = http::spawn(server, stop.clone(), stats.clone(), route)?;
        tracing::info!(%addr, "Control endpoint: /metrics /health /quality");
        Ok(Control {
            handle: Some(handle),
            stop,
            waker,
            addr,
            stats,
        })
    }
}

impl Control {
    /// Stops the thread: the flag, then a wake-up of its poll (a failed wake-up leaves
    /// the poll's 50 ms interval to notice). A run's exit waits for this.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(error) = self.waker.wake() {
            tracing::debug!(%error, "Control endpoint: wake-up failed; it stops within 50 ms");
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop();
    }
}

fn route(
    path: &str,
    source: &StatsSource,
    quality: &QualitySource,
    http: &ServerStats,
) -> Response {
    match path {
        "/metrics" => {
            let snapshot = source.snapshot();
            let r = Ordering::Relaxed;
            let ticks = source.ticks();
            let extra = metrics::Extra {
                writers_up: ticks
                    .writers
                    .iter()
                    .filter(|w| w.degraded.load(r) == 0)
                    .count() as u64,
                writers: ticks.writers.len() as u64,
                ring_fill: ticks
                    .shards
                    .iter()
                    .map(|s| {
                        s.input_queued_bytes.load(r) as f64
                            / (snapshot.ring_bytes as f64 / ticks.shards.len().max(1) as f64)
                                .max(1.0)
                    })
                    .collect(),
                http: [
                    http.ok_total.load(r),
                    http.refused_total.load(r),
                    http.busy_total.load(r),
                ],
                latency: source.latency(),
                spill_sync: source.spill_sync(),
                threads: metrics::thread_cpu_seconds(),
                clickhouse_shards: source.clickhouse_shards(),
            };
            Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: metrics::render(&snapshot, &extra).into_bytes(),
            }
        }
        "/health" => json_response(200, &health(&source.snapshot())),
        "/quality" => quality_report(quality),
        _ => Response::text(404, "unknown path; try /metrics, /health or /quality\n"),
    }
}

fn json_response(status: u16, value: &Json) -> Response {
    Response {
        status,
        content_type: "application/json",
        body: serde_json::to_vec_pretty(value).unwrap_or_default(),
    }
}

fn component(healthy: bool, detail: String, extra: Json) -> Json {
    let mut c = json!({ "healthy": healthy, "detail": detail });
    if let (Some(map), Json::Object(more)) = (c.as_object_mut(), extra) {
        map.extend(more);
    }
    c
}

/// The appliance's health from a snapshot: `overall_status` is `down` when ClickHouse
/// is failing and the spill cannot take more (nothing can be stored), `degraded`
/// when any component is unhealthy, else `healthy`.
pub fn health(s: &Snapshot) -> Json {
    let clickhouse_ok = !s.degraded && s.refused.is_none();
    let clickhouse = component(
        clickhouse_ok,
        match (&s.refused, s.degraded) {
            (Some(reason), _) => format!("blocks refused: {reason}"),
            (None, true) => format!("retrying ({} failed INSERTs)", s.errors),
            (None, false) => format!("{} INSERTs", s.inserts),
        },
        json!({ "latency_ms_p99": s.latency_us[1] as f64 / 1000.0 }),
    );
    let spill = component(
        !s.spill_refusing,
        if s.spill_refusing {
            "refusing blocks (full or failing): intake stopped".to_owned()
        } else {
            format!("{} bytes pending", s.spill_pending_bytes)
        },
        json!({ "pending_bytes": s.spill_pending_bytes }),
    );
    let fill = s.queued_bytes as f64 / s.ring_bytes.max(1) as f64;
    let pipeline = component(
        fill < 0.9,
        format!("rings {:.0}% full, {} rows open", fill * 100.0, s.open),
        json!({ "ring_utilization": fill }),
    );
    let nats = component(
        s.nats_state != crate::pipeline::NATS_DOWN,
        match s.nats_state {
            crate::pipeline::NATS_UP => format!(
                "consuming; durable through sequence {}, {} pending in the stream, {} redelivered",
                s.watermark, s.jetstream_pending, s.redelivered
            ),
            crate::pipeline::NATS_DOWN => format!(
                "connection lost, reconnecting ({} reconnects); durable through sequence {}",
                s.reconnects[0], s.watermark
            ),
            _ => "no NATS session (starting, or the synthetic source)".to_owned(),
        },
        json!({
            "watermark": s.watermark,
            "jetstream_pending": s.jetstream_pending,
            "redelivered": s.redelivered,
            "reconnects": s.reconnects[0],
        }),
    );
    let redis = match &s.cache {
        None => component(true, "cache off".to_owned(), json!({})),
        Some(c) => component(
            c.up,
            if c.up {
                format!("writing, lag {} ms", c.lag_ms)
            } else {
                format!("unreachable or refusing, retrying; lag {} ms", c.lag_ms)
            },
            json!({ "lag_ms": c.lag_ms, "latency_ms_p99": c.write_us[1] as f64 / 1000.0 }),
        ),
    };
    let [written, dropped, audit_errors] = s.audit_counts;
    let postgres = component(
        s.references_up,
        if s.references_up {
            format!(
                "{} instruments; audit {written} rows, {dropped} dropped",
                s.references
            )
        } else {
            format!(
                "unreachable, retrying: reference checks use what was loaded; audit {audit_errors} failed writes, {dropped} dropped"
            )
        },
        json!({ "audit_rows": written, "audit_dropped": dropped }),
    );
    let components = json!({
        "clickhouse": clickhouse,
        "nats": nats,
        "redis": redis,
        "postgres": postgres,
        "spill": spill,
        "pipeline": pipeline,
    });
    let all: Vec<bool> = components
        .as_object()
        .map(|m| m.values().map(|c| c["healthy"] == json!(true)).collect())
        .unwrap_or_default();
    let healthy = all.iter().filter(|h| **h).count();
    let overall = if !clickhouse_ok && s.spill_refusing {
        "down"
    } else if healthy < all.len() {
        "degraded"
    } else {
        "healthy"
    };
    json!({
        "overall_status": overall,
        "components": components,
        "summary": {
            "health_percentage": 100.0 * healthy as f64 / all.len().max(1) as f64,
            "healthy_components": healthy,
            "total_components": all.len(),
        },
    })
}

/// The last hour's quality report, read from ClickHouse now (bounded by the
/// connection's timeouts).
fn quality_report(source: &QualitySource) -> Response {
    let until_s = now_ms().div_euclid(1000) + 1;
    let window = Window {
        from_s: until_s - 3600,
        until_s,
        tokens: Vec::new(),
        tick_subject_prefix: source.tick_subject_prefix.clone(),
        distributed: source.distributed,
    };
    let report = crate::native::Connection::connect(&source.options)
        .and_then(|mut conn| quality::report(&mut conn, &window));
    match report {
        Ok(report) => json_response(200, &report.to_json()),
        Err(e) => json_response(503, &json!({ "error": format!("reading ClickHouse: {e}") })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::CacheSnapshot;

    #[test]
    fn health_degrades_with_redis_and_goes_down_without_any_store() {
        let mut s = Snapshot {
            references_up: true,
            ring_bytes: 100,
            cache: Some(CacheSnapshot {
                up: true,
                ..CacheSnapshot::default()
            }),
            ..Snapshot::default()
        };
        assert_eq!(health(&s)["overall_status"], "healthy");
        s.cache = Some(CacheSnapshot {
            up: false,
            lag_ms: 4_000,
            ..CacheSnapshot::default()
        });
        let h = health(&s);
        assert_eq!(h["overall_status"], "degraded");
        assert_eq!(h["components"]["redis"]["lag_ms"], 4_000);
        assert_eq!(h["summary"]["healthy_components"], 5);
        s.degraded = true;
        s.spill_refusing = true;
        assert_eq!(health(&s)["overall_status"], "down");
    }

    #[test]
    fn a_lost_nats_connection_degrades_health() {
        let mut s = Snapshot {
            references_up: true,
            ring_bytes: 100,
            nats_state: crate::pipeline::NATS_UP,
            jetstream_pending: 12,
            ..Snapshot::default()
        };
        let h = health(&s);
        assert_eq!(h["overall_status"], "healthy");
        assert_eq!(h["components"]["nats"]["jetstream_pending"], 12);
        s.nats_state = crate::pipeline::NATS_DOWN;
        s.reconnects[0] = 3;
        let h = health(&s);
        assert_eq!(h["overall_status"], "degraded");
        assert_eq!(h["components"]["nats"]["healthy"], false);
        let detail = h["components"]["nats"]["detail"].as_str().unwrap();
        assert!(detail.contains("reconnecting (3 reconnects)"), "{detail}");
    }
}
