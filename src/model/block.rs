//! The hand-off between a shard and a writer: a sealed block of one table, the bytes
//! ready for the wire and what durability, spill and audit need to know about them.
//! A shard fills it (`shard::columns`); a writer sends it, spills it, and hands it back
//! to the shard's free ring.

/// Whether a block is framed for the wire or stored as a Native file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFormat {
    /// In a Data packet: BlockInfo first.
    Protocol,
    /// `FORMAT Native` file: no BlockInfo.
    File,
}

/// How Data blocks travel for one query (`native::compress` writes the frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Frames with LZ4 payloads.
    Lz4,
    /// Frames with raw payloads (still checksummed).
    None,
}

/// The table a sealed block is bound for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// `market_ticks`.
    Ticks,
    /// `strategy_signals`.
    Signals,
    /// `rejected_messages`.
    Rejects,
}

impl Table {
    /// The ClickHouse table's name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Ticks => "market_ticks",
            Table::Signals => "strategy_signals",
            Table::Rejects => "rejected_messages",
        }
    }
}

/// A block's id, the same in every log line about it (seal, INSERT, spill, replay)
/// and in `ingest_audit.block_id`: `<table>/<first stream seq>-<last stream seq>`.
/// Made from what the block already carries, so a journaled record, a replay and a
/// restart's re-sealing of the same redelivered messages all name it alike; a stream's
/// sequence is in one table's blocks only, so no two blocks share an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockId {
    /// The table's name.
    pub table: &'static str,
    /// Lowest stream sequence.
    pub first: u64,
    /// Highest stream sequence.
    pub last: u64,
}

impl std::fmt::Display for BlockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}-{}", self.table, self.first, self.last)
    }
}

/// A sealed block: the bytes a writer sends, and what the durability tracker and
/// audit need to know about them.
#[derive(Debug)]
pub struct SealedBlock {
    /// Destination table.
    pub table: Table,
    /// Shard that sealed it.
    pub shard: u16,
    /// Set on the last block of a seal group: every sequence the shard consumed up to
    /// this one is in this group or an earlier one (see `durable`).
    pub durable_through: Option<u64>,
    /// Rows in the block.
    pub rows: u32,
    /// Lowest stream sequence in the block.
    pub seq_min: u64,
    /// Highest stream sequence in the block.
    pub seq_max: u64,
    /// Earliest exchange time, Unix ms.
    pub timestamp_min_ms: i64,
    /// Latest exchange time, Unix ms.
    pub timestamp_max_ms: i64,
    /// Oldest receive stamp, Unix ms: the linger and the inserters wait from it.
    pub received_min_ms: i64,
    /// The rows' receive stamps, by ms after `received_min_ms`: each message's
    /// receive-to-durable is measured from its own.
    pub received_spread: ReceivedSpread,
    /// Size of the Native block before compression.
    pub raw_bytes: usize,
    /// How `bytes` is framed: a Data packet (compressed or not) or a Native file.
    pub format: BlockFormat,
    /// Compression of the Data packet (`None` for files and raw packets).
    pub compression: Option<Method>,
    /// Ready-to-send bytes.
    pub bytes: Vec<u8>,
}

/// Milliseconds of receive-time spread a sealed block keeps row by row.
pub const RECEIVED_SPREAD_MS: usize = 128;

/// How a block's rows spread over receive time: `rows_at[k]` rows were received `k` ms
/// after the block's oldest, the last slot counting every row received that late or
/// later. A writer then counts each message's own wait, to the millisecond, where
/// counting the oldest row's for all overstates most by up to the flush interval. A
/// row of the last slot counts as received at its start, which can only overstate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedSpread {
    rows_at: [u32; RECEIVED_SPREAD_MS],
}

impl Default for ReceivedSpread {
    fn default() -> Self {
        ReceivedSpread {
            rows_at: [0; RECEIVED_SPREAD_MS],
        }
    }
}

impl ReceivedSpread {
    /// Counts each receive stamp (Unix ms) of `received` by its ms after `oldest`.
    pub fn fill(&mut self, oldest: i64, received: impl IntoIterator<Item = i64>) {
        self.rows_at = [0; RECEIVED_SPREAD_MS];
        let last = RECEIVED_SPREAD_MS as i64 - 1;
        for ms in received {
            self.rows_at[ms.saturating_sub(oldest).clamp(0, last) as usize] += 1;
        }
    }

    /// `(ms after the oldest, rows)` of every slot holding rows, earliest first.
    pub fn slots(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        (0..).zip(self.rows_at).filter(|&(_, rows)| rows > 0)
    }

    /// Rows counted.
    pub fn rows(&self) -> u64 {
        self.rows_at.iter().map(|&r| u64::from(r)).sum()
    }
}

impl SealedBlock {
    /// `(ms after received_min_ms, rows)` for the block's rows: its spread, or every row
    /// at the oldest stamp when the spread does not account for them all (a block
    /// built without one): the old upper bound, never an understatement.
    pub fn waits(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        let whole = self.received_spread.rows() == u64::from(self.rows);
        let spread = whole.then(|| self.received_spread.slots());
        let oldest = (!whole && self.rows > 0).then_some((0, self.rows));
        spread.into_iter().flatten().chain(oldest)
    }

    /// The block's id in logs and the audit.
    pub fn id(&self) -> BlockId {
        BlockId {
            table: self.table.name(),
            first: self.seq_min,
            last: self.seq_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(rows: u32, received_min_ms: i64) -> SealedBlock {
        SealedBlock {
            table: Table::Ticks,
            shard: 0,
            durable_through: None,
            rows,
            seq_min: 1,
            seq_max: u64::from(rows),
            timestamp_min_ms: 0,
            timestamp_max_ms: 0,
            received_min_ms,
            received_spread: ReceivedSpread::default(),
            raw_bytes: 0,
            format: BlockFormat::Protocol,
            compression: None,
            bytes: Vec::new(),
        }
    }

    #[test]
    fn each_row_waits_from_its_own_receive_stamp_and_the_late_ones_from_the_last_slot() {
        let mut sealed = block(5, 1_000);
        sealed
            .received_spread
            .fill(1_000, [1_000, 1_003, 1_003, 1_127, 5_000]);
        let last = RECEIVED_SPREAD_MS as i64 - 1;
        assert_eq!(
            sealed.waits().collect::<Vec<_>>(),
            [(0, 1), (3, 2), (last, 2)],
            "127 ms and 4 s after the oldest both count as {last}: an overstatement, never less"
        );
        // Filled again (the block reused from the pool): nothing left of the first.
        sealed.rows = 2;
        sealed.received_spread.fill(2_000, [2_010, 2_000]);
        assert_eq!(sealed.waits().collect::<Vec<_>>(), [(0, 1), (10, 1)]);
    }

    #[test]
    fn a_spread_that_misses_rows_counts_every_row_at_the_oldest() {
        // Never filled: the block-oldest upper bound for all.
        let sealed = block(7, 1_000);
        assert_eq!(sealed.waits().collect::<Vec<_>>(), [(0, 7)]);
        // Filled with fewer rows than the block has: the same.
        let mut short = block(7, 1_000);
        short.received_spread.fill(1_000, [1_001, 1_002]);
        assert_eq!(short.waits().collect::<Vec<_>>(), [(0, 7)]);
        assert_eq!(
            block(0, 0).waits().count(),
            0,
            "an empty block has no waits"
        );
    }
}
