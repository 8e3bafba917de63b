//! The composition root: builds every stage of `run`, owns the order they start and
//! drain in, and the one stats snapshot that `run`'s status line and summary (and the
//! coming metrics endpoint) read.
//!
//! ```text
//!   start:  bind http.addr (before any thread) ─► tables (Destination) ─► replay every spill journal ─► ticks pipeline ─► refdata thread
//!           ─► quality snapshot thread ─► signals path (pipeline + receiver, NATS only) ─► ticks receiver (NATS or synthetic)
//!           ─► audit thread (the writers' and inserters' audit rings of both paths)
//!           ─► Redis thread (both paths' cache tables; refdata's instrument rows)
//!           ─► control endpoint serves (/metrics /health /quality on the socket bound first)
//!   run:    snapshot() at any time: one read of every counter, no locks on the hot path
//!   drain:  ticks receiver ends (signal, --count, error) ─► refdata, quality stopped ─► stop for all
//!           ─► signals path joined ─► ticks pipeline joined (shards seal, writers store or spill)
//!           ─► audit thread writes what the writers recorded (≤ 1 s), then stops
//!           ─► Redis thread writes the shards' last state (one flush), then stops
//!           ─► final snapshot ─► control endpoint stops
//! ```
//!
//! The spill goes in before any receiver reads its resume point: those blocks were
//! acknowledged, and the resume point is read from ClickHouse. A journal with damaged
//! records makes its stream's resume point come from the whole store instead of the
//! ack floor (see `receive::receiver::StoreProbe::reread_all`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::audit::{AuditConfig, AuditFeed, AuditRecord, AuditStats, Auditor};
use crate::cache::redis::{
    instrument_channel, CacheConfig, CacheStats, CacheWriter, InstrumentChange,
};
use crate::cache::CacheFeed;
use crate::config::{Config, Source};
use crate::control::{Control, QualitySource};
use crate::durable::mark::LocalMark;
use crate::durable::stored::StreamTables;
use crate::pipeline::{self, Destination, Joined, Pipeline, PipelineStats};
use crate::quality::snapshot::{SnapshotConfig, Snapshotter};
use crate::receive::nats::NatsError;
use crate::receive::receiver::{self, ReceiverConfig, ReceiverReport, StoreProbe};
use crate::receive::synthetic::{self, SyntheticConfig};
use crate::refdata::{Refdata, RefdataConfig, RefdataStats};
use crate::ring::{Kind, RING_SLOT_BYTES};
use crate::runtime::latency::LatencyTotals;
use crate::runtime::{self, Alert};
use crate::spill::replay::{replay_journal, ReplayError, ReplayReport};
use crate::spill::{self, all_journal_dirs, Journal, JournalConfig, SpillError, SIGNALS_SUBDIR};
use crate::write::WriterStats;

/// Longest wait for the refdata thread at exit: it sees the stop flag within
/// `refdata::POLL_INTERVAL` unless a PostgreSQL call is in flight, and then the
/// process does not wait for the call.
const REFDATA_JOIN_WAIT: Duration = Duration::from_secs(1);

/// Where ticks come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickSource {
    /// The built-in synthetic feed: `rate` ticks/s (0 = flat out) over `instruments`.
    Synthetic {
        /// Ticks a second.
        rate: u64,
        /// Instruments cycled through.
        instruments: usize,
    },
    /// NATS: JetStream (durable pull consumer) or core NATS (at most once).
    Nats {
        /// JetStream rather than core NATS.
        jetstream: bool,
    },
}

impl TickSource {
    /// NATS with the config's `nats.source`.
    pub fn from_config(config: &Config) -> TickSource {
        TickSource::Nats {
            jetstream: config.nats.source == Source::Jetstream,
        }
    }
}

/// Why the appliance could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The tables are missing or not what the appliance writes.
    #[error("cannot prepare the ClickHouse tables (run `alphapt-storage migrate up` first): {0}")]
    Tables(crate::native::Error),
    /// A spill journal could not be listed or opened.
    #[error("cannot open the spill journals under {dir}: {source}")]
    SpillOpen {
        /// The journal (or root) directory.
        dir: PathBuf,
        /// What failed.
        source: SpillError,
    },
    /// An earlier run's spill could not be replayed.
    #[error("cannot replay the spill journal {dir} an earlier run left (ClickHouse must take it first): {source}")]
    SpillReplay {
        /// The journal directory.
        dir: PathBuf,
        /// What failed.
        source: ReplayError,
    },
    /// The spill holds blocks written for another ClickHouse shard count.
    #[error("{0}")]
    SpillLayout(String),
    /// A thread could not be started.
    #[error("cannot start {what}: {source}")]
    Start {
        /// Which thread or path.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS for a server could not be set up (a file gone since the config loaded).
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// A thread panicked (the process's panic hook normally ends it first).
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The ticks receiver failed.
    #[error("NATS receiver failed: {error}{note}")]
    Receiver {
        /// Its error.
        error: NatsError,
        /// What was not stored, when the drain was not clean.
        note: String,
    },
    /// The signals receiver failed.
    #[error("NATS signals receiver failed: {0}")]
    SignalsReceiver(NatsError),
    /// The signals path left blocks unstored or threads behind.
    #[error("the signals path did not finish cleanly: {0}")]
    SignalsUnclean(String),
}

/// What the start's replay did, and which streams' journals hold damaged records.
#[derive(Debug, Default)]
pub struct SpillReplay {
    /// Counts over every journal.
    pub report: ReplayReport,
    /// A journal of the ticks path holds a corrupt record or segment.
    pub damaged_ticks: bool,
    /// A journal of the signals path does.
    pub damaged_signals: bool,
    /// An `ingest_audit` record per record now in ClickHouse.
    pub audit: Vec<AuditRecord>,
}

