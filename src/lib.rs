//! alphapt-storage: the storage appliance of the trading platform.
//!
//! ```text
//!                ┌────────── hot path: one direction, bounded, no locks, no per-message allocation ──────────┐
//! NATS JetStream │ receiver ──frame ring──► shard[s]: parse → validate → append ──sealed ring──► writer[w] ├──► ClickHouse
//! (or core NATS) │ (receive)   (ring)       (shard: parse, validate, columns, rejects)  ◄─free ring─ (write) │    native TCP, LZ4
//!                └───────────────────────────────────────────────────────────────┬──────────────┬───────────┘
//!                                                     ClickHouse away: spill journal ◄┘ (writer-<w>) │ replay when back
//!  JetStream AckAll ◄── receiver ◄── durable watermark (durable) ◄── writers: INSERTed or spill-synced ┘
//!
//!  slow path: PostgreSQL instruments ──load + LISTEN──► refdata thread ──reference queue[s]──► shard[s] validator
//! ```
//!
//! Two things travel against the flow, each on its own single-writer path: the
//! durable watermark (writers → receiver) and reference data (refdata → shards).
//!
//! `config`, `model` and `runtime` are the leaves: stages import them, they import no
//! stage. Stages hand data on through `model`'s hand-off types (`SealedBlock`, `Table`,
//! `Reference`) and the rings; `app` (the composition root) and `pipeline` (the hot
//! path's rings, pools and threads) alone wire stages together.
//!
//! Modules in flow order:
//! - [`config`]: TOML + environment + `--set` flags, validated at load.
//! - [`model`]: the plain `Copy` tick (fixed-point prices), the quality vocabulary
//!   (reject reasons, validation flags, score), JSON output, a synthetic generator, and
//!   the hand-off types between stages (sealed blocks, reference data).
//! - [`receive`]: the receiver thread: a blocking NATS/JetStream client, routing by the
//!   token in the subject, acks at the durable watermark; and the built-in synthetic feed.
//! - [`ring`]: the receiver → shard byte ring of message frames.
//! - [`shard`]: parse (JSON, Kite binary) → validate → column builders for
//!   `market_ticks` and `rejected_messages` → seal (Native + LZ4), the shard loop.
//! - [`write`](mod@write): writer threads INSERTing sealed blocks, retrying with backoff.
//! - [`durable`]: the durable watermark the receiver acks at, and (`durable::stored`)
//!   what the store holds at start, which decides where JetStream delivery resumes.
//! - [`spill`]: the journal of sealed blocks in mmap'd, checksummed segment files
//!   (format pure; journal with the crate's only unsafe code, the mapping).
//! - [`pipeline`]: wiring of the hot path's rings, pools and threads; its drain.
//! - [`app`]: the composition root of `run`: start order, drain order, and the one
//!   stats snapshot the status line, the summary and metrics read.
//! - [`refdata`]: the slow-path thread that loads instrument reference data (tick
//!   size, circuit limits) from PostgreSQL and follows its changes into the shards.
//! - [`native`]: the ClickHouse native-protocol client (pure codecs + one I/O file).
//! - [`runtime`]: named, pinned threads, the wait strategies, the stop-and-deadline
//!   alert, the backoff, the clock, crash points for fault tests, and the sizes every
//!   stage agrees on (shard routing, pool size).
//! - [`migrate`]: schema migrations for ClickHouse and PostgreSQL (`migrate up/status/down`).
//! - [`ohlc`]: finished OHLC bars from `ohlc_1m`, rolled up to 5m/15m/1h/1d.
//! - [`feed`]: the load generator behind `alphapt-storage feed`.
//! - [`health`]: component probes behind `alphapt-storage health`.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]

pub mod app;
pub mod audit;
pub mod cache;
pub mod config;
pub mod control;
pub mod durable;
pub mod feed;
pub mod health;
pub mod migrate;
pub mod model;
pub mod native;
pub mod ohlc;
pub mod pipeline;
pub mod quality;
pub mod query;
pub mod receive;
pub mod refdata;
pub mod ring;
pub mod runtime;
pub mod shard;
pub mod spill;
pub mod tls;
pub mod write;
