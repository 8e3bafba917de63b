//! The Redis thread: every `redis.flush_interval_ms` it takes the slots the shards
//! changed, encodes one RESP pipeline and writes it; instrument rows from the refdata
//! thread go out the same way.
//!
//! ```text
//!   loop ─► drain instrument channel and history queues (always, Redis up or not)
//!        ─► lag = now − oldest unwritten change (from the tables' dirty marks)
//!        ─► connected? no: wait out the backoff (stop flag watched every 10 ms), connect;
//!                          on success mark every slot and instrument for a rewrite
//!        ─► flush: take dirty slots ─► HSET/ZADD/EXPIRE … ─► req_packed_commands (≤ 1 MiB a request)
//!              ok: count, HDR the round trip
//!              I/O error or a server-wide error (OOM, NOAUTH, READONLY, LOADING…): mark the
//!              batch's slots dirty again, restore its history cursors, drop the connection
//!              a per-key error (WRONGTYPE on a key someone else owns): counted as refused
//!        ─► nothing to write for a second: PING (a Redis restarted empty is noticed)
//!        ─► sleep flush_interval_ms, or as long as the flush took if that is longer
//!           (at most half the time writing), draining the history queues meanwhile
//! ```
//!
//! Must never: stall a shard (it only reads their tables and queues), grow without
//! bound (the tables and queues are fixed, the pending histories bounded, the
//! instrument map holds one row per instrument), take more than half of a core's
//! time on a loaded host (see the pause after a long flush), or lose the
//! latest state to a dropped connection (the batch is marked again, and a reconnect
//! rewrites everything, so a Redis that restarted empty is refilled at once).
//!
//! History: each shard queues every tick's entry (`cache::tick`); the thread moves them
//! into per-instrument pending lists before each flush and between its requests, and
//! writes each list with one ZADD, then trims the set to `redis.history_len`. A list keeps at most
//! `history_len` entries: older ones would be trimmed at once anyway, and when one is
//! discarded the set is deleted and written anew (`history_restarts_total`), so what
//! it held before cannot sit beside the newer entries with a hole between. The same
//! happens when the queue dropped entries (a gap in the instrument's count,
//! `history_missed_total`) and on the first write of each instrument after start, as
//! the set may end with ticks of an earlier run that this run never saw. A reader can
//! thus trust that the set is every tick from its oldest entry on.
//!
//! Pending entries are bounded twice: `history_len` per instrument, and
//! [`PENDING_MAX`] in all; at that bound the thread leaves records in the queues,
//! which then drop and count (a Redis outage longer than the queues hold).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redis::{ConnectionLike, Value};

use crate::config::Config;
use crate::model::json::{write_i64, write_price_f64_text, write_score, write_u64};
use crate::model::{Price, Tick};
use crate::runtime::clock::now_ms;
use crate::runtime::Backoff;

use super::cluster::Cluster;
use super::keys::Keys;
use super::resp::Pipeline;
use super::signal;
use super::tick::{HistoryEntry, TickSlot, BAR_LABELS, BAR_MS};
use super::CacheFeed;

/// Bytes of one pipelined request before it is sent and the next one started.
const REQUEST_BYTES: usize = 1 << 20;

/// Instrument rows queued from the refdata thread.
pub const INSTRUMENT_QUEUE: usize = 1024;

/// How often the latency percentiles are published.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// An idle connection is checked with a PING this often: a Redis that restarted
/// empty while nothing changed is noticed and refilled.
const IDLE_PING: Duration = Duration::from_secs(1);

/// A key's expiry is set when the thread first writes it, then refreshed at most this
/// often (or at half the TTL if that is shorter): an EXPIRE per key per flush would be
/// half the commands sent.
const EXPIRE_REFRESH_MS: i64 = 60_000;

/// Longest sleep between two looks at the stop flag (and at the history queues).
const STOP_POLL: Duration = Duration::from_millis(10);

/// History entries pending in all (48 B each: 12 MiB), beyond one queue's worth
/// ([`super::tick::HISTORY_QUEUE`]) of each shard.
pub const PENDING_MAX: usize = 1 << 18;

/// A pending list whose buffer grew past this many entries (a burst, an outage) gives
/// it back once written.
const PENDING_SHRINK_ABOVE: usize = 256;

/// Settings of the Redis thread.
#[derive(Clone)]
pub struct CacheConfig {
    /// Server URL.
    pub url: String,
    /// Password sent with AUTH when the URL has none.
    pub password: String,
    /// TLS (`redis.tls*`, or a `rediss://` URL).
    pub tls: crate::tls::Settings,
    /// Key names.
    pub keys: Keys,
    /// `url` is a seed of a Redis Cluster (`redis.cluster`).
    pub cluster: bool,
    /// Time between flushes.
    pub flush_interval: Duration,
    /// Entries kept per history.
    pub history_len: u32,
    /// Expiries, s (0: none): ticks and histories, bars, signals, instruments.
    pub ttl_s: [u64; 4],
    /// Connect, read and write timeout.
    pub timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl CacheConfig {
    /// From `[redis]`.
    pub fn from_config(config: &Config) -> CacheConfig {
        let r = &config.redis;
        CacheConfig {
            url: r.url.clone(),
            password: r.password.expose().to_owned(),
            tls: r.tls_settings(),
            keys: Keys::from_config(r),
            cluster: r.cluster,
            flush_interval: Duration::from_millis(r.flush_interval_ms),
            history_len: r.history_len,
            ttl_s: [
                r.tick_ttl_s,
                r.ohlc_ttl_s,
                r.signal_ttl_s,
                r.instrument_ttl_s,
            ],
            timeout: Duration::from_millis(r.timeout_ms),
            backoff_initial: Duration::from_millis(r.backoff_initial_ms),
            backoff_max: Duration::from_millis(r.backoff_max_ms),
        }
    }
}

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("url", &crate::config::redact_url(&self.url))
            .field("keys", &self.keys)
            .field("flush_interval", &self.flush_interval)
            .finish_non_exhaustive()
    }
}

