//! Component probes behind `alphapt-storage health`: each one connects, asks the
//! server for its version, and times the round trip. Bounded: every probe has a
//! connect and read timeout, so a dead or silent server reports `down`, never hangs.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::native;

/// Longest any one probe may take to connect or to wait for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a component is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Answers and is usable.
    Up,
    /// Answers but something is missing (e.g. the database was never migrated).
    Degraded,
    /// Does not answer.
    Down,
}

/// One component's probe result.
#[derive(Clone, Debug, Serialize)]
pub struct Component {
    /// `clickhouse`, `nats`, `redis` or `postgres`.
    pub name: &'static str,
    /// The verdict.
    pub status: Status,
    /// Round trip of the probe, ms.
    pub latency_ms: f64,
    /// Server version, when it answered.
    pub version: Option<String>,
    /// What went wrong, or what was checked.
    pub detail: String,
    /// NATS: the appliance's durable consumers (every partition's, with partitions on)
    /// and how far each is behind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerLag>,
    /// ClickHouse with `clickhouse.shards`: every shard's server, probed alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardServer>,
}

/// One server of a ClickHouse cluster (`clickhouse.shards`), as probed.
#[derive(Clone, Debug, Serialize)]
pub struct ShardServer {
    /// The shard, from 1, in `clickhouse.shards` order.
    pub shard: usize,
    /// `host:port`.
    pub server: String,
    /// The verdict for this server.
    pub status: Status,
    /// Round trip of the probe, ms.
    pub latency_ms: f64,
    /// Server version, when it answered.
    pub version: Option<String>,
    /// What went wrong, or what was checked.
    pub detail: String,
}

/// One durable consumer of the appliance, as JetStream reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ConsumerLag {
    /// The stream.
    pub stream: String,
    /// The durable's name.
    pub durable: String,
    /// Its subject partition, with partitions on.
    pub partition: Option<u32>,
    /// Whether the consumer exists (an appliance created it); a partition whose
    /// consumer is missing has never been served.
    pub exists: bool,
    /// Messages of its subjects not yet delivered: the lag.
    pub pending: u64,
    /// Delivered and not yet acknowledged.
    pub unacked: u64,
    /// Highest stream sequence acknowledged with everything below it.
    pub ack_floor: u64,
    /// Pull requests waiting: above 0, an appliance is serving it now.
    pub waiting: u64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Overall verdict: down when ClickHouse (the store) is down, degraded when any
    /// other component is not up, else up.
    pub status: Status,
    /// Per component.
    pub components: Vec<Component>,
}

impl Report {
    /// Exit status for the CLI: 0 healthy, 1 degraded, 2 down.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            Status::Up => 0,
            Status::Degraded => 1,
            Status::Down => 2,
        }
    }
}

/// Probes every component the config names.
pub fn check(config: &Config, clickhouse: &native::Options) -> Report {
    let mut nats = probe_nats(&config.nats.url);
    if nats.status == Status::Up {
        match consumer_lags(config) {
            Ok(lags) => {
                let missing = lags.iter().filter(|l| !l.exists).count();
                if missing > 0 && config.nats.partitions > 0 {
                    nats.status = Status::Degraded;
                    nats.detail = format!(
                        "{}; {missing} of {} partition consumers missing (a partition no appliance has served)",
                        nats.detail,
                        lags.len()
                    );
                }
                nats.consumers = lags;
            }
            Err(error) => {
                nats.detail = format!("{}; consumers unreadable: {error}", nats.detail);
            }
        }
    }
    let clickhouse = if config.clickhouse.shards.is_empty() {
        probe_clickhouse(clickhouse, &config.clickhouse.database)
    } else {
        probe_cluster(config, clickhouse)
    };
    let components = vec![
        clickhouse,
        nats,
        probe_redis(
            &config.redis.url,
            config.redis.password.expose(),
            &config.redis.tls_settings(),
            config.redis.cluster,
        ),
        probe_postgres(&config.postgres.url, &config.postgres.tls_settings()),
    ];
    let status = if components[0].status == Status::Down {
        Status::Down
    } else if components.iter().all(|c| c.status == Status::Up) {
        Status::Up
    } else {
        Status::Degraded
    };
    Report { status, components }
}

