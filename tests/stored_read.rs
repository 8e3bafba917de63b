//! The store's answer to "which sequences of this stream are stored above F", read at
//! start (src/durable/stored.rs), against a set built here: whole buckets, holes,
//! partly stored buckets, rejected messages of this stream and of another, and rows
//! older than the stream (a deleted and recreated stream's).

mod common;

use std::collections::BTreeSet;

use alphapt_storage::durable::stored::{read_stored, StreamTables, BUCKET_SEQS};

/// `INSERT ... SELECT` of sequences `numbers` into `table`, received `age_s` ago.
fn insert(
    conn: &mut alphapt_storage::native::Connection,
    table: &str,
    subject: Option<&str>,
    first: u64,
    last: u64,
    filter: &str,
    age_s: u64,
) {
    let subject = subject.map_or(String::new(), |s| format!(", '{s}' AS subject"));
    let columns = if subject.is_empty() {
        "stream_seq, received_at, received_at_ms"
    } else {
        "stream_seq, received_at, received_at_ms, subject"
    };
    conn.execute(&format!(
        "INSERT INTO {table} ({columns}) SELECT number AS stream_seq, \
         toDateTime(toUInt32(now()) - {age_s}) AS received_at, toUInt16(0) AS received_at_ms{subject} \
         FROM (SELECT number + {first} AS number FROM system.numbers LIMIT {}) WHERE {filter}",
        last - first + 1
    ))
    .unwrap();
}

#[test]
fn stored_sequences_come_back_exactly_as_ranges_and_single_rows() {
    let db = common::TestDb::new("stored");
    let mut conn = db.connect(None);
    db.create_market_ticks(&mut conn);
    db.create_from_migration(&mut conn, "004_rejected_messages");
    let mut expected = BTreeSet::new();
    let add = |expected: &mut BTreeSet<u64>, first: u64, last: u64, keep: &dyn Fn(u64) -> bool| {
        expected.extend((first..=last).filter(|&q| keep(q)));
    };
    // Whole buckets, then a hole, then a bucket with every 7th missing, then more.
    insert(
        &mut conn,
        "market_ticks",
        None,
        1,
        3 * BUCKET_SEQS + 10,
        "1",
        10,
    );
    add(&mut expected, 1, 3 * BUCKET_SEQS + 10, &|_| true);
    let holed = 5 * BUCKET_SEQS;
    insert(
        &mut conn,
        "market_ticks",
        None,
        holed,
        holed + 2 * BUCKET_SEQS,
        "number % 7 != 3",
        10,
    );
    add(&mut expected, holed, holed + 2 * BUCKET_SEQS, &|q| {
        q % 7 != 3
    });
    // The missing 7ths of one bucket are rejected messages of this stream...
    let top = holed + 2 * BUCKET_SEQS;
    insert(
        &mut conn,
        "rejected_messages",
        Some("md.ticks.NSE.12"),
        holed,
        holed + BUCKET_SEQS - 1,
        "number % 7 = 3",
        10,
    );
    add(&mut expected, holed, holed + BUCKET_SEQS - 1, &|q| {
        q % 7 == 3
    });
    // ...and of the signals stream, which do not count here.
    insert(
        &mut conn,
        "rejected_messages",
        Some("md.signals.s1"),
        top + 1,
        top + 100,
        "1",
        10,
    );
    // Rows received before the stream was created: an earlier stream's.
    insert(
        &mut conn,
        "market_ticks",
        None,
        top + 200,
        top + 300,
        "1",
        7200,
    );
    // Some sequences at or below the floor are never read.
    let floor = 17;
    expected.retain(|&q| q > floor);

    let tables = StreamTables {
        rows_table: "market_ticks",
        subject_filter: "md.ticks.>".into(),
    };
    let created_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64)
        - 3_600_000;
    let set = read_stored(&mut conn, &tables, floor, created_ms).unwrap();
    assert_eq!(set.len(), expected.len() as u64);
    for q in 0..top + 400 {
        assert_eq!(set.contains(q), expected.contains(&q), "sequence {q}");
    }
    // Runs stay runs: the whole buckets are one range, the holed part one per hole.
    assert!(
        set.ranges() < 2 + 2 * BUCKET_SEQS as usize / 7 + 4,
        "{}",
        set.ranges()
    );
}