/// The thread's figures, read by the status line, the summary and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Connections made to Redis, the first included.
    pub connects_total: AtomicU64,
    /// Connected and the last write went through.
    pub up: AtomicBool,
    /// Age of the oldest change not yet written, ms (0 when none waits).
    pub lag_ms: AtomicU64,
    /// Keys written (each HSET, ZADD or DEL counts one).
    pub keys_written_total: AtomicU64,
    /// Failed requests and connects.
    pub errors_total: AtomicU64,
    /// Commands Redis refused for one key (e.g. WRONGTYPE): not retried.
    pub refused_total: AtomicU64,
    /// MOVED/ASK redirections followed (a Redis Cluster resharding or failing over).
    pub redirects_total: AtomicU64,
    /// Changes overwritten before the thread wrote them (only the latest is written).
    pub conflated_total: AtomicU64,
    /// Histories deleted and started again (first write of a run, a gap, or more
    /// entries than `history_len` since the last write).
    pub history_restarts_total: AtomicU64,
    /// History entries a shard's queue dropped (full) before the thread read them.
    pub history_missed_total: AtomicU64,
    /// Share of instruments `query` answered from Redis, parts per million, read each
    /// second from `{prefix}query:stats` (which `query` keeps).
    pub hit_rate_ppm: AtomicU64,
    /// Write round trip percentiles, µs (HDR, published each second).
    pub write_p50_us: AtomicU64,
    /// 99th percentile.
    pub write_p99_us: AtomicU64,
    /// Largest.
    pub write_max_us: AtomicU64,
}

/// One instrument row of PostgreSQL's `instruments`, as `instrument:{token}` holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstrumentMeta {
    /// Token.
    pub token: u32,
    /// Trading symbol.
    pub tradingsymbol: String,
    /// Exchange.
    pub exchange: String,
    /// Segment.
    pub segment: String,
    /// Tick size, as PostgreSQL prints the numeric.
    pub tick_size: String,
    /// Lot size.
    pub lot_size: i32,
    /// Upper circuit limit, empty when none.
    pub upper_circuit_limit: String,
    /// Lower circuit limit, empty when none.
    pub lower_circuit_limit: String,
}

/// What the refdata thread tells the Redis thread.
#[derive(Debug)]
pub enum InstrumentChange {
    /// Every instrument, after a (re)load: replaces what the thread knew.
    All(Vec<InstrumentMeta>),
    /// One row inserted or updated.
    Upsert(InstrumentMeta),
    /// One row deleted.
    Delete(u32),
}

/// The channel from refdata to the Redis thread.
pub fn instrument_channel() -> (SyncSender<InstrumentChange>, Receiver<InstrumentChange>) {
    std::sync::mpsc::sync_channel(INSTRUMENT_QUEUE)
}

/// Sends `change`, waiting while the queue is full (the Redis thread drains it every
/// flush, Redis up or not) unless `stop` is raised; false when the thread is gone.
pub fn send_instrument(
    tx: &SyncSender<InstrumentChange>,
    mut change: InstrumentChange,
    stop: &AtomicBool,
) -> bool {
    loop {
        match tx.try_send(change) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                change = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// A slot in a batch: where, and what to record once the write went through.
#[derive(Clone, Copy)]
enum Item {
    Tick {
        table: usize,
        slot: usize,
        seq: u64,
        expire: bool,
    },
    History(HistoryWrite),
    Signal {
        table: usize,
        slot: usize,
        seq: u64,
        expire: bool,
    },
}

/// A history in a batch: the first `count` pending entries of a tick slot's list, as
/// of `epoch`.
#[derive(Clone, Copy)]
struct HistoryWrite {
    table: usize,
    slot: usize,
    count: usize,
    epoch: u32,
    restart: bool,
    expire: bool,
}

/// Never a slot's sequence (those are even when readable): forces a rewrite.
const REWRITE: u64 = u64::MAX;

/// The reader's record of one table: what it wrote, and since when a change waits.
struct Watch {
    /// Per slot: the sequence last written to Redis ([`REWRITE`]: write it again).
    written: Vec<u64>,
    /// Per slot: when the thread first saw the waiting change (Unix ms; 0: none waits).
    since_ms: Vec<i64>,
    /// Per slot: when the slot's keys last got their EXPIRE (Unix ms; 0: never).
    expired_ms: Vec<i64>,
}

/// One instrument's history entries not yet in Redis.
#[derive(Default)]
struct Pending {
    token: u32,
    /// The `n` the next record should carry.
    next: u32,
    /// A record was seen this run (`next` means something).
    seen: bool,
    /// Oldest first, at most `history_len`.
    entries: VecDeque<HistoryEntry>,
    /// Delete the set before writing `entries`.
    restart: bool,
    /// Moves on whenever entries leave other than by being written (a gap, a list
    /// over `history_len`): a batch encoded before that must not take them off.
    epoch: u32,
    /// In the thread's list of pending histories.
    queued: bool,
    /// When it was queued (Unix ms), for the lag.
    since_ms: i64,
    /// When the set last got its EXPIRE (Unix ms; 0: never).
    expired_ms: i64,
}

impl Pending {
    fn fresh() -> Pending {
        // The first write of a run starts the set again.
        Pending {
            restart: true,
            ..Pending::default()
        }
    }
}

impl Watch {
    fn new(slots: usize) -> Watch {
        Watch {
            written: vec![0; slots],
            since_ms: vec![0; slots],
            expired_ms: vec![0; slots],
        }
    }
}

/// Opens a connection with the configured timeouts; with `tls` on (`redis.tls` or a
/// `rediss://` URL), over TLS verified against `tls.ca_file` (empty: the system's CAs)
/// with the client certificate when one is named. Never falls back to plaintext.
pub fn connect(
    url: &str,
    password: &str,
    tls: &crate::tls::Settings,
    timeout: Duration,
) -> Result<redis::Connection, String> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| format!("bad Redis URL: {e}"))?;
    connect_info(info, password, tls, timeout)
}

/// [`connect`] to an address already parsed (a cluster node's).
fn connect_info(
    mut info: redis::ConnectionInfo,
    password: &str,
    tls: &crate::tls::Settings,
    timeout: Duration,
) -> Result<redis::Connection, String> {
    if info.redis.password.is_none() && !password.is_empty() {
        info.redis.password = Some(password.to_string());
    }
    let client = if tls.enabled {
        if let redis::ConnectionAddr::Tcp(host, port) = &info.addr {
            // `redis.tls` on a redis:// URL: the same server, over TLS.
            info.addr = redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            };
        }
        let read = |key: &str, path: &str| {
            std::fs::read(path).map_err(|e| format!("redis.{key} {path}: {e}"))
        };
        let root_cert = if tls.ca_file.is_empty() {
            None
        } else {
            Some(read("tls_ca_file", &tls.ca_file)?)
        };
        let client_tls = if tls.cert_file.is_empty() {
            None
        } else {
            Some(redis::ClientTlsConfig {
                client_cert: read("tls_cert_file", &tls.cert_file)?,
                client_key: read("tls_key_file", &tls.key_file)?,
            })
        };
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
        .map_err(|e| format!("Redis TLS: {e}"))?
    } else {
        redis::Client::open(info).map_err(|e| e.to_string())?
    };
    // A TLS failure is named by what it means (an untrusted CA, a refused client
    // certificate) rather than by the alert's bare name.
    // redis-rs keeps a TLS error's text only (its wrapped I/O error is reachable
    // through the deprecated, non-'static `cause`), so the text is what is read.
    let described = |e: redis::RedisError| {
        let text = e.to_string();
        crate::tls::explain_text(&text).unwrap_or(text)
    };
    let mut conn = client
        .get_connection_with_timeout(timeout)
        .map_err(described)?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|_| conn.set_write_timeout(Some(timeout)))
        .map_err(described)?;
    if tls.enabled {
        // Under TLS 1.3 the server judges a client certificate after the handshake:
        // one PING here makes a refusal an error of connect, not of the first write.
        redis::cmd("PING")
            .query::<String>(&mut conn)
            .map_err(described)?;
    }
    Ok(conn)
}

