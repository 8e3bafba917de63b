//! What the store already holds, read at start: the store (ClickHouse; the spill is
//! replayed into it first) decides where JetStream delivery resumes, not the consumer.
//!
//! ```text
//!   consumer ack floor F (0 when the durable is new) ──┐
//!   stream identity: created, first_seq ───────────────┤
//!   ClickHouse: stream_seq > F of this stream, as ranges ┴─► SeqSet stored
//!        │                                                       │
//!        └── resume(F, stored, first_seq, exists?) ──► Resume { position P, skip = stored > P }
//!   receiver: deliver from P + 1; a delivery in `skip` is passed over (and is an ack point)
//! ```
//!
//! Why it is right: a sequence at or below the ack floor was acknowledged, and the
//! appliance acknowledges only what is durable, so it is stored or no longer in the
//! stream. Above the floor the rows themselves say what is stored. `P` only grows over
//! a sequence that is stored or that the stream no longer has (below its first sequence,
//! or deleted: asked of the stream one by one, at most [`PROBES_MAX`]); everything
//! above `P` that is stored is skipped on delivery. So resuming at `P + 1` neither
//! stores a message twice nor skips one that is not stored, whatever happened to the
//! consumer (recreated, edited, deleted) or the config (shards, ring sizes, ack wait).
//!
//! Which rows belong to which stream: `market_ticks` holds the ticks stream and
//! `strategy_signals` the signals stream; `rejected_messages` holds both, told apart
//! by subject (the stream's subject filter as a regular expression). A stream deleted
//! and created again restarts its sequences at 1, so only rows received at or after
//! the stream's creation count (`received_at` is our clock, `created` the server's:
//! on one host, or NTP-synced ones, a skew below a second at worst stores a message
//! twice, never skips one).

use std::fmt::Write as _;

use crate::native::{Connection, Error, Values};

/// Most holes in the stored set asked of the stream at start (one request each).
/// Beyond that delivery resumes at the first unresolved hole and stored messages after
/// it are skipped one by one: slower, never wrong.
pub const PROBES_MAX: usize = 256;

/// Most stored sequences read per query: 1 Mi × 8 B = 8 MiB of answers.
pub const ROWS_PER_QUERY: u64 = 1 << 20;

/// A set of stream sequences as sorted, disjoint, non-adjacent inclusive ranges.
/// Stored sequences come in long runs (a block is thousands of consecutive
/// sequences when one shard runs; interleaved ones still merge once all shards
/// committed), so ranges stay few.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqSet {
    /// `(first, last)` pairs, ascending, with at least one missing sequence between two.
    ranges: Vec<(u64, u64)>,
}

impl SeqSet {
    /// An empty set.
    pub fn new() -> SeqSet {
        SeqSet::default()
    }

    /// Adds `seq`; cheap when sequences come in ascending order (the query's order).
    pub fn insert(&mut self, seq: u64) {
        if let Some(last) = self.ranges.last_mut() {
            if seq == last.1.saturating_add(1) {
                last.1 = seq;
                return;
            }
            if seq > last.1 {
                self.ranges.push((seq, seq));
                return;
            }
        } else {
            self.ranges.push((seq, seq));
            return;
        }
        // Out of order: the general path.
        let at = self.ranges.partition_point(|&(_, last)| last < seq);
        if at < self.ranges.len() && self.ranges[at].0 <= seq {
            return;
        }
        self.ranges.insert(at, (seq, seq));
        self.merge_around(at);
    }

    /// Adds every sequence of `first..=last` (`first ≤ last`); cheap when ranges come
    /// in ascending order.
    pub fn insert_range(&mut self, first: u64, last: u64) {
        debug_assert!(first <= last, "range {first}..={last}");
        match self.ranges.last_mut() {
            None => {
                self.ranges.push((first, last));
                return;
            }
            Some(end) if first > end.1.saturating_add(1) => {
                self.ranges.push((first, last));
                return;
            }
            Some(end) if first >= end.0 => {
                end.1 = end.1.max(last);
                return;
            }
            Some(_) => {}
        }
        // Out of order: replace every range it touches or overlaps by their union.
        let lo = self
            .ranges
            .partition_point(|&(_, end)| end.saturating_add(1) < first);
        let hi = self
            .ranges
            .partition_point(|&(start, _)| start <= last.saturating_add(1));
        let (mut union_first, mut union_last) = (first, last);
        if lo < hi {
            union_first = union_first.min(self.ranges[lo].0);
            union_last = union_last.max(self.ranges[hi - 1].1);
        }
        self.ranges.splice(lo..hi, [(union_first, union_last)]);
    }

