//! alphapt-storage: the storage appliance of the trading platform.
//!
//! ```text
//!                  ┌──────── hot path: one direction, bounded, no locks, no per-message allocation ────────┐
//!  NATS JetStream  │ receiver ──rtrb──► shard[0..S]: parse → validate → column builder ──rtrb──► writer[0..W] ├──► ClickHouse
//!                  │                                  seal → Native block + LZ4                    │    native TCP
//!                  └──────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Modules in flow order. What exists today:
//! - [`config`]: TOML + environment + `--set` flags, validated at load.
//! - [`model`]: the plain `Copy` tick the hot path carries, and the quality vocabulary
//!   (reject reasons, validation flags, score).
//! - [`shard`]: parse (JSON ticks, Kite binary packets) → validate (quality flags and
//!   score) → the columnar block builder for `market_ticks` (append, seal, encode, LZ4).
//! - [`native`]: the ClickHouse native-protocol client (pure codecs + one I/O file).
//! - [`health`]: component probes behind `alphapt-storage health`.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]

pub mod config;
pub mod health;
pub mod model;
pub mod native;
pub mod shard;
