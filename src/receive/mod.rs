//! Sources: the receiver thread that takes messages in and routes each to the shard
//! that owns its instrument, keeping per-instrument order.
//!
//! ```text
//!   source ──(subject → token → shard)──► Router ──frame ring[s]──► shard[s]
//!          ◄── watermark (acks upstream) ──┘
//! ```
//!
//! - [`synthetic`]: the built-in feed: realistic JSON ticks generated in-process at a
//!   fixed open-loop rate (for `make run`, demos and isolating the appliance in perf).

pub mod synthetic;
