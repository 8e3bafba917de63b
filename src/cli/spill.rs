//! `alphapt-storage spill inspect|verify|replay`. `inspect` and `verify` are read-only
//! views of the spill journals under `spill.dir` (one `writer-<n>` directory per writer,
//! and `signals/writer-<n>`): neither cuts, trims nor maps anything, so both are safe
//! beside a running appliance (which may then show the record it is writing as a torn
//! tail). `replay` sends pending records to the ClickHouse the config names (an operator
//! moving a spill directory to another host), each at most once; the appliance does the
//! same at start.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Subcommand;

use alphapt_storage::config::Config;
use alphapt_storage::pipeline::Destination;
use alphapt_storage::spill::replay::ReplayReport;
use alphapt_storage::spill::{all_journal_dirs, FindingKind, Journal, JournalScan, ScanReport};

/// What `spill` does.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// Per segment of every journal: records, pending, replayed, bytes, stream-sequence
    /// range and age of the oldest record.
    Inspect {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also list every valid record (position, table, shard, rows, sequences, state).
        #[arg(long)]
        records: bool,
    },
    /// Check every CRC of every record without changing anything. Exit 0 when no
    /// record or segment is corrupt (a torn tail, the normal trace of a crash, is shown
    /// but passes), 1 when one is.
    Verify {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send every pending record to ClickHouse (`clickhouse.*` in the config, e.g.
    /// `--set clickhouse.host=...`), skipping blocks already stored. Needs the spill
    /// directory to itself: stop the appliance first.
    Replay,
}

/// Runs one `spill` action over every journal under `spill.dir`.
pub fn run(config: &Config, action: Action) -> anyhow::Result<ExitCode> {
    let root = PathBuf::from(&config.spill.dir);
    if let Action::Replay = action {
        let options = super::clickhouse_options(config, true);
        let destination = Destination::resolve(&options)
            .context(
                "cannot prepare the ClickHouse tables (run `alphapt-storage migrate up` first)",
            )?
            .with_targets(alphapt_storage::app::cluster_targets(config))
            .context("the ClickHouse shards of `clickhouse.shards` differ")?;
        let report = replay_all(config, &destination)?;
        say!(
            "replayed {} blocks ({} rows), {} already stored, {} left for another schema",
            report.inserted,
            report.rows,
            report.already_stored,
            report.other_schema
        );
        return Ok(if report.other_schema == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let scans = scan_all(&root)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    match action {
        Action::Inspect { json, records } => inspect(&root, scans, now_ms, json, records),
        Action::Verify { json } => verify(&root, &scans, json),
        Action::Replay => unreachable!("handled above"),
    }
}

/// Replays every journal under `spill.dir` into `destination` (see
/// [`alphapt_storage::app::replay_spills`]).
pub fn replay_all(config: &Config, destination: &Destination) -> anyhow::Result<ReplayReport> {
    Ok(alphapt_storage::app::replay_spills(config, destination)?.report)
}

fn scan_all(root: &Path) -> anyhow::Result<Vec<JournalScan>> {
    let dirs = all_journal_dirs(root)
        .with_context(|| format!("cannot list spill journals under {}", root.display()))?;
    dirs.iter()
        .map(|dir| {
            Journal::scan_read_only(dir)
                .with_context(|| format!("cannot scan spill journal {}", dir.display()))
        })
        .collect()
}

fn inspect(
    root: &Path,
    mut scans: Vec<JournalScan>,
    now_ms: i64,
    json: bool,
    records: bool,
) -> anyhow::Result<ExitCode> {
    if !records {
        scans.iter_mut().for_each(|scan| scan.records.clear());
    }
    if json {
        let out = serde_json::json!({ "root": root, "now_ms": now_ms, "journals": scans });
        say!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    if scans.is_empty() {
        say!("no spill journals under {}", root.display());
        return Ok(ExitCode::SUCCESS);
    }
    for scan in &scans {
        say!("journal {}", scan.dir.display());
        say!(
            "  {:<36} {:>7} {:>7} {:>8} {:>7} {:>12}  {:<25} {:>10}",
            "segment",
            "records",
            "pending",
            "replayed",
            "corrupt",
            "bytes",
            "stream seq",
            "oldest"
        );
        for s in &scan.segments {
            let name = s.file.file_name().map_or_else(
                || s.file.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let range = match (s.stream_seq_first, s.stream_seq_last) {
                (Some(first), Some(last)) => format!("{first}..{last}"),
                _ => "-".to_owned(),
            };
            let age = s
                .received_oldest_ms
                .map_or_else(|| "-".to_owned(), |ms| age(now_ms - ms));
            say!(
                "  {:<36} {:>7} {:>7} {:>8} {:>7} {:>12}  {:<25} {:>10}",
                name,
                s.records,
                s.pending,
                s.replayed,
                s.corrupt,
                s.bytes,
                range,
                age
            );
            if let Some(reason) = &s.damaged {
                say!("    damaged segment, not read: {reason}");
            }
        }
        for r in &scan.records {
            say!(
                "    {}  {:<17} shard {:<3} rows {:<7} seq {}..{}  {} B{}  {}",
                r.pos,
                r.header.table.name(),
                r.header.shard,
                r.header.rows,
                r.header.seq_first,
                r.header.seq_last,
                r.payload_bytes,
                if r.header.lz4 { " lz4" } else { "" },
                if r.pending { "pending" } else { "replayed" },
            );
        }
        print_totals(&scan.report);
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(root: &Path, scans: &[JournalScan], json: bool) -> anyhow::Result<ExitCode> {
    let corrupt = scans.iter().any(|scan| {
        scan.findings
            .iter()
            .any(|f| f.kind != FindingKind::TornTail)
    });
    if json {
        let out = serde_json::json!({
            "root": root,
            "clean": !corrupt,
            "journals": scans.iter().map(|s| serde_json::json!({
                "dir": s.dir, "report": s.report, "findings": s.findings,
            })).collect::<Vec<_>>(),
        });
        say!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for scan in scans {
            say!("journal {}", scan.dir.display());
            for finding in &scan.findings {
                say!("  {finding}");
                if finding.kind == FindingKind::TornTail {
                    say!("    (a write cut short by a crash: never acknowledged, cut at the next start)");
                }
            }
            print_totals(&scan.report);
        }
        if corrupt {
            say!(
                "CORRUPT: the records above cannot be replayed. Stop the appliance, copy the \
                 named segment files aside for inspection, and check the disk; the other \
                 records replay as usual."
            );
        } else {
            say!("clean: {} journal(s) under {}", scans.len(), root.display());
        }
    }
    Ok(if corrupt {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_totals(report: &ScanReport) {
    say!(
        "  {} segment(s), {} record(s), {} pending, {} corrupt record(s), {} corrupt segment(s), \
         {} torn tail(s) ({} B)",
        report.segments,
        report.records,
        report.pending,
        report.corrupt_records,
        report.corrupt_segments,
        report.torn_tails,
        report.bytes_cut
    );
}

/// A duration in ms as a short human figure.
fn age(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    match ms {
        ..=999 => format!("{ms} ms"),
        1_000..=119_999 => format!("{s:.1} s"),
        120_000..=7_199_999 => format!("{:.1} min", s / 60.0),
        _ => format!("{:.1} h", s / 3600.0),
    }
}