    /// Merges range `at` with its neighbours where they touch.
    fn merge_around(&mut self, at: usize) {
        if at + 1 < self.ranges.len() && self.ranges[at].1 + 1 >= self.ranges[at + 1].0 {
            self.ranges[at].1 = self.ranges[at].1.max(self.ranges[at + 1].1);
            self.ranges.remove(at + 1);
        }
        if at > 0 && self.ranges[at - 1].1 + 1 >= self.ranges[at].0 {
            self.ranges[at - 1].1 = self.ranges[at - 1].1.max(self.ranges[at].1);
            self.ranges.remove(at);
        }
    }

    /// Adds every sequence of `other` (the stored sets of a cluster's shards).
    pub fn union(&mut self, other: &SeqSet) {
        for &(first, last) in &other.ranges {
            self.insert_range(first, last);
        }
    }

    /// Whether `seq` is in the set: a binary search, no allocation.
    pub fn contains(&self, seq: u64) -> bool {
        let at = self.ranges.partition_point(|&(_, last)| last < seq);
        at < self.ranges.len() && self.ranges[at].0 <= seq
    }

    /// Removes every sequence at or below `seq`.
    pub fn remove_through(&mut self, seq: u64) {
        let at = self.ranges.partition_point(|&(_, last)| last <= seq);
        self.ranges.drain(..at);
        if let Some(first) = self.ranges.first_mut() {
            first.0 = first.0.max(seq.saturating_add(1));
        }
    }

    /// The end of the run that holds `seq`, if `seq` is in the set.
    pub fn run_end(&self, seq: u64) -> Option<u64> {
        let at = self.ranges.partition_point(|&(_, last)| last < seq);
        (at < self.ranges.len() && self.ranges[at].0 <= seq).then(|| self.ranges[at].1)
    }

    /// The lowest sequence above `seq` in the set.
    pub fn next_above(&self, seq: u64) -> Option<u64> {
        let at = self.ranges.partition_point(|&(_, last)| last <= seq);
        self.ranges.get(at).map(|&(first, _)| first.max(seq + 1))
    }

    /// Sequences in the set.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|&(a, b)| b - a + 1).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of ranges (memory is 16 bytes each).
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

/// Where delivery resumes, and what to pass over after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// Every sequence at or below this is stored or not in the stream: deliver from
    /// `position + 1`.
    pub position: u64,
    /// Stored sequences above `position`: passed over on delivery.
    pub skip: SeqSet,
    /// Sequences stepped over because the stream no longer has them.
    pub absent: u64,
    /// Holes asked of the stream.
    pub probes: u64,
}

/// The resume point from the ack floor `floor`, the stored sequences above it, and the
/// stream's first sequence; `exists(seq)` asks the stream whether it still holds
/// `seq` (false: deleted). Asks at most [`PROBES_MAX`] times.
pub fn resume<E>(
    floor: u64,
    mut stored: SeqSet,
    first_seq: u64,
    mut exists: impl FnMut(u64) -> Result<bool, E>,
) -> Result<Resume, E> {
    let mut position = floor;
    let mut absent = 0u64;
    let mut probes = 0u64;
    // Bound: each pass moves `position` up by at least one, and stops when nothing
    // stored lies above it or the probes run out.
    loop {
        let next = position + 1;
        if let Some(end) = stored.run_end(next) {
            position = end;
            continue;
        }
        let Some(stored_next) = stored.next_above(position) else {
            break;
        };
        // A hole [next, stored_next - 1]. Below the stream's first sequence nothing
        // exists any more (trimmed by limits, or purged).
        if first_seq > next {
            let to = (first_seq - 1).min(stored_next - 1);
            absent += to - next + 1;
            position = to;
            continue;
        }
        if probes as usize >= PROBES_MAX {
            break;
        }
        probes += 1;
        if exists(next)? {
            break;
        }
        absent += 1;
        position = next;
    }
    stored.remove_through(position);
    Ok(Resume {
        position,
        skip: stored,
        absent,
        probes,
    })
}