/// Where the cache's commands go: one server, or a Redis Cluster's masters
/// (`redis.cluster`, see [`super::cluster`]).
pub enum Link {
    /// One server.
    Single(redis::Connection),
    /// A cluster, its slot map read at connect.
    Cluster(Cluster),
}

impl Link {
    /// Connects to `url`; with `cluster`, reads the slot map from `url` or, when it
    /// does not answer, from one of `seeds` (`host:port`, e.g. the last map's masters).
    pub fn connect(
        url: &str,
        password: &str,
        tls: &crate::tls::Settings,
        timeout: Duration,
        cluster: bool,
        seeds: &[String],
    ) -> Result<Link, String> {
        if !cluster {
            return connect(url, password, tls, timeout).map(Link::Single);
        }
        let first = super::cluster::url_addr(url)?;
        let mut all = vec![first.clone()];
        all.extend(seeds.iter().filter(|s| **s != first).cloned());
        let (url, password, tls) = (url.to_owned(), password.to_owned(), tls.clone());
        let open: super::cluster::Opener = Box::new(move |addr: &str| {
            connect_info(
                super::cluster::node_info(&url, addr)?,
                &password,
                &tls,
                timeout,
            )
        });
        Cluster::connect(&all, open).map(Link::Cluster)
    }

    /// Sends a pipeline; one reply per command, in order.
    pub fn request(&mut self, pipeline: &Pipeline) -> redis::RedisResult<Vec<Value>> {
        match self {
            Link::Single(conn) => {
                conn.req_packed_commands(pipeline.bytes(), 0, pipeline.commands())
            }
            Link::Cluster(cluster) => cluster.request(pipeline.bytes(), pipeline.starts()),
        }
    }

    /// The connection that serves `key`.
    pub fn conn_for_key(&mut self, key: &[u8]) -> Result<&mut redis::Connection, String> {
        let node = self.node_of(key).ok_or_else(|| {
            format!(
                "no Redis Cluster node owns slot {} (CLUSTERDOWN)",
                super::cluster::key_slot(key)
            )
        })?;
        self.conn(node)
    }

    /// Which connection serves `key`: 0 for one server, else the owning node's index
    /// (`None`: no node owns its slot).
    pub fn node_of(&self, key: &[u8]) -> Option<usize> {
        match self {
            Link::Single(_) => Some(0),
            Link::Cluster(cluster) => cluster.node_of(key),
        }
    }

    /// Connection `node` of [`Link::node_of`].
    pub fn conn(&mut self, node: usize) -> Result<&mut redis::Connection, String> {
        match self {
            Link::Single(conn) => Ok(conn),
            Link::Cluster(cluster) => cluster.conn(node),
        }
    }

    /// Redirections followed since the last call (0 for one server).
    pub fn take_redirects(&mut self) -> u64 {
        match self {
            Link::Single(_) => 0,
            Link::Cluster(cluster) => cluster.take_redirects(),
        }
    }

    /// The cluster's nodes (`host:port`), to seed the next connect; empty for one server.
    pub fn nodes(&self) -> Vec<String> {
        match self {
            Link::Single(_) => Vec::new(),
            Link::Cluster(cluster) => cluster.map().nodes().to_vec(),
        }
    }
}

/// The Redis thread.
pub struct CacheWriter {
    config: CacheConfig,
    feed: CacheFeed,
    instruments_rx: Option<Receiver<InstrumentChange>>,
    stats: Arc<CacheStats>,
    stop: Arc<AtomicBool>,
    link: Option<Link>,
    /// A cluster's nodes as last seen: where to read the slot map when the seed URL
    /// does not answer.
    seeds: Vec<String>,
    /// Per tick table and slot: history entries not yet written.
    pending: Vec<Vec<Pending>>,
    /// Entries in `pending`.
    pending_total: usize,
    /// (tick table, slot) of every history with pending entries.
    history_dirty: Vec<(usize, usize)>,
    instruments: HashMap<u32, InstrumentMeta>,
    instruments_pending: HashSet<u32>,
    instruments_deleted: HashSet<u32>,
    pipeline: Pipeline,
    key: Vec<u8>,
    batch: Vec<Item>,
    /// Slots to write this flush: (signal table?, table, slot).
    dirty: Vec<(bool, usize, usize)>,
    watch_ticks: Vec<Watch>,
    watch_signals: Vec<Watch>,
    slot: TickSlot,
    signal_words: [u64; signal::SLOT_WORDS],
    latency: Histogram<u64>,
    keys_in_request: u64,
    /// When the last request went through.
    last_request: Instant,
}

/// Why a request failed as a whole.
enum Failure {
    Io(String),
    Server(String),
}

impl CacheWriter {
    /// A thread over the shards' tables and the refdata channel.
    pub fn new(
        config: CacheConfig,
        feed: CacheFeed,
        instruments_rx: Option<Receiver<InstrumentChange>>,
        stats: Arc<CacheStats>,
        stop: Arc<AtomicBool>,
    ) -> CacheWriter {
        let watch_ticks = feed.ticks.iter().map(|t| Watch::new(t.slots())).collect();
        let watch_signals = feed.signals.iter().map(|t| Watch::new(t.slots())).collect();
        let pending = feed
            .ticks
            .iter()
            .map(|t| (0..t.slots()).map(|_| Pending::fresh()).collect())
            .collect();
        CacheWriter {
            config,
            feed,
            instruments_rx,
            stats,
            stop,
            link: None,
            seeds: Vec::new(),
            pending,
            pending_total: 0,
            history_dirty: Vec::new(),
            instruments: HashMap::new(),
            instruments_pending: HashSet::new(),
            instruments_deleted: HashSet::new(),
            pipeline: Pipeline::new(),
            key: Vec::with_capacity(64),
            batch: Vec::new(),
            dirty: Vec::new(),
            watch_ticks,
            watch_signals,
            slot: TickSlot::new(),
            signal_words: [0; signal::SLOT_WORDS],
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds"),
            keys_in_request: 0,
            last_request: Instant::now(),
        }
    }

