//! Wiring of the hot path: rings, pools, threads, drain.
//!
//! ```text
//!  source (receiver thread) ──Router──► frame ring[s] ──► shard[s] ──sealed/free rings──► writer[s % W] ──► ClickHouse
//!         ▲                                                ▲                                 │
//!         │                  refdata ──reference queue[s]──┘ (take_reference_feed)          │
//!         │                              shard[s] ──cache tables──► Redis thread (take_cache_feed)
//!         └──────────────── durable marks (per shard) ◄─────────────────────────────────────┤
//!                                                    spill journal writer-<w> ◄── away ───────┘ (replayed when back)
//! ```
//!
//! Pool sizing is [`POOL_BLOCKS`] (`runtime::sizes`). The sealed and free rings hold
//! the whole pool, so pushing into either never fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;

use crate::audit::AuditFeed;
use crate::cache::CacheFeed;
use crate::config::{Config, SpillMode, WriterIoClass};
use crate::durable::stored::own_insert_query_prefix;
use crate::durable::{watermark_of_group, DurableMarks};
use crate::model::SealedBlock;
use crate::native::{Method, Options};
use crate::refdata::{reference_queue, ReferenceFeed};
use crate::ring::RING_SLOT_BYTES;
use crate::ring::{frame_ring, FrameHeader, FrameProducer, Kind};
use crate::runtime::sizes::{Sharding, POOL_BLOCKS};
use crate::runtime::{self, Alert, Waiter};
use crate::shard::rejects::{RejectColumns, RejectSchema};
use crate::shard::run::{Builders, Shard, ShardConfig, ShardEdges, ShardStats};
use crate::shard::signals::{SignalColumns, SignalSchema};
use crate::shard::validate::Validator;
use crate::shard::{TickColumns, TickSchema};
use crate::spill::{writer_dir, Journal, JournalConfig};
use crate::write::inserter::{Inserter, InserterConfig};
use crate::write::{Tables, Writer, WriterConfig, WriterInput, WriterStats};

/// Rows per reject block: rejects are rare; 1,024 × ~4.4 KiB ≈ 4.5 MiB a block.
pub const REJECT_ROWS_MAX: usize = 1024;
/// Rows per signal block: strategies emit far fewer signals than the market ticks;
/// 1,024 × (≤ 4 KiB metadata + ~150 B) ≈ 4.3 MiB a block at worst.
pub const SIGNAL_ROWS_MAX: usize = 1024;

/// The most bytes one sealed block (ticks of `rows_max` rows, rejects or signals) can
/// take, LZ4 framing included: what every pooled block buffer reserves, and what one
/// journal record must be able to hold.
pub fn block_bytes_max(rows_max: usize) -> usize {
    SealedBlock::bytes_max(rows_max)
        .max(RejectColumns::sealed_bytes_max(REJECT_ROWS_MAX))
        .max(SignalColumns::sealed_bytes_max(SIGNAL_ROWS_MAX))
}

/// Counters the source publishes.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Messages routed to shards. Written by the source's one [`Router`] alone.
    pub messages_total: AtomicU64,
    /// Payload bytes routed. Written by the source's one [`Router`] alone.
    pub bytes_total: AtomicU64,
    /// Times a full ring made the source wait.
    pub ring_full_total: AtomicU64,
    /// Messages dropped because their ring was full (core NATS only: at most once,
    /// and stalling the socket would get the connection closed as a slow consumer).
    pub dropped_total: AtomicU64,
    /// Highest sequence acknowledged upstream.
    pub acked_seq: AtomicU64,
    /// Current durable watermark.
    pub watermark: AtomicU64,
    /// Receive stamp of the first message routed, Unix ms (0: none yet).
    pub first_routed_ms: AtomicU64,
    /// Highest sequence routed.
    pub received_seq: AtomicU64,
    /// JetStream: messages in the stream not yet delivered to the consumer, as the
    /// newest delivery's ack subject tells (the consumer's backlog).
    pub jetstream_pending: AtomicU64,
    /// JetStream: deliveries that were redeliveries (delivery count above 1).
    pub redelivered_total: AtomicU64,
    /// Connections to NATS after the first (a lost connection, reconnected).
    pub reconnects_total: AtomicU64,
    /// The subject partition consumed (DESIGN §8), plus one; 0 without partitions.
    pub nats_partition: AtomicU64,
    /// The NATS session: [`NATS_NONE`] (no NATS source, or not connected yet),
    /// [`NATS_UP`] or [`NATS_DOWN`] (lost, reconnecting).
    pub nats_state: std::sync::atomic::AtomicU8,
}

/// [`SourceStats::nats_state`]: no NATS session yet (or a synthetic source).
pub const NATS_NONE: u8 = 0;
/// [`SourceStats::nats_state`]: a session is consuming.
pub const NATS_UP: u8 = 1;
/// [`SourceStats::nats_state`]: the connection was lost; reconnecting.
pub const NATS_DOWN: u8 = 2;

/// Adds `n` to a counter only the calling thread writes (readers may load it any time).
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The source's handle on the shards: routes messages, tracks what is durable.
pub struct Router {
    /// One frame ring per shard.
    rings: Vec<FrameProducer>,
    /// Highest sequence routed to each shard (source-owned).
    routed_last: Vec<u64>,
    /// Highest sequence routed anywhere.
    received_last: u64,
    /// Per-shard durable sequences from the writers (every shard of the path).
    marks: Arc<DurableMarks>,
    /// The path's index of this router's first shard: with several partitions each
    /// receiver routes to a group of shards of its own.
    base: usize,
    /// How the source waits for ring space.
    waiter: Waiter,
    /// The stop-and-deadline signal: a drain asked for, and when waiting must end.
    alert: Arc<Alert>,
    /// Counters.
    stats: Arc<SourceStats>,
    /// Tells the shards no more frames will come.
    input_done: Arc<AtomicBool>,
    /// Which shard owns which instrument.
    sharding: Sharding,
    /// A message was routed (its stamp is in `stats.first_routed_ms`).
    routed_any: bool,
}

