//! `alphapt-storage run`: start the appliance (`app::App`, the composition root), print
//! a live status line from its snapshot, drain on SIGTERM/Ctrl-C, print the summary.
//! PostgreSQL is not waited for: the refdata thread loads reference data while ticks
//! already flow, and is left behind at exit if a query hangs.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use alphapt_storage::app::{not_stored_note, App, Snapshot, TickSource};
use alphapt_storage::config::Config;
use alphapt_storage::runtime::{crash, Alert};

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
    /// On exit, write the receive-to-durable distribution (every message, merged over
    /// writers; HdrHistogram percentile format) to this file.
    #[arg(long, value_name = "FILE")]
    latency_report: Option<std::path::PathBuf>,
}

/// `--source` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SourceArg {
    /// JetStream durable pull consumer.
    Jetstream,
    /// Core NATS subscription.
    Core,
}

/// ClickHouse's state for the status line: ok, retrying, or refused with the server's
/// message.
fn clickhouse_state(now: &Snapshot) -> String {
    if let Some(message) = &now.refused {
        return format!("REFUSED, blocks held unacknowledged until a restart: {message}");
    }
    let spill = if now.spill_refusing {
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

fn status_line(now: &Snapshot, before: &Snapshot, seconds: f64) -> String {
    let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / seconds.max(1e-9);
    format!(
        "in {:>9.0}/s  stored {:>9.0}/s  total {:>11}  rejected {:>7}  flagged {:>7}  {}p99 {:>7.1} ms  ring {:>3.0}%  open {:>7}  durable {:>11}  clickhouse {}  refdata {} {}  audit {}  redis {}",
        rate(now.received, before.received),
        rate(now.stored, before.stored),
        now.stored,
        now.rejected,
        now.flagged,
        // Only core NATS drops; JetStream never does, so the field shows when it matters.
        if now.dropped > 0 { format!("DROPPED {}  ", now.dropped) } else { String::new() },
        now.latency_us[1] as f64 / 1000.0,
        100.0 * now.queued_bytes as f64 / now.ring_bytes.max(1) as f64,
        now.open,
        now.watermark,
        clickhouse_state(now),
        now.references,
        if now.references_up { "ok" } else { "postgres down" },
        // Failed writes in this interval: PostgreSQL away, rows kept and retried.
        if now.audit_counts[2] > before.audit_counts[2] { "retrying" } else { "ok" },
        redis_state(now),
    )
}

/// The status line's Redis field: off, ok with its lag, or retrying with its lag.
fn redis_state(now: &Snapshot) -> String {
    match &now.cache {
        None => "off".to_owned(),
        Some(c) if c.up => format!("ok lag {} ms", c.lag_ms),
        Some(c) => format!("retrying lag {:.1} s", c.lag_ms as f64 / 1000.0),
    }
}

/// The summary's words on the Redis cache.
fn redis_summary(now: &Snapshot) -> String {
    let Some(c) = &now.cache else {
        return "redis cache: off".to_owned();
    };
    let [p50, p99, max] = c.write_us.map(|us| us as f64 / 1000.0);
    let mut text = format!(
        "redis cache: {} keys written (write ms p50 {p50:.2} p99 {p99:.2} max {max:.2}), {} updates conflated",
        c.keys_written, c.conflated
    );
    if c.history_missed > 0 {
        text.push_str(&format!(
            ", {} ticks missing from histories (the Redis thread fell behind; histories restarted)",
            c.history_missed
        ));
    }
    if c.untracked > 0 {
        text.push_str(&format!(
            ", {} not cached (raise redis.instruments_max or redis.signals_max)",
            c.untracked
        ));
    }
    if c.errors > 0 {
        text.push_str(&format!(", {} failed writes", c.errors));
    }
    if !c.up {
        text.push_str("; Redis was unreachable at exit, the cache is behind");
    }
    text
}

/// The HdrHistogram percentile distribution (`Value Percentile TotalCount
/// 1/(1-Percentile)`, values in ms), as HdrHistogram's own tools print and plot it.
pub fn latency_report(h: &hdrhistogram::Histogram<u64>) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# receive-to-durable per message, ms, merged over writers\n       Value     Percentile TotalCount 1/(1-Percentile)\n\n",
    );
    let mut total = 0;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            1.0 / (1.0 - q)
        } else {
            f64::INFINITY
        };
        let _ = writeln!(
            out,
            "{:12.3} {:14.12} {:10} {:14.2}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            total,
            inverse
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    );
    out
}

