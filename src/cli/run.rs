//! `alphapt-storage run`: resolve the tables, start the hot path and the refdata
//! thread, drive the source on the receiver thread, print a live status line, drain on
//! SIGTERM/Ctrl-C. PostgreSQL is not waited for: the refdata thread loads reference
//! data while ticks already flow, and is left behind at exit if a query hangs.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use alphapt_storage::config::Config;
use alphapt_storage::config::Source;
use alphapt_storage::durable::stored::StreamTables;
use alphapt_storage::pipeline::{self, Destination, PipelineStats};
use alphapt_storage::receive::receiver::{self, ReceiverConfig, StoreProbe};
use alphapt_storage::receive::synthetic::{self, SyntheticConfig};
use alphapt_storage::refdata::{Refdata, RefdataConfig, RefdataStats};
use alphapt_storage::ring::Kind;
use alphapt_storage::ring::RING_SLOT_BYTES;
use alphapt_storage::runtime::{self, crash, Alert};
use alphapt_storage::write::WriterStats;

/// Flags of `run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Where ticks come from: `jetstream` (durable pull consumer, acked when stored)
    /// or `core` (plain subscription, at most once); default: `nats.source`.
    #[arg(long, value_enum)]
    source: Option<SourceArg>,
    /// Use the built-in synthetic feed at this many ticks/s instead of NATS (0 = as
    /// fast as the pipeline takes them).
    #[arg(long, value_name = "TICKS_PER_S")]
    synthetic: Option<u64>,
    /// Instruments in the synthetic feed.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    synthetic_instruments: u32,
    /// Stop after this many tick messages (synthetic feed or NATS), then drain and exit.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Print no status line.
    #[arg(long)]
    quiet: bool,
}

/// `--source` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SourceArg {
    /// JetStream durable pull consumer.
    Jetstream,
    /// Core NATS subscription.
    Core,
}

/// What the receiver thread ends with.
enum Outcome {
    /// Messages routed by the synthetic feed.
    Synthetic(u64),
    /// The NATS receiver's report.
    Nats(receiver::ReceiverReport),
}

/// Totals at one instant, for rates between two.
#[derive(Clone, Copy, Default)]
struct Snapshot {
    received: u64,
    stored: u64,
    rejected: u64,
    flagged: u64,
    dropped: u64,
    open: u64,
    queued_bytes: u64,
    errors: u64,
    p99_us: u64,
    degraded: bool,
    /// A writer holds blocks ClickHouse refused (schema, type): not retried.
    refused: bool,
    watermark: u64,
    references: u64,
    references_up: bool,
}

/// Longest wait for the refdata thread at exit: it sees the stop flag within
/// `refdata::POLL_INTERVAL` unless a PostgreSQL call is in flight, and then the
/// process does not wait for the call.
const REFDATA_JOIN_WAIT: Duration = Duration::from_secs(1);

fn snapshot(stats: &PipelineStats, refdata: &RefdataStats) -> Snapshot {
    let r = Ordering::Relaxed;
    Snapshot {
        references: refdata.instruments.load(r),
        references_up: refdata.connected.load(r),
        received: stats.source.messages_total.load(r),
        stored: stats.writers.iter().map(|w| w.rows_total.load(r)).sum(),
        rejected: stats.shards.iter().map(|s| s.rejected_total.load(r)).sum(),
        flagged: stats.shards.iter().map(|s| s.flagged_total.load(r)).sum(),
        dropped: stats.source.dropped_total.load(r),
        open: stats.shards.iter().map(|s| s.rows_open.load(r)).sum(),
        queued_bytes: stats
            .shards
            .iter()
            .map(|s| s.input_queued_bytes.load(r))
            .sum(),
        errors: stats.writers.iter().map(|w| w.errors_total.load(r)).sum(),
        p99_us: stats
            .writers
            .iter()
            .map(|w| w.latency_us_p99.load(r))
            .max()
            .unwrap_or(0),
        degraded: stats.writers.iter().any(|w| w.degraded.load(r) != 0),
        refused: stats.writers.iter().any(|w| w.refused.load(r) != 0),
        watermark: stats.source.watermark.load(r),
    }
}

