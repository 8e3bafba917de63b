//! Sources: the receiver thread that takes messages in and routes each to the shard
//! that owns its instrument, keeping per-instrument order.
//!
//! ```text
//!   nats-server ──TCP──► nats::NatsConn ──ServerOp::Msg (borrowed)──► receiver ──Router──► frame ring[s] ──► shard[s]
//!               ◄── AckAll at the durable watermark ─────────────────────┘
//! ```
//!
//! - [`nats`]: a small blocking NATS client (zero-copy wire parser, JetStream API).
//! - [`partition`]: nats-server's partition function and the subject mapping that
//!   spreads instruments over partitions (DESIGN §8).
//! - [`position`]: which deliveries to route, pass over (stored, routed) or step over
//!   (gaps in the stream), from JetStream's delivery metadata.
//! - [`pulls`]: what open pull requests may still deliver, so overlapping pulls keep
//!   the window.
//! - [`receiver`]: the receiver loop over JetStream (acks at the watermark) or core NATS.
//! - [`synthetic`]: the built-in feed: realistic JSON ticks generated in-process at a
//!   fixed open-loop rate (for `make run`, demos and isolating the appliance in perf).

pub mod nats;
pub mod partition;
pub mod position;
pub mod pulls;
pub mod receiver;
pub mod synthetic;
