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
    /// Oldest receive stamp, Unix ms: receive-to-durable is measured from it.
    pub received_min_ms: i64,
    /// Size of the Native block before compression.
    pub raw_bytes: usize,
    /// How `bytes` is framed: a Data packet (compressed or not) or a Native file.
    pub format: BlockFormat,
    /// Compression of the Data packet (`None` for files and raw packets).
    pub compression: Option<Method>,
    /// Ready-to-send bytes.
    pub bytes: Vec<u8>,
}

impl SealedBlock {
    /// The block's id in logs and the audit.
    pub fn id(&self) -> BlockId {
        BlockId {
            table: self.table.name(),
            first: self.seq_min,
            last: self.seq_max,
        }
    }
}