/// ClickHouse's state for the status line: ok, retrying, or refused with the server's
/// message (read under the writer's lock, once a second at most, off the hot path).
fn clickhouse_state(now: &Snapshot, stats: &PipelineStats) -> String {
    if now.refused {
        let message = stats
            .writers
            .iter()
            .filter(|w| w.refused.load(Ordering::Relaxed) != 0)
            .find_map(|w| w.last_error.lock().ok().map(|e| e.clone()))
            .unwrap_or_default();
        return format!("REFUSED, blocks held unacknowledged until a restart: {message}");
    }
    let spill = if stats
        .writers
        .iter()
        .any(|w| w.spill_refusing.load(Ordering::Relaxed) != 0)
    {
        "; SPILL REFUSING: intake stopped"
    } else if now.degraded {
        "; spilling"
    } else {
        ""
    };
    if now.degraded {
        return format!("retrying ({} errors){spill}", now.errors);
    }
    format!("ok{spill}")
}

fn status_line(
    now: &Snapshot,
    before: &Snapshot,
    seconds: f64,
    ring_bytes: u64,
    clickhouse: &str,
) -> String {
    let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / seconds.max(1e-9);
    format!(
        "in {:>9.0}/s  stored {:>9.0}/s  total {:>11}  rejected {:>7}  flagged {:>7}  {}p99 {:>7.1} ms  ring {:>3.0}%  open {:>7}  durable {:>11}  clickhouse {}  refdata {} {}",
        rate(now.received, before.received),
        rate(now.stored, before.stored),
        now.stored,
        now.rejected,
        now.flagged,
        // Only core NATS drops; JetStream never does, so the field shows when it matters.
        if now.dropped > 0 { format!("DROPPED {}  ", now.dropped) } else { String::new() },
        now.p99_us as f64 / 1000.0,
        100.0 * now.queued_bytes as f64 / ring_bytes.max(1) as f64,
        now.open,
        now.watermark,
        clickhouse,
        now.references,
        if now.references_up { "ok" } else { "postgres down" },
    )
}

/// Starts the refdata thread on the ticks path's shards.
fn start_refdata(
    config: &Config,
    pipeline: &mut pipeline::Pipeline,
    stats: Arc<RefdataStats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    let Some(feed) = pipeline.take_reference_feed() else {
        return Ok(None);
    };
    let core = if config.threads.pin {
        config.threads.slow_core
    } else {
        None
    };
    let refdata = Refdata::new(RefdataConfig::from_config(config), feed, stats, stop);
    let handle = refdata
        .spawn(core)
        .context("cannot start the refdata thread")?;
    Ok(Some(handle))
}

/// Stops the refdata thread, waiting at most [`REFDATA_JOIN_WAIT`].
fn stop_refdata(handle: Option<std::thread::JoinHandle<()>>, stop: &AtomicBool) {
    stop.store(true, Ordering::Relaxed);
    let Some(handle) = handle else { return };
    let deadline = Instant::now() + REFDATA_JOIN_WAIT;
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !handle.is_finished() {
        tracing::warn!("The refdata thread is still inside a PostgreSQL call; exiting without it");
        return;
    }
    if handle.join().is_err() {
        tracing::error!("The refdata thread panicked");
    }
}

/// The summary's words on reference data.
fn refdata_summary(stats: &RefdataStats) -> String {
    let r = Ordering::Relaxed;
    let errors = stats.errors_total.load(r);
    if stats.loads_total.load(r) > 0 {
        return format!(
            "reference data: {} instruments, {} changes, {} rows skipped, {errors} PostgreSQL errors",
            stats.instruments.load(r),
            stats.changes_total.load(r),
            stats.rows_skipped_total.load(r),
        );
    }
    if errors > 0 {
        return format!("reference data: PostgreSQL unreachable ({errors} errors), tick-size and circuit checks off");
    }
    "reference data: not loaded before exit".to_owned()
}

/// The strategy-signals path: its own stream, consumer and sequence space, so its own
/// router, one shard and one writer (signals are a trickle beside the ticks).
struct Signals {
    pipeline: pipeline::Pipeline,
    receiver: std::thread::JoinHandle<
        Result<receiver::ReceiverReport, alphapt_storage::receive::nats::NatsError>,
    >,
}