    /// Runs the thread on `core` (unpinned when `None`).
    pub fn spawn(self, core: Option<usize>) -> std::io::Result<JoinHandle<()>> {
        crate::runtime::spawn("redis", core, move || self.run())
    }

    /// Until the stop flag: flush, then one last flush when connected.
    pub fn run(mut self) {
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut retry_at = Instant::now();
        let mut outage = false;
        let mut published = Instant::now();
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            self.drain_instruments();
            self.drain_histories();
            self.publish_lag();
            if self.link.is_none() && Instant::now() >= retry_at {
                match Link::connect(
                    &self.config.url,
                    &self.config.password,
                    &self.config.tls,
                    self.config.timeout,
                    self.config.cluster,
                    &self.seeds,
                ) {
                    Ok(link) => {
                        let nodes = link.nodes();
                        if !nodes.is_empty() {
                            self.seeds = nodes;
                        }
                        self.link = Some(link);
                        self.stats.connects_total.fetch_add(1, Ordering::Relaxed);
                        self.mark_everything();
                        if outage {
                            tracing::info!(
                                "Redis is back; rewriting the latest state of every instrument"
                            );
                        }
                    }
                    Err(e) => {
                        self.fail(&mut outage, &format!("connecting: {e}"));
                        retry_at = Instant::now() + backoff.next_delay();
                    }
                }
            }
            let flush_started = Instant::now();
            if self.link.is_some() {
                match self.flush() {
                    Ok(()) => {
                        backoff.reset();
                        outage = false;
                        self.stats.up.store(true, Ordering::Relaxed);
                    }
                    Err(Failure::Io(e)) => {
                        self.link = None;
                        self.fail(&mut outage, &e);
                        retry_at = Instant::now() + backoff.next_delay();
                    }
                    Err(Failure::Server(e)) => {
                        self.fail(&mut outage, &e);
                        retry_at = Instant::now() + backoff.next_delay();
                        self.link = None;
                    }
                }
            }
            if published.elapsed() >= PUBLISH_EVERY || stopping {
                self.publish_latency();
                self.read_hit_rate();
                published = Instant::now();
            }
            if stopping {
                self.publish_lag();
                return;
            }
            // At most half the time writing: a flush that took longer than the
            // interval (a flat-out load, hundreds of instruments) is followed by a
            // pause as long as itself, so Redis and this thread, which share the
            // cores with the hot path on a small host, do half as many writes of
            // each instrument's latest state while nothing is lost (histories
            // queue, latest states conflate).
            let next = Instant::now() + self.config.flush_interval.max(flush_started.elapsed());
            while Instant::now() < next && !self.stop.load(Ordering::Relaxed) {
                // Parked, not asleep: a stop unparks the thread at once.
                std::thread::park_timeout(
                    STOP_POLL.min(next.saturating_duration_since(Instant::now())),
                );
                self.drain_histories();
            }
        }
    }

    fn fail(&mut self, outage: &mut bool, error: &str) {
        self.stats.errors_total.fetch_add(1, Ordering::Relaxed);
        self.stats.up.store(false, Ordering::Relaxed);
        if !*outage {
            tracing::warn!(
                "Redis cache write failed ({error}); ingestion goes on, the cache catches up when Redis answers"
            );
            *outage = true;
        }
    }

    fn drain_instruments(&mut self) {
        let Some(rx) = &self.instruments_rx else {
            return;
        };
        while let Ok(change) = rx.try_recv() {
            match change {
                InstrumentChange::All(rows) => {
                    let fresh: HashSet<u32> = rows.iter().map(|r| r.token).collect();
                    for gone in self.instruments.keys().filter(|t| !fresh.contains(t)) {
                        self.instruments_deleted.insert(*gone);
                    }
                    self.instruments = rows.into_iter().map(|r| (r.token, r)).collect();
                    self.instruments_pending = fresh;
                }
                InstrumentChange::Upsert(row) => {
                    self.instruments_deleted.remove(&row.token);
                    self.instruments_pending.insert(row.token);
                    self.instruments.insert(row.token, row);
                }
                InstrumentChange::Delete(token) => {
                    self.instruments.remove(&token);
                    self.instruments_pending.remove(&token);
                    self.instruments_deleted.insert(token);
                }
            }
        }
    }

    /// Moves the shards' history records into the per-instrument pending lists.
    fn drain_histories(&mut self) {
        let keep = (self.config.history_len as usize).max(1);
        let now = now_ms();
        let mut missed = 0;
        for (t, queue) in self.feed.histories.iter_mut().enumerate() {
            let take = queue.slots().min(PENDING_MAX - self.pending_total);
            let Ok(chunk) = queue.read_chunk(take) else {
                continue;
            };
            for record in chunk {
                let slot = record.slot as usize;
                let p = &mut self.pending[t][slot];
                if p.seen && record.n != p.next {
                    // The queue was full: entries are missing, the set starts again.
                    missed += u64::from(record.n.wrapping_sub(p.next));
                    self.pending_total -= p.entries.len();
                    p.entries.clear();
                    p.restart = true;
                    p.epoch = p.epoch.wrapping_add(1);
                }
                p.seen = true;
                p.next = record.n.wrapping_add(1);
                p.token = record.token;
                if p.entries.len() >= keep {
                    p.entries.pop_front();
                    p.restart = true;
                    p.epoch = p.epoch.wrapping_add(1);
                } else {
                    self.pending_total += 1;
                }
                p.entries.push_back(record.entry);
                if !p.queued {
                    p.queued = true;
                    p.since_ms = now;
                    self.history_dirty.push((t, slot));
                }
            }
        }
        if missed > 0 {
            self.stats
                .history_missed_total
                .fetch_add(missed, Ordering::Relaxed);
        }
    }

    /// Notes when each waiting change was first seen, and publishes the lag: the age
    /// of the oldest change not yet in Redis.
    fn publish_lag(&mut self) {
        let now = now_ms();
        let mut oldest = now;
        for (t, slot) in &self.history_dirty {
            oldest = oldest.min(self.pending[*t][*slot].since_ms);
        }
        let tables = self.feed.ticks.iter().zip(&mut self.watch_ticks);
        for (table, watch) in tables.chain(self.feed.signals.iter().zip(&mut self.watch_signals)) {
            for slot in 0..table.used() {
                if table.seq(slot) != watch.written[slot] {
                    if watch.since_ms[slot] == 0 {
                        watch.since_ms[slot] = now;
                    }
                    oldest = oldest.min(watch.since_ms[slot]);
                }
            }
        }
        self.stats
            .lag_ms
            .store((now - oldest).max(0) as u64, Ordering::Relaxed);
    }

    /// The query path's hit rate, from the hash `query` increments; a failure here is
    /// left to the next write to notice.
    fn read_hit_rate(&mut self) {
        let key = format!("{}query:stats", self.config.keys.prefix);
        let Some(Ok(conn)) = self.link.as_mut().map(|l| l.conn_for_key(key.as_bytes())) else {
            return;
        };
        let counts: redis::RedisResult<(Option<u64>, Option<u64>)> = redis::cmd("HMGET")
            .arg(key)
            .arg("hits")
            .arg("misses")
            .query(conn);
        if let Ok((hits, misses)) = counts {
            let (hits, misses) = (hits.unwrap_or(0), misses.unwrap_or(0));
            if let Some(rate) = (hits * 1_000_000).checked_div(hits + misses) {
                self.stats.hit_rate_ppm.store(rate, Ordering::Relaxed);
            }
        }
    }

    fn publish_latency(&self) {
        let h = &self.latency;
        if h.is_empty() {
            return;
        }
        let r = Ordering::Relaxed;
        self.stats.write_p50_us.store(h.value_at_quantile(0.5), r);
        self.stats.write_p99_us.store(h.value_at_quantile(0.99), r);
        self.stats.write_max_us.store(h.max(), r);
    }

    /// After a (re)connect: Redis may have restarted empty, so everything is written.
    fn mark_everything(&mut self) {
        for watch in self.watch_ticks.iter_mut().chain(&mut self.watch_signals) {
            watch.written.fill(REWRITE);
            watch.expired_ms.fill(0);
        }
        self.instruments_pending = self.instruments.keys().copied().collect();
    }

    /// Writes every changed slot and pending instrument.
    fn flush(&mut self) -> Result<(), Failure> {
        self.dirty.clear();
        let tables = self
            .feed
            .ticks
            .iter()
            .zip(&self.watch_ticks)
            .map(|t| (false, t));
        let signals = self
            .feed
            .signals
            .iter()
            .zip(&self.watch_signals)
            .map(|t| (true, t));
        for (t, (is_signal, (table, watch))) in tables.enumerate().chain(signals.enumerate()) {
            for slot in 0..table.used() {
                if table.seq(slot) != watch.written[slot] {
                    self.dirty.push((is_signal, t, slot));
                }
            }
        }
        let mut result = Ok(());
        for i in 0..self.dirty.len() {
            if result.is_err() {
                // A failed request: the rest stay unwritten, found again next time.
                break;
            }
            let (is_signal, t, slot) = self.dirty[i];
            if is_signal {
                self.encode_signal(t, slot);
            } else {
                self.encode_tick(t, slot);
            }
            if self.pipeline.bytes().len() >= REQUEST_BYTES {
                result = self.send();
                self.drain_histories();
            }
        }
        // Slots queued while this loop runs wait for the next flush.
        for i in 0..self.history_dirty.len() {
            if result.is_err() {
                break;
            }
            let (t, slot) = self.history_dirty[i];
            self.encode_history(t, slot);
            if self.pipeline.bytes().len() >= REQUEST_BYTES {
                result = self.send();
                // A flush of long histories takes several round trips: the queues
                // are emptied between them, or they fill and drop.
                self.drain_histories();
            }
        }
        if result.is_ok() {
            self.encode_instruments();
            if self.pipeline.commands() == 0 && self.last_request.elapsed() >= IDLE_PING {
                self.pipeline.command(1).arg(b"PING");
            }
            result = self.send();
        } else {
            self.pipeline.clear();
        }
        // Written histories leave the list; the rest wait for the next flush.
        let pending = &mut self.pending;
        self.history_dirty.retain(|(t, slot)| {
            let p = &mut pending[*t][*slot];
            p.queued = !p.entries.is_empty();
            p.queued
        });
        result
    }

    /// Whether a slot whose keys last got an EXPIRE at `expired_ms` needs one now.
    fn expire_due(&self, expired_ms: i64, now_ms: i64) -> bool {
        let shortest = self.config.ttl_s.iter().filter(|t| **t > 0).min();
        shortest.is_some_and(|ttl| {
            let refresh = EXPIRE_REFRESH_MS.min(*ttl as i64 * 500);
            now_ms - expired_ms >= refresh
        })
    }

    fn ttl(&mut self, index: usize, due: bool) {
        let ttl = self.config.ttl_s[index];
        if ttl > 0 && due {
            self.pipeline
                .command(3)
                .arg(b"EXPIRE")
                .arg(&self.key)
                .arg_u64(ttl);
        }
    }

    fn encode_tick(&mut self, table: usize, slot: usize) {
        // None: the shard is rewriting it right now; it stays unwritten, next round.
        let Some(seq) = self.slot.read(&self.feed.ticks[table], slot) else {
            return;
        };
        if !self.slot.in_use {
            self.watch_ticks[table].written[slot] = seq;
            return;
        }
        let token = self.slot.token;
        let expire = self.expire_due(self.watch_ticks[table].expired_ms[slot], now_ms());
        self.batch.push(Item::Tick {
            table,
            slot,
            seq,
            expire,
        });
        if let Some(tick) = self.slot.latest {
            self.config.keys.tick_into(&mut self.key, token);
            encode_tick_hash(&mut self.pipeline, &self.key, &tick);
            self.keys_in_request += 1;
            self.ttl(0, expire);
        }
        for (b, label) in BAR_LABELS.iter().enumerate() {
            let Some(bar) = self.slot.bars[b] else {
                continue;
            };
            self.config.keys.ohlc_into(&mut self.key, token, label);
            let p = &mut self.pipeline;
            p.command(2 + 2 * 12).arg(b"HSET").arg(&self.key);
            p.arg(b"instrument_token").arg_u64(u64::from(token));
            p.arg(b"timeframe").arg(label.as_bytes());
            p.arg(b"start").arg_iso(bar.start_ms);
            p.arg(b"start_ms").arg_i64(bar.start_ms);
            p.arg(b"end_ms").arg_i64(bar.start_ms + BAR_MS[b]);
            price(p, b"open", bar.open);
            price(p, b"high", bar.high);
            price(p, b"low", bar.low);
            price(p, b"close", bar.close);
            p.arg(b"volume").arg_u64(bar.volume);
            p.arg(b"turnover").arg_fmt(format_args!("{}", bar.turnover));
            p.arg(b"ticks").arg_u64(bar.ticks);
            self.keys_in_request += 1;
            self.ttl(1, expire);
        }
    }

    /// `tick:{token}:history`: the pending entries, the set deleted first when it
    /// must start again, then trimmed to `history_len`.
    fn encode_history(&mut self, table: usize, slot: usize) {
        let p = &self.pending[table][slot];
        if p.entries.is_empty() {
            return;
        }
        let (restart, count, epoch) = (p.restart, p.entries.len(), p.epoch);
        let expire = restart || self.expire_due(p.expired_ms, now_ms());
        self.config.keys.history_into(&mut self.key, p.token);
        if restart {
            self.pipeline.command(2).arg(b"DEL").arg(&self.key);
        }
        self.pipeline
            .command(2 + 2 * count)
            .arg(b"ZADD")
            .arg(&self.key);
        for e in &p.entries {
            self.pipeline
                .arg_i64(e.timestamp_ms)
                .arg_with(|out| write_history_json(out, e));
        }
        let keep = self.config.history_len;
        self.pipeline
            .command(4)
            .arg(b"ZREMRANGEBYRANK")
            .arg(&self.key)
            .arg(b"0")
            .arg_i64(-(i64::from(keep) + 1));
        self.keys_in_request += 1;
        self.ttl(0, expire);
        self.batch.push(Item::History(HistoryWrite {
            table,
            slot,
            count,
            epoch,
            restart,
            expire,
        }));
    }

    fn encode_signal(&mut self, table: usize, slot: usize) {
        let Some((signal, seq)) =
            signal::read(&self.feed.signals[table], slot, &mut self.signal_words)
        else {
            return;
        };
        let Some(s) = signal else {
            self.watch_signals[table].written[slot] = seq;
            return;
        };
        let expire = self.expire_due(self.watch_signals[table].expired_ms[slot], now_ms());
        self.batch.push(Item::Signal {
            table,
            slot,
            seq,
            expire,
        });
        self.config
            .keys
            .signal_into(&mut self.key, s.strategy_id.as_bytes(), s.instrument_token);
        let p = &mut self.pipeline;
        p.command(2 + 2 * 14).arg(b"HSET").arg(&self.key);
        p.arg(b"strategy_id").arg(s.strategy_id.as_bytes());
        p.arg(b"strategy_type")
            .arg(s.strategy_type.as_str().as_bytes());
        p.arg(b"instrument_token")
            .arg_u64(u64::from(s.instrument_token));
        p.arg(b"tradingsymbol").arg(s.tradingsymbol.as_bytes());
        p.arg(b"signal_type").arg(s.signal_type.as_bytes());
        p.arg(b"strength").arg_fmt(format_args!("{}", s.strength));
        p.arg(b"confidence")
            .arg_fmt(format_args!("{}", s.confidence));
        price(p, b"price", s.price);
        p.arg(b"quantity").arg_u64(u64::from(s.quantity));
        p.arg(b"timestamp").arg_iso(s.timestamp_ms);
        p.arg(b"timestamp_ms").arg_i64(s.timestamp_ms);
        p.arg(b"received_at").arg_iso(s.received_at_ms);
        p.arg(b"received_at_ms").arg_i64(s.received_at_ms);
        p.arg(b"stream_seq").arg_u64(s.stream_seq);
        self.keys_in_request += 1;
        self.ttl(2, expire);
    }

    fn encode_instruments(&mut self) {
        for token in self.instruments_deleted.drain() {
            self.config.keys.instrument_into(&mut self.key, token);
            self.pipeline.command(2).arg(b"DEL").arg(&self.key);
            self.keys_in_request += 1;
        }
        let pending: Vec<u32> = self.instruments_pending.drain().collect();
        for token in pending {
            let Some(row) = self.instruments.get(&token) else {
                continue;
            };
            self.config.keys.instrument_into(&mut self.key, token);
            let p = &mut self.pipeline;
            p.command(2 + 2 * 8).arg(b"HSET").arg(&self.key);
            p.arg(b"instrument_token").arg_u64(u64::from(token));
            p.arg(b"tradingsymbol").arg(row.tradingsymbol.as_bytes());
            p.arg(b"exchange").arg(row.exchange.as_bytes());
            p.arg(b"segment").arg(row.segment.as_bytes());
            p.arg(b"tick_size").arg(row.tick_size.as_bytes());
            p.arg(b"lot_size").arg_i64(i64::from(row.lot_size));
            p.arg(b"upper_circuit_limit")
                .arg(row.upper_circuit_limit.as_bytes());
            p.arg(b"lower_circuit_limit")
                .arg(row.lower_circuit_limit.as_bytes());
            self.keys_in_request += 1;
            self.ttl(3, true);
        }
    }

    /// Sends the pipeline; on failure the batch goes back to the tables.
    fn send(&mut self) -> Result<(), Failure> {
        let commands = self.pipeline.commands();
        if commands == 0 {
            self.batch.clear();
            return Ok(());
        }
        let Some(link) = self.link.as_mut() else {
            self.undo();
            return Err(Failure::Io("not connected".to_owned()));
        };
        let started = Instant::now();
        let outcome = link.request(&self.pipeline);
        let took = started.elapsed().as_micros() as u64;
        self.stats
            .redirects_total
            .fetch_add(link.take_redirects(), Ordering::Relaxed);
        let replies = match outcome {
            Ok(replies) => replies,
            Err(e) => {
                self.undo();
                return Err(
                    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                        Failure::Io(e.to_string())
                    } else {
                        Failure::Server(e.to_string())
                    },
                );
            }
        };
        let mut refused = 0;
        for reply in &replies {
            if let Value::ServerError(error) = reply {
                let code = error.code().to_owned();
                if matches!(code.as_str(), "MOVED" | "ASK") && !self.config.cluster {
                    // A cluster node written as one server: every key it does not own
                    // would be refused one by one, for ever.
                    self.undo();
                    return Err(Failure::Server(format!(
                        "Redis answered {code}: the server is a Redis Cluster node; set `redis.cluster = true` (and `redis.hash_tags = true`)"
                    )));
                }
                if server_wide(&code) {
                    self.undo();
                    return Err(Failure::Server(format!(
                        "Redis answered {code}: {}",
                        error.details().unwrap_or("")
                    )));
                }
                refused += 1;
                tracing::debug!(code, "Redis refused a cache command");
            }
        }
        let _ = self.latency.record(took.max(1));
        let r = Ordering::Relaxed;
        self.stats.refused_total.fetch_add(refused, r);
        self.stats
            .keys_written_total
            .fetch_add(self.keys_in_request, r);
        self.keys_in_request = 0;
        self.pipeline.clear();
        self.commit();
        self.last_request = Instant::now();
        Ok(())
    }

    /// Records the batch as written: its sequences, and the changes it conflated
    /// (each change adds 2 to a slot's sequence; all but the last were never written).
    fn commit(&mut self) {
        let mut conflated = 0;
        let mut restarts = 0;
        let now = now_ms();
        let mut batch = std::mem::take(&mut self.batch);
        for item in batch.drain(..) {
            let (watch, slot, seq, expire) = match item {
                Item::History(h) => {
                    restarts += u64::from(h.restart);
                    self.commit_history(h, now);
                    continue;
                }
                Item::Tick {
                    table,
                    slot,
                    seq,
                    expire,
                } => (&mut self.watch_ticks[table], slot, seq, expire),
                Item::Signal {
                    table,
                    slot,
                    seq,
                    expire,
                } => (&mut self.watch_signals[table], slot, seq, expire),
            };
            if expire {
                watch.expired_ms[slot] = now;
            }
            let before = watch.written[slot];
            if before != REWRITE && seq > before {
                conflated += (seq - before) / 2 - 1;
            }
            watch.written[slot] = seq;
            watch.since_ms[slot] = 0;
        }
        // Its buffer, for the next batch.
        self.batch = batch;
        self.stats
            .conflated_total
            .fetch_add(conflated, Ordering::Relaxed);
        self.stats
            .history_restarts_total
            .fetch_add(restarts, Ordering::Relaxed);
    }

    /// A history went through: its entries leave the list, unless entries left it
    /// meanwhile (a gap, the `history_len` bound), which set `restart` again for the
    /// next flush; then the list stays as it is.
    fn commit_history(&mut self, h: HistoryWrite, now: i64) {
        let p = &mut self.pending[h.table][h.slot];
        if h.expire {
            p.expired_ms = now;
        }
        if p.epoch != h.epoch {
            return;
        }
        p.entries.drain(..h.count);
        self.pending_total -= h.count;
        if p.entries.is_empty() && p.entries.capacity() > PENDING_SHRINK_ABOVE {
            p.entries = VecDeque::new();
        }
        p.restart = false;
    }

    /// Forgets the batch: its slots stay unwritten (their sequences were not
    /// recorded) and its history entries pending, found again next flush.
    fn undo(&mut self) {
        self.batch.clear();
        // Instruments of the failed request are sent again after the reconnect, which
        // marks every instrument.
        self.pipeline.clear();
        self.keys_in_request = 0;
    }
}