/// The tables a stream's messages end in.
#[derive(Clone, Debug)]
pub struct StreamTables {
    /// `market_ticks` or `strategy_signals`.
    pub rows_table: &'static str,
    /// The stream's subject filter (NATS wildcards), to tell its rejected messages
    /// from the other stream's.
    pub subject_filter: String,
}

/// A NATS subject filter as an anchored RE2 pattern: `*` is one token, `>` the rest.
pub fn subject_regex(filter: &str) -> String {
    let mut out = String::from("^");
    for (index, token) in filter.split('.').enumerate() {
        if index > 0 {
            out.push_str("\\\\.");
        }
        match token {
            "*" => out.push_str("[^.]+"),
            ">" => out.push_str(".+"),
            literal => {
                for c in literal.chars() {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        out.push(c);
                    } else {
                        // Escaped for RE2, then for the SQL string literal.
                        let _ = write!(out, "\\\\x{:02x}", c as u32 & 0xff);
                    }
                }
            }
        }
    }
    out.push('$');
    out
}

/// Sequences per bucket of the summary query: a bucket whose distinct count equals
/// its span is one stored range, sent as four numbers instead of 4,096.
pub const BUCKET_SEQS: u64 = 4096;

/// Partly stored buckets whose sequences one query reads: at most
/// [`ROWS_PER_QUERY`] rows an answer.
pub const BUCKETS_PER_QUERY: usize = (ROWS_PER_QUERY / BUCKET_SEQS) as usize;

/// The stream's stored rows in `(after, ..]` received at or after `created_ms` (Unix
/// ms), as `stream_seq` from all its tables, plus `extra` as a further condition.
/// `modern`: the tables have DateTime64 receive stamps (ClickHouse ≥ 20.1), else
/// seconds plus `received_at_ms`.
fn stream_rows(
    tables: &StreamTables,
    after: u64,
    created_ms: i64,
    modern: bool,
    extra: &str,
) -> String {
    let since = if modern {
        format!("received_at >= fromUnixTimestamp64Milli(toInt64({created_ms}))")
    } else {
        format!("toUInt64(toUInt32(received_at)) * 1000 + received_at_ms >= {created_ms}")
    };
    format!(
        "SELECT stream_seq FROM {rows} WHERE stream_seq > {after} AND {since}{extra} \
         UNION ALL \
         SELECT stream_seq FROM rejected_messages WHERE stream_seq > {after} AND {since}{extra} \
           AND match(subject, '{pattern}')",
        rows = tables.rows_table,
        pattern = subject_regex(&tables.subject_filter),
    )
}

/// Per bucket of [`BUCKET_SEQS`] sequences above `after`: distinct count, lowest and
/// highest stored sequence, ascending.
pub fn summary_query(tables: &StreamTables, after: u64, created_ms: i64, modern: bool) -> String {
    format!(
        "SELECT toUInt64(intDiv(stream_seq, {BUCKET_SEQS})) AS bucket, \
                toUInt64(uniqExact(stream_seq)) AS stored, \
                toUInt64(min(stream_seq)) AS lo, toUInt64(max(stream_seq)) AS hi \
         FROM ({}) GROUP BY bucket ORDER BY bucket",
        stream_rows(tables, after, created_ms, modern, "")
    )
}

/// The distinct stored sequences above `after` of the given buckets, ascending.
pub fn bucket_rows_query(
    tables: &StreamTables,
    after: u64,
    created_ms: i64,
    modern: bool,
    buckets: &[u64],
) -> String {
    let mut list = String::new();
    for (i, bucket) in buckets.iter().enumerate() {
        let _ = write!(list, "{}{bucket}", if i == 0 { "" } else { ", " });
    }
    let extra = format!(" AND intDiv(stream_seq, {BUCKET_SEQS}) IN ({list})");
    format!(
        "SELECT DISTINCT stream_seq FROM ({}) ORDER BY stream_seq",
        stream_rows(tables, after, created_ms, modern, &extra)
    )
}

