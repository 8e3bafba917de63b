//! Replay: spilled blocks into ClickHouse, each at most once.
//!
//! ```text
//!   journal.pending() (oldest first) ──read (CRCs again)──► schema hash = the table's now?
//!        │ no: left pending, counted (an operator migrates, then `spill replay`)
//!        ▼ yes
//!   "is a row with the block's last sequence stored?" ── yes ──► mark_replayed
//!        │ no
//!        ▼
//!   INSERT the block's bytes as they are ──► mark_replayed (state byte; a replayed
//!                                            segment is trimmed)
//! ```
//!
//! Why at most once: a block is one part, written whole, and only the writer that
//! spilled it (or this replay, before the writers start) writes its sequences; so a row
//! with its last sequence means the block is stored. A crash between the INSERT and the
//! state byte is then caught by that look. Used at start (every journal, before the
//! receiver reads the resume point), by the writers while they run, and by
//! `alphapt-storage spill replay`.

use crate::native::{Connection, Error, Method, Options, Values};

use super::format::{Record, RecordHeader, RecordTable};
use super::journal::{Journal, SpillError};

/// Where one table's spilled blocks go.
#[derive(Clone, Debug)]
pub struct Target {
    /// The table the records name.
    pub table: RecordTable,
    /// `INSERT INTO <table> (<columns>) VALUES`.
    pub sql: String,
    /// The columns and types the server must announce.
    pub header: Vec<(String, String)>,
    /// `schema_hash(header)`: records with another hash were sealed for another schema.
    pub schema_hash: u64,
}

/// What replaying one record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// INSERTed now.
    Inserted,
    /// Already in ClickHouse (an earlier replay or INSERT that ended before its mark).
    AlreadyStored,
}

/// What a replay of a whole journal did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records INSERTed.
    pub inserted: u64,
    /// Their rows.
    pub rows: u64,
    /// Records found already stored.
    pub already_stored: u64,
    /// Records left pending: sealed for a schema the server no longer has.
    pub other_schema: u64,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The journal could not be read or marked.
    #[error(transparent)]
    Spill(#[from] SpillError),
    /// ClickHouse failed.
    #[error("replaying spilled blocks into ClickHouse failed: {0}; they stay in the spill, and the next start (or `alphapt-storage spill replay`) tries again")]
    ClickHouse(#[from] Error),
}

/// The sequences among `seqs` that have a row in `table`.
pub fn stored_last_seqs(
    conn: &mut Connection,
    table: &str,
    seqs: &[u64],
) -> Result<Vec<u64>, Error> {
    let list = seqs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let result = conn.query(&format!(
        "SELECT DISTINCT stream_seq FROM {table} WHERE stream_seq IN ({list})"
    ))?;
    let mut found = Vec::new();
    for block in &result.blocks {
        if let Some(Values::U64(values)) = block.columns.first().map(|c| &c.values) {
            found.extend_from_slice(values);
        }
    }
    Ok(found)
}

/// Replays one record on `conn` (whose compression must match the record's).
pub fn replay_record(
    conn: &mut Connection,
    target: &Target,
    record: &Record<'_>,
) -> Result<Replayed, Error> {
    debug_assert_eq!(target.table, record.header.table);
    let last = record.header.seq_last;
    if !stored_last_seqs(conn, target.table.name(), &[last])?.is_empty() {
        tracing::debug!(block = %record.header.block_id(), "Spilled block already stored; marked");
        return Ok(Replayed::AlreadyStored);
    }
    conn.insert_encoded(&target.sql, &target.header, &[record.payload])?;
    tracing::debug!(block = %record.header.block_id(), rows = record.header.rows, "Spilled block replayed");
    Ok(Replayed::Inserted)
}

/// Replays every pending record of `journal` in order, on connections opened from
/// `options` (one per compression the records use). Records sealed for another schema
/// are left pending and counted. `on_stored` hears of each record marked because
/// ClickHouse now holds it (inserted, or found stored), with its stored size.
pub fn replay_journal(
    journal: &mut Journal,
    targets: &[Target],
    options: &Options,
    on_stored: &mut dyn FnMut(&RecordHeader, usize),
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    let mut lz4: Option<Connection> = None;
    let mut raw: Option<Connection> = None;
    for pos in journal.pending() {
        let record = journal.read(pos)?;
        let header = record.header;
        let Some(target) = targets
            .iter()
            .find(|t| t.table == header.table && t.schema_hash == header.schema_hash)
        else {
            report.other_schema += 1;
            continue;
        };
        let slot = if header.lz4 { &mut lz4 } else { &mut raw };
        if slot.is_none() {
            let options = Options {
                compression: header.lz4.then_some(Method::Lz4),
                ..options.clone()
            };
            *slot = Some(Connection::connect(&options)?);
        }
        let conn = slot.as_mut().expect("connected above");
        match replay_record(conn, target, &record)? {
            Replayed::Inserted => {
                report.inserted += 1;
                report.rows += u64::from(header.rows);
            }
            Replayed::AlreadyStored => report.already_stored += 1,
        }
        let bytes = record.payload.len();
        journal.mark_replayed(pos)?;
        on_stored(&header, bytes);
    }
    if report.other_schema > 0 {
        tracing::error!(dir = %journal.dir().display(), records = report.other_schema,
            "Spilled blocks sealed for a schema ClickHouse no longer has; left in the spill: migrate the tables back, then run `alphapt-storage spill replay`");
    }
    Ok(report)
}