/// Errors that say the server, not one key, is unable: the batch is retried.
fn server_wide(code: &str) -> bool {
    matches!(
        code,
        "OOM"
            | "NOAUTH"
            | "WRONGPASS"
            | "READONLY"
            | "LOADING"
            | "MASTERDOWN"
            | "BUSY"
            | "TRYAGAIN"
            | "CLUSTERDOWN"
            | "NOPERM"
            | "MISCONF"
    )
}

fn price(p: &mut Pipeline, field: &[u8], value: Price) {
    p.arg(field).arg_price(value);
}

/// `HSET tick:{token}` with every stored column plus both times.
fn encode_tick_hash(p: &mut Pipeline, key: &[u8], t: &Tick) {
    p.command(2 + 2 * 21).arg(b"HSET").arg(key);
    p.arg(b"instrument_token")
        .arg_u64(u64::from(t.instrument_token));
    p.arg(b"exchange").arg(t.exchange.as_bytes());
    p.arg(b"tradingsymbol").arg(t.tradingsymbol.as_bytes());
    price(p, b"last_price", t.last_price);
    p.arg(b"last_quantity").arg_u64(u64::from(t.last_quantity));
    price(p, b"average_price", t.average_price);
    p.arg(b"volume_traded").arg_u64(t.volume_traded);
    price(p, b"open", t.ohlc.open);
    price(p, b"high", t.ohlc.high);
    price(p, b"low", t.ohlc.low);
    price(p, b"close", t.ohlc.close);
    p.arg(b"oi").arg_u64(t.oi);
    p.arg(b"depth_buy")
        .arg_with(|out| write_depth_json(out, &t.depth_buy));
    p.arg(b"depth_sell")
        .arg_with(|out| write_depth_json(out, &t.depth_sell));
    p.arg(b"data_quality_score").arg_score(t.data_quality_score);
    p.arg(b"validation_flags")
        .arg_u64(u64::from(t.validation_flags));
    p.arg(b"stream_seq").arg_u64(t.stream_seq);
    p.arg(b"timestamp").arg_iso(t.timestamp_ms);
    p.arg(b"timestamp_ms").arg_i64(t.timestamp_ms);
    p.arg(b"received_at").arg_iso(t.received_at_ms);
    p.arg(b"received_at_ms").arg_i64(t.received_at_ms);
}

