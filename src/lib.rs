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
//! - [`model`]: the plain `Copy` tick the hot path carries.
//! - [`receive`]: the blocking NATS / JetStream client the receiver runs on.
//! - [`shard`]: the columnar block builder for `market_ticks` (append, seal, encode, LZ4).
//! - [`native`]: the ClickHouse native-protocol client (pure codecs + one I/O file).
//! - [`migrate`]: schema migrations for ClickHouse and PostgreSQL (`migrate up/status/down`).
//! - [`ohlc`]: finished OHLC bars from `ohlc_1m`, rolled up to 5m/15m/1h/1d.
//! - [`feed`]: the load generator behind `alphapt-storage feed`.
//! - [`health`]: component probes behind `alphapt-storage health`.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]

pub mod config;
pub mod durable;
pub mod feed;
pub mod health;
pub mod migrate;
pub mod model;
pub mod native;
pub mod ohlc;
pub mod pipeline;
pub mod receive;
pub mod ring;
pub mod runtime;
pub mod shard;
pub mod write;