/// Reads every stored sequence of a stream above `after` (rows received at or after
/// `created_ms`). One summary query turns each wholly stored bucket into a range;
/// only partly stored buckets (gaps, the unfinished top, interleaved shards) are read
/// sequence by sequence, [`BUCKETS_PER_QUERY`] at a time. A start after a day of ticks
/// reads thousands of summary rows, not a hundred million sequences.
pub fn read_stored(
    conn: &mut Connection,
    tables: &StreamTables,
    after: u64,
    created_ms: i64,
) -> Result<SeqSet, Error> {
    let modern = conn.server().is_modern();
    let mut set = SeqSet::new();
    let summary = conn.query(&summary_query(tables, after, created_ms, modern))?;
    let mut partial = Vec::new();
    for block in &summary.blocks {
        let column = |index: usize| -> Result<&[u64], Error> {
            match block.columns.get(index).map(|c| &c.values) {
                Some(Values::U64(values)) => Ok(values),
                _ => Err(Error::Protocol(format!(
                    "stored-sequence summary column {index} is not UInt64"
                ))),
            }
        };
        if block.columns.is_empty() {
            continue;
        }
        let (buckets, counts, lows, highs) = (column(0)?, column(1)?, column(2)?, column(3)?);
        for i in 0..buckets.len() {
            let (count, lo, hi) = (counts[i], lows[i], highs[i]);
            if lo > hi || count > hi - lo + 1 {
                return Err(Error::Protocol(format!(
                    "stored-sequence summary is inconsistent: bucket {} holds {count} in {lo}..={hi}",
                    buckets[i]
                )));
            }
            if count == hi - lo + 1 {
                set.insert_range(lo, hi);
            } else {
                partial.push(buckets[i]);
            }
        }
    }
    for group in partial.chunks(BUCKETS_PER_QUERY) {
        let rows = conn.query(&bucket_rows_query(tables, after, created_ms, modern, group))?;
        for block in &rows.blocks {
            let Some(column) = block.columns.first() else {
                continue;
            };
            let Values::U64(seqs) = &column.values else {
                return Err(Error::Protocol(format!(
                    "stream_seq came back as {}, not UInt64",
                    column.type_name
                )));
            };
            for &seq in seqs {
                set.insert(seq);
            }
        }
    }
    Ok(set)
}

/// Longest wait at start for INSERTs a killed appliance left running on the server
/// (before the spill replay and before the resume point is read).
pub const OTHER_INSERTS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The query-id prefix of every appliance's INSERTs into `database`; each writer adds
/// its process id and index, so a starting appliance can wait for the INSERTs a killed
/// one left running on the server ([`wait_for_other_inserts`]).
pub fn insert_query_prefix(database: &str) -> String {
    let partition = PARTITION_TAG.get().map_or("", String::as_str);
    format!("alphapt-{database}-{partition}")
}

