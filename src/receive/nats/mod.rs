//! A small blocking NATS and JetStream client over `std::net::TcpStream`, so the
//! receiver's hot path stays off async runtimes.
//!
//! ```text
//!   wire.rs       bytes ⇄ operations (pure: parser + encoders)
//!   conn.rs       NatsConn: socket, fixed read buffer, buffered writes, request/reply
//!   jetstream.rs  streams, durable pull consumers, pulls, acks, windowed publishing
//!   error.rs      NatsError: what failed and what to do
//! ```

pub mod conn;
pub mod error;
pub mod jetstream;
pub mod wire;

pub use conn::{NatsConn, Reply, ServerInfo};
pub use error::NatsError;
pub use jetstream::{
    parse_ack_subject, AckInfo, ConsumerInfo, ConsumerOutcome, ConsumerSpec, JetStream,
    PublishWindow, StreamInfo,
};
pub use wire::{Msg, ServerOp, WireError};