/// Replays every journal under `spill.dir` into `destination`, oldest record first,
/// each at most once, and says which stream lost spilled blocks to damage: those
/// blocks were acknowledged, so that stream's resume point must be read from the whole
/// store (JetStream delivers again what it still holds of them). The appliance runs it
/// at start; `spill replay` runs it by hand.
pub fn replay_spills(config: &Config, destination: &Destination) -> Result<SpillReplay, AppError> {
    let root = PathBuf::from(&config.spill.dir);
    let signals_root = root.join(SIGNALS_SUBDIR);
    let targets = destination.replay_targets();
    let mut replay = SpillReplay::default();
    let mut waited = vec![false; destination.targets.len()];
    let dirs = all_journal_dirs(&root).map_err(|source| AppError::SpillOpen {
        dir: root.clone(),
        source,
    })?;
    for dir in dirs {
        // `writer-<w>` held writer w's blocks: in a cluster they go back to its shard.
        let writer = dir
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.rsplit('-').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        let target = writer % destination.targets.len();
        // Its INSERTs carry this process's query-id prefix like the writers': a run
        // killed while it replays leaves INSERTs the next start must see and wait for.
        let replay_options = crate::native::Options {
            query_id_prefix: crate::durable::stored::own_insert_query_prefix(
                &destination.options.database,
                "r",
            ),
            ..destination.targets[target].clone()
        };
        let journal_config = JournalConfig {
            dir: dir.clone(),
            segment_bytes: config.spill.segment_bytes,
            bytes_max: u64::MAX,
        };
        let (mut journal, scan) =
            Journal::open(&journal_config).map_err(|source| AppError::SpillOpen {
                dir: dir.clone(),
                source,
            })?;
        if scan.corrupt_records > 0 || scan.corrupt_segments > 0 {
            if dir.starts_with(&signals_root) {
                replay.damaged_signals = true;
            } else {
                replay.damaged_ticks = true;
            }
        }
        if journal.records_pending() == 0 {
            continue;
        }
        check_spill_layout(&root, destination.targets.len())?;
        if !waited[target] {
            wait_for_killed_inserts(&replay_options).map_err(|source| AppError::SpillReplay {
                dir: dir.clone(),
                source,
            })?;
            waited[target] = true;
        }
        let audit = &mut replay.audit;
        let report = replay_journal(
            &mut journal,
            &targets,
            &replay_options,
            &mut |header, bytes| {
                audit.push(crate::audit::replayed(
                    header,
                    bytes,
                    crate::runtime::clock::now_ms(),
                ))
            },
        )
        .map_err(|source| AppError::SpillReplay {
            dir: dir.clone(),
            source,
        })?;
        tracing::info!(dir = %dir.display(), inserted = report.inserted, rows = report.rows,
            already_stored = report.already_stored, other_schema = report.other_schema,
            "Spill replayed");
        let total = &mut replay.report;
        total.inserted += report.inserted;
        total.rows += report.rows;
        total.already_stored += report.already_stored;
        total.other_schema += report.other_schema;
    }
    // What is journaled from here on is written for this shard count.
    let layout = root.join(SPILL_LAYOUT_FILE);
    std::fs::create_dir_all(&root)
        .and_then(|()| std::fs::write(&layout, format!("{}\n", destination.targets.len())))
        .map_err(|e| AppError::SpillOpen {
            dir: root.clone(),
            source: SpillError::Io {
                action: "cannot write",
                path: layout,
                source: e,
            },
        })?;
    Ok(replay)
}

/// Under `spill.dir`: how many ClickHouse shards the journals were written for. A
/// writer's blocks hold only the instruments of its shard (`w % S`), and a block
/// replays to its writer's shard, so the same `S` must read them back.
pub const SPILL_LAYOUT_FILE: &str = "clickhouse-shards";

/// Refuses to replay journals written for another shard count into `shards` shards
/// (one server takes any: every instrument is its own).
fn check_spill_layout(root: &std::path::Path, shards: usize) -> Result<(), AppError> {
    if shards <= 1 {
        return Ok(());
    }
    let written = std::fs::read_to_string(root.join(SPILL_LAYOUT_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok());
    if written == Some(shards) {
        return Ok(());
    }
    let was = match written {
        Some(n) => format!("{n} ClickHouse shard(s)"),
        None => {
            "an unknown ClickHouse layout (a single server, or a version that did not record it)"
                .to_owned()
        }
    };
    Err(AppError::SpillLayout(format!(
        "the spill under {} holds blocks written for {was}, and `clickhouse.shards` now lists {shards}: \
         each would replay to its writer's shard under the new count, not the shard its instruments hash to. \
         Replay it with the config that wrote it first (`alphapt-storage spill replay` with the old \
         `clickhouse.shards`), then start with the new one{}",
        root.display(),
        if written.is_none() {
            format!(
                ". If they were written for these {shards} shards, put `{shards}` in {}",
                root.join(SPILL_LAYOUT_FILE).display()
            )
        } else {
            String::new()
        }
    )))
}

/// Every ClickHouse shard's replicas of `clickhouse.shards` (empty for one server).
pub fn cluster_targets(config: &Config) -> Vec<Vec<crate::native::Options>> {
    if config.clickhouse.shards.is_empty() {
        return Vec::new();
    }
    config
        .clickhouse
        .replicas()
        .iter()
        .map(|replicas| {
            replicas
                .iter()
                .map(|(host, port)| {
                    crate::native::Options::from_config_at(config, true, host, *port)
                })
                .collect()
        })
        .collect()
}

/// Waits for INSERTs a killed run left on the server before the replay looks for its
/// records (else it finds them missing and stores them twice: the random kill -9 test
/// did).
fn wait_for_killed_inserts(options: &crate::native::Options) -> Result<(), ReplayError> {
    use crate::durable::stored::OTHER_INSERTS_WAIT;
    let mut conn = crate::native::Connection::connect(options)?;
    if !crate::durable::stored::wait_for_killed_inserts(&mut conn, &options.database)? {
        tracing::warn!(waited_s = OTHER_INSERTS_WAIT.as_secs(),
            "Another appliance keeps inserting into this database; replaying the spill anyway (two appliances on one database and spill are not supported)");
    }
    Ok(())
}

/// Every counter of the running appliance at one instant: the one read that the
/// status line, the summary and metrics share. Sums over shards and writers; latency
/// figures are the worst writer's.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Tick messages routed to shards.
    pub received: u64,
    /// Rows stored in ClickHouse by the ticks path (market_ticks and its rejects).
    pub stored: u64,
    /// Of those, rows of `market_ticks`.
    pub ticks_stored: u64,
    /// Messages stored in rejected_messages.
    pub rejected: u64,
    /// Stored ticks with a validation flag.
    pub flagged: u64,
    /// Rejected messages per reason (ticks path), in `RejectReason::ALL` order.
    pub rejected_by_reason: Vec<u64>,
    /// Ticks carrying each flag, in `model::quality::FLAGS` order.
    pub flagged_by_flag: Vec<u64>,
    /// Core NATS messages dropped on a full ring.
    pub dropped: u64,
    /// Rows in open (unsealed) blocks.
    pub open: u64,
    /// Bytes waiting in the frame rings.
    pub queued_bytes: u64,
    /// Capacity of the frame rings, bytes.
    pub ring_bytes: u64,
    /// INSERT statements committed (ticks path).
    pub inserts: u64,
    /// Of those, the ones sent as one block in table-key order (journal-first).
    pub sorted_inserts: u64,
    /// Failed INSERTs.
    pub errors: u64,
    /// Receive-to-durable latency, µs: p50, p99, p99.9, max.
    pub latency_us: [u64; 4],
    /// A writer is retrying (ClickHouse away or failing).
    pub degraded: bool,
    /// The server's message when a writer holds blocks ClickHouse refused (schema,
    /// type): not retried.
    pub refused: Option<String>,
    /// A spill refuses blocks (full or failing): intake stopped.
    pub spill_refusing: bool,
    /// Journal faults after the append (marks not synced, damaged records set aside).
    pub spill_faults: u64,
    /// Journal-first (`spill.mode = "always"`): every row goes through the spill.
    pub journal_first: bool,
    /// Rows made durable in the spill rather than ClickHouse (journal-first: every row
    /// journaled).
    pub spilled_rows: u64,
    /// Receive-to-spill-durable latency, µs: p50, p99, max.
    pub spill_latency_us: [u64; 3],
    /// Journal sync (group commit) time, µs: p50, p99, max (the worst writer's).
    pub spill_sync_us: [u64; 3],
    /// Spilled rows replayed into ClickHouse.
    pub replayed_rows: u64,
    /// Bytes of records waiting in the spill.
    pub spill_pending_bytes: u64,
    /// Highest stream sequence durable with all below it (acknowledged under AckAll).
    pub watermark: u64,
    /// Receive stamp of the ticks path's first message, Unix ms (0: none yet).
    pub first_routed_ms: u64,
    /// When the ticks path's last INSERT committed, Unix ms (0: none yet).
    pub last_stored_ms: u64,
    /// Rows stored by the signals path.
    pub signal_rows: u64,
    /// Instruments with reference data.
    pub references: u64,
    /// The refdata thread is connected to PostgreSQL.
    pub references_up: bool,
    /// Reference-data loads, changes applied, rows skipped, PostgreSQL errors.
    pub refdata_counts: [u64; 4],
    /// The audit thread: rows written to `ingest_audit`, records dropped (full rings,
    /// refused values, left at exit), failed writes.
    pub audit_counts: [u64; 3],
    /// The Redis cache, when on.
    pub cache: Option<CacheSnapshot>,
    /// Blocks committed in ClickHouse and the bytes sent for them (ticks path).
    pub blocks: u64,
    /// Bytes sent to ClickHouse in INSERTs (ticks path).
    pub sent_bytes: u64,
    /// Raw and encoded bytes of the blocks made durable (ticks path): their ratio is
    /// the compression ratio.
    pub durable_bytes: [u64; 2],
    /// Blocks made durable in the spill, and spilled blocks replayed.
    pub spill_blocks: [u64; 2],
    /// JetStream: the ticks consumer's undelivered backlog (newest delivery's view).
    pub jetstream_pending: u64,
    /// JetStream: redeliveries received, both paths.
    pub redelivered: u64,
    /// Reconnections per server: NATS, ClickHouse, Redis, PostgreSQL.
    pub reconnects: [u64; 4],
    /// The ticks receiver's NATS session (`pipeline::NATS_*`).
    pub nats_state: u8,
    /// The subject partition consumed, with partitions on.
    pub nats_partition: Option<u32>,
}

