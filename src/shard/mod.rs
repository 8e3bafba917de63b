//! Shards: parse, validate and build columnar blocks. Today this holds the block
//! builder for `market_ticks`; the parsers and validators join it with the hot path.

pub mod columns;
pub mod rejects;

pub use columns::{SealedBlock, Table, TickColumns, TickSchema};