/// `p<id>-` (`p<id>.<id>-` for several) once this process serves subject partitions
/// (see [`serve_partitions`]).
static PARTITION_TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Puts the subject partitions this process serves into its INSERT query ids (set
/// once, at start, before any INSERT). Appliances on other partitions of the same
/// database insert all the time; a start waits only for a killed INSERT of its own
/// partitions (the ones its resume point and spill depend on), not for theirs. An
/// appliance without partitions still waits for every appliance's INSERTs. A restart
/// must serve the same set: the tag names the set, not each partition.
pub fn serve_partitions(ids: &[u32]) {
    if ids.is_empty() {
        return;
    }
    let names: Vec<String> = ids.iter().map(u32::to_string).collect();
    let _ = PARTITION_TAG.set(format!("p{}-", names.join(".")));
}

/// The query-id prefix of this process's INSERTs of one `role` (`w0` a writer, `i0` an
/// inserter, `sw0`/`si0` those of the signals path, `r` the start's spill replay):
/// [`insert_query_prefix`], the process id, the role.
pub fn own_insert_query_prefix(database: &str, role: &str) -> String {
    format!(
        "{}{}-{role}-",
        insert_query_prefix(database),
        std::process::id()
    )
}

/// Waits until no INSERT of another appliance process into this database is running
/// on the server (query ids `<prefix>`, not `<own_prefix>`), at most `limit`: a
/// process killed mid-INSERT leaves the server still writing what it had received,
/// and reading the store before that ends would miss it (and store it twice). Returns
/// false when the limit passed first (a second appliance inserting all the time).
pub fn wait_for_other_inserts(
    conn: &mut Connection,
    prefix: &str,
    own_prefix: &str,
    limit: std::time::Duration,
) -> Result<bool, Error> {
    let sql = format!(
        "SELECT count() FROM system.processes WHERE startsWith(query_id, '{prefix}') \
         AND NOT startsWith(query_id, '{own_prefix}')"
    );
    let deadline = std::time::Instant::now() + limit;
    // Bound: the deadline.
    loop {
        let running = conn
            .query(&sql)?
            .scalar()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if running == 0 {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// [`wait_for_other_inserts`] for this process at start: every appliance INSERT into
/// `database` but our own, at most [`OTHER_INSERTS_WAIT`]. Run before anything reads the
/// store to decide what to send (the spill replay, the resume point): a process killed
/// mid-INSERT leaves the server writing what it had received. False when the limit
/// passed first.
pub fn wait_for_killed_inserts(conn: &mut Connection, database: &str) -> Result<bool, Error> {
    let prefix = insert_query_prefix(database);
    let own = format!("{prefix}{}-", std::process::id());
    wait_for_other_inserts(conn, &prefix, &own, OTHER_INSERTS_WAIT)
}

#[cfg(test)]
mod tests {
    //! The set against a `BTreeSet` oracle; the resume point against a brute-force walk.
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::synthetic::SplitMix64;

    #[test]
    fn seq_set_matches_a_btreeset() {
        let mut rng = SplitMix64::new(5);
        for _ in 0..200 {
            let mut set = SeqSet::new();
            let mut oracle = BTreeSet::new();
            for _ in 0..rng.below(60) {
                let seq = 1 + rng.below(80);
                if rng.below(4) == 0 {
                    let last = (seq + rng.below(6)).min(80);
                    set.insert_range(seq, last);
                    oracle.extend(seq..=last);
                } else {
                    set.insert(seq);
                    oracle.insert(seq);
                }
            }
            for seq in 0..90 {
                assert_eq!(set.contains(seq), oracle.contains(&seq), "{seq} in {set:?}");
                assert_eq!(
                    set.next_above(seq),
                    oracle.range(seq + 1..).next().copied(),
                    "{seq}"
                );
            }
            assert_eq!(set.len(), oracle.len() as u64);
            for pair in set.ranges.windows(2) {
                assert!(pair[0].1 + 1 < pair[1].0, "ranges touch: {set:?}");
            }
            let cut = rng.below(90);
            set.remove_through(cut);
            for seq in 0..90 {
                assert_eq!(set.contains(seq), seq > cut && oracle.contains(&seq));
            }
        }
    }

    #[test]
    fn resume_steps_over_only_stored_or_absent_sequences() {
        let mut rng = SplitMix64::new(11);
        for _ in 0..300 {
            let last = 1 + rng.below(50);
            let first_seq = 1 + rng.below(8);
            let deleted: BTreeSet<u64> = (0..rng.below(6)).map(|_| 1 + rng.below(last)).collect();
            let floor = rng.below(first_seq + 3);
            let mut stored = SeqSet::new();
            let mut stored_all = BTreeSet::new();
            for seq in floor + 1..=last {
                if rng.below(3) != 0 && !deleted.contains(&seq) && seq >= first_seq {
                    stored.insert(seq);
                    stored_all.insert(seq);
                }
            }
            let resume = resume(floor, stored, first_seq, |seq| {
                Ok::<bool, ()>(seq >= first_seq && seq <= last && !deleted.contains(&seq))
            })
            .unwrap();
            // Everything at or below the position is stored, absent, or under the floor.
            for seq in floor + 1..=resume.position {
                assert!(
                    stored_all.contains(&seq) || seq < first_seq || deleted.contains(&seq),
                    "position {} passes unstored {seq}",
                    resume.position
                );
            }
            // Below a stored sequence, the next one is a message the stream still has
            // (or the probes ran out); above the last stored one the walk stops and
            // delivery steps over what is absent.
            let next = resume.position + 1;
            let stored_above = stored_all.range(next + 1..).next().is_some();
            if stored_above && !stored_all.contains(&next) {
                assert!(
                    next >= first_seq && !deleted.contains(&next)
                        || resume.probes as usize >= PROBES_MAX
                );
            }
            // Skipped = stored above the position, exactly.
            for seq in 0..=last + 1 {
                assert_eq!(
                    resume.skip.contains(seq),
                    seq > resume.position && stored_all.contains(&seq)
                );
            }
        }
    }

    #[test]
    fn subject_filters_become_anchored_patterns() {
        assert_eq!(subject_regex("market.ticks.>"), "^market\\\\.ticks\\\\..+$");
        assert_eq!(subject_regex("a.*.b"), "^a\\\\.[^.]+\\\\.b$");
        assert_eq!(subject_regex("x'y"), "^x\\\\x27y$");
    }
}