impl Signals {
    /// Waits for the signals receiver and pipeline; returns the rows they stored.
    fn finish(self) -> anyhow::Result<u64> {
        let report = self
            .receiver
            .join()
            .map_err(|_| anyhow::anyhow!("the signals receiver thread panicked"))?;
        let stats = self.pipeline.stats.clone();
        let joined = self.pipeline.join();
        report.context("NATS signals receiver failed")?;
        anyhow::ensure!(
            joined.is_clean(),
            "the signals path did not finish cleanly: {}",
            not_stored_note(&joined)
        );
        Ok(stats
            .writers
            .iter()
            .map(|w| w.rows_total.load(Ordering::Relaxed))
            .sum())
    }
}

fn start_signals(
    config: &Config,
    destination: &Destination,
    ticks: &ReceiverConfig,
    reread_all: bool,
    alert: Arc<Alert>,
) -> anyhow::Result<Signals> {
    let mut small = config.clone();
    small.ingest.shards = 1;
    small.ingest.writers = 1;
    small.ingest.block_rows_max = pipeline::SIGNAL_ROWS_MAX as u32;
    // A smaller ring for the trickle of signals, but never below two of the largest
    // frames (the full-size ring passed that check in config validation).
    let frame_max = alphapt_storage::ring::frame_bytes(
        alphapt_storage::ring::SUBJECT_BYTES_MAX,
        (config.ingest.payload_bytes_max as usize).max(alphapt_storage::ring::TRUNCATED_BYTES),
    );
    let needed = (2 * frame_max)
        .div_ceil(RING_SLOT_BYTES)
        .next_power_of_two() as u32;
    small.ingest.ring_slots = small.ingest.ring_slots.min(needed.max(4096));
    small.spill.dir = std::path::Path::new(&config.spill.dir)
        .join(alphapt_storage::spill::SIGNALS_SUBDIR)
        .display()
        .to_string();
    small.spill.spill_bytes_max = signals_spill_bytes(config);
    let (pipeline, mut router) =
        pipeline::start(&small, destination, alert).context("cannot start the signals path")?;
    let receiver_config = ReceiverConfig {
        kind: Kind::SignalJson,
        stream: config.nats.stream_signals.clone(),
        subject: config.nats.subject_signals.clone(),
        max_ack_pending: pipeline::max_ack_pending(&small),
        store: ticks.store.as_ref().map(|probe| StoreProbe {
            options: probe.options.clone(),
            tables: StreamTables {
                rows_table: "strategy_signals",
                subject_filter: config.nats.subject_signals.clone(),
            },
            reread_all,
        }),
        // Signals run until the ticks path ends, whatever `--count` says of ticks.
        count: None,
        ..ticks.clone()
    };
    let receiver = runtime::spawn("receiver-signals", None, move || {
        receiver::run(&mut router, &receiver_config)
    })
    .context("cannot start the signals receiver thread")?;
    Ok(Signals { pipeline, receiver })
}

/// What went through the spill, in words (empty when nothing did).
fn spill_note(stats: &PipelineStats) -> String {
    let r = Ordering::Relaxed;
    let sum = |f: fn(&WriterStats) -> &std::sync::atomic::AtomicU64| -> u64 {
        stats.writers.iter().map(|w| f(w).load(r)).sum()
    };
    let spilled = sum(|w| &w.spilled_rows_total);
    if spilled == 0 {
        return String::new();
    }
    let max = |f: fn(&WriterStats) -> &std::sync::atomic::AtomicU64| -> f64 {
        stats
            .writers
            .iter()
            .map(|w| f(w).load(r))
            .max()
            .unwrap_or(0) as f64
            / 1000.0
    };
    format!(
        "; {spilled} rows spilled while ClickHouse was away (receive-to-spill-durable ms p50 {:.1} p99 {:.1} max {:.1}), {} replayed, {} bytes in the spill for the next start",
        max(|w| &w.spill_latency_us_p50),
        max(|w| &w.spill_latency_us_p99),
        max(|w| &w.spill_latency_us_max),
        sum(|w| &w.replayed_rows_total),
        sum(|w| &w.spill_pending_bytes)
    )
}