/// The summary's words on the audit.
fn audit_summary(now: &Snapshot) -> String {
    let [written, dropped, errors] = now.audit_counts;
    let mut text = format!("audit: {written} rows written to PostgreSQL");
    if dropped > 0 {
        text.push_str(&format!(", {dropped} records dropped"));
    }
    if errors > 0 {
        text.push_str(&format!(", {errors} failed writes"));
    }
    text
}

/// The summary's words on reference data.
fn refdata_summary(now: &Snapshot) -> String {
    let [loads, changes, skipped, errors] = now.refdata_counts;
    if loads > 0 {
        return format!(
            "reference data: {} instruments, {changes} changes, {skipped} rows skipped, {errors} PostgreSQL errors",
            now.references,
        );
    }
    if errors > 0 {
        return format!("reference data: PostgreSQL unreachable ({errors} errors), tick-size and circuit checks off");
    }
    "reference data: not loaded before exit".to_owned()
}

/// From the first tick in to the last INSERT done, the span a consumer loop times
/// (start-up and exit left out), in words; empty when either end is missing.
fn in_to_stored(now: &Snapshot) -> String {
    if now.first_routed_ms == 0 || now.last_stored_ms < now.first_routed_ms {
        return String::new();
    }
    let seconds = (now.last_stored_ms - now.first_routed_ms) as f64 / 1000.0;
    format!("; first tick in to last INSERT done in {seconds:.3} s")
}

/// What went through the spill, in words (empty when nothing did).
fn spill_note(now: &Snapshot) -> String {
    if now.journal_first {
        let [p50, p99, max] = now.spill_latency_us.map(|us| us as f64 / 1000.0);
        let [s50, s99, smax] = now.spill_sync_us.map(|us| us as f64 / 1000.0);
        return format!(
            "; journal-first: {} rows journaled (receive-to-journal-durable ms p50 {p50:.1} p99 {p99:.1} max {max:.1}; journal sync ms p50 {s50:.3} p99 {s99:.3} max {smax:.3}), {} bytes still in the journal for the next start",
            now.spilled_rows, now.spill_pending_bytes
        );
    }
    if now.spilled_rows == 0 {
        return String::new();
    }
    let [p50, p99, max] = now.spill_latency_us.map(|us| us as f64 / 1000.0);
    format!(
        "; {} rows spilled while ClickHouse was away (receive-to-spill-durable ms p50 {p50:.1} p99 {p99:.1} max {max:.1}), {} replayed, {} bytes in the spill for the next start",
        now.spilled_rows, now.replayed_rows, now.spill_pending_bytes
    )
}

