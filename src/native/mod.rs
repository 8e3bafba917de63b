//! ClickHouse native TCP protocol: the client the writers, `health` and `query` use.
//!
//! ```text
//!  pure (no sockets, no files)                                   I/O
//!  ┌────────────────────────────────────────────────────┐   ┌──────────────────────────┐
//!  │ wire      VarUInt, String, LE numbers              │   │ connection  one socket:  │
//!  │ types     type-name parser  "Array(Tuple(...))"    │──►│   handshake, ping,       │
//!  │ column    generic column codec (oracle, SELECTs)   │   │   SELECT, INSERT with    │
//!  │ block     BlockInfo + columns; protocol/file form  │   │   header check, timeouts │
//!  │ compress  checksummed LZ4/NONE frames              │   │ client   reconnect with  │
//!  │ merge     blocks of one header → one in key order  │   │   backoff + jitter       │
//!  │ protocol  Hello, Query, server packets             │   │                          │
//!  └────────────────────────────────────────────────────┘   └──────────────────────────┘
//! ```
//!
//! We announce revision [`protocol::CLIENT_REVISION`] (54429): the lowest at which
//! modern servers take settings as strings, below every packet added since 2020, so
//! 18.16 (54412) and 26.x exchange the same packet set (`docs/clickhouse-native-protocol.md`
//! §13.2). Everything is laid out for `N = min(ours, server's)`.

pub mod block;
pub mod client;
pub mod column;
pub mod compress;
pub mod connection;
pub mod merge;
pub mod protocol;
pub mod types;
pub mod wire;

pub use block::{Block, BlockFormat, Column};
pub use client::Client;
pub use column::{Value, Values};
pub use compress::Method;
pub use connection::{Connection, Options, QueryResult, ServerInfo};
pub use protocol::ServerException;
pub use types::ColumnType;

/// Everything that can go wrong talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed (refused, reset, EOF mid-packet).
    #[error("ClickHouse {op} failed: {source}; check that the server is up and reachable")]
    Io {
        /// What we were doing: connect, read, write.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// No answer within the configured timeout.
    #[error("ClickHouse {op} timed out after {timeout_ms} ms; the server is overloaded, stopped or unreachable")]
    Timeout {
        /// What we were doing.
        op: &'static str,
        /// The timeout in force.
        timeout_ms: u64,
    },
    /// The server answered with an exception; its message is the operator's best clue.
    #[error("{0}")]
    Server(ServerException),
    /// The byte stream does not follow the protocol; the connection is dropped.
    #[error("ClickHouse protocol error: {0}")]
    Protocol(String),
    /// A compression frame is corrupt (checksum, sizes, payload).
    #[error("corrupt compression frame from ClickHouse: {0}")]
    Frame(String),
    /// A column type this client does not encode or decode.
    #[error("ClickHouse type `{type_name}` is not supported: {reason}")]
    UnsupportedType {
        /// The type as written.
        type_name: String,
        /// Why.
        reason: String,
    },
    /// What we would send does not match what the table expects.
    #[error("schema mismatch: {0}")]
    SchemaMismatch(String),
    /// An INSERT cut mid-way is still running on the server: nothing may ask which
    /// blocks are stored until it ends (see [`Client`]).
    #[error("an INSERT cut mid-way (query id {query_id}) still runs on the server after {waited_ms} ms; retrying after it ends (the server's receive_timeout ends it at the latest)")]
    Unsettled {
        /// The cut INSERT's query id.
        query_id: String,
        /// How long this attempt waited.
        waited_ms: u64,
    },
    /// TLS could not be set up, or the handshake failed (certificate, protocol).
    #[error("ClickHouse TLS: {0}")]
    Tls(String),
    /// The connection failed earlier and is closed.
    #[error("ClickHouse connection was closed after an earlier failure; reconnect")]
    Broken,
}

impl Error {
    /// Maps an I/O error, turning the two timeout kinds into [`Error::Timeout`]
    /// (the timeout value is filled in by the connection, which knows it).
    pub fn io(op: &'static str, source: std::io::Error) -> Error {
        match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                Error::Timeout { op, timeout_ms: 0 }
            }
            _ => Error::Io { op, source },
        }
    }

    /// Whether trying the same work again on a new connection may succeed. A reset
    /// socket is retriable; a schema or type error is final for that block.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Io { .. }
            | Error::Timeout { .. }
            | Error::Protocol(_)
            | Error::Frame(_)
            | Error::Unsettled { .. }
            | Error::Broken => true,
            Error::Server(e) => e.is_retriable(),
            // A certificate or a TLS mismatch does not heal by itself; but a server
            // restarting with a new certificate might: retried like a refused connect.
            Error::Tls(_) => true,
            Error::UnsupportedType { .. } | Error::SchemaMismatch(_) => false,
        }
    }
}

impl Options {
    /// Options from the `[clickhouse]` section; `with_database` false connects to the
    /// server's default database (health, `migrate` creating the database).
    /// With `clickhouse.shards` set, the server of the first shard.
    pub fn from_config(config: &crate::config::Config, with_database: bool) -> Options {
        let (host, port) = config
            .clickhouse
            .targets()
            .into_iter()
            .next()
            .unwrap_or_else(|| (config.clickhouse.host.clone(), config.clickhouse.port));
        Options::from_config_at(config, with_database, &host, port)
    }

    /// [`Options::from_config`] for the server at `host:port` (one shard of a cluster):
    /// its TLS name is checked against `host` unless `tls_server_name` says otherwise.
    pub fn from_config_at(
        config: &crate::config::Config,
        with_database: bool,
        host: &str,
        port: u16,
    ) -> Options {
        let ch = &config.clickhouse;
        Options {
            host: host.to_owned(),
            port,
            database: if with_database {
                ch.database.clone()
            } else {
                String::new()
            },
            user: ch.username.clone(),
            password: ch.password.expose().to_string(),
            compression: match ch.compression {
                crate::config::Compression::Lz4 => Some(Method::Lz4),
                crate::config::Compression::None => None,
            },
            connect_timeout: std::time::Duration::from_millis(ch.connect_timeout_ms),
            io_timeout: std::time::Duration::from_millis(ch.io_timeout_ms),
            query_id_prefix: String::new(),
            tls: ch
                .tls_settings()
                .client("clickhouse", host)
                .map_err(|e| e.to_string())
                .transpose(),
        }
    }
}
