//! Journal-first (`spill.mode = "always"`) on the real servers: every block is synced
//! into the spill journal and acknowledged then, and the inserter sends the journal to
//! ClickHouse in large INSERTs. What it must never do, tried here:
//!
//! - store a tick twice or lose one when killed after an INSERT from the journal
//!   committed and before its records were marked, in the middle of such an INSERT,
//!   after the marks and before their sync, or after a journal sync and before the ack;
//! - ask ClickHouse again or resend when the sync of the marks fails (an injected EIO);
//! - lose a record damaged on disk while it waits: it is set aside, the drain does not
//!   wait on it, and the restart has JetStream deliver what it held again;
//! - send a record twice when an INSERT from the journal is cut mid-way;
//! - retry, or exit 0, when ClickHouse refuses journaled blocks (schema): they stay in
//!   the journal and are stored after a restart with the schema fixed;
//! - stop acknowledging (and so stop intake) while ClickHouse is away: the journal is
//!   the durable point, so acks go on, and everything reaches ClickHouse once it is back;
//! - leave the journal non-empty after a clean drain with ClickHouse up.
//!
//! "Stored once" is checked as a set: count = distinct = highest = published, lowest 1.

mod common;

use std::time::Duration;

use alphapt_storage::native::Connection;
use common::e2e::*;
use common::proxy::Proxy;
use common::TestDb;

/// Journal-first, small blocks, INSERTs from the journal every 200 ms (several per run).
const JOURNAL_FIRST: [&str; 6] = [
    "--set",
    "spill.mode=always",
    "--set",
    "spill.insert_interval_ms=200",
    "--set",
    "ingest.block_rows_max=2048",
];

#[test]
fn journal_first_stores_every_tick_once_and_empties_the_journal() {
    const TICKS: u64 = 50_000;
    let (db, mut conn) = tables("jfok");
    let nats = Nats::new("jfok");
    feed(&db, &nats, &["--count", "50000", "--format", "kite"]);
    let run = start_run(&db, &nats, &JOURNAL_FIRST);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    // Every group commit is timed: the operator's view of the spill disk.
    let syncs = metric(control_addr(&run), "alphapt_spill_sync_seconds_count");
    // `spill.sort_inserts` is on by default: the ticks went as sorted blocks.
    let sorted = metric(
        control_addr(&run),
        "alphapt_clickhouse_sorted_inserts_total",
    );
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    assert!(sorted >= 1, "no sorted INSERT counted: {summary}");
    assert!(
        summary.contains("journal-first: 50000 rows journaled")
            && summary.contains("0 bytes still in the journal"),
        "every row went through the journal, and the journal was emptied: {summary}"
    );
    assert!(syncs >= 1, "no journal sync counted: {summary}");
    let [p50, p99, max] =
        ["p50", "p99", "max"].map(|q| summary_figure(&summary, "journal sync ms", q));
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= max,
        "journal sync p50 {p50} p99 {p99} max {max}: {summary}"
    );
    consumer_settled(&nats, TICKS);
    // Few large INSERTs, not one per block: 50,000 rows in 2,048-row blocks are 25
    // blocks; the inserter sends them in far fewer statements.
    let parts: u64 = conn
        .query(&format!(
            "SELECT count() FROM system.parts WHERE database = '{}' AND table = 'market_ticks' \
             AND level = 0",
            db.name
        ))
        .unwrap()
        .scalar()
        .and_then(|v| v.as_u64())
        .unwrap_or(u64::MAX);
    assert!(parts < 25, "{parts} level-0 parts for 25 blocks: {summary}");
}

/// With `spill.sort_inserts = false` the journaled blocks go as they are, LZ4 and in
/// arrival order, and every tick is stored once all the same.
#[test]
fn journal_first_with_sorted_inserts_off_sends_the_blocks_as_journaled() {
    const TICKS: u64 = 20_000;
    let (db, mut conn) = tables("jfunsorted");
    let nats = Nats::new("jfunsorted");
    feed(&db, &nats, &["--count", "20000", "--format", "kite"]);
    let mut settings = JOURNAL_FIRST.to_vec();
    settings.extend(["--set", "spill.sort_inserts=false"]);
    let run = start_run(&db, &nats, &settings);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let inserts = metric(control_addr(&run), "alphapt_clickhouse_inserts_total");
    let sorted = metric(
        control_addr(&run),
        "alphapt_clickhouse_sorted_inserts_total",
    );
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    assert!(
        inserts >= 1 && sorted == 0,
        "{inserts} INSERTs, {sorted} sorted: {summary}"
    );
    consumer_settled(&nats, TICKS);
}