fn timed<T>(work: impl FnOnce() -> Result<T, String>) -> (Result<T, String>, f64) {
    let started = Instant::now();
    let outcome = work();
    (outcome, started.elapsed().as_secs_f64() * 1e3)
}

fn component(
    name: &'static str,
    outcome: Result<(String, Status, String), String>,
    latency_ms: f64,
) -> Component {
    match outcome {
        Ok((version, status, detail)) => Component {
            name,
            status,
            latency_ms,
            version: Some(version),
            detail,
            consumers: Vec::new(),
            shards: Vec::new(),
        },
        Err(detail) => Component {
            name,
            status: Status::Down,
            latency_ms,
            version: None,
            detail,
            consumers: Vec::new(),
            shards: Vec::new(),
        },
    }
}

/// ClickHouse: handshake, ping, and whether the configured database exists.
pub fn probe_clickhouse(options: &native::Options, database: &str) -> Component {
    let mut options = options.clone();
    options.database = String::new();
    options.connect_timeout = options.connect_timeout.min(PROBE_TIMEOUT);
    options.io_timeout = options.io_timeout.min(PROBE_TIMEOUT);
    let (outcome, latency_ms) = timed(|| {
        let mut conn = native::Connection::connect(&options).map_err(|e| e.to_string())?;
        conn.ping().map_err(|e| e.to_string())?;
        let version = conn.server().version();
        let quoted = database.replace('\\', "\\\\").replace('\'', "\\'");
        let found = conn
            .query(&format!(
                "SELECT count() FROM system.databases WHERE name = '{quoted}'"
            ))
            .map_err(|e| e.to_string())?
            .scalar()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        Ok(if found == 1 {
            (
                version,
                Status::Up,
                format!("database `{database}` present"),
            )
        } else {
            let detail =
                format!("database `{database}` does not exist; run `alphapt-storage migrate up`");
            (version, Status::Degraded, detail)
        })
    });
    component("clickhouse", outcome, latency_ms)
}

/// A ClickHouse cluster: every replica of every shard probed as [`probe_clickhouse`]
/// does; down when no shard has a replica that answers (nothing can be stored),
/// degraded when any server does not answer (a shard without one spills its
/// instruments' blocks; one with another fails over), up when all do.
fn probe_cluster(config: &Config, template: &native::Options) -> Component {
    let mut servers = Vec::new();
    let shards = config.clickhouse.replicas();
    let mut shards_down = 0;
    for (index, replicas) in shards.iter().enumerate() {
        let mut any_up = false;
        for (host, port) in replicas {
            let options = native::Options {
                host: host.clone(),
                port: *port,
                ..template.clone()
            };
            let probe = probe_clickhouse(&options, &config.clickhouse.database);
            any_up |= probe.status != Status::Down;
            servers.push(ShardServer {
                shard: index + 1,
                server: format!("{host}:{port}"),
                status: probe.status,
                latency_ms: probe.latency_ms,
                version: probe.version,
                detail: probe.detail,
            });
        }
        shards_down += usize::from(!any_up);
    }
    let up = servers.iter().filter(|s| s.status == Status::Up).count();
    let down = servers.iter().filter(|s| s.status == Status::Down).count();
    let status = if shards_down == shards.len() {
        Status::Down
    } else if up == servers.len() {
        Status::Up
    } else {
        Status::Degraded
    };
    let mut versions: Vec<&str> = servers
        .iter()
        .filter_map(|s| s.version.as_deref())
        .collect();
    versions.dedup();
    Component {
        name: "clickhouse",
        status,
        latency_ms: servers.iter().map(|s| s.latency_ms).fold(0.0, f64::max),
        version: (versions.len() == 1).then(|| versions[0].to_owned()),
        detail: format!(
            "{up} of {} servers up in {} shards{}",
            servers.len(),
            shards.len(),
            match (down, shards_down) {
                (0, _) => String::new(),
                (_, 0) => format!("; {down} down, every shard still has a replica"),
                _ => format!(
                    "; {down} down, {shards_down} shards without a replica: their instruments' blocks spill until one is back"
                ),
            }
        ),
        consumers: Vec::new(),
        shards: servers,
    }
}