/// The Redis cache's figures in a [`Snapshot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSnapshot {
    /// Connected, last write went through.
    pub up: bool,
    /// Age of the oldest change not yet written, ms.
    pub lag_ms: u64,
    /// Keys written.
    pub keys_written: u64,
    /// Failed requests and connects.
    pub errors: u64,
    /// Changes overwritten before the Redis thread wrote them.
    pub conflated: u64,
    /// Ticks and signals whose shard table was full.
    pub untracked: u64,
    /// Write round trip p50, p99, max, µs.
    pub write_us: [u64; 3],
    /// `query`'s Redis hit rate, parts per million.
    pub hit_rate_ppm: u64,
    /// Commands Redis refused for one key (not retried).
    pub refused: u64,
    /// MOVED/ASK redirections followed (Redis Cluster).
    pub redirects: u64,
    /// History entries a shard dropped (its queue full) before the Redis thread read them.
    pub history_missed: u64,
    /// Good ticks for a bar older than the cached one (left to ClickHouse).
    pub bars_late: u64,
}

/// The outcome of a drained run.
#[derive(Debug)]
pub struct Finished {
    /// Messages the ticks source routed.
    pub routed: u64,
    /// The drain was asked for by a signal (not the end of the source).
    pub stopped_by_signal: bool,
    /// What the ticks pipeline's join found.
    pub joined: Joined,
    /// Counters after the drain.
    pub end: Snapshot,
    /// Seconds the ticks pipeline took to drain after its source ended.
    pub drain_seconds: f64,
    /// Receive-to-durable per message, µs, merged over every writer of both paths
    /// (empty when nothing was stored).
    pub latency: hdrhistogram::Histogram<u64>,
    /// The same messages each counted with its block's oldest wait (the upper bound
    /// reported before per-message stamps).
    pub latency_oldest: hdrhistogram::Histogram<u64>,
}

/// What the ticks receiver thread ends with.
enum Outcome {
    Synthetic(u64),
    Nats(ReceiverReport),
}

/// The strategy-signals path: its own stream, consumer and sequence space, so its own
/// router, one shard and one writer (signals are a trickle beside the ticks).
struct SignalsPath {
    pipeline: Pipeline,
    receiver: JoinHandle<Result<ReceiverReport, NatsError>>,
}

/// The running appliance.
pub struct App {
    alert: Arc<Alert>,
    ticks: Pipeline,
    /// Every stats handle, for snapshots here and on the control thread.
    stats: StatsSource,
    receiver: JoinHandle<Result<Outcome, NatsError>>,
    /// Disconnected when the receiver thread ends (its sender is dropped with the
    /// thread's closure, on return or unwind): wakes [`App::wait`] at once.
    source_ended: std::sync::mpsc::Receiver<()>,
    signals: Option<SignalsPath>,
    refdata: Option<JoinHandle<()>>,
    /// The quality snapshot thread, when `postgres.quality_snapshot_interval_ms` > 0.
    quality: Option<JoinHandle<()>>,
    /// The audit thread; stopped when the app is dropped, after the pipelines joined.
    audit: AuditThread,
    /// The Redis thread, when `redis.enabled`; stopped like the audit thread.
    cache: Option<CacheThread>,
    /// The control endpoint (`/metrics`, `/health`, `/quality`); stopped last.
    control: Option<Control>,
    /// Stops both slow-path threads (refdata, quality).
    refdata_stop: Arc<AtomicBool>,
}