/// The two rules that make an INSERT from the journal due, each tried against the
/// other: below `spill.insert_rows` nothing is sent before `spill.insert_interval_ms`
/// (here a minute, longer than the test waits), and once that many rows are pending
/// they are sent at once.
#[test]
fn journal_first_sends_a_backlog_of_insert_rows_at_once_and_nothing_less_before_the_interval() {
    let (db, mut conn) = tables("jfrows");
    let nats = Nats::new("jfrows");
    feed(&db, &nats, &["--count", "5000", "--format", "kite"]);
    let mut settings = JOURNAL_FIRST.to_vec();
    settings.extend([
        "--set",
        "spill.insert_interval_ms=60000",
        "--set",
        "spill.insert_rows=10000",
    ]);
    let run = start_run(&db, &nats, &settings);
    // Journaled and acknowledged, so the inserter has seen them pending.
    wait_durable(&nats, &run, 5_000, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        stored(&mut conn).0,
        0,
        "5,000 rows pending, under insert_rows and inside the interval: no INSERT yet"
    );
    feed(&db, &nats, &["--count", "10000", "--format", "kite"]);
    wait_stored(&mut conn, 10_000, Duration::from_secs(30));
    // What came in after that INSERT waits for the interval; the drain sends it.
    wait_durable(&nats, &run, 15_000, Duration::from_secs(60));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (15_000, 15_000, 1, 15_000), "{summary}");
    consumer_settled(&nats, 15_000);
}