/// NATS: read the server's INFO line, then PING/PONG for a round trip.
pub fn probe_nats(url: &str) -> Component {
    let (outcome, latency_ms) = timed(|| {
        let parsed = url::Url::parse(url).map_err(|e| format!("bad NATS URL: {e}"))?;
        let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
        let port = parsed.port().unwrap_or(4222);
        let address = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} has no address"))?;
        let stream = TcpStream::connect_timeout(&address, PROBE_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(PROBE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(PROBE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("no INFO from server: {e}"))?;
        let info = line
            .strip_prefix("INFO ")
            .ok_or_else(|| format!("expected INFO, got {:?}", line.trim_end()))?;
        let info: serde_json::Value =
            serde_json::from_str(info.trim()).map_err(|e| format!("bad INFO JSON: {e}"))?;
        let version = info["version"].as_str().unwrap_or("unknown").to_string();
        let jetstream = info["jetstream"].as_bool().unwrap_or(false);
        let connect = serde_json::json!({
            "verbose": false, "pedantic": false, "name": "alphapt-storage-health",
            "user": parsed.username(), "pass": parsed.password().unwrap_or(""),
        });
        let mut writer = stream;
        write!(writer, "CONNECT {connect}\r\nPING\r\n").map_err(|e| e.to_string())?;
        // The server answers PONG, or -ERR on bad credentials; skip anything else it
        // may interleave (a second INFO), bounded.
        for _ in 0..8 {
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("no PONG: {e}"))?;
            if line.starts_with("PONG") {
                return Ok(if jetstream {
                    (version, Status::Up, "JetStream enabled".to_string())
                } else {
                    (
                        version,
                        Status::Degraded,
                        "JetStream is off; start nats-server with -js".to_string(),
                    )
                });
            }
            if line.starts_with("-ERR") {
                return Err(format!("server refused: {}", line.trim_end()));
            }
        }
        Err("no PONG from server".into())
    });
    component("nats", outcome, latency_ms)
}

/// The appliance's durable consumers on both streams: the one durable, or with
/// partitions on every partition's (`<durable>-p<id>` for id 0 to N-1, whichever
/// appliance serves it), each with its lag. A stream not created yet lists nothing.
pub fn consumer_lags(config: &Config) -> Result<Vec<ConsumerLag>, String> {
    use crate::receive::nats::jetstream::JetStream;
    use crate::receive::nats::NatsConn;
    let nats = &config.nats;
    let tls = nats.tls_client().map_err(|e| e.to_string())?;
    let mut conn = NatsConn::connect_with(&nats.url, PROBE_TIMEOUT, tls.as_ref())
        .map_err(|e| e.to_string())?;
    let js = JetStream::new(PROBE_TIMEOUT);
    let partitions: Vec<Option<u32>> = if nats.partitions > 0 {
        (0..nats.partitions).map(Some).collect()
    } else {
        vec![None]
    };
    let mut lags = Vec::new();
    for stream in [&nats.stream_ticks, &nats.stream_signals] {
        if js
            .stream_info(&mut conn, stream)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            continue;
        }
        for &partition in &partitions {
            let durable = match partition {
                Some(id) => format!("{}-p{id}", nats.durable),
                None => nats.durable.clone(),
            };
            let info = js
                .consumer_info(&mut conn, stream, &durable)
                .map_err(|e| e.to_string())?;
            lags.push(ConsumerLag {
                stream: stream.clone(),
                durable,
                partition,
                exists: info.is_some(),
                pending: info.as_ref().map_or(0, |i| i.num_pending),
                unacked: info.as_ref().map_or(0, |i| i.num_ack_pending),
                ack_floor: info.as_ref().map_or(0, |i| i.ack_floor.stream_seq),
                waiting: info.as_ref().map_or(0, |i| i.num_waiting),
            });
        }
    }
    Ok(lags)
}

