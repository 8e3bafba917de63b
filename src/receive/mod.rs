//! Receiving from NATS. Today: the client the receiver thread will run on
//! ([`nats`]); the receiver loop and routing by instrument come next.
//!
//! ```text
//!   nats-server ──TCP──► nats::NatsConn ──ServerOp::Msg (borrowed)──► receiver (to come) ──rtrb──► shards
//! ```

pub mod nats;
