//! Errors of the NATS client: each names what failed and what to do about it.

use std::net::SocketAddr;

use super::wire::WireError;

/// What went wrong talking to NATS or JetStream.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The URL cannot be used.
    #[error(
        "NATS URL {url:?} is unusable: {reason}; set nats.url or NATS_URL to nats://host:4222"
    )]
    BadUrl {
        /// The URL with any password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name does not resolve.
    #[error("cannot resolve NATS host {host:?}: {source}; check nats.url / NATS_URL")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// TCP connect failed or timed out.
    #[error("cannot connect to NATS at {address}: {source}; is nats-server running? check nats.url / NATS_URL")]
    Connect {
        /// The address tried.
        address: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The server refused us (`-ERR` during the handshake or later).
    #[error("NATS server said -ERR '{message}'; for authorization errors check the user and password in nats.url")]
    Server {
        /// The server's message.
        message: String,
    },
    /// The handshake went wrong in another way.
    #[error(
        "NATS handshake failed: {reason}; check that nats.url names a NATS client port (4222)"
    )]
    Handshake {
        /// What happened.
        reason: String,
    },
    /// A socket read or write failed.
    #[error("NATS socket {during} failed: {source}; the server is gone or unreachable, reconnect")]
    Io {
        /// `read`, `write`, or `flush`.
        during: &'static str,
        /// The socket error.
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("NATS server closed the connection; check its log (slow consumer, auth, max_payload) and reconnect")]
    Closed,
    /// The byte stream from the server cannot be parsed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// One operation needs more than the whole read buffer.
    #[error("a NATS operation does not fit the {bytes}-byte read buffer; the server's max_payload is larger than the client allows, lower it")]
    ReadBufferFull {
        /// The buffer size.
        bytes: usize,
    },
    /// We were asked to publish more than the server accepts.
    #[error("payload of {bytes} bytes for {subject:?} exceeds the server's max_payload of {max}; send smaller messages or raise max_payload in nats-server.conf")]
    PayloadTooLarge {
        /// The subject.
        subject: String,
        /// The payload size.
        bytes: usize,
        /// The server's limit.
        max: usize,
    },
    /// A subject or queue name that cannot go on a control line.
    #[error("invalid NATS subject {subject:?}: it must be non-empty printable ASCII without spaces or empty tokens")]
    BadSubject {
        /// The subject, lossily as text.
        subject: String,
    },
    /// No answer in time.
    #[error("no reply to {what} within {waited_ms} ms; check that nats-server runs with JetStream (-js) and is not overloaded")]
    Timeout {
        /// The request or wait that timed out.
        what: String,
        /// How long we waited.
        waited_ms: u64,
    },
    /// Nobody serves the subject (status 503).
    #[error("nobody answers on {subject:?}: JetStream is off (start nats-server with -js) or no stream captures this subject")]
    NoResponders {
        /// The subject of the request.
        subject: String,
    },
    /// The JetStream API refused a request.
    #[error("JetStream refused {request}: {description} (code {code}, err_code {err_code})")]
    Api {
        /// The API subject.
        request: String,
        /// HTTP-like status code.
        code: u16,
        /// JetStream's specific error code (e.g. 10059 stream not found).
        err_code: u32,
        /// The server's description.
        description: String,
    },
    /// A JetStream answer we cannot understand.
    #[error("unexpected JetStream answer to {request}: {reason}; check the server version (2.9 or later)")]
    BadResponse {
        /// The API subject.
        request: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// `nats.ack_policy = none` on a stream that removes messages once delivered or
    /// acknowledged: nothing would keep what a crash left unstored.
    #[error("stream {stream} has {retention} retention, but nats.ack_policy = \"none\" needs limits retention: a {retention} stream drops each message once delivered to an AckNone consumer, so a crash before it is stored would lose it; set nats.ack_policy = \"all\", or use a stream with limits retention")]
    AckNoneNeedsLimits {
        /// The stream name.
        stream: String,
        /// Its retention policy.
        retention: String,
    },
    /// An existing stream does not match what we need.
    #[error("stream {stream} exists with subjects {found:?}, not {wanted:?}; delete it (nats stream rm {stream}) or fix nats.subject_ticks")]
    StreamMismatch {
        /// The stream name.
        stream: String,
        /// Its subjects on the server.
        found: Vec<String>,
        /// The subjects we asked for.
        wanted: Vec<String>,
    },
    /// After a reconnect the stream has another creation time: it was deleted and
    /// created again while we were away, and its sequences started over.
    #[error("stream {stream} was created again while we were disconnected (created at {created_ms} ms, was {was_ms} ms): its sequences started over and no longer match what this run routed; restart the appliance, which then reads what is stored of the new stream")]
    StreamRecreated {
        /// The stream name.
        stream: String,
        /// Its creation time now, Unix ms.
        created_ms: i64,
        /// Its creation time at the first session, Unix ms.
        was_ms: i64,
    },
    /// A delivery came out of the order the position tracking relies on (a consumer
    /// sequence skipped, or a redelivery above what was routed): the session restarts
    /// delivery at the ack floor; nothing is routed twice.
    #[error("JetStream delivery of stream sequence {got} came out of order (expected {expected}, consumer sequence {consumer_seq}); restarting delivery at the ack floor")]
    OutOfOrder {
        /// The next sequence expected.
        expected: u64,
        /// The stream sequence delivered.
        got: u64,
        /// Its consumer sequence.
        consumer_seq: u64,
    },
    /// The store could not be read at start, so the resume position is unknown.
    #[error("cannot read what ClickHouse already holds of stream {stream}: {reason}; delivery does not start until it is known: check ClickHouse (clickhouse.host/port) and that `migrate up` ran")]
    StoreUnreadable {
        /// The stream name.
        stream: String,
        /// The ClickHouse error.
        reason: String,
    },
    /// An ack reply subject longer than the receiver keeps: it could never be acked.
    #[error("JetStream ack subject of {bytes} bytes is longer than the {max} the receiver keeps, so nothing could ever be acknowledged: shorten nats.durable and the stream names")]
    AckSubjectTooLong {
        /// Its length.
        bytes: usize,
        /// The most kept.
        max: usize,
    },
    /// Another client pulls from the durable: two appliances on one durable would
    /// acknowledge each other's messages (AckAll covers every sequence below).
    #[error("another client is pulling from durable {durable} of stream {stream} ({waiting} pull requests waiting): two appliances on one durable acknowledge each other's messages, so this one does not start; stop the other, or give this one another partition (nats.partition_ids) or its own nats.durable and database")]
    DurableInUse {
        /// The stream name.
        stream: String,
        /// The durable name.
        durable: String,
        /// Pull requests the server held for the other client.
        waiting: u64,
    },
    /// After a reconnect the stream ends below what this run already routed.
    #[error("stream {stream} now ends at sequence {last_seq}, below the {routed_through} this run already routed: it was deleted or purged and recreated while we were disconnected, so its sequences no longer match what is stored; find out who recreated it, then restart the appliance")]
    StreamReset {
        /// The stream name.
        stream: String,
        /// Its last sequence now.
        last_seq: u64,
        /// The highest sequence routed before the reconnect.
        routed_through: u64,
    },
}