/// One `tick:{token}:history` member: the entry as a JSON object.
fn write_history_json(out: &mut Vec<u8>, e: &HistoryEntry) {
    out.extend_from_slice(b"{\"timestamp_ms\":");
    write_i64(out, e.timestamp_ms);
    out.extend_from_slice(b",\"last_price\":");
    write_price_f64_text(out, e.last_price);
    out.extend_from_slice(b",\"last_quantity\":");
    write_u64(out, u64::from(e.last_quantity));
    out.extend_from_slice(b",\"volume_traded\":");
    write_u64(out, e.volume_traded);
    out.extend_from_slice(b",\"data_quality_score\":");
    write_score(out, e.data_quality_score);
    out.extend_from_slice(b",\"validation_flags\":");
    write_u64(out, u64::from(e.validation_flags));
    out.extend_from_slice(b",\"stream_seq\":");
    write_u64(out, e.stream_seq);
    out.push(b'}');
}

/// A depth side as a JSON array of `[price, quantity, orders]`.
fn write_depth_json(out: &mut Vec<u8>, side: &crate::model::Depth) {
    out.push(b'[');
    for (i, level) in side.as_slice().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        write_price_f64_text(out, level.price);
        out.push(b',');
        write_u64(out, u64::from(level.quantity));
        out.push(b',');
        write_u64(out, u64::from(level.orders));
        out.push(b']');
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    //! The hand-written encodings give the text the formatter gave before them:
    //! readers of the cache (and `query`) parse exactly that. The history's pending
    //! lists keep every entry a write has not taken, and no more than `history_len`.
    use super::*;
    use crate::cache::tick::{HistoryRecord, TickCache};
    use crate::model::{Depth, DepthLevel, Symbol};

    /// A writer over one tick table of 4 slots whose history queue holds `queue`
    /// records, keeping `history_len` entries; never connected.
    fn writer(queue: usize, history_len: u32) -> (CacheWriter, TickCache) {
        let mut config = CacheConfig::from_config(&Config::default());
        config.history_len = history_len;
        let table = Arc::new(TickCache::table(4));
        let (tx, rx) = rtrb::RingBuffer::<HistoryRecord>::new(queue);
        let feed = CacheFeed {
            ticks: vec![table.clone()],
            histories: vec![rx],
            signals: Vec::new(),
        };
        let stats = Arc::new(CacheStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = CacheWriter::new(config, feed, None, stats, stop);
        (writer, TickCache::new(table, tx))
    }

    fn tick(token: u32, seq: u64) -> Tick {
        Tick {
            timestamp_ms: 1_764_000_000_000 + seq as i64,
            stream_seq: seq,
            instrument_token: token,
            exchange: Symbol::new(b"NSE").unwrap(),
            last_price: Price::from_f64(100.0).unwrap(),
            ..Tick::default()
        }
    }

    fn seqs(w: &CacheWriter, slot: usize) -> Vec<u64> {
        w.pending[0][slot]
            .entries
            .iter()
            .map(|e| e.stream_seq)
            .collect()
    }

    #[test]
    fn pending_lists_keep_the_newest_history_len_and_restart_past_it() {
        let (mut w, mut shard) = writer(64, 3);
        for seq in 1..=5 {
            shard.update(&tick(7, seq));
        }
        shard.update(&tick(8, 6));
        w.drain_histories();
        assert_eq!(seqs(&w, 0), [3, 4, 5]);
        assert_eq!(seqs(&w, 1), [6]);
        assert_eq!(w.pending_total, 4);
        assert_eq!(w.history_dirty, [(0, 0), (0, 1)]);
        assert!(
            w.pending[0][0].restart && w.pending[0][1].restart,
            "first write"
        );
        // Written: the lists empty, the restarts done.
        w.encode_history(0, 0);
        w.encode_history(0, 1);
        w.commit();
        assert_eq!((w.pending_total, seqs(&w, 0).len()), (0, 0));
        assert!(!w.pending[0][0].restart);
        assert_eq!(w.stats.history_restarts_total.load(Ordering::Relaxed), 2);
        // Two more: appended, no restart.
        shard.update(&tick(7, 9));
        shard.update(&tick(7, 10));
        w.drain_histories();
        assert_eq!(seqs(&w, 0), [9, 10]);
        assert!(!w.pending[0][0].restart);
        assert_eq!(w.stats.history_missed_total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_queue_shows_as_a_gap_and_restarts_that_history() {
        let (mut w, mut shard) = writer(4, 100);
        shard.update(&tick(7, 1));
        w.drain_histories();
        w.encode_history(0, 0);
        w.commit();
        for seq in 2..=7 {
            shard.update(&tick(7, seq)); // 6 into a queue of 4: 6 and 7 dropped
        }
        w.drain_histories();
        assert_eq!(seqs(&w, 0), [2, 3, 4, 5]);
        assert!(!w.pending[0][0].restart, "no gap seen yet");
        shard.update(&tick(7, 8));
        w.drain_histories();
        assert_eq!(seqs(&w, 0), [8], "what came before the gap is dropped");
        assert!(w.pending[0][0].restart);
        assert_eq!(w.pending_total, 1);
        assert_eq!(w.stats.history_missed_total.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_write_overtaken_by_the_bound_leaves_the_list_to_the_next_one() {
        let (mut w, mut shard) = writer(64, 3);
        for seq in 1..=3 {
            shard.update(&tick(7, seq));
        }
        w.drain_histories();
        w.encode_history(0, 0); // entries 1, 2, 3 sent
                                // Between two requests of the flush, 2 more: 1 and 2 leave by the bound.
        shard.update(&tick(7, 4));
        shard.update(&tick(7, 5));
        w.drain_histories();
        w.commit();
        assert_eq!(seqs(&w, 0), [3, 4, 5], "3 was sent, but 4 and 5 were not");
        assert!(
            w.pending[0][0].restart,
            "the next write starts the set again"
        );
        assert_eq!(w.pending_total, 3);
        // An undone batch leaves everything pending too.
        w.encode_history(0, 0);
        w.undo();
        assert_eq!(seqs(&w, 0), [3, 4, 5]);
        assert!(w.pending[0][0].restart);
    }

    #[test]
    fn draining_stops_at_pending_max_and_leaves_the_rest_queued() {
        let (mut w, mut shard) = writer(64, 100);
        w.pending_total = PENDING_MAX - 2;
        for seq in 1..=5 {
            shard.update(&tick(7, seq));
        }
        w.drain_histories();
        assert_eq!(seqs(&w, 0), [1, 2]);
        assert_eq!(w.pending_total, PENDING_MAX);
        assert_eq!(w.feed.histories[0].slots(), 3, "left in the queue");
    }

    #[test]
    fn history_and_depth_json_are_the_formatter_s_text() {
        let entries = [
            HistoryEntry {
                timestamp_ms: 1_764_000_000_123,
                stream_seq: 42,
                last_price: Price(177_964_000_000),
                volume_traded: 10_101,
                last_quantity: 434,
                validation_flags: 0,
                data_quality_score: 1.0,
            },
            HistoryEntry {
                timestamp_ms: -5,
                stream_seq: u64::MAX,
                last_price: Price(-5_000_000),
                volume_traded: 0,
                last_quantity: u32::MAX,
                validation_flags: 1086,
                data_quality_score: 0.85,
            },
        ];
        for e in entries {
            let mut out = Vec::new();
            write_history_json(&mut out, &e);
            let old = format!(
                "{{\"timestamp_ms\":{},\"last_price\":{},\"last_quantity\":{},\"volume_traded\":{},\"data_quality_score\":{},\"validation_flags\":{},\"stream_seq\":{}}}",
                e.timestamp_ms,
                e.last_price.to_f64(),
                e.last_quantity,
                e.volume_traded,
                e.data_quality_score,
                e.validation_flags,
                e.stream_seq
            );
            assert_eq!(String::from_utf8(out).unwrap(), old);
        }
        let mut side = Depth::default();
        for (i, price) in [177_964_000_000, 101_100_000_000, 1]
            .into_iter()
            .enumerate()
        {
            let mut out = Vec::new();
            write_depth_json(&mut out, &side);
            let old: Vec<String> = side
                .as_slice()
                .iter()
                .map(|l| format!("[{},{},{}]", l.price.to_f64(), l.quantity, l.orders))
                .collect();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("[{}]", old.join(","))
            );
            side.levels[i] = DepthLevel {
                price: Price(price),
                quantity: 517 * i as u32,
                orders: u16::MAX,
            };
            side.len += 1;
        }
    }
}
