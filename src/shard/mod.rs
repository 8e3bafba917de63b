//! Shards: parse, validate and build columnar blocks.
//!
//! ```text
//!   payload ──parse──► Tick + ParseInfo ──validate──► flagged Tick ──append──► TickColumns ──seal──► block
//!              └──► RejectReason (rejected_messages)
//! ```

pub mod columns;
pub mod parse;
pub mod rejects;
pub mod run;
pub mod signals;
pub mod validate;

pub use columns::{TickColumns, TickSchema};