/// What was not stored, in words: blocks, panicked and stuck threads.
fn not_stored_note(joined: &pipeline::Joined) -> String {
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

/// The signals path's share of `spill.spill_bytes_max` (a trickle beside the ticks): a
/// sixteenth, at least one segment. The ticks path's writers split the rest, so the two
/// together pass the maximum by at most one segment when it holds fewer than 17.
fn signals_spill_bytes(config: &Config) -> u64 {
    (config.spill.spill_bytes_max / 16).max(config.spill.segment_bytes)
}

/// Runs the appliance until the source ends or a signal asks it to drain.
pub fn run(config: &Config, args: &RunArgs) -> anyhow::Result<ExitCode> {
    if let Some((point, pass)) = crash::arm_from_env().map_err(anyhow::Error::msg)? {
        tracing::warn!(
            point = crash::name(point),
            pass,
            "{} is set: this run kills itself there (fault tests only)",
            crash::CRASH_AT_VAR
        );
    }
    let options = super::clickhouse_options(config, true);
    let destination = Destination::resolve(&options)
        .context("cannot prepare the ClickHouse tables (run `alphapt-storage migrate up` first)")?;
    tracing::info!(
        "Server-side insert deduplication: {}",
        destination.dedup.describe()
    );
    let alert = Arc::new(Alert::new(Duration::from_millis(
        config.ingest.drain_timeout_ms,
    )));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, alert.flag())
            .context("cannot install the signal handler")?;
    }
    // What an earlier run spilled goes in first: the resume point is read from
    // ClickHouse, and those blocks were acknowledged.
    let start_replay = super::spill::replay_all_at_start(config, &destination)
        .context("cannot replay the spill an earlier run left (ClickHouse must take it first)")?;
    let replayed = &start_replay.report;
    if replayed.inserted + replayed.already_stored > 0 {
        tracing::info!(
            blocks = replayed.inserted,
            rows = replayed.rows,
            already_stored = replayed.already_stored,
            "Spill from an earlier run replayed"
        );
    }
    let mut ticks_config = config.clone();
    ticks_config.spill.spill_bytes_max = config
        .spill
        .spill_bytes_max
        .saturating_sub(signals_spill_bytes(config))
        .max(config.spill.segment_bytes);
    let (mut pipeline, mut router) = pipeline::start(&ticks_config, &destination, alert.clone())
        .context("cannot start threads")?;
    let stats = pipeline.stats.clone();
    let refdata_stats = Arc::new(RefdataStats::default());
    let refdata_stop = Arc::new(AtomicBool::new(false));
    let refdata = start_refdata(
        config,
        &mut pipeline,
        refdata_stats.clone(),
        refdata_stop.clone(),
    )?;
    let receiver_core = if config.threads.pin {
        config.threads.receiver_core
    } else {
        None
    };
    let mut signals: Option<Signals> = None;
    let receiver = if let Some(rate) = args.synthetic {
        let synthetic_config = SyntheticConfig {
            rate,
            instruments: args.synthetic_instruments as usize,
            count: args.count,
            seed: 0x5eed,
        };
        tracing::info!(rate, instruments = args.synthetic_instruments, "Source: built-in synthetic feed");
        runtime::spawn("receiver", receiver_core, move || {
            Ok(Outcome::Synthetic(synthetic::run(&mut router, synthetic_config)))
        })
    } else {
        let jetstream = match args.source {
            Some(SourceArg::Jetstream) => true,
            Some(SourceArg::Core) => false,
            None => config.nats.source == Source::Jetstream,
        };
        let receiver_config = ReceiverConfig {
            url: config.nats.url.clone(),
            jetstream,
            kind: Kind::TickJson,
            stream: config.nats.stream_ticks.clone(),
            subject: config.nats.subject_ticks.clone(),
            durable: config.nats.durable.clone(),
            fetch_batch_max: config.nats.fetch_batch_max,
            ack_wait: Duration::from_millis(config.nats.ack_wait_ms),
            max_ack_pending: pipeline::max_ack_pending(config),
            connect_timeout: Duration::from_millis(config.clickhouse.connect_timeout_ms.max(2_000)),
            drain_timeout: Duration::from_millis(config.ingest.drain_timeout_ms),
            count: args.count,
            store: Some(StoreProbe {
                options: destination.options.clone(),
                tables: StreamTables {
                    rows_table: "market_ticks",
                    subject_filter: config.nats.subject_ticks.clone(),
                },
                reread_all: start_replay.damaged_ticks,
            }),
        };
        tracing::info!(jetstream, url = %alphapt_storage::config::redact_url(&config.nats.url), "Source: NATS");
        signals = Some(start_signals(
            config,
            &destination,
            &receiver_config,
            start_replay.damaged_signals,
            alert.clone(),
        )?);
        runtime::spawn("receiver", receiver_core, move || {
            receiver::run(&mut router, &receiver_config).map(Outcome::Nats)
        })
    }
    .context("cannot start the receiver thread")?;
    tracing::info!(
        shards = config.ingest.shards,
        writers = config.ingest.writers,
        "Appliance running; Ctrl-C drains"
    );

    let ring_bytes = u64::from(config.ingest.ring_slots)
        * RING_SLOT_BYTES as u64
        * u64::from(config.ingest.shards);
    let tty = std::io::stderr().is_terminal();
    let mut before = snapshot(&stats, &refdata_stats);
    let mut last = Instant::now();
    let mut last_log = Instant::now();
    while !receiver.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        // Starts the drain clock at the first look after a signal.
        alert.deadline();
        if last.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let now = snapshot(&stats, &refdata_stats);
        let clickhouse = clickhouse_state(&now, &stats);
        let line = status_line(
            &now,
            &before,
            last.elapsed().as_secs_f64(),
            ring_bytes,
            &clickhouse,
        );
        if !args.quiet && tty {
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
        } else if !args.quiet && last_log.elapsed() >= Duration::from_secs(10) {
            tracing::info!("{line}");
            last_log = Instant::now();
        }
        before = now;
        last = Instant::now();
    }
    if tty && !args.quiet {
        eprintln!();
    }
    let outcome = receiver.join();
    // Nothing new is routed now, so reference data has nothing left to check.
    stop_refdata(refdata, &refdata_stop);
    let outcome = outcome.map_err(|_| anyhow::anyhow!("the receiver thread panicked"))?;
    let stopped_by_signal = alert.stopping();
    // The signals path drains with the ticks path (same alert): a ticks receiver that
    // failed or reached `--count` stops it too, and from here every wait is bounded.
    alert.request_stop();
    let signals_stored = match signals {
        Some(signals) => signals.finish()?,
        None => 0,
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            // The receiver already told the shards to finish; let them drain what came.
            let joined = pipeline.join();
            let note = if joined.is_clean() {
                String::new()
            } else {
                format!("; {}", not_stored_note(&joined))
            };
            anyhow::bail!("NATS receiver failed: {error}{note}");
        }
    };
    let routed = match outcome {
        Outcome::Synthetic(routed) => routed,
        Outcome::Nats(report) => report.routed,
    };
    let drain_started = Instant::now();
    let joined = pipeline.join();
    let end = snapshot(&stats, &refdata_stats);
    let latency = |f: fn(&WriterStats) -> &std::sync::atomic::AtomicU64| {
        stats
            .writers
            .iter()
            .map(|w| f(w).load(Ordering::Relaxed))
            .max()
            .unwrap_or(0) as f64
            / 1000.0
    };
    // A closed stdout (a pipe whose reader was interrupted with us) must not turn a
    // clean drain into a panic: the summary is best-effort.
    let _ = writeln!(
        std::io::stdout(),
        "{} {routed} messages: {} rows stored, {} rejected, {} flagged{}; {signals_stored} signal rows; receive-to-durable ms p50 {:.1} p99 {:.1} \
         p99.9 {:.1} max {:.1}; drained in {:.2} s; {}{}{}",
        if stopped_by_signal { "Drained after" } else { "Done:" },
        end.stored,
        end.rejected,
        end.flagged,
        if end.dropped > 0 {
            format!(", {} DROPPED (core NATS, ring full)", end.dropped)
        } else {
            String::new()
        },
        latency(|w| &w.latency_us_p50),
        latency(|w| &w.latency_us_p99),
        latency(|w| &w.latency_us_p999),
        latency(|w| &w.latency_us_max),
        drain_started.elapsed().as_secs_f64(),
        refdata_summary(&refdata_stats),
        spill_note(&stats),
        if joined.is_clean() { String::new() } else { format!("; {}", not_stored_note(&joined)) },
    );
    if !joined.is_clean() {
        // The last line says what happened to what was not stored.
        let upstream = if args.synthetic.is_some() {
            "the synthetic feed has no upstream store, so they are lost"
        } else {
            "never acknowledged, so JetStream redelivers them at the next start (core NATS: lost)"
        };
        eprintln!(
            "alphapt-storage: drain incomplete: {}; {upstream}",
            not_stored_note(&joined)
        );
    }
    Ok(if joined.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