impl Router {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.rings.len()
    }

    /// The shard that owns instrument `token` (and, in a ClickHouse cluster, the
    /// writer of its ClickHouse shard).
    #[inline]
    pub fn shard_of(&self, token: u32) -> usize {
        self.sharding.shard_of(token)
    }

    /// How instruments spread over the shards.
    pub fn sharding(&self) -> Sharding {
        self.sharding
    }

    /// True once a drain was requested: stop pulling, keep acking.
    pub fn stopping(&self) -> bool {
        self.alert.stopping()
    }

    /// The stop-and-deadline signal, for sources that sleep on their own.
    pub fn alert(&self) -> &Arc<Alert> {
        &self.alert
    }

    /// Routes one message to `shard`, waiting while its ring is full (back-pressure:
    /// the caller is not reading its socket meanwhile; the shards drain the ring until
    /// `finish_input` or the drain deadline). Returns `false` after `finish_input`, or
    /// when the ring stayed full past the drain deadline: the message was not routed,
    /// so it is not acknowledged and JetStream redelivers it (core NATS counts it as
    /// dropped).
    pub fn route(
        &mut self,
        shard: usize,
        kind: Kind,
        seq: u64,
        received_ns: i64,
        subject: &[u8],
        payload: &[u8],
    ) -> bool {
        if self.input_done.load(Ordering::Acquire) {
            return false;
        }
        let header = frame_header(kind, seq, received_ns, payload);
        let mut waited = false;
        // Bound: the shard drains the ring, or the drain deadline passes. The deadline
        // is looked at only here, off the per-message path: the receiver stops routing
        // at the first refusal.
        while !self.rings[shard].push(header, subject, payload) {
            if !waited {
                self.stats.ring_full_total.fetch_add(1, Ordering::Relaxed);
                waited = true;
            }
            if self.alert.expired() {
                return false;
            }
            self.waiter.idle();
        }
        self.waiter.reset();
        self.routed(shard, seq, payload.len(), received_ns);
        true
    }

    /// Whether [`Router::route`] of a message this size to `shard` would go through
    /// without waiting: lets a source hold a message where it is (the JetStream
    /// receiver leaves it in its read buffer) and keep acknowledging meanwhile.
    pub fn has_room(&self, shard: usize, subject: &[u8], payload: &[u8]) -> bool {
        self.rings[shard].has_room(subject.len(), payload.len())
    }

    /// Waits up to `limit` for [`Router::has_room`]; false when there is still none
    /// (also at once when the drain deadline has passed). The caller counts the stall
    /// once ([`Router::note_ring_full`]), not once per wait.
    pub fn wait_for_room(
        &mut self,
        shard: usize,
        subject_len: usize,
        payload_len: usize,
        limit: std::time::Duration,
    ) -> bool {
        let until = Instant::now() + limit;
        // Bound: `limit`, or the drain deadline.
        while !self.rings[shard].has_room(subject_len, payload_len) {
            if self.alert.expired() || Instant::now() >= until {
                return false;
            }
            self.waiter.idle();
        }
        self.waiter.reset();
        true
    }

    /// Counts one message that found its ring full.
    pub fn note_ring_full(&self) {
        self.stats.ring_full_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Routes one message if its ring has room, never waiting: for sources with no
    /// upstream store (core NATS), where waiting only moves the loss into the server's
    /// slow-consumer handling, which closes the connection and loses far more. A full
    /// ring counts the message in `dropped_total` and returns `false`, as does a
    /// finished input.
    pub fn try_route(
        &mut self,
        shard: usize,
        kind: Kind,
        seq: u64,
        received_ns: i64,
        subject: &[u8],
        payload: &[u8],
    ) -> bool {
        if self.input_done.load(Ordering::Acquire) {
            return false;
        }
        let header = frame_header(kind, seq, received_ns, payload);
        if !self.rings[shard].push(header, subject, payload) {
            self.stats.ring_full_total.fetch_add(1, Ordering::Relaxed);
            self.stats.dropped_total.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.routed(shard, seq, payload.len(), received_ns);
        true
    }

    fn routed(&mut self, shard: usize, seq: u64, payload_bytes: usize, received_ns: i64) {
        if !self.routed_any {
            self.routed_any = true;
            let ms = received_ns.div_euclid(1_000_000).max(1) as u64;
            self.stats.first_routed_ms.store(ms, Ordering::Relaxed);
        }
        self.routed_last[shard] = self.routed_last[shard].max(seq);
        self.received_last = self.received_last.max(seq);
        // This router is the counters' only writer, so a plain load and store do. A
        // `fetch_add` is a locked instruction, which waits for the frame just copied
        // into the ring to leave the store buffer: `perf record` charged 4% of a
        // JetStream run's appliance CPU to it. Most of that stall moved to the next
        // message's first reads rather than going away (the receiver's share stayed
        // ~22%), but nothing needs the lock.
        bump(&self.stats.messages_total, 1);
        bump(&self.stats.bytes_total, payload_bytes as u64);
    }

    /// A sequence handled without routing it (stored before this run, or a redelivery of
    /// one routed): nothing is pending for it, so the watermark may pass it.
    pub fn pass(&mut self, seq: u64) {
        self.received_last = self.received_last.max(seq);
    }

    /// The durable watermark now.
    pub fn watermark(&self) -> u64 {
        let mark = watermark_of_group(
            self.received_last,
            &self.routed_last,
            &self.marks,
            self.base,
        );
        self.stats.watermark.store(mark, Ordering::Relaxed);
        self.stats
            .received_seq
            .store(self.received_last, Ordering::Relaxed);
        mark
    }

    /// The source's counters.
    pub fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    /// Highest sequence routed.
    pub fn received_last(&self) -> u64 {
        self.received_last
    }

    /// Records what was acknowledged upstream.
    pub fn acked(&self, seq: u64) {
        self.stats.acked_seq.store(seq, Ordering::Relaxed);
    }

    /// No more messages: lets the shards seal and finish.
    pub fn finish_input(&self) {
        self.input_done.store(true, Ordering::Release);
    }
}

/// Stats of every stage, for the status line, metrics and tests.
#[derive(Clone)]
pub struct PipelineStats {
    /// The source (the first partition's, with several).
    pub source: Arc<SourceStats>,
    /// The other partitions' sources, with several in one process.
    pub more_sources: Vec<Arc<SourceStats>>,
    /// Per shard.
    pub shards: Vec<Arc<ShardStats>>,
    /// Per writer.
    pub writers: Vec<Arc<WriterStats>>,
}

/// A running hot path, minus its source.
pub struct Pipeline {
    /// Stats handles.
    pub stats: PipelineStats,
    /// The producer ends of the shards' reference-data queues, until the refdata
    /// thread takes them.
    references: Option<ReferenceFeed>,
    /// Shard threads.
    shards: Vec<JoinHandle<()>>,
    /// Writer threads; each returns the blocks it could not store.
    writers: Vec<JoinHandle<usize>>,
    /// Journal-first inserter threads; each returns the records it left in the journal.
    inserters: Vec<JoinHandle<u64>>,
    /// The audit thread's ends of the writers' and inserters' audit rings, until the
    /// app takes them.
    audit: Option<AuditFeed>,
    /// The Redis thread's ends of the shards' cache tables, until the app takes them.
    cache: Option<CacheFeed>,
    /// The stop-and-deadline signal the threads follow; bounds `join`.
    alert: Arc<Alert>,
}

/// ClickHouse settings resolved at start: connection and both tables' shapes.
#[derive(Clone, Debug)]
pub struct Destination {
    /// Connection options (with the database): the server the schema was read from,
    /// the first ClickHouse shard's in a cluster.
    pub options: Options,
    /// One server per ClickHouse shard, in shard order (`clickhouse.shards`); just
    /// `options` for a single server. Writer `w` inserts into `targets[w % len]`.
    pub targets: Vec<Options>,
    /// Every shard's replicas (`clickhouse.shards`), `targets[s]` among them; empty
    /// for a single server.
    pub replicas: Vec<Vec<Options>>,
    /// `market_ticks` as the server has it.
    pub tick_schema: TickSchema,
    /// `strategy_signals` as the server has it.
    pub signal_schema: SignalSchema,
    /// `rejected_messages` as the server has it.
    pub reject_schema: RejectSchema,
    /// Server-side insert deduplication, as found at start.
    pub dedup: Dedup,
}

/// Whether the server drops a retried INSERT itself: it needs
/// `insert_deduplication_token` (ClickHouse 22.2 and later) and a
/// `non_replicated_deduplication_window` above 0 on the table (migration 008).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dedup {
    /// Server version, `major.minor`.
    pub server: (u64, u64),
    /// Tables whose window is above 0, by name, with the window.
    pub windows: Vec<(&'static str, u64)>,
}

/// Tables the writers insert into.
const INSERT_TABLES: [&str; 3] = ["market_ticks", "strategy_signals", "rejected_messages"];

impl Dedup {
    /// First server version that takes `insert_deduplication_token`.
    pub const TOKEN_SINCE: (u64, u64) = (22, 2);

    /// Reads the windows from `system.tables` (servers with tokens only).
    fn read(conn: &mut crate::native::Connection) -> Result<Dedup, crate::native::Error> {
        let server = (conn.server().hello.major, conn.server().hello.minor);
        let mut dedup = Dedup {
            server,
            windows: Vec::new(),
        };
        if server < Self::TOKEN_SINCE {
            return Ok(dedup);
        }
        let result = conn.query(
            "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() \
             AND name IN ('market_ticks', 'strategy_signals', 'rejected_messages')",
        )?;
        let names = result.column("name");
        let engines = result.column("engine_full");
        for (name, engine) in names.iter().zip(&engines) {
            let (Some(name), Some(engine)) = (name.as_str(), engine.as_str()) else {
                continue;
            };
            let Some(&table) = INSERT_TABLES.iter().find(|&&t| t == name) else {
                continue;
            };
            let window = setting_value(engine, "non_replicated_deduplication_window");
            if window > 0 {
                dedup.windows.push((table, window));
            }
        }
        Ok(dedup)
    }

    /// True when `table`'s INSERTs should carry a token.
    pub fn on_for(&self, table: &str) -> bool {
        self.windows.iter().any(|&(t, _)| t == table)
    }

    /// One line for the start log: on or off, and why.
    pub fn describe(&self) -> String {
        let (major, minor) = self.server;
        if self.server < Self::TOKEN_SINCE {
            return format!(
                "off: ClickHouse {major}.{minor} has no insert_deduplication_token; a writer asks which blocks are stored before it re-sends a cut INSERT"
            );
        }
        if self.windows.len() == INSERT_TABLES.len() {
            let windows: Vec<String> = self
                .windows
                .iter()
                .map(|(t, w)| format!("{t} {w} blocks"))
                .collect();
            return format!(
                "on (ClickHouse {major}.{minor}; windows: {}), beside the writers' stored-block check",
                windows.join(", ")
            );
        }
        let missing: Vec<&str> = INSERT_TABLES
            .iter()
            .copied()
            .filter(|t| !self.on_for(t))
            .collect();
        format!(
            "partly off: ClickHouse {major}.{minor} takes tokens but {} have non_replicated_deduplication_window = 0 (run `alphapt-storage migrate up`); the writers' stored-block check guards them",
            missing.join(", ")
        )
    }
}

/// The numeric value of `name = N` in a table's `engine_full`, 0 when absent.
fn setting_value(engine_full: &str, name: &str) -> u64 {
    let Some(at) = engine_full.find(name) else {
        return 0;
    };
    let rest = engine_full[at + name.len()..].trim_start();
    let Some(rest) = rest.strip_prefix('=') else {
        return 0;
    };
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().unwrap_or(0)
}

impl Destination {
    /// Connects once and reads both tables' INSERT headers; a missing table or an
    /// unknown column is an error naming it.
    pub fn resolve(options: &Options) -> Result<Destination, crate::native::Error> {
        let mut conn = crate::native::Connection::connect(options)?;
        let tick_schema = TickSchema::from_header(&conn.insert_header("market_ticks")?)?;
        let signal_schema = SignalSchema::from_header(&conn.insert_header("strategy_signals")?)?;
        let reject_schema = RejectSchema::from_header(&conn.insert_header("rejected_messages")?)?;
        let dedup = Dedup::read(&mut conn)?;
        Ok(Destination {
            options: options.clone(),
            targets: vec![options.clone()],
            replicas: Vec::new(),
            tick_schema,
            signal_schema,
            reject_schema,
            dedup,
        })
    }

    /// The same tables in a cluster of ClickHouse shards (`shards[s]`: the shard's
    /// replicas, in config order). Every shard must carry the same migrations: the
    /// INSERT headers of each shard's first replica that answers are compared with the
    /// first shard's, so a shard left behind is an error at start naming it, not
    /// blocks held later; a shard none of whose replicas answers is an error too (as
    /// one server down at start is). Empty `shards` keeps the single server.
    pub fn with_targets(
        mut self,
        shards: Vec<Vec<Options>>,
    ) -> Result<Destination, crate::native::Error> {
        if shards.is_empty() {
            return Ok(self);
        }
        let mut first: Option<Vec<Vec<(String, String)>>> = None;
        let mut targets = Vec::with_capacity(shards.len());
        for (index, replicas) in shards.iter().enumerate() {
            let (options, mut conn) = first_live(replicas).map_err(|e| {
                crate::native::Error::SchemaMismatch(format!(
                    "ClickHouse shard {}: no replica answers ({e})",
                    index + 1
                ))
            })?;
            let mut headers = Vec::with_capacity(3);
            for table in ["market_ticks", "strategy_signals", "rejected_messages"] {
                headers.push(conn.insert_header(table).map_err(|e| {
                    crate::native::Error::SchemaMismatch(format!(
                        "ClickHouse shard {} ({}:{}): {e}; run `alphapt-storage migrate up` with the same `clickhouse.shards`",
                        index + 1,
                        options.host,
                        options.port
                    ))
                })?);
            }
            match &first {
                None => first = Some(headers),
                Some(expected) if *expected != headers => {
                    return Err(crate::native::Error::SchemaMismatch(format!(
                        "ClickHouse shard {} ({}:{}) has other columns than shard 1 in market_ticks, strategy_signals or rejected_messages; run `alphapt-storage migrate up` with the same `clickhouse.shards` so every shard has the same migrations",
                        index + 1,
                        options.host,
                        options.port
                    )))
                }
                Some(_) => {}
            }
            targets.push(options.clone());
        }
        self.targets = targets;
        self.replicas = shards;
        Ok(self)
    }

    /// The server writer (or journal) `writer` inserts into: its shard's replica that
    /// answered at start.
    pub fn target_of_writer(&self, writer: usize) -> &Options {
        &self.targets[writer % self.targets.len()]
    }

    /// Every replica of writer `writer`'s shard, for failover (empty: one server).
    pub fn replicas_of_writer(&self, writer: usize) -> &[Options] {
        if self.replicas.is_empty() {
            return &[];
        }
        &self.replicas[writer % self.replicas.len()]
    }

    /// Where spilled blocks of each table go on replay.
    pub fn replay_targets(&self) -> Vec<crate::spill::replay::Target> {
        self.tables().targets()
    }

    fn tables(&self) -> Tables {
        Tables {
            ticks: crate::write::TableInsert {
                name: "market_ticks",
                sql: self.tick_schema.insert_sql("market_ticks"),
                header: self.tick_schema.header(),
                dedup_token: self.dedup.on_for("market_ticks"),
            },
            signals: crate::write::TableInsert {
                name: "strategy_signals",
                sql: self.signal_schema.insert_sql("strategy_signals"),
                header: self.signal_schema.header(),
                dedup_token: self.dedup.on_for("strategy_signals"),
            },
            rejects: crate::write::TableInsert {
                name: "rejected_messages",
                sql: self.reject_schema.insert_sql("rejected_messages"),
                header: self.reject_schema.header(),
                dedup_token: self.dedup.on_for("rejected_messages"),
            },
        }
    }
}

fn waiter(config: &Config) -> Waiter {
    let t = &config.threads;
    Waiter::new(t.wait, t.spin_count, t.yield_count, t.park_timeout_us)
}

/// Starts shards and writers; returns the pipeline and the router the source drives.
pub fn start(
    config: &Config,
    destination: &Destination,
    alert: Arc<Alert>,
) -> std::io::Result<(Pipeline, Router)> {
    let (pipeline, mut routers) = start_path(config, destination, alert, "", 1)?;
    Ok((pipeline, routers.remove(0)))
}

/// [`start`] for a second path in the same process (the signals path, `path` =
/// `"s"`): its writers' and inserters' query ids carry the path, so two paths'
/// first INSERTs never share an id (ClickHouse refuses a query id already running).
///
/// `groups` sources (several subject partitions, one receiver each) get a router each
/// over a group of `shards / groups` consecutive shards of their own: a shard then
/// sees one source's sequences, in order, which the durable watermark needs.
pub fn start_path(
    config: &Config,
    destination: &Destination,
    alert: Arc<Alert>,
    path: &str,
    groups: usize,
) -> std::io::Result<(Pipeline, Vec<Router>)> {
    let shards = usize::from(config.ingest.shards);
    let groups = groups.clamp(1, shards);
    // Config validation holds shards to a multiple of groups × ClickHouse shards.
    let group_size = shards / groups;
    let writers = usize::from(config.ingest.writers).min(shards);
    // A ClickHouse cluster: writer w inserts into shard w % targets; validation holds
    // the ticks path's shards and writers to multiples of the target count.
    let targets = destination.targets.len().max(1);
    let sharding = Sharding::new(group_size, targets);
    let rows_max = config.ingest.block_rows_max as usize;
    let ring_bytes = config.ingest.ring_slots as usize * RING_SLOT_BYTES;
    let compression = destination.options.compression;
    let pin = config.threads.pin;
    let marks = Arc::new(DurableMarks::new(shards));
    let input_done: Vec<Arc<AtomicBool>> = (0..groups)
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let sources: Vec<Arc<SourceStats>> = (0..groups)
        .map(|_| Arc::new(SourceStats::default()))
        .collect();
    // Before any thread starts: rings the host cannot hold, and a spill directory in
    // use, are errors with nothing to undo.
    crate::ring::check_ring_memory(shards, ring_bytes, crate::ring::mem_available_bytes())
        .map_err(|message| std::io::Error::new(std::io::ErrorKind::OutOfMemory, message))?;
    let mut journals = open_journals(config, writers)?;

    let mut rings = Vec::with_capacity(shards);
    let mut shard_handles = Vec::with_capacity(shards);
    let mut shard_stats = Vec::with_capacity(shards);
    let mut writer_inputs: Vec<Vec<WriterInput>> = (0..writers).map(|_| Vec::new()).collect();
    let mut reference_producers = Vec::with_capacity(shards);
    let mut cache_feed = CacheFeed::default();
    for index in 0..shards {
        let (reference_tx, reference_rx) = reference_queue();
        reference_producers.push(reference_tx);
        let (producer, consumer) = frame_ring(ring_bytes, config.ingest.payload_bytes_max as usize);
        rings.push(producer);
        let (sealed_tx, sealed_rx) = rtrb::RingBuffer::new(POOL_BLOCKS);
        let (mut free_tx, free_rx) = rtrb::RingBuffer::new(POOL_BLOCKS);
        let block_bytes = block_bytes_max(rows_max);
        for _ in 0..POOL_BLOCKS {
            let mut block = SealedBlock::with_capacity(0);
            block.bytes.reserve_exact(block_bytes);
            free_tx.push(block).expect("free ring sized for the pool");
        }
        let finished = Arc::new(AtomicBool::new(false));
        writer_inputs[index % writers].push(WriterInput {
            shard: index,
            sealed: sealed_rx,
            free: free_tx,
            finished: finished.clone(),
        });
        let stats = Arc::new(ShardStats::default());
        shard_stats.push(stats.clone());
        let shard = Shard::new(
            ShardConfig {
                index,
                flush_interval_ms: config.ingest.flush_interval_ms,
                compression,
                tick_schema: destination.tick_schema.clone(),
                signal_schema: destination.signal_schema.clone(),
                reject_schema: destination.reject_schema.clone(),
            },
            ShardEdges {
                input: consumer,
                sealed: sealed_tx,
                free: free_rx,
                references: reference_rx,
                cache: config.redis.enabled.then(|| cache_feed.add_shard(config)),
                input_done: input_done[index / group_size].clone(),
                finished,
                alert: alert.clone(),
            },
            Builders {
                ticks: TickColumns::new(rows_max),
                signals: SignalColumns::new(SIGNAL_ROWS_MAX),
                rejects: RejectColumns::new(REJECT_ROWS_MAX),
            },
            Validator::new(config.validation),
            stats,
            waiter(config),
        );
        let core = if pin {
            config.threads.shard_cores.get(index).copied()
        } else {
            None
        };
        shard_handles.push(runtime::spawn_hot(
            &thread_name(path, "shard", index),
            core,
            config.threads.hot_nice,
            move || shard.run(),
        )?);
    }

    let mut writer_handles = Vec::with_capacity(writers);
    let mut inserter_handles = Vec::new();
    let mut writer_stats = Vec::with_capacity(writers);
    let ch = &config.clickhouse;
    let journal_first = config.spill.mode == SpillMode::Always;
    let mut audit = AuditFeed::default();
    for (index, inputs) in writer_inputs.into_iter().enumerate() {
        let stats = Arc::new(WriterStats::default());
        writer_stats.push(stats.clone());
        let journal = journals[index].take().map(|j| Arc::new(Mutex::new(j)));
        let writer_done = Arc::new(AtomicBool::new(false));
        if journal_first {
            let journal = journal.clone().expect("every writer has a journal");
            let flush_bytes = crate::spill::lock(&journal).bytes_max() / 4;
            let inserters = usize::from(config.spill.inserters.max(1));
            for slot in 0..inserters {
                let options = inserter_options(destination, path, index, slot);
                let inserter = Inserter::new(
                    InserterConfig {
                        index,
                        slot,
                        inserters,
                        interval: Duration::from_millis(config.spill.insert_interval_ms),
                        flush_bytes,
                        flush_rows: config.spill.insert_rows,
                        sort_inserts: config.spill.sort_inserts,
                        replicas: destination
                            .replicas_of_writer(index)
                            .iter()
                            .map(|replica| Options {
                                query_id_prefix: options.query_id_prefix.clone(),
                                ..replica.clone()
                            })
                            .collect(),
                        options,
                        backoff_initial: Duration::from_millis(ch.backoff_initial_ms),
                        backoff_max: Duration::from_millis(ch.backoff_max_ms),
                        ping_after: Duration::from_millis(ch.ping_interval_ms),
                    },
                    journal.clone(),
                    &destination.tables(),
                    stats.clone(),
                    alert.clone(),
                    writer_done.clone(),
                    audit.producer(),
                );
                let core = if pin { config.threads.slow_core } else { None };
                inserter_handles.push(runtime::spawn(
                    &inserter_thread_name(path, index, slot),
                    core,
                    move || inserter.run(),
                )?);
            }
        }
        let writer_prefix =
            own_insert_query_prefix(&destination.options.database, &format!("{path}w{index}"));
        let writer = Writer::new(
            WriterConfig {
                index,
                options: crate::native::Options {
                    query_id_prefix: writer_prefix.clone(),
                    ..destination.target_of_writer(index).clone()
                },
                replicas: destination
                    .replicas_of_writer(index)
                    .iter()
                    .map(|replica| Options {
                        query_id_prefix: writer_prefix.clone(),
                        ..replica.clone()
                    })
                    .collect(),
                backoff_initial: Duration::from_millis(ch.backoff_initial_ms),
                backoff_max: Duration::from_millis(ch.backoff_max_ms),
                ping_after: Duration::from_millis(ch.ping_interval_ms),
                // Never beyond the flush interval: a block sealed on age is then always
                // due at once, so lowering flush_interval_ms for latency needs nothing else.
                insert_linger: Duration::from_millis(
                    config
                        .ingest
                        .insert_linger_ms
                        .min(config.ingest.flush_interval_ms),
                ),
                journal_first,
            },
            destination.tables(),
            inputs,
            marks.clone(),
            stats,
            waiter(config),
            alert.clone(),
            journal,
            audit.producer(),
        );
        let core = if pin {
            config.threads.writer_cores.get(index).copied()
        } else {
            None
        };
        let name = thread_name(path, "writer", index);
        // The thread sets its own class (ioprio_set applies to the calling thread).
        let io_realtime =
            (config.threads.writer_io_class == WriterIoClass::Realtime).then(|| name.clone());
        writer_handles.push(runtime::spawn_hot(
            &name,
            core,
            config.threads.hot_nice,
            move || {
                if let Some(name) = io_realtime {
                    runtime::set_writer_io_realtime(&name);
                }
                let not_stored = writer.run();
                writer_done.store(true, Ordering::Release);
                not_stored
            },
        )?);
    }

    let mut rings = rings.into_iter();
    let routers = (0..groups)
        .map(|group| Router {
            rings: rings.by_ref().take(group_size).collect(),
            routed_last: vec![0; group_size],
            received_last: 0,
            marks: marks.clone(),
            base: group * group_size,
            waiter: waiter(config),
            alert: alert.clone(),
            stats: sources[group].clone(),
            input_done: input_done[group].clone(),
            sharding,
            routed_any: false,
        })
        .collect();
    let pipeline = Pipeline {
        references: Some(ReferenceFeed::with_sharding(reference_producers, sharding)),
        stats: PipelineStats {
            source: sources[0].clone(),
            more_sources: sources[1..].to_vec(),
            shards: shard_stats,
            writers: writer_stats,
        },
        shards: shard_handles,
        writers: writer_handles,
        inserters: inserter_handles,
        audit: Some(audit),
        cache: config.redis.enabled.then_some(cache_feed),
        alert: alert.clone(),
    };
    Ok((pipeline, routers))
}

impl Pipeline {
    /// The shards' reference-data queues, routed by instrument, for the refdata
    /// thread; `None` once taken. Left untaken (the signals path), the queues stay
    /// empty and cost the shards one failed pop per pass.
    pub fn take_reference_feed(&mut self) -> Option<ReferenceFeed> {
        self.references.take()
    }

    /// The Redis thread's ends of this pipeline's cache tables (once; `None` with
    /// Redis off).
    pub fn take_cache_feed(&mut self) -> Option<CacheFeed> {
        self.cache.take()
    }

    /// The audit thread's ends of this pipeline's audit rings (once).
    pub fn take_audit_feed(&mut self) -> Option<AuditFeed> {
        self.audit.take()
    }

    /// Waits for every shard and writer to finish (after the router's `finish_input`),
    /// but past the drain deadline at most [`JOIN_GRACE`] more: a thread still inside a
    /// system call then (a socket read of a hung server) is left behind and named.
    /// Nothing it held was acknowledged, so JetStream redelivers it.
    pub fn join(self) -> Joined {
        let mut joined = Joined::default();
        for handle in self.shards {
            join_until(handle, &self.alert, &mut joined);
        }
        for handle in self.writers {
            if let Some(not_stored) = join_until(handle, &self.alert, &mut joined) {
                joined.not_stored += not_stored;
            }
        }
        // Whatever an inserter has not sent is durable in its journal (and already
        // acknowledged; the summary gives the bytes): one still in a ClickHouse call at
        // the deadline is left behind without making the drain unclean.
        for handle in self.inserters {
            let mut inserter = Joined::default();
            join_until(handle, &self.alert, &mut inserter);
            joined.panicked.extend(inserter.panicked);
        }
        joined
    }
}

/// Longest wait for a thread past the drain deadline.
pub const JOIN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// How the hot path ended.
#[derive(Debug, Default)]
pub struct Joined {
    /// Blocks the writers could not store before the deadline (never acknowledged).
    pub not_stored: usize,
    /// Threads that panicked.
    pub panicked: Vec<String>,
    /// Threads still running past the deadline, left behind.
    pub stuck: Vec<String>,
}

impl Joined {
    /// Every block stored and every thread finished.
    pub fn is_clean(&self) -> bool {
        self.not_stored == 0 && self.panicked.is_empty() && self.stuck.is_empty()
    }
}

/// Joins `handle` unless it is still running [`JOIN_GRACE`] after the drain deadline.
fn join_until<T>(handle: JoinHandle<T>, alert: &Alert, joined: &mut Joined) -> Option<T> {
    let name = handle.thread().name().unwrap_or("unnamed").to_string();
    // Bound: the thread ends, or the deadline plus the grace passes.
    while !handle.is_finished() {
        if let Some(deadline) = alert.deadline() {
            if Instant::now() >= deadline + JOIN_GRACE {
                tracing::error!(thread = %name, "Thread still running past the drain deadline; leaving it behind");
                joined.stuck.push(name);
                return None;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    match handle.join() {
        Ok(value) => Some(value),
        Err(_) => {
            tracing::error!(thread = %name, "Thread panicked");
            joined.panicked.push(name);
            None
        }
    }
}

/// A router whose shards only discard: each ring is drained by a thread that drops
/// every frame and marks it durable at once. For measuring the receiver alone against
/// a bare subscriber (the receiver budget, DESIGN §7 and `perf/receiver_budget.rs`).
/// Returns the router and the drain threads (they end after `finish_input`).
pub fn discarding(
    shards: usize,
    ring_bytes: usize,
    alert: Arc<Alert>,
) -> (Router, Vec<JoinHandle<u64>>) {
    let marks = Arc::new(DurableMarks::new(shards));
    let input_done = Arc::new(AtomicBool::new(false));
    let mut rings = Vec::with_capacity(shards);
    let mut handles = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (producer, mut consumer) = frame_ring(ring_bytes, 1 << 20);
        rings.push(producer);
        let (marks, done) = (marks.clone(), input_done.clone());
        handles.push(std::thread::spawn(move || {
            let mut frames = 0u64;
            // Main loop of the drain thread: until the input is finished and empty.
            loop {
                // Read the flag before popping: a frame pushed before `finish_input`
                // is then visible to the pop that follows.
                let finished = done.load(Ordering::Acquire);
                match consumer.pop(|header, _, _| header.stream_seq) {
                    Some(seq) => {
                        frames += 1;
                        marks.commit(shard, seq);
                    }
                    None if finished => return frames,
                    // Sleep rather than spin or yield: on a 2-core box a thread that
                    // yields in a loop still takes a core from the receiver and the
                    // nats-server under test, and the ring absorbs the pause.
                    None => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
        }));
    }
    let router = Router {
        rings,
        routed_last: vec![0; shards],
        received_last: 0,
        marks,
        base: 0,
        waiter: Waiter::new(crate::config::WaitStrategy::Spin, 0, 0, 0),
        alert,
        stats: Arc::new(SourceStats::default()),
        input_done,
        sharding: Sharding::new(shards, 1),
        routed_any: false,
    };
    (router, handles)
}

/// The ring header of one message as received.
fn frame_header(kind: Kind, seq: u64, received_ns: i64, payload: &[u8]) -> FrameHeader {
    FrameHeader {
        kind,
        flags: 0,
        stream_seq: seq,
        received_ns,
        payload_bytes_original: payload.len() as u32,
    }
}

/// The connection options of inserter `index` (its own query-id prefix, so the
/// stored-sequence reads at start recognise its INSERTs as this appliance's).
/// A hot thread's name: `shard-0`, or `sig-shard-0` on the signals path, so the two
/// paths' threads stay apart in `top -H`, `perf` and the per-thread CPU metric (names
/// are cut at 15 bytes by the kernel: these stay under).
fn thread_name(path: &str, role: &str, index: usize) -> String {
    if path.is_empty() {
        format!("{role}-{index}")
    } else {
        format!("sig-{role}-{index}")
    }
}

/// `inserter-<writer>` for a writer's first inserter, `inserter-<writer>.<slot>` for
/// the others (`sig-ins-…` on the signals path: a thread name keeps 15 bytes).
fn inserter_thread_name(path: &str, index: usize, slot: usize) -> String {
    match (path.is_empty(), slot) {
        (_, 0) => thread_name(path, "inserter", index),
        (true, _) => format!("inserter-{index}.{slot}"),
        (false, _) => format!("sig-ins-{index}.{slot}"),
    }
}

fn inserter_options(destination: &Destination, path: &str, index: usize, slot: usize) -> Options {
    let role = match slot {
        0 => format!("{path}i{index}"),
        _ => format!("{path}i{index}.{slot}"),
    };
    Options {
        query_id_prefix: own_insert_query_prefix(&destination.options.database, &role),
        ..destination.target_of_writer(index).clone()
    }
}

/// The first of `replicas` that answers, with its connection; the last error when
/// none does.
pub fn first_live(
    replicas: &[Options],
) -> Result<(&Options, crate::native::Connection), crate::native::Error> {
    let mut last = None;
    for options in replicas {
        match crate::native::Connection::connect(options) {
            Ok(conn) => return Ok((options, conn)),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| crate::native::Error::Protocol("no server listed".into())))
}

/// One spill journal per writer, `<spill.dir>/writer-<index>`, each with an even share
/// of `spill.spill_bytes_max` (at least [`crate::spill::SEGMENTS_MIN`] segments).
/// Records left by an earlier run are replayed before the pipeline starts
/// (`spill::replay`), so what is pending here is this run's.
fn open_journals(config: &Config, writers: usize) -> std::io::Result<Vec<Option<Journal>>> {
    let root = std::path::Path::new(&config.spill.dir);
    let share = (config.spill.spill_bytes_max / writers as u64)
        .max(crate::spill::SEGMENTS_MIN * config.spill.segment_bytes);
    (0..writers)
        .map(|index| {
            let journal_config = JournalConfig {
                dir: writer_dir(root, index),
                segment_bytes: config.spill.segment_bytes,
                bytes_max: share,
            };
            Journal::open(&journal_config)
                .map(|(journal, _)| Some(journal))
                .map_err(std::io::Error::other)
        })
        .collect()
}

/// The JetStream ack window when the config leaves it at 0 (DESIGN §2): everything
/// that can sit between receive and durable, per shard: its ring (`ring_slots`
/// messages), the open block and every pooled sealed block (`block_rows_max` rows each).
/// JetStream's default of 1,000 would stop delivery long before a block fills.
pub fn max_ack_pending(config: &Config) -> u32 {
    if config.nats.max_ack_pending > 0 {
        return config.nats.max_ack_pending;
    }
    let per_shard = u64::from(config.ingest.ring_slots)
        + (1 + POOL_BLOCKS as u64) * u64::from(config.ingest.block_rows_max);
    (per_shard * u64::from(config.ingest.shards)).min(u64::from(u32::MAX)) as u32
}

/// Compression from the config.
pub fn compression(config: &Config) -> Option<Method> {
    match config.clickhouse.compression {
        crate::config::Compression::Lz4 => Some(Method::Lz4),
        crate::config::Compression::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_windows_are_read_from_engine_full_and_described() {
        let engine = "MergeTree PARTITION BY toYYYYMMDD(timestamp) ORDER BY (instrument_token) \
                      SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000";
        assert_eq!(
            setting_value(engine, "non_replicated_deduplication_window"),
            1000
        );
        assert_eq!(setting_value(engine, "index_granularity"), 8192);
        assert_eq!(
            setting_value(
                "MergeTree ORDER BY x",
                "non_replicated_deduplication_window"
            ),
            0
        );
        assert_eq!(setting_value("... window =", "window"), 0);

        let old = Dedup {
            server: (18, 16),
            windows: Vec::new(),
        };
        assert!(
            old.describe().starts_with("off: ClickHouse 18.16"),
            "{}",
            old.describe()
        );
        assert!(!old.on_for("market_ticks"));
        let all = Dedup {
            server: (24, 8),
            windows: INSERT_TABLES.iter().map(|&t| (t, 1000)).collect(),
        };
        assert!(
            all.describe().starts_with("on (ClickHouse 24.8"),
            "{}",
            all.describe()
        );
        assert!(all.on_for("rejected_messages"));
        let some = Dedup {
            server: (24, 8),
            windows: vec![("market_ticks", 1000)],
        };
        let text = some.describe();
        assert!(
            text.starts_with("partly off") && text.contains("strategy_signals, rejected_messages"),
            "{text}"
        );
        assert_eq!(
            crate::write::dedup_token("market_ticks", 7, 9_000, 3),
            "alphapt:market_ticks:7-9000:3"
        );
    }

    /// A full ring drops and counts under `try_route` (core NATS), where `route` would
    /// wait; room again routes again; a finished input refuses without counting.
    #[test]
    fn try_route_drops_and_counts_on_a_full_ring() {
        let (producer, mut consumer) = frame_ring(64 * 1024, 8 * 1024);
        let mut router = Router {
            rings: vec![producer],
            routed_last: vec![0],
            received_last: 0,
            marks: Arc::new(DurableMarks::new(1)),
            base: 0,
            waiter: Waiter::new(crate::config::WaitStrategy::Spin, 0, 0, 0),
            alert: Arc::new(Alert::new(std::time::Duration::from_secs(1))),
            stats: Arc::new(SourceStats::default()),
            input_done: Arc::new(AtomicBool::new(false)),
            sharding: Sharding::new(1, 1),
            routed_any: false,
        };
        let payload = [b'x'; 1000];
        let mut seq = 0;
        while router.try_route(0, Kind::TickJson, seq + 1, 0, b"t.1", &payload) {
            seq += 1;
        }
        assert!(seq > 10, "the ring took {seq} frames");
        let stats = router.stats.clone();
        assert_eq!(stats.dropped_total.load(Ordering::Relaxed), 1);
        assert_eq!(stats.messages_total.load(Ordering::Relaxed), seq);
        assert_eq!(router.received_last, seq);
        assert!(consumer.pop(|header, _, _| header.stream_seq).is_some());
        assert!(router.try_route(0, Kind::TickJson, seq + 2, 0, b"t.1", &payload));
        router.finish_input();
        assert!(!router.try_route(0, Kind::TickJson, seq + 3, 0, b"t.1", &payload));
        assert_eq!(stats.dropped_total.load(Ordering::Relaxed), 1);
    }
}