/// The catch-up after an outage: the backlog journaled while ClickHouse was away is
/// shared out between the writer's two inserters (`spill.inserters = 2`), each
/// INSERTing the records it claimed at the same time, both retrying through the
/// outage: every tick is stored once, and both inserters sent part of it. The
/// backlog (60,000 rows) is over four times `spill.insert_rows`, so the second
/// inserter starts beside the first instead of waiting for it.
#[test]
fn journal_first_two_inserters_share_a_backlog_and_store_every_tick_once() {
    const TICKS: u64 = 60_000;
    let (db, mut conn) = tables("jftwo");
    let nats = Nats::new("jftwo");
    feed(&db, &nats, &["--count", "1", "--format", "kite"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let settings = two_inserters(
        &["--set", &port],
        "spill.insert_rows=8192",
        "spill.insert_interval_ms=1000",
    );
    let run = start_logging_inserters(&db, &nats, &settings);
    wait_stored(&mut conn, 1, Duration::from_secs(60));
    proxy.down();
    feed(&db, &nats, &["--count", "59999", "--format", "kite"]);
    wait_durable(&nats, &run, TICKS, Duration::from_secs(60));
    // Long enough for both inserters to claim their shares and fail on them.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(stored(&mut conn).0, 1, "ClickHouse was away");
    proxy.up();
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_stored_once_and_journal_empty(&mut conn, TICKS, &summary);
    // Both had an INSERT under way while ClickHouse was away (each failed and kept
    // its records), not one after the other; and both committed some.
    assert_both_inserters(
        &summary,
        "INSERT from the journal failed",
        "had no INSERT under way during the outage",
    );
    assert_both_inserters(
        &summary,
        "Journaled block inserted",
        "stored none of the backlog",
    );
    consumer_settled(&nats, TICKS);
}

/// Asserts that ticks 1..=`ticks` are each stored once and that the run's summary says
/// the journal was left empty.
fn assert_stored_once_and_journal_empty(conn: &mut Connection, ticks: u64, summary: &str) {
    assert_eq!(stored(conn), (ticks, ticks, 1, ticks), "{summary}");
    assert!(
        summary.contains("0 bytes still in the journal"),
        "{summary}"
    );
}

/// Asserts that the log has a line saying `what` about each of the two inserters
/// (`inserter=<k>`); `why` names what it means when one has none.
fn assert_both_inserters(log: &str, what: &str, why: &str) {
    for slot in ["inserter=0", "inserter=1"] {
        let said = log
            .lines()
            .any(|line| line.contains(what) && line.contains(slot));
        assert!(said, "{slot} {why}: {log}");
    }
}

/// Journal-first settings with `extra`, two inserters, and `insert_rows` and
/// `insert_interval` (`spill.insert_rows=<n>`, `spill.insert_interval_ms=<ms>`).
fn two_inserters<'a>(
    extra: &[&'a str],
    insert_rows: &'a str,
    insert_interval: &'a str,
) -> Vec<&'a str> {
    let mut settings = JOURNAL_FIRST.to_vec();
    settings.extend_from_slice(extra);
    settings.extend([
        "--set",
        "spill.inserters=2",
        "--set",
        insert_rows,
        "--set",
        insert_interval,
    ]);
    settings
}

/// A run whose log has the inserters' debug lines (what each sent or failed on).
fn start_logging_inserters(db: &TestDb, nats: &Nats, settings: &[&str]) -> Running {
    start_run_env(
        db,
        nats,
        settings,
        &[("RUST_LOG", "info,alphapt_storage::write::inserter=debug")],
    )
}

/// At the drain the journal's inserters split what is left and send it at once: with
/// `spill.insert_rows` and the interval out of reach nothing is INSERTed while the run
/// goes on, so the whole backlog waits for the drain, where one inserter used to take
/// it all (its share has a floor of `insert_rows`) and the other to wait. Both send
/// part of it, and every tick is stored once.
#[test]
fn journal_first_inserters_split_what_is_left_at_the_drain() {
    const TICKS: u64 = 30_000;
    let (db, mut conn) = tables("jfsplit");
    let nats = Nats::new("jfsplit");
    feed(&db, &nats, &["--count", "30000", "--format", "kite"]);
    let settings = two_inserters(
        &[],
        "spill.insert_rows=1000000",
        "spill.insert_interval_ms=60000",
    );
    let run = start_logging_inserters(&db, &nats, &settings);
    wait_durable(&nats, &run, TICKS, Duration::from_secs(60));
    assert_eq!(stored(&mut conn).0, 0, "nothing was due before the drain");
    let summary = drain(run);
    assert_stored_once_and_journal_empty(&mut conn, TICKS, &summary);
    assert_both_inserters(
        &summary,
        "Journaled block inserted",
        "sent none of what was left",
    );
    consumer_settled(&nats, TICKS);
}

/// The drain's split with ClickHouse away: both inserters claim their halves of what
/// is left and fail on them until the drain deadline; the run exits with the rows
/// still journaled (a clean exit: journaled is durable; nothing stored), and a restart with
/// ClickHouse back, other settings (one inserter, the default interval), stores every
/// tick once and empties the journal.
#[test]
fn journal_first_a_drain_split_with_clickhouse_away_is_kept_for_the_next_start() {
    const TICKS: u64 = 20_000;
    let (db, mut conn) = tables("jfsplitdown");
    let nats = Nats::new("jfsplitdown");
    feed(&db, &nats, &["--count", "20000", "--format", "kite"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let settings = two_inserters(
        &["--set", &port, "--set", "ingest.drain_timeout_ms=3000"],
        "spill.insert_rows=1000000",
        "spill.insert_interval_ms=60000",
    );
    let run = start_logging_inserters(&db, &nats, &settings);
    wait_durable(&nats, &run, TICKS, Duration::from_secs(60));
    proxy.down();
    run.terminate();
    let (status, text) = run.exit_within(Duration::from_secs(60), "exit after SIGTERM");
    // Journaled is durable: the drain is clean, the records wait in the journal.
    assert!(status.success(), "run exited {status}: {text}");
    assert!(
        text.contains("journaled blocks not yet in ClickHouse stay in the spill"),
        "{text}"
    );
    assert_eq!(stored(&mut conn).0, 0, "ClickHouse was away: {text}");
    assert_both_inserters(
        &text,
        "INSERT from the journal failed",
        "did not try its part of what was left",
    );
    proxy.up();
    let run = start_run(
        &db,
        &nats,
        &[
            "--set",
            "spill.mode=always",
            "--set",
            &port,
            "--set",
            "spill.inserters=1",
        ],
    );
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_stored_once_and_journal_empty(&mut conn, TICKS, &summary);
    consumer_settled(&nats, TICKS);
}

#[test]
fn journal_first_acknowledges_while_clickhouse_is_away_and_stores_all_once_it_is_back() {
    const TICKS: u64 = 40_000;
    let (db, mut conn) = tables("jfdown");
    let nats = Nats::new("jfdown");
    feed(&db, &nats, &["--count", "1", "--format", "kite"]);
    let proxy = Proxy::start(clickhouse_port());
    let port = format!("clickhouse.port={}", proxy.port);
    let mut settings = JOURNAL_FIRST.to_vec();
    settings.extend(["--set", &port]);
    let run = start_run(&db, &nats, &settings);
    wait_stored(&mut conn, 1, Duration::from_secs(60));
    proxy.down();
    let feed = feeder(&db, &nats, TICKS - 1, 20_000, "kite");
    feeder_done(feed);
    // ClickHouse is unreachable, yet every tick is acknowledged: the journal holds them.
    wait_durable(&nats, &run, TICKS, Duration::from_secs(60));
    let (count, ..) = stored(&mut conn);
    assert!(
        count < TICKS,
        "ClickHouse was away while they were acknowledged ({count} stored)"
    );
    proxy.up();
    drain_stored_once(&mut conn, run, &nats, TICKS);
}

#[test]
fn journal_first_an_insert_cut_mid_way_is_checked_and_nothing_is_stored_twice() {
    const TICKS: u64 = 40_000;
    let (db, mut conn) = tables("jfcut");
    let nats = Nats::new("jfcut");
    feed(&db, &nats, &["--count", "40000", "--format", "kite"]);
    let proxy = Proxy::start(clickhouse_port());
    // Past the start-up queries, inside the inserter's first INSERT (2,048-tick kite
    // blocks are ~200-400 KB). That INSERT is the one `spill.insert_rows` makes due
    // (8,192 of the preloaded rows pending, long before the 1 s interval), so the cut
    // and its check run on the backlog rule's path too.
    proxy.cut_after(600_000);
    let port = format!("clickhouse.port={}", proxy.port);
    let mut settings = JOURNAL_FIRST.to_vec();
    settings.extend([
        "--set",
        &port,
        "--set",
        "spill.insert_interval_ms=1000",
        "--set",
        "spill.insert_rows=8192",
    ]);
    let run = start_run_env(&db, &nats, &settings, &[("RUST_LOG", "info")]);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(proxy.cuts(), 1, "{summary}");
    assert!(
        summary.contains("INSERT from the journal failed"),
        "the cut met the inserter: {summary}"
    );
    assert_stored_once_and_journal_empty(&mut conn, TICKS, &summary);
    consumer_settled(&nats, TICKS);
}

#[test]
fn journal_first_blocks_clickhouse_refuses_stay_journaled_and_are_stored_after_a_fixed_restart() {
    let (db, mut conn) = tables("jfrefused");
    let nats = Nats::new("jfrefused");
    feed(&db, &nats, &["--count", "5000", "--format", "kite"]);
    let mut settings = JOURNAL_FIRST.to_vec();
    settings.extend(["--set", "ingest.drain_timeout_ms=3000"]);
    let run = start_run(&db, &nats, &settings);
    wait_stored(&mut conn, 5_000, Duration::from_secs(60));
    // A schema change the running inserter cannot follow: a permanent error.
    conn.execute("ALTER TABLE market_ticks DROP COLUMN oi")
        .unwrap();
    feed(&db, &nats, &["--count", "3000", "--format", "kite"]);
    // Journal-first: the refused blocks are durable in the journal, so they are
    // acknowledged all the same.
    wait_durable(&nats, &run, 8_000, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        stored(&mut conn).0,
        5_000,
        "nothing stored past the refusal"
    );
    run.terminate();
    let (status, text) = run.exit_within(Duration::from_secs(60), "exit after SIGTERM");
    assert!(
        text.contains("ClickHouse refused journaled blocks"),
        "the refusal is reported: {text}"
    );
    assert_eq!(
        text.matches("ClickHouse refused journaled blocks").count(),
        1,
        "a permanent error is not retried: {text}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "a refusal is not a clean run: {text}"
    );
    assert!(
        text.contains("No such column oi") && text.contains("fix the schema, then restart"),
        "the last line names the server's reason and what to do: {text}"
    );
    assert!(!text.contains(" 0 bytes still in the journal"), "{text}");

    conn.execute("ALTER TABLE market_ticks ADD COLUMN oi UInt64 AFTER close")
        .unwrap();
    let run = start_run(&db, &nats, &JOURNAL_FIRST);
    wait_stored(&mut conn, 8_000, Duration::from_secs(60));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (8_000, 8_000, 1, 8_000), "{summary}");
    consumer_settled(&nats, 8_000);
}

/// `key=N` in a log line (ANSI colours stripped), the largest N found.
fn logged(text: &str, key: &str) -> u64 {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // An SGR sequence: ESC [ ... m.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let needle = format!("{key}=");
    plain
        .match_indices(&needle)
        .filter_map(|(at, _)| {
            let digits: String = plain[at + needle.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Crash at `point` in journal-first mode (two inserters, the default), then restart
/// with `restart` settings added: every tick stored once. Returns the restart's output.
fn crash_then_restart(tag: &str, point: &str, restart: &[&str]) -> String {
    const TICKS: u64 = 40_000;
    let (db, mut conn) = tables(tag);
    let nats = Nats::new(tag);
    feed(&db, &nats, &["--count", "1", "--format", "kite"]);
    let run = start_run_env(&db, &nats, &JOURNAL_FIRST, &[("ALPHAPT_CRASH_AT", point)]);
    // Two seconds of feed: about ten INSERTs from the journal, so the point lands
    // mid-stream.
    let feed = feeder(&db, &nats, TICKS - 1, 20_000, "kite");
    let text = run_until_crash(run);
    feeder_done(feed);
    std::thread::sleep(Duration::from_millis(500));
    let after_crash = stored(&mut conn);
    assert_eq!(after_crash.0, after_crash.1, "nothing doubled by the crash");
    assert!(after_crash.0 < TICKS, "the crash landed mid-stream: {text}");
    // At info, the start's replay report is in the output.
    let settings = [JOURNAL_FIRST.as_slice(), restart].concat();
    let run = start_run_env(&db, &nats, &settings, &[("RUST_LOG", "info")]);
    drain_stored_once(&mut conn, run, &nats, TICKS)
}

#[test]
fn journal_first_crash_after_an_insert_commits_and_before_its_mark_stores_nothing_twice() {
    // The inserter's third INSERT commits, then the process dies before marking its
    // records: the restart's replay must find them stored, not send them again. The
    // restart has one inserter where the crashed run had two: claims were never
    // written down, so nothing of the old run's division carries over.
    let restart = crash_then_restart(
        "jfcommit",
        "insert_committed:3",
        &["--set", "spill.inserters=1"],
    );
    assert!(
        logged(&restart, "already_stored") > 0,
        "the restart found the committed, unmarked records stored: {restart}"
    );
}

#[test]
fn journal_first_crash_after_a_sorted_insert_commits_then_an_unsorted_restart_stores_nothing_twice()
{
    // The crashed run sent its INSERTs as sorted blocks (the default); the restart
    // sends the journal as journaled blocks. Which records are stored is read from
    // their rows' sequences, not from the blocks they went in.
    let restart = crash_then_restart(
        "jfsortcfg",
        "insert_committed:2",
        &["--set", "spill.sort_inserts=false"],
    );
    assert!(
        logged(&restart, "already_stored") > 0,
        "the restart found the sorted INSERT's records stored: {restart}"
    );
}

#[test]
fn journal_first_crash_in_the_middle_of_an_insert_from_the_journal_stores_nothing_twice() {
    // The inserter's third INSERT has its first piece on the wire and no end marker
    // when the process dies; the server may still be writing that block while the
    // restart replays the journal, so the replay first waits for it.
    crash_then_restart("jfmid", "mid_insert:3", &[]);
}

#[test]
fn journal_first_crash_after_a_journal_sync_and_before_its_ack_stores_nothing_twice() {
    crash_then_restart("jfsync", "spill_synced:3", &[]);
}

#[test]
fn journal_first_crash_after_the_marks_and_before_their_sync_stores_nothing_twice() {
    // The third INSERT's records are marked in the journal's mapping, the lock is let
    // go, and the process dies before the marks' fdatasync and before the segments they
    // emptied are deleted: the restart's open and replay must neither resend those
    // records nor miss the ones still pending.
    crash_then_restart("jfmarks", "marks_unsynced:3", &[]);
}

#[test]
fn journal_first_a_failed_sync_of_the_marks_is_reported_and_nothing_is_sent_again() {
    // The second sync of replayed marks fails as a disk would (EIO). The batch it
    // belonged to is in ClickHouse and marked in memory: the run says so once, counts
    // it, and goes on without asking ClickHouse again or resending; the drain empties
    // the journal.
    const TICKS: u64 = 40_000;
    let (db, mut conn) = tables("jfmsync");
    let nats = Nats::new("jfmsync");
    feed(&db, &nats, &["--count", "1", "--format", "kite"]);
    let run = start_run_env(
        &db,
        &nats,
        &JOURNAL_FIRST,
        &[("ALPHAPT_CRASH_AT", "marks_sync_error:2")],
    );
    let feed = feeder(&db, &nats, TICKS - 1, 20_000, "kite");
    feeder_done(feed);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let control = control_addr(&run);
    let faults = metric(control, "alphapt_spill_faults_total");
    let summary = drain(run);
    assert_stored_once_and_journal_empty(&mut conn, TICKS, &summary);
    assert_eq!(
        summary.matches("Cannot sync the marks").count(),
        1,
        "said once: {summary}"
    );
    assert!(summary.contains("Input/output error"), "{summary}");
    assert!(
        !summary.contains("already stored; sending only the rest"),
        "the batch was done: nothing asked of ClickHouse again: {summary}"
    );
    assert_eq!(faults, 1, "the failed sync is counted");
    consumer_settled(&nats, TICKS);
}

#[test]
fn journal_first_a_record_damaged_in_the_journal_is_set_aside_and_delivered_again_after_a_restart()
{
    // Acknowledged records wait in the journal (no INSERT is due before a minute or a
    // million rows); one is damaged on disk. The drain sends the rest at once, sets the
    // damaged one aside with an error naming it, and does not wait on it to its
    // deadline. The restart finds the damaged record, reads the whole store, and
    // JetStream delivers what it held again: every tick stored once in the end.
    const TICKS: u64 = 10_000;
    let (db, mut conn) = tables("jfdamage");
    let nats = Nats::new("jfdamage");
    feed(&db, &nats, &["--count", "10000", "--format", "kite"]);
    let mut settings = JOURNAL_FIRST.to_vec();
    settings.extend([
        "--set",
        "spill.insert_interval_ms=60000",
        "--set",
        "spill.insert_rows=1000000",
    ]);
    let run = start_run(&db, &nats, &settings);
    wait_durable(&nats, &run, TICKS, Duration::from_secs(60));
    assert_eq!(stored(&mut conn).0, 0, "nothing inserted before the drain");
    let rows = u64::from(flip_pending_record(&db.spill_dir(), 1).0.header.rows);
    assert!(
        rows > 0 && rows < TICKS,
        "{rows} rows in the damaged record"
    );
    drain_with_one_set_aside(&mut conn, run, TICKS, rows);
    // The restart with the default due rules: what JetStream delivers again goes in
    // within the 200 ms interval.
    let run = start_run(&db, &nats, &JOURNAL_FIRST);
    let restart = drain_stored_once(&mut conn, run, &nats, TICKS);
    assert!(
        restart.contains("reading the whole store"),
        "the damaged record made the restart read the whole store: {restart}"
    );
}