/// Redis: PING and the server version from INFO.
pub fn probe_redis(
    url: &str,
    password: &str,
    tls: &crate::tls::Settings,
    cluster: bool,
) -> Component {
    let (outcome, latency_ms) = timed(|| {
        // The appliance's own connect: same URL and password rules, same timeouts.
        let mut conn = crate::cache::redis::connect(url, password, tls, PROBE_TIMEOUT)?;
        if cluster {
            return probe_redis_cluster(url, password, tls, &mut conn);
        }
        let pong: String = redis::cmd("PING")
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        let version = redis_info(&mut conn, "server", "redis_version")?;
        let cluster_info: String = redis::cmd("INFO")
            .arg("cluster")
            .query(&mut conn)
            .unwrap_or_default();
        if cluster_info.contains("cluster_enabled:1") {
            return Ok((
                version,
                Status::Degraded,
                "the server is a Redis Cluster node but `redis.cluster` is off: keys of other nodes' slots are refused (MOVED); set `redis.cluster = true` and `redis.hash_tags = true`".to_owned(),
            ));
        }
        Ok((version, Status::Up, format!("PING answered {pong}")))
    });
    component("redis", outcome, latency_ms)
}

/// `field` of `INFO <section>`, `unknown` when absent.
fn redis_info(conn: &mut redis::Connection, section: &str, field: &str) -> Result<String, String> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query(conn)
        .map_err(|e| e.to_string())?;
    Ok(info_field(&text, field))
}

/// `field:value` lines (INFO, CLUSTER INFO): the value, `unknown` when absent.
fn info_field(text: &str, field: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or("unknown")
        .trim()
        .to_owned()
}

/// A Redis Cluster through its seed `conn`: up when `cluster_state` is ok and every
/// master owning slots answers PING; degraded when the seed answers but the cluster
/// does not (a master down and not yet replaced, slots unassigned).
fn probe_redis_cluster(
    url: &str,
    password: &str,
    tls: &crate::tls::Settings,
    conn: &mut redis::Connection,
) -> Result<(String, Status, String), String> {
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(conn)
        .map_err(|e| format!("CLUSTER INFO: {e} (is `redis.cluster` right for this server?)"))?;
    let state = info_field(&info, "cluster_state");
    let version = redis_info(conn, "server", "redis_version")?;
    let link = crate::cache::redis::Link::connect(url, password, tls, PROBE_TIMEOUT, true, &[])?;
    let masters = link.nodes();
    let mut down = Vec::new();
    let mut link = link;
    for (i, addr) in masters.iter().enumerate() {
        let answered = link.conn(i).and_then(|c| {
            redis::cmd("PING")
                .query::<String>(c)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = answered {
            down.push(format!("{addr} ({e})"));
        }
    }
    let detail = format!(
        "cluster_state:{state}; {} of {} masters answer PING{}",
        masters.len() - down.len(),
        masters.len(),
        if down.is_empty() {
            String::new()
        } else {
            format!("; down: {}", down.join(", "))
        }
    );
    let status = if state == "ok" && down.is_empty() {
        Status::Up
    } else {
        Status::Degraded
    };
    Ok((version, status, detail))
}

/// PostgreSQL: connect and read `server_version`.
pub fn probe_postgres(url: &str, tls: &crate::tls::Settings) -> Component {
    let (outcome, latency_ms) = timed(|| {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| format!("bad PostgreSQL URL: {e}"))?;
        config.connect_timeout(PROBE_TIMEOUT);
        let mut client = crate::tls::connect_postgres(&mut config, tls)
            .map_err(|e| crate::refdata::connect_message(&e))?;
        let row = client
            .query_one("SHOW server_version", &[])
            .map_err(|e| e.to_string())?;
        let version: String = row.get(0);
        Ok((version, Status::Up, "connected".to_string()))
    });
    component("postgres", outcome, latency_ms)
}