impl App {
    /// Starts every stage in order (see the module doc); `count` stops the ticks source
    /// after that many messages. `alert` is the process's stop signal.
    pub fn start(
        config: &Config,
        source: TickSource,
        count: Option<u64>,
        alert: Arc<Alert>,
    ) -> Result<App, AppError> {
        // First: a port in use must stop the start before any thread runs.
        let control = Control::bind(config.http.addr).map_err(|source| AppError::Start {
            what: "the control endpoint: `http.addr` is in use or not this host's (another appliance? set `--set http.addr=127.0.0.1:0` for any free port)",
            source,
        })?;
        // Rings the host cannot hold: refused before any server is touched (they are
        // written whole when the paths start).
        crate::ring::check_ring_memory(
            usize::from(config.ingest.shards),
            config.ingest.ring_slots as usize * RING_SLOT_BYTES,
            crate::ring::mem_available_bytes(),
        )
        .map_err(|message| AppError::Start {
            what: "the receiver rings",
            source: std::io::Error::new(std::io::ErrorKind::OutOfMemory, message),
        })?;
        // The schema is read from one server; in a cluster, the first of them that
        // answers (every shard's is compared with it next), so a restart while a
        // replica is down starts. Quality snapshots and `/quality` read through it too.
        let targets = cluster_targets(config);
        let all: Vec<crate::native::Options> = targets.iter().flatten().cloned().collect();
        let options = match crate::pipeline::first_live(&all) {
            Ok((live, _)) => live.clone(),
            Err(_) => crate::native::Options::from_config(config, true),
        };
        let destination = Destination::resolve(&options)
            .and_then(|d| d.with_targets(targets))
            .map_err(AppError::Tables)?;
        tracing::info!(
            "Server-side insert deduplication: {}",
            destination.dedup.describe()
        );
        let replay = replay_spills(config, &destination)?;
        if replay.report.inserted + replay.report.already_stored > 0 {
            tracing::info!(
                blocks = replay.report.inserted,
                rows = replay.report.rows,
                already_stored = replay.report.already_stored,
                "Spill from an earlier run replayed"
            );
        }
        let mut ticks_config = config.clone();
        ticks_config.spill.spill_bytes_max = config
            .spill
            .spill_bytes_max
            .saturating_sub(signals_spill_bytes(config))
            .max(config.spill.segment_bytes);
        // One group of shards and one receiver per subject partition served.
        let served = match source {
            TickSource::Nats { .. } => config.nats.served(),
            TickSource::Synthetic { .. } => vec![None],
        };
        let (mut ticks, mut routers) =
            pipeline::start_path(&ticks_config, &destination, alert.clone(), "", served.len())
                .map_err(|source| AppError::Start {
                    what: "the ticks path",
                    source,
                })?;
        let ticks_stats = ticks.stats.clone();
        let refdata_stats = Arc::new(RefdataStats::default());
        let refdata_stop = Arc::new(AtomicBool::new(false));
        let (instruments_tx, instruments_rx) = if config.redis.enabled {
            let (tx, rx) = instrument_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let refdata = start_refdata(
            config,
            &mut ticks,
            refdata_stats.clone(),
            refdata_stop.clone(),
            instruments_tx,
        )?;
        let quality = start_quality(config, &destination.options, refdata_stop.clone())?;
        let receiver_core = if config.threads.pin {
            config.threads.receiver_core
        } else {
            None
        };
        let hot_nice = config.threads.hot_nice;
        let mut signals = None;
        let (ended, source_ended) = std::sync::mpsc::sync_channel::<()>(0);
        let receiver = match source {
            TickSource::Synthetic { rate, instruments } => {
                let synthetic_config = SyntheticConfig {
                    rate,
                    instruments,
                    count,
                    seed: 0x5eed,
                };
                tracing::info!(rate, instruments, "Source: built-in synthetic feed");
                let mut router = routers.remove(0);
                runtime::spawn_hot("receiver", receiver_core, hot_nice, move || {
                    let _ended = ended;
                    Ok(Outcome::Synthetic(synthetic::run(
                        &mut router,
                        synthetic_config,
                    )))
                })
            }
            TickSource::Nats { jetstream } => {
                let receiver_config = ReceiverConfig {
                    url: config.nats.url.clone(),
                    jetstream,
                    kind: Kind::TickJson,
                    stream: config.nats.stream_ticks.clone(),
                    subject: config.nats.subject_ticks.clone(),
                    filter_subject: config
                        .nats
                        .filter_subject(&config.nats.subject_ticks)
                        .unwrap_or_default(),
                    partition: config.nats.partition(),
                    durable: config.nats.durable_name(),
                    fetch_batch_max: config.nats.fetch_batch_max,
                    ack_wait: Duration::from_millis(config.nats.ack_wait_ms),
                    max_ack_pending: pipeline::max_ack_pending(config),
                    ack_none: config.nats.ack_policy == crate::config::AckPolicy::None,
                    connect_timeout: Duration::from_millis(
                        config.clickhouse.connect_timeout_ms.max(2_000),
                    ),
                    drain_timeout: Duration::from_millis(config.ingest.drain_timeout_ms),
                    stream_max_bytes: config.nats.stream_max_bytes,
                    // Validated when the config loaded; a file gone since is an error.
                    tls: config
                        .nats
                        .tls_client()
                        .map_err(|e| AppError::Tls(format!("nats: {e}")))?,
                    count,
                    store: Some(StoreProbe {
                        options: destination.options.clone(),
                        cluster: destination.replicas.clone(),
                        tables: StreamTables {
                            rows_table: "market_ticks",
                            subject_filter: config.nats.subject_ticks.clone(),
                        },
                        reread_all: replay.damaged_ticks,
                        mark: local_mark(config, &config.nats.stream_ticks, &config.nats.durable_name()),
                    }),
                };
                tracing::info!(jetstream, url = %crate::config::redact_url(&config.nats.url),
                    partitions = ?config.nats.partition_ids, of = config.nats.partitions, "Source: NATS");
                signals = Some(start_signals(
                    config,
                    &destination,
                    &receiver_config,
                    replay.damaged_signals,
                    alert.clone(),
                )?);
                let configs = per_partition(config, &receiver_config, &config.nats.subject_ticks);
                runtime::spawn_hot("receiver", receiver_core, hot_nice, move || {
                    let _ended = ended;
                    receive_all(routers, configs).map(Outcome::Nats)
                })
            }
        }
        .map_err(|source| AppError::Start {
            what: "the receiver thread",
            source,
        })?;
        tracing::info!(
            shards = config.ingest.shards,
            writers = config.ingest.writers,
            "Appliance running; Ctrl-C drains"
        );
        let ring_bytes = u64::from(config.ingest.ring_slots)
            * RING_SLOT_BYTES as u64
            * u64::from(config.ingest.shards);
        let signals_stats = signals.as_ref().map(|s| s.pipeline.stats.clone());
        let mut feed = ticks.take_audit_feed().unwrap_or_default();
        let mut start_replay = feed.producer();
        for record in replay.audit {
            start_replay.record(record);
        }
        if let Some(more) = signals.as_mut().and_then(|s| s.pipeline.take_audit_feed()) {
            feed.merge(more);
        }
        let audit = AuditThread::start(config, feed)?;
        let cache = match ticks.take_cache_feed() {
            Some(mut feed) => {
                if let Some(more) = signals.as_mut().and_then(|s| s.pipeline.take_cache_feed()) {
                    feed.merge(more);
                }
                Some(CacheThread::start(config, feed, instruments_rx)?)
            }
            None => None,
        };
        let stats = StatsSource {
            ticks: ticks_stats,
            signals: signals_stats,
            refdata: refdata_stats,
            audit: audit.stats.clone(),
            audit_ring_dropped: audit.ring_dropped.clone(),
            cache: cache.as_ref().map(|c| c.stats.clone()),
            ring_bytes,
            journal_first: config.spill.mode == crate::config::SpillMode::Always,
            clickhouse_replicas: config.clickhouse.shards.clone(),
        };
        let control = control
            .start(
                stats.clone(),
                QualitySource {
                    options: destination.options.clone(),
                    tick_subject_prefix: crate::quality::subject_prefix(&config.nats.subject_ticks),
                    distributed: !config.clickhouse.shards.is_empty(),
                },
            )
            .map_err(|source| AppError::Start {
                what: "the control endpoint thread",
                source,
            })?;
        Ok(App {
            alert,
            stats,
            control: Some(control),
            ticks,
            receiver,
            source_ended,
            signals,
            refdata,
            quality,
            audit,
            cache,
            refdata_stop,
        })
    }

    /// True while the ticks source runs (the drain has not begun).
    pub fn running(&self) -> bool {
        !self.receiver.is_finished()
    }

    /// Waits up to `timeout`, or until the ticks source has ended: a caller polling
    /// [`App::running`] then starts the drain at once instead of up to a poll later
    /// (200 ms of a 1.3 s run at `--count 200000`).
    pub fn wait(&self, timeout: Duration) {
        if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
            self.source_ended.recv_timeout(timeout)
        {
            // The thread is returning: `running` turns false within microseconds.
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Every counter now.
    pub fn snapshot(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// Where the control endpoint listens.
    pub fn control_addr(&self) -> Option<std::net::SocketAddr> {
        self.control.as_ref().map(|c| c.addr)
    }
}

/// Every stats handle of a running app: cheap to clone, read by the status line, the
/// summary and the control endpoint; a snapshot is one relaxed load per counter.
#[derive(Clone)]
pub struct StatsSource {
    ticks: PipelineStats,
    signals: Option<PipelineStats>,
    refdata: Arc<RefdataStats>,
    audit: Arc<AuditStats>,
    /// The audit rings' full counters.
    audit_ring_dropped: Vec<Arc<AtomicU64>>,
    cache: Option<Arc<CacheStats>>,
    ring_bytes: u64,
    journal_first: bool,
    /// `clickhouse.shards` as configured (empty for one server).
    clickhouse_replicas: Vec<Vec<String>>,
}

impl StatsSource {
    /// Every counter now.
    pub fn snapshot(&self) -> Snapshot {
        let mut now = snapshot(
            &self.ticks,
            self.signals.as_ref(),
            &self.refdata,
            self.ring_bytes,
            self.journal_first,
        );
        let r = Ordering::Relaxed;
        let dropped = self.audit.dropped_total.load(r)
            + self
                .audit_ring_dropped
                .iter()
                .map(|d| d.load(r))
                .sum::<u64>();
        now.audit_counts = [
            self.audit.written_total.load(r),
            dropped,
            self.audit.errors_total.load(r),
        ];
        now.cache = cache_snapshot(self.cache.as_ref(), &self.ticks, self.signals.as_ref());
        let again = |connects: u64| connects.saturating_sub(1);
        now.reconnects[2] = self
            .cache
            .as_ref()
            .map_or(0, |c| again(c.connects_total.load(r)));
        now.reconnects[3] =
            again(self.refdata.connects_total.load(r)) + again(self.audit.connects_total.load(r));
        now
    }

    /// The ticks path's stats (per shard and writer).
    pub fn ticks(&self) -> &PipelineStats {
        &self.ticks
    }

    /// A ClickHouse cluster's series, per shard (writer `w` serves shard `w % S`);
    /// empty for one server.
    pub fn clickhouse_shards(&self) -> Vec<crate::control::metrics::ShardSeries> {
        let r = Ordering::Relaxed;
        let count = self.clickhouse_replicas.len();
        let mut shards: Vec<crate::control::metrics::ShardSeries> = self
            .clickhouse_replicas
            .iter()
            .map(|replicas| crate::control::metrics::ShardSeries {
                up: true,
                inserts: 0,
                replicas: replicas.iter().map(|r| (r.clone(), false)).collect(),
            })
            .collect();
        for (index, writer) in self.ticks.writers.iter().enumerate() {
            let Some(shard) = shards.get_mut(index % count.max(1)) else {
                break;
            };
            shard.up &= writer.degraded.load(r) == 0;
            shard.inserts += writer.inserts_total.load(r);
            let used = writer.replica_in_use.load(r) as usize;
            if let Some(replica) = shard.replicas.get_mut(used) {
                replica.1 = true;
            }
        }
        shards
    }

    /// Every exited writer's per-message receive-to-durable histograms, merged (after
    /// the pipelines joined: a writer hands them over as it exits): each message from
    /// its own receive stamp, and from its block's oldest.
    pub fn merged_latency(&self) -> [hdrhistogram::Histogram<u64>; 2] {
        let new = || {
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds")
        };
        let mut merged = [new(), new()];
        let signals = self.signals.iter().flat_map(|s| s.writers.iter());
        for w in self.ticks.writers.iter().chain(signals) {
            if let Ok(slot) = w.messages_latency.lock() {
                for (m, h) in merged.iter_mut().zip(slot.iter().flatten()) {
                    let _ = m.add(h);
                }
            }
        }
        merged
    }

    /// Latency histograms merged over every writer of both paths: `[durable,
    /// committed]`, each per table (`market_ticks`, `strategy_signals`,
    /// `rejected_messages`).
    pub fn latency(&self) -> [[LatencyTotals; 3]; 2] {
        let mut totals = [[LatencyTotals::default(); 3]; 2];
        let signals = self.signals.iter().flat_map(|s| s.writers.iter());
        for w in self.ticks.writers.iter().chain(signals) {
            let [durable, committed] = &mut totals;
            for (table, (d, c)) in durable.iter_mut().zip(committed.iter_mut()).enumerate() {
                w.durable_latency[table].add_to(d);
                w.committed_latency[table].add_to(c);
            }
        }
        totals
    }

    /// Journal syncs merged over every writer of both paths.
    pub fn spill_sync(&self) -> LatencyTotals {
        let mut totals = LatencyTotals::default();
        let signals = self.signals.iter().flat_map(|s| s.writers.iter());
        for w in self.ticks.writers.iter().chain(signals) {
            w.spill_sync.add_to(&mut totals);
        }
        totals
    }
}

/// The Redis thread's figures and the shards' cache counters.
fn cache_snapshot(
    cache: Option<&Arc<CacheStats>>,
    ticks: &PipelineStats,
    signals: Option<&PipelineStats>,
) -> Option<CacheSnapshot> {
    let cache = cache?;
    let r = Ordering::Relaxed;
    let shards = ticks
        .shards
        .iter()
        .chain(signals.iter().flat_map(|s| s.shards.iter()));
    let (mut untracked, mut bars_late) = (0, 0);
    for shard in shards {
        untracked += shard.cache_untracked_total.load(r);
        bars_late += shard.cache_bars_late_total.load(r);
    }
    let s = cache;
    Some(CacheSnapshot {
        up: s.up.load(r),
        lag_ms: s.lag_ms.load(r),
        keys_written: s.keys_written_total.load(r),
        errors: s.errors_total.load(r),
        conflated: s.conflated_total.load(r),
        untracked,
        write_us: [
            s.write_p50_us.load(r),
            s.write_p99_us.load(r),
            s.write_max_us.load(r),
        ],
        hit_rate_ppm: s.hit_rate_ppm.load(r),
        refused: s.refused_total.load(r),
        redirects: s.redirects_total.load(r),
        history_missed: s.history_missed_total.load(r),
        bars_late,
    })
}

impl App {
    /// Drains in order (see the module doc) once the ticks source has ended or the
    /// alert asks for a stop; every wait is bounded by the drain deadline.
    pub fn finish(mut self) -> Result<Finished, AppError> {
        let outcome = self.receiver.join();
        // Nothing new is routed now, so reference data has nothing left to check.
        stop_slow_path(
            "refdata",
            self.refdata,
            &self.refdata_stop,
            REFDATA_JOIN_WAIT,
        );
        stop_slow_path(
            "quality",
            self.quality,
            &self.refdata_stop,
            REFDATA_JOIN_WAIT,
        );
        let outcome = outcome.map_err(|_| AppError::Panicked("receiver"))?;
        let stopped_by_signal = self.alert.stopping();
        // The signals path drains with the ticks path (same alert): a ticks receiver that
        // failed or reached `--count` stops it too, and from here every wait is bounded.
        self.alert.request_stop();
        if let Some(signals) = self.signals {
            signals.finish()?;
        }
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                // The receiver already told the shards to finish; let them drain what came.
                let joined = self.ticks.join();
                let note = if joined.is_clean() {
                    String::new()
                } else {
                    format!("; {}", not_stored_note(&joined))
                };
                return Err(AppError::Receiver { error, note });
            }
        };
        let routed = match outcome {
            Outcome::Synthetic(routed) => routed,
            Outcome::Nats(report) => report.routed,
        };
        let drain_started = Instant::now();
        let joined = self.ticks.join();
        let pipeline_ms = drain_started.elapsed().as_millis() as u64;
        // Every block is recorded now: the audit writes them, then stops; the Redis
        // thread writes the shards' last state.
        self.audit.stop();
        let audit_ms = drain_started.elapsed().as_millis() as u64;
        if let Some(cache) = &mut self.cache {
            cache.stop();
        }
        let cache_ms = drain_started.elapsed().as_millis() as u64;
        let end = self.stats.snapshot();
        if let Some(control) = &mut self.control {
            control.stop();
        }
        tracing::debug!(
            pipeline_ms,
            audit_ms,
            cache_ms,
            control_ms = drain_started.elapsed().as_millis() as u64,
            "Drain: each stage done, ms since the receiver ended"
        );
        let [latency, latency_oldest] = self.stats.merged_latency();
        Ok(Finished {
            latency_oldest,
            routed,
            stopped_by_signal,
            joined,
            end,
            drain_seconds: drain_started.elapsed().as_secs_f64(),
            latency,
        })
    }
}

impl SignalsPath {
    /// Waits for the signals receiver and pipeline.
    fn finish(self) -> Result<(), AppError> {
        let report = self
            .receiver
            .join()
            .map_err(|_| AppError::Panicked("signals receiver"))?;
        let joined = self.pipeline.join();
        report.map_err(AppError::SignalsReceiver)?;
        if !joined.is_clean() {
            return Err(AppError::SignalsUnclean(not_stored_note(&joined)));
        }
        Ok(())
    }
}

/// What was not stored, in words: blocks, panicked and stuck threads.
pub fn not_stored_note(joined: &Joined) -> String {
    let mut parts = Vec::new();
    if joined.not_stored > 0 {
        parts.push(format!("{} blocks NOT stored", joined.not_stored));
    }
    if !joined.panicked.is_empty() {
        parts.push(format!("threads panicked: {}", joined.panicked.join(", ")));
    }
    if !joined.stuck.is_empty() {
        parts.push(format!(
            "threads still in a server call at the deadline: {}",
            joined.stuck.join(", ")
        ));
    }
    parts.join("; ")
}

fn snapshot(
    stats: &PipelineStats,
    signals: Option<&PipelineStats>,
    refdata: &RefdataStats,
    ring_bytes: u64,
    journal_first: bool,
) -> Snapshot {
    let r = Ordering::Relaxed;
    let sum = |f: fn(&WriterStats) -> &AtomicU64| -> u64 {
        stats.writers.iter().map(|w| f(w).load(r)).sum()
    };
    let max = |f: fn(&WriterStats) -> &AtomicU64| -> u64 {
        stats
            .writers
            .iter()
            .map(|w| f(w).load(r))
            .max()
            .unwrap_or(0)
    };
    // The server's message is read under the writer's lock, only when a writer holds
    // refused blocks: once a second at most, off the hot path.
    let signal_writers = signals.map_or(&[][..], |s| &s.writers[..]);
    let refused = stats
        .writers
        .iter()
        .chain(signal_writers)
        .filter(|w| w.refused.load(r) != 0)
        .find_map(|w| w.last_error.lock().ok().map(|e| e.clone()));
    Snapshot {
        received: source_sum(stats, |s| &s.messages_total),
        stored: sum(|w| &w.rows_total),
        ticks_stored: stats
            .writers
            .iter()
            .map(|w| w.table_rows_total[0].load(r))
            .sum(),
        rejected: stats.shards.iter().map(|s| s.rejected_total.load(r)).sum(),
        flagged: stats.shards.iter().map(|s| s.flagged_total.load(r)).sum(),
        rejected_by_reason: (0..crate::model::quality::RejectReason::ALL.len())
            .map(|i| {
                stats
                    .shards
                    .iter()
                    .map(|s| s.rejected_by_reason[i].load(r))
                    .sum()
            })
            .collect(),
        flagged_by_flag: (0..crate::model::quality::FLAGS.len())
            .map(|i| {
                stats
                    .shards
                    .iter()
                    .map(|s| s.flagged_by_flag[i].load(r))
                    .sum()
            })
            .collect(),
        dropped: source_sum(stats, |s| &s.dropped_total),
        open: stats.shards.iter().map(|s| s.rows_open.load(r)).sum(),
        queued_bytes: stats
            .shards
            .iter()
            .map(|s| s.input_queued_bytes.load(r))
            .sum(),
        ring_bytes,
        inserts: sum(|w| &w.inserts_total),
        sorted_inserts: sum(|w| &w.sorted_inserts_total),
        // The ticks path: from its first message in to its last INSERT done.
        first_routed_ms: sources(stats)
            .map(|s| s.first_routed_ms.load(r))
            .filter(|&ms| ms > 0)
            .min()
            .unwrap_or(0),
        last_stored_ms: max(|w| &w.last_stored_ms),
        errors: sum(|w| &w.errors_total),
        latency_us: [
            max(|w| &w.latency_us_p50),
            max(|w| &w.latency_us_p99),
            max(|w| &w.latency_us_p999),
            max(|w| &w.latency_us_max),
        ],
        degraded: stats.writers.iter().any(|w| w.degraded.load(r) != 0),
        refused,
        spill_refusing: stats.writers.iter().any(|w| w.spill_refusing.load(r) != 0),
        spill_faults: sum(|w| &w.spill_faults_total),
        journal_first,
        spilled_rows: sum(|w| &w.spilled_rows_total),
        spill_latency_us: [
            max(|w| &w.spill_latency_us_p50),
            max(|w| &w.spill_latency_us_p99),
            max(|w| &w.spill_latency_us_max),
        ],
        spill_sync_us: [
            max(|w| &w.spill_sync_us[0]),
            max(|w| &w.spill_sync_us[1]),
            max(|w| &w.spill_sync_us[2]),
        ],
        replayed_rows: sum(|w| &w.replayed_rows_total),
        spill_pending_bytes: sum(|w| &w.spill_pending_bytes),
        // Several partitions: the lowest (each partition's own stream sequences).
        watermark: sources(stats)
            .map(|s| s.watermark.load(r))
            .min()
            .unwrap_or(0),
        signal_rows: signals.map_or(0, |s| s.writers.iter().map(|w| w.rows_total.load(r)).sum()),
        references: refdata.instruments.load(r),
        references_up: refdata.connected.load(r),
        refdata_counts: [
            refdata.loads_total.load(r),
            refdata.changes_total.load(r),
            refdata.rows_skipped_total.load(r),
            refdata.errors_total.load(r),
        ],
        // Filled in by the App, which holds the audit and Redis threads.
        audit_counts: [0; 3],
        cache: None,
        blocks: sum(|w| &w.blocks_total),
        sent_bytes: sum(|w| &w.sent_bytes_total),
        durable_bytes: [
            sum(|w| &w.durable_raw_bytes_total),
            sum(|w| &w.encoded_bytes_total),
        ],
        spill_blocks: [
            sum(|w| &w.spilled_blocks_total),
            sum(|w| &w.replayed_blocks_total),
        ],
        jetstream_pending: source_sum(stats, |s| &s.jetstream_pending),
        // The worst of the partitions' sessions: down, else up, else none.
        nats_state: sources(stats)
            .map(|s| s.nats_state.load(r))
            .max()
            .unwrap_or(crate::pipeline::NATS_NONE),
        nats_partition: match stats.source.nats_partition.load(r) {
            0 => None,
            plus_one => u32::try_from(plus_one - 1).ok(),
        },
        redelivered: source_sum(stats, |s| &s.redelivered_total)
            + signals.map_or(0, |s| source_sum(s, |s| &s.redelivered_total)),
        reconnects: [
            source_sum(stats, |s| &s.reconnects_total)
                + signals.map_or(0, |s| source_sum(s, |s| &s.reconnects_total)),
            stats
                .writers
                .iter()
                .chain(signal_writers)
                .map(|w| w.reconnects_total.load(r))
                .sum(),
            // Redis and PostgreSQL: filled in by the App.
            0,
            0,
        ],
    }
}

/// Starts the refdata thread on the ticks path's shards.
fn start_refdata(
    config: &Config,
    pipeline: &mut Pipeline,
    stats: Arc<RefdataStats>,
    stop: Arc<AtomicBool>,
    instruments: Option<std::sync::mpsc::SyncSender<InstrumentChange>>,
) -> Result<Option<JoinHandle<()>>, AppError> {
    let Some(feed) = pipeline.take_reference_feed() else {
        return Ok(None);
    };
    let core = if config.threads.pin {
        config.threads.slow_core
    } else {
        None
    };
    let mut refdata = Refdata::new(RefdataConfig::from_config(config), feed, stats, stop);
    if let Some(tx) = instruments {
        refdata = refdata.with_cache(tx);
    }
    let handle = refdata.spawn(core).map_err(|source| AppError::Start {
        what: "the refdata thread",
        source,
    })?;
    Ok(Some(handle))
}

/// The audit thread, its stop flag and counters. `stop` (from `App::finish` once the
/// pipelines joined, so their last records are in the rings; or on drop) raises the
/// flag and waits at most [`AUDIT_JOIN_WAIT`] for the last batch.
struct AuditThread {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stats: Arc<AuditStats>,
    /// The rings' full counters (the feed itself moved into the thread).
    ring_dropped: Vec<Arc<AtomicU64>>,
}

/// The audit thread's flush after the stop (1 s) plus one PostgreSQL round trip.
const AUDIT_JOIN_WAIT: Duration = Duration::from_millis(2_500);

impl AuditThread {
    fn start(config: &Config, feed: AuditFeed) -> Result<AuditThread, AppError> {
        let stop = Arc::new(AtomicBool::new(false));
        let core = if config.threads.pin {
            config.threads.slow_core
        } else {
            None
        };
        let stats = Arc::new(AuditStats::default());
        let ring_dropped = feed.dropped_counters();
        let auditor = Auditor::new(
            AuditConfig::from_config(config),
            feed,
            stats.clone(),
            stop.clone(),
        );
        let handle = auditor.spawn(core).map_err(|source| AppError::Start {
            what: "the audit thread",
            source,
        })?;
        Ok(AuditThread {
            handle: Some(handle),
            stop,
            stats,
            ring_dropped,
        })
    }

    fn stop(&mut self) {
        stop_slow_path("audit", self.handle.take(), &self.stop, AUDIT_JOIN_WAIT);
    }
}

impl Drop for AuditThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Redis thread, its stop flag and figures; stopped like [`AuditThread`].
struct CacheThread {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stats: Arc<CacheStats>,
    /// One last flush: a connect and a write, each bounded by `redis.timeout_ms`.
    join_wait: Duration,
}

impl CacheThread {
    fn start(
        config: &Config,
        feed: CacheFeed,
        instruments: Option<std::sync::mpsc::Receiver<InstrumentChange>>,
    ) -> Result<CacheThread, AppError> {
        let stop = Arc::new(AtomicBool::new(false));
        let core = if config.threads.pin {
            config.threads.slow_core
        } else {
            None
        };
        let stats = Arc::new(CacheStats::default());
        let writer = CacheWriter::new(
            CacheConfig::from_config(config),
            feed,
            instruments,
            stats.clone(),
            stop.clone(),
        );
        let handle = writer.spawn(core).map_err(|source| AppError::Start {
            what: "the Redis thread",
            source,
        })?;
        Ok(CacheThread {
            handle: Some(handle),
            stop,
            stats,
            join_wait: Duration::from_millis(config.redis.timeout_ms * 2 + 500),
        })
    }

    fn stop(&mut self) {
        stop_slow_path("redis", self.handle.take(), &self.stop, self.join_wait);
    }
}

impl Drop for CacheThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the quality snapshot thread unless snapshots are off.
fn start_quality(
    config: &Config,
    options: &crate::native::Options,
    stop: Arc<AtomicBool>,
) -> Result<Option<JoinHandle<()>>, AppError> {
    let Some(snapshot_config) = SnapshotConfig::from_config(config, options.clone()) else {
        return Ok(None);
    };
    let core = if config.threads.pin {
        config.threads.slow_core
    } else {
        None
    };
    let snapshotter = Snapshotter::new(snapshot_config, stop);
    let handle = snapshotter.spawn(core).map_err(|source| AppError::Start {
        what: "the quality snapshot thread",
        source,
    })?;
    Ok(Some(handle))
}

/// A path's sources: one, or one per subject partition served.
fn sources(stats: &PipelineStats) -> impl Iterator<Item = &Arc<crate::pipeline::SourceStats>> {
    std::iter::once(&stats.source).chain(&stats.more_sources)
}

/// A counter summed over a path's sources.
fn source_sum(
    stats: &PipelineStats,
    counter: impl Fn(&crate::pipeline::SourceStats) -> &AtomicU64,
) -> u64 {
    sources(stats)
        .map(|s| counter(s).load(Ordering::Relaxed))
        .sum()
}

/// Stops a slow-path thread, waiting at most `wait`.
fn stop_slow_path(name: &str, handle: Option<JoinHandle<()>>, stop: &AtomicBool, wait: Duration) {
    stop.store(true, Ordering::Relaxed);
    let Some(handle) = handle else { return };
    // The slow-path threads wait parked between looks at their flag: woken here, they
    // stop within a millisecond or so unless inside a server call, which `wait` bounds.
    handle.thread().unpark();
    let deadline = Instant::now() + wait;
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if !handle.is_finished() {
        tracing::warn!("The {name} thread is still inside a server call; exiting without it");
        return;
    }
    if handle.join().is_err() {
        tracing::error!("The {name} thread panicked");
    }
}

fn start_signals(
    config: &Config,
    destination: &Destination,
    ticks: &ReceiverConfig,
    reread_all: bool,
    alert: Arc<Alert>,
) -> Result<SignalsPath, AppError> {
    let mut small = config.clone();
    // The ticks path owns the pinned cores (`[threads]` counts its threads only): the
    // signals path's trickle runs unpinned, and never spins on a core it shares.
    small.threads.pin = false;
    if small.threads.wait == crate::config::WaitStrategy::Spin {
        small.threads.wait = crate::config::WaitStrategy::Hybrid;
    }
    small.ingest.shards = 1;
    small.ingest.writers = 1;
    small.ingest.block_rows_max = pipeline::SIGNAL_ROWS_MAX as u32;
    // A smaller ring for the trickle of signals, but never below two of the largest
    // frames (the full-size ring passed that check in config validation).
    let frame_max = crate::ring::frame_bytes(
        crate::ring::SUBJECT_BYTES_MAX,
        (config.ingest.payload_bytes_max as usize).max(crate::ring::TRUNCATED_BYTES),
    );
    let needed = (2 * frame_max)
        .div_ceil(RING_SLOT_BYTES)
        .next_power_of_two() as u32;
    small.ingest.ring_slots = small.ingest.ring_slots.min(needed.max(4096));
    small.spill.dir = std::path::Path::new(&config.spill.dir)
        .join(SIGNALS_SUBDIR)
        .display()
        .to_string();
    small.spill.spill_bytes_max = signals_spill_bytes(config);
    // One shard per subject partition served: each receiver's own.
    let groups = config.nats.served().len();
    small.ingest.shards = groups as u16;
    let (pipeline, routers) = pipeline::start_path(&small, destination, alert, "s", groups)
        .map_err(|source| AppError::Start {
            what: "the signals path",
            source,
        })?;
    let receiver_config = ReceiverConfig {
        kind: Kind::SignalJson,
        stream: config.nats.stream_signals.clone(),
        subject: config.nats.subject_signals.clone(),
        filter_subject: config
            .nats
            .filter_subject(&config.nats.subject_signals)
            .unwrap_or_default(),
        max_ack_pending: pipeline::max_ack_pending(&small),
        store: ticks.store.as_ref().map(|probe| StoreProbe {
            options: probe.options.clone(),
            cluster: probe.cluster.clone(),
            tables: StreamTables {
                rows_table: "strategy_signals",
                subject_filter: config.nats.subject_signals.clone(),
            },
            reread_all,
            mark: local_mark(
                config,
                &config.nats.stream_signals,
                &config.nats.durable_name(),
            ),
        }),
        // Signals run until the ticks path ends, whatever `--count` says of ticks.
        count: None,
        ..ticks.clone()
    };
    let configs = per_partition(config, &receiver_config, &config.nats.subject_signals);
    let receiver = runtime::spawn_hot(
        "receiver-signals",
        None,
        config.threads.hot_nice,
        move || receive_all(routers, configs),
    )
    .map_err(|source| AppError::Start {
        what: "the signals receiver thread",
        source,
    })?;
    Ok(SignalsPath { pipeline, receiver })
}

/// AckNone's local durable mark of `stream`, in the spill directory (see
/// `durable::mark`); none under AckAll, whose ack floor is on the server.
fn local_mark(config: &Config, stream: &str, durable: &str) -> Option<LocalMark> {
    (config.nats.ack_policy == crate::config::AckPolicy::None).then(|| {
        LocalMark::new(
            std::path::Path::new(&config.spill.dir),
            &config.clickhouse.database,
            stream,
            durable,
        )
    })
}

/// `base` once per subject partition served (`[None]`: the whole stream): each its
/// durable consumer, filter subject and local mark.
fn per_partition(config: &Config, base: &ReceiverConfig, subject: &str) -> Vec<ReceiverConfig> {
    let served = config.nats.served();
    // A window sized from the path's rings covers every group: each partition gets its
    // group's share (a configured `nats.max_ack_pending` is per consumer as given).
    let window = if config.nats.max_ack_pending == 0 {
        (base.max_ack_pending / served.len() as u32).max(1)
    } else {
        base.max_ack_pending
    };
    served
        .into_iter()
        .map(|partition| {
            let durable = config.nats.durable_of(partition);
            ReceiverConfig {
                filter_subject: config
                    .nats
                    .filter_of(subject, partition)
                    .unwrap_or_default(),
                partition,
                store: base.store.as_ref().map(|probe| StoreProbe {
                    mark: local_mark(config, &base.stream, &durable),
                    ..probe.clone()
                }),
                durable,
                max_ack_pending: window,
                ..base.clone()
            }
        })
        .collect()
}

/// Runs one receiver per partition, each on a thread of its own over its own group of
/// shards, and adds up their reports. A receiver that fails stops the others (the
/// process drains); the first error is returned.
fn receive_all(
    mut routers: Vec<crate::pipeline::Router>,
    configs: Vec<ReceiverConfig>,
) -> Result<ReceiverReport, NatsError> {
    let Some(stop) = routers.first().map(|r| r.alert().clone()) else {
        return Ok(ReceiverReport::default());
    };
    if let ([router], [config]) = (&mut routers[..], &configs[..]) {
        // One partition, or none: on this (pinned) thread.
        return receiver::run(router, config);
    }
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(routers.len());
        for (mut router, config) in routers.into_iter().zip(configs) {
            let name = format!(
                "recv-p{}",
                config.partition.map_or(String::new(), |p| p.to_string())
            );
            let alert = router.alert().clone();
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || {
                    let outcome = receiver::run(&mut router, &config);
                    if outcome.is_err() {
                        alert.request_stop();
                    }
                    outcome
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(source) => {
                    // Those started see the stop and drain; the scope waits for them.
                    stop.request_stop();
                    return Err(NatsError::Io {
                        during: "starting a partition's receiver thread",
                        source,
                    });
                }
            }
        }
        let mut total = ReceiverReport::default();
        let mut first_error = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok(report)) => {
                    total.routed += report.routed;
                    total.acked = total.acked.max(report.acked);
                    total.dropped += report.dropped;
                }
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        first_error.map_or(Ok(total), Err)
    })
}

/// The signals path's share of `spill.spill_bytes_max` (a trickle beside the ticks): a
/// sixteenth, at least [`spill::SEGMENTS_MIN`] segments. The ticks path's writers split
/// the rest, each also at least that many, so a maximum of few segments is passed by
/// those minimums (the config refuses one that holds fewer than one journal's).
fn signals_spill_bytes(config: &Config) -> u64 {
    (config.spill.spill_bytes_max / 16).max(spill::SEGMENTS_MIN * config.spill.segment_bytes)
}