/// Runs the appliance until the source ends or a signal asks it to drain.
pub fn run(config: &Config, args: &RunArgs) -> anyhow::Result<ExitCode> {
    if let Some((point, pass)) = crash::arm_from_env().map_err(anyhow::Error::msg)? {
        let effect = if point == crash::Point::MarksSyncError {
            "fails a sync there as a disk would"
        } else {
            "kills itself there"
        };
        tracing::warn!(
            point = crash::name(point),
            pass,
            "{} is set: this run {effect} (fault tests only)",
            crash::CRASH_AT_VAR
        );
    }
    if crash::armed(crash::Point::Panic) {
        // On purpose, the bug the panic hook's scrubber is there for: credentials in
        // clear text inside a panic message. The test reads `***` in their place.
        panic!(
            "{} reached: nats.url={} redis.url={} postgres.url={} clickhouse.password={} redis.password={}",
            crash::CRASH_AT_VAR,
            config.nats.url,
            config.redis.url,
            config.postgres.url,
            config.clickhouse.password.expose(),
            config.redis.password.expose()
        );
    }
    let alert = Arc::new(Alert::new(Duration::from_millis(
        config.ingest.drain_timeout_ms,
    )));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, alert.flag())
            .context("cannot install the signal handler")?;
    }
    let source = match (args.synthetic, args.source) {
        (Some(rate), _) => TickSource::Synthetic {
            rate,
            instruments: args.synthetic_instruments as usize,
        },
        (None, Some(SourceArg::Jetstream)) => TickSource::Nats { jetstream: true },
        (None, Some(SourceArg::Core)) => TickSource::Nats { jetstream: false },
        (None, None) => TickSource::from_config(config),
    };
    let app = App::start(config, source, args.count, alert.clone())?;

    let tty = std::io::stderr().is_terminal();
    let mut before = app.snapshot();
    let mut last = Instant::now();
    let mut last_log = Instant::now();
    while app.running() {
        app.wait(Duration::from_millis(200));
        // Starts the drain clock at the first look after a signal.
        alert.deadline();
        if last.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let now = app.snapshot();
        let line = status_line(&now, &before, last.elapsed().as_secs_f64());
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
    let finished = app.finish()?;
    let end = &finished.end;
    // Per message, merged over writers (the status line shows the worst writer's).
    let h = &finished.latency;
    let [p50, p99, p999] = [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q) as f64 / 1000.0);
    let max = h.max() as f64 / 1000.0;
    let oldest = &finished.latency_oldest;
    let [oldest_p50, oldest_p99] = [0.5, 0.99].map(|q| oldest.value_at_quantile(q) as f64 / 1000.0);
    let joined = &finished.joined;
    // A closed stdout (a pipe whose reader was interrupted with us) must not turn a
    // clean drain into a panic: the summary is best-effort.
    let _ = writeln!(
        std::io::stdout(),
        "{} {} messages: {} rows stored in {} INSERTs, {} rejected, {} flagged{}; {} signal rows; receive-to-durable ms p50 {p50:.1} p99 {p99:.1} \
         p99.9 {p999:.1} max {max:.1} (from its block's oldest: p50 {oldest_p50:.1} p99 {oldest_p99:.1}); drained in {:.2} s{}; {}; {}; {}{}{}",
        if finished.stopped_by_signal { "Drained after" } else { "Done:" },
        finished.routed,
        end.stored,
        end.inserts,
        end.rejected,
        end.flagged,
        if end.dropped > 0 {
            format!(", {} DROPPED (core NATS, ring full)", end.dropped)
        } else {
            String::new()
        },
        end.signal_rows,
        finished.drain_seconds,
        in_to_stored(end),
        refdata_summary(end),
        audit_summary(end),
        redis_summary(end),
        spill_note(end),
        if joined.is_clean() { String::new() } else { format!("; {}", not_stored_note(joined)) },
    );
    // After the summary: a report that cannot be written fails the run, but the
    // summary of what was stored is printed first.
    if let Some(path) = &args.latency_report {
        std::fs::write(path, latency_report(h)).with_context(|| {
            format!(
                "writing the latency report to {} (the run itself finished; see the summary above)",
                path.display()
            )
        })?;
    }
    if !joined.is_clean() {
        // The last line says what happened to what was not stored.
        let upstream = if args.synthetic.is_some() {
            "the synthetic feed has no upstream store, so they are lost"
        } else {
            "never acknowledged, so JetStream redelivers them at the next start (core NATS: lost)"
        };
        eprintln!(
            "alphapt-storage: drain incomplete: {}; {upstream}",
            not_stored_note(joined)
        );
    }
    if let Some(message) = &end.refused {
        // Journal-first (or a spill replay) keeps refused blocks durable and
        // acknowledged, so the drain can be clean; the run is not: they wait for the
        // operator.
        eprintln!(
            "alphapt-storage: ClickHouse refused blocks ({message}); fix the schema, then restart: journaled blocks are stored at the start (`alphapt-storage spill inspect` lists them), unacknowledged ones are redelivered"
        );
    }
    Ok(if joined.is_clean() && end.refused.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
