//! Configuration: defaults ← TOML file ← environment ← `--set` overrides, then validation.
//!
//! ```text
//!   Config::default()            every key has a default, so an empty file is valid
//!         ▲ overridden by
//!   tuning/*.toml (--config)     [section] key = value; unknown keys refused
//!         ▲ overridden by
//!   environment                  the platform's names: CLICKHOUSE_PORT, REDIS_URL, ...
//!         ▲ overridden by
//!   --set section.key=value      repeated flag; same keys as the file
//!         │
//!         ▼
//!   serde (path-tracking) ──► Config ──► Config::validate(host_cores) ──► Ok(Config)
//! ```
//!
//! The layers are merged as TOML tables: the file is parsed into a table, every
//! environment variable and `--set` value is converted to its key's TOML type and written
//! into that table at its dotted key, and the result is deserialized once with
//! `serde_path_to_error`, so an unknown key or a wrong type is reported with its full
//! dotted path (`ingest.block_rowz`) and the layer it came from.
//!
//! Environment variables and the keys they set:
//!
//! | variable | key | note |
//! | --- | --- | --- |
//! | `CLICKHOUSE_HOST` | `clickhouse.host` | |
//! | `CLICKHOUSE_PORT` | `clickhouse.port` | 1-65535 |
//! | `CLICKHOUSE_DATABASE` | `clickhouse.database` | |
//! | `CLICKHOUSE_USERNAME` | `clickhouse.username` | |
//! | `CLICKHOUSE_PASSWORD` | `clickhouse.password` | secret; empty means no password |
//! | `REDIS_URL` | `redis.url` | |
//! | `REDIS_PASSWORD` | `redis.password` | secret; empty means no password |
//! | `REDIS_MAX_CONNECTIONS` | `redis.max_connections` | |
//! | `MARKET_DATA_BATCH_SIZE` | `ingest.block_rows_max` | rows |
//! | `MARKET_DATA_FLUSH_INTERVAL` | `ingest.flush_interval_ms` | given in **seconds**, may be fractional (`0.5` → 500 ms) |
//! | `MARKET_DATA_BUFFER_SIZE` | `ingest.ring_slots` | |
//! | `ENABLE_COMPRESSION` | `clickhouse.compression` | `true/false/1/0/yes/no/on/off`; false → `none` |
//! | `COMPRESSION_METHOD` | `clickhouse.compression` | `lz4` or `none`; anything else is refused |
//! | `NATS_URL` | `nats.url` | |
//! | `POSTGRES_URL` | `postgres.url` | may hold a password; shown redacted |
//! | `ALPHAPT_HTTP_ADDR` | `http.addr` | `IP:PORT` |
//! | `CLICKHOUSE_PASSWORD_FILE` | `clickhouse.password_file` | a file holding the password |
//! | `REDIS_PASSWORD_FILE` | `redis.password_file` | a file holding the password |
//! | `POSTGRES_PASSWORD_FILE` | `postgres.password_file` | a file holding the password |
//!
//! Passwords can come from files (`*_file` keys, the `*_PASSWORD_FILE` variables), and
//! under systemd from its credentials: with `$CREDENTIALS_DIRECTORY` set, a credential
//! named `clickhouse_password`, `redis_password` or `postgres_password` is read when no
//! password or file is configured (see `secret_files`).
//!
//! A variable set to the empty string counts as unset, except the two passwords, where
//! empty means "no password". `ENABLE_COMPRESSION=true` with no `COMPRESSION_METHOD`
//! means `lz4`; `ENABLE_COMPRESSION=true` with `COMPRESSION_METHOD=none` is refused as a
//! contradiction.
//!
//! `--set` values take the type of the key's default: `--set ingest.shards=2` is an integer,
//! `--set redis.key_prefix=7` a string, `--set threads.shard_cores=2,3` a list of cores.
//! An empty value resets a non-string key to its default (`--set threads.receiver_core=`).
//! Do not pass passwords with `--set`: the process list shows them. Use the environment.

#![forbid(unsafe_code)]

mod env;
mod error;
mod layer;
mod secret;
mod secret_files;
mod validate;
mod validation;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use error::ConfigError;
pub use secret::{redact_url, remember, scrub, scrub_with, url_secrets, Secret, REDACTED};
pub use validate::{
    BLOCK_ROWS_MAX, DURATION_MS_MAX, FETCH_BATCH_MAX, PARK_TIMEOUT_US_MAX, PAYLOAD_BYTES_MAX,
    REDIS_CONNECTIONS_MAX, RING_SLOTS_MAX, SHARDS_MAX, WAIT_STEPS_MAX, WRITERS_MAX,
};
pub use validation::{FieldSet, ValidationConfig, ValidationConfigError, INSTRUMENTS_MAX_LIMIT};

/// The whole configuration of the appliance, one section per table in the TOML file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where sealed blocks are INSERTed: the ClickHouse native-protocol endpoint.
    pub clickhouse: ClickHouseConfig,
    /// Where ticks and signals come from: NATS JetStream (or core NATS) streams and subjects.
    pub nats: NatsConfig,
    /// The slow-path hot cache of latest ticks, OHLC and signals.
    pub redis: RedisConfig,
    /// The slow-path store of reference data and block audit records.
    pub postgres: PostgresConfig,
    /// Sizes and times of the hot path: rings, blocks, shards, writers, drain.
    pub ingest: IngestConfig,
    /// Thresholds of the shards' tick checks (DESIGN §4): clock skew, staleness, price
    /// jumps, quantities, and the instruments each shard tracks.
    pub validation: ValidationConfig,
    /// Which core each thread runs on, and how threads wait on empty rings.
    pub threads: ThreadsConfig,
    /// The control-plane HTTP listener (`/metrics`, `/health`, `/quality`).
    pub http: HttpConfig,
    /// The on-disk spill of blocks that ClickHouse cannot take right now.
    pub spill: SpillConfig,
    /// Logs on stderr: level and format.
    pub log: LogConfig,
    /// What loading found worth a warning but not a refusal (a secret file others can
    /// read): logged once logging is set up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` text, one event a line, for people and grep.
    #[default]
    Text,
    /// One JSON object a line (timestamp, level, message, fields, spans), for a log
    /// shipper.
    Json,
}

/// Logs on stderr.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Which events are written, as `RUST_LOG` directives (`info`,
    /// `warn,alphapt_storage=debug`); `RUST_LOG`, when set, wins.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Block compression on the ClickHouse native protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// LZ4 frames with ClickHouse's CityHash checksum: ~3-5x smaller ticks for little CPU.
    #[default]
    Lz4,
    /// Uncompressed blocks: for debugging the wire, or a loopback ClickHouse.
    None,
}

/// How ticks are taken off NATS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A durable JetStream pull consumer, acknowledged only once a block is durable: nothing lost.
    #[default]
    Jetstream,
    /// Plain core-NATS subscriptions: at most once; a full ring drops and counts.
    Core,
}

/// What a thread does when its input ring is empty (DESIGN §1, "Wait strategies").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitStrategy {
    /// Busy-poll with a pause hint: lowest latency, burns the whole core; for pinned hosts.
    Spin,
    /// `thread::yield_now` in a loop: lets other threads run, still ~100% CPU.
    Yield,
    /// Park with `threads.park_timeout_us`: no CPU while idle, ~50-100 µs wake-up.
    Park,
    /// Spin `spin_count` times, then yield `yield_count` times, then park: for shared cores.
    #[default]
    Hybrid,
}

/// The I/O priority class of the writer threads, whose journal appends and `fdatasync`
/// are what acknowledgement waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriterIoClass {
    /// The realtime class (level 4): the block layer serves the writers' writes and
    /// flushes before every best-effort request queued, so the kernel's writeback of
    /// other processes' files does not hold a group commit. Needs CAP_SYS_NICE (or
    /// CAP_SYS_ADMIN); without it the writers keep the process's class, with one warning.
    Realtime,
    /// The process's class, whatever it was started with (`ionice`, systemd
    /// `IOSchedulingClass`). The default: on the test VM the realtime class made no
    /// difference beyond the noise (perf/README), and it needs a capability.
    #[default]
    Inherit,
}

/// The ClickHouse server that sealed blocks are INSERTed into (native TCP protocol).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// Host name or IP address of the server, without scheme or port.
    pub host: String,
    /// Native-protocol TCP port (9000 plain; 9440 is usually TLS).
    pub port: u16,
    /// Database that holds the tick and signal tables.
    pub database: String,
    /// User the writers log in as.
    pub username: String,
    /// Password for `username`; empty for none.
    pub password: Secret,
    /// A file holding the password (one line; a trailing newline is dropped), read at
    /// start instead of `password`: for secrets kept out of config and environment.
    pub password_file: String,
    /// TLS to the server's secure native port (`tcp_port_secure`, often 9440).
    pub tls: bool,
    /// PEM file of the CA to trust; empty: the system's roots.
    pub tls_ca_file: String,
    /// PEM client certificate, for a server that asks for one; empty: none.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// The name the server's certificate must carry; empty: `host`.
    pub tls_server_name: String,
    /// Compression of the blocks on the wire.
    pub compression: Compression,
    /// Longest wait for a TCP connect plus handshake, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest wait for one socket read or write during an INSERT, in milliseconds.
    pub io_timeout_ms: u64,
    /// First delay before reconnecting after a failure, in milliseconds; doubles each try.
    pub backoff_initial_ms: u64,
    /// Ceiling of the reconnect delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Interval between pings on an idle connection, in milliseconds.
    pub ping_interval_ms: u64,
    /// Days of raw rows kept by the tables' TTL (modern servers; `migrate up` writes it
    /// into the schema).
    pub retention_days: u32,
    /// A sharded ClickHouse cluster (DESIGN §8): one list per shard, each of its
    /// replicas' `host:port` (the writer fails over between them; more than one makes
    /// `migrate up` create `ReplicatedMergeTree` tables). Each instrument's rows go
    /// to shard `intHash64(instrument_token) % shards`, as a `Distributed` table over
    /// them reads. Empty: the one server at `host:port`. In a `--set` or the
    /// environment: shards separated by `;`, a shard's servers by `,`.
    pub shards: Vec<Vec<String>>,
}

/// Most ClickHouse shards in `clickhouse.shards`.
pub const CLICKHOUSE_SHARDS_MAX: usize = 64;
/// Most servers listed for one shard.
pub const CLICKHOUSE_REPLICAS_MAX: usize = 8;

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 9000,
            database: "alphapt".to_owned(),
            username: "default".to_owned(),
            password: Secret::default(),
            password_file: String::new(),
            tls: false,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_server_name: String::new(),
            compression: Compression::Lz4,
            connect_timeout_ms: 2_000,
            io_timeout_ms: 30_000,
            backoff_initial_ms: 50,
            backoff_max_ms: 5_000,
            ping_interval_ms: 10_000,
            retention_days: 90,
            shards: Vec::new(),
        }
    }
}

/// The NATS server, the JetStream streams and the durable consumer ticks are read from.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL, `nats://` or `tls://`; may embed `user:password@` (shown redacted).
    pub url: String,
    /// JetStream (durable, acknowledged) or core NATS (at most once).
    pub source: Source,
    /// JetStream stream that holds market ticks.
    pub stream_ticks: String,
    /// JetStream stream that holds strategy signals.
    pub stream_signals: String,
    /// Subject filter for market ticks.
    pub subject_ticks: String,
    /// Subject filter for strategy signals.
    pub subject_signals: String,
    /// Name of the durable pull consumer on both streams.
    pub durable: String,
    /// Most messages asked for in one JetStream pull request.
    pub fetch_batch_max: u32,
    /// Time JetStream waits for an ack before redelivering, in milliseconds.
    pub ack_wait_ms: u64,
    /// Most unacknowledged messages in flight; 0 means derived from ring and block sizes at start.
    pub max_ack_pending: u32,
    /// The JetStream consumer's ack policy: `none` (the default: never acknowledged; the
    /// store alone decides where delivery resumes) or `all` (acknowledged at the durable
    /// watermark).
    pub ack_policy: AckPolicy,
    /// Most bytes a stream the appliance (or `feed`) creates may hold, oldest messages
    /// discarded past it; 0 = unlimited. Applies at creation only: an existing stream
    /// keeps its own limits.
    pub stream_max_bytes: u64,
    /// TLS after the server's INFO (a `tls://` URL turns it on too).
    pub tls: bool,
    /// PEM file of the CA to trust; empty: the system's roots.
    pub tls_ca_file: String,
    /// PEM client certificate, for a server that verifies clients; empty: none.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// The name the server's certificate must carry; empty: the URL's host.
    pub tls_server_name: String,
    /// Subject partitions (DESIGN §8): 0 = off; N = nats-server maps
    /// `<prefix>.<exchange>.<token>` over N partitions by token (`alphapt-storage
    /// partitions N` prints the mapping) and this appliance consumes only its own.
    pub partitions: u32,
    /// The partitions this appliance consumes: per partition and stream a durable
    /// consumer `<durable>-p<id>` filtering `<prefix>.<id>.*.*`, with a receiver thread
    /// and a group of `ingest.shards / len` shards of its own.
    pub partition_ids: Vec<u32>,
}

/// Longest suffix a partition adds to the durable name: `-p1023`.
pub const PARTITION_SUFFIX_BYTES_MAX: usize = 6;

impl NatsConfig {
    /// The first partition this appliance serves, when partitions are on.
    #[must_use]
    pub fn partition(&self) -> Option<u32> {
        self.served().first().copied().flatten()
    }

    /// What this appliance consumes, one entry per consumer of a stream: its
    /// partitions, or `[None]` (the whole stream) without partitions.
    #[must_use]
    pub fn served(&self) -> Vec<Option<u32>> {
        if self.partitions == 0 || self.partition_ids.is_empty() {
            return vec![None];
        }
        self.partition_ids.iter().copied().map(Some).collect()
    }

    /// The durable consumer's name: `durable`, or `<durable>-p<id>` for the first
    /// partition.
    #[must_use]
    pub fn durable_name(&self) -> String {
        self.durable_of(self.partition())
    }

    /// The durable consumer's name for `partition`: `durable`, or `<durable>-p<id>`.
    #[must_use]
    pub fn durable_of(&self, partition: Option<u32>) -> String {
        match partition {
            Some(id) => format!("{}-p{id}", self.durable),
            None => self.durable.clone(),
        }
    }

    /// The filter subject of the first partition's consumer on a stream of `subject`
    /// (`market.ticks.>` → `market.ticks.<id>.*.*`); `None` without partitions or for
    /// a subject the mapping cannot take (refused when the config is validated).
    #[must_use]
    pub fn filter_subject(&self, subject: &str) -> Option<String> {
        self.filter_of(subject, self.partition())
    }

    /// [`NatsConfig::filter_subject`] for `partition`.
    #[must_use]
    pub fn filter_of(&self, subject: &str, partition: Option<u32>) -> Option<String> {
        let id = partition?;
        let mapping = crate::receive::partition::Mapping::new(subject, self.partitions).ok()?;
        Some(mapping.filter_subject(id))
    }
}

/// How the JetStream consumer acknowledges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// AckAll at the durable watermark: the ack floor is a fast lower bound for the
    /// resume point, and JetStream redelivers what was never acknowledged. The one to
    /// use on a work-queue or interest stream, or where operators follow progress in
    /// `nats consumer info`.
    All,
    /// AckNone, the default: nats-server keeps no pending set (0.82-0.86x of its CPU
    /// per message under AckAll, `perf/ack_policy.rs`; on this box its CPU is the
    /// largest share of a run), and nothing is lost because the store, not the
    /// server, decides where delivery resumes: the resume point is read from the
    /// store above a local durable mark in `spill.dir` (`durable::mark`), or the
    /// whole store without one. Needs a stream with limits retention (a work-queue or
    /// interest stream would drop each message at delivery: refused at start).
    #[default]
    None,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            source: Source::Jetstream,
            stream_ticks: "MARKET_TICKS".to_owned(),
            stream_signals: "STRATEGY_SIGNALS".to_owned(),
            subject_ticks: "market.ticks.>".to_owned(),
            subject_signals: "strategy.signals.>".to_owned(),
            durable: "alphapt-storage".to_owned(),
            fetch_batch_max: 1_000,
            ack_wait_ms: 30_000,
            max_ack_pending: 0,
            ack_policy: AckPolicy::None,
            stream_max_bytes: 0,
            tls: false,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_server_name: String::new(),
            partitions: 0,
            partition_ids: Vec::new(),
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("source", &self.source)
            .field("stream_ticks", &self.stream_ticks)
            .field("stream_signals", &self.stream_signals)
            .field("subject_ticks", &self.subject_ticks)
            .field("subject_signals", &self.subject_signals)
            .field("durable", &self.durable)
            .field("fetch_batch_max", &self.fetch_batch_max)
            .field("ack_wait_ms", &self.ack_wait_ms)
            .field("max_ack_pending", &self.max_ack_pending)
            .field("ack_policy", &self.ack_policy)
            .field("stream_max_bytes", &self.stream_max_bytes)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("partitions", &self.partitions)
            .field("partition_ids", &self.partition_ids)
            .finish()
    }
}

/// The Redis hot cache written by the slow path.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server URL, `redis://` or `rediss://`; may embed `:password@` (shown redacted).
    pub url: String,
    /// Password sent with AUTH when the URL holds none; empty for none.
    pub password: Secret,
    /// A file holding the password, read at start instead of `password`.
    pub password_file: String,
    /// TLS (a `rediss://` URL turns it on too).
    pub tls: bool,
    /// PEM file of the CA to trust; empty: the system's roots.
    pub tls_ca_file: String,
    /// PEM client certificate, for a server with `tls-auth-clients yes`; empty: none.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// Most connections the slow-path thread opens.
    pub max_connections: u32,
    /// Text put before every key this appliance writes; empty for none.
    pub key_prefix: String,
    /// Whether the Redis thread runs; off, the shards keep no cache state.
    pub enabled: bool,
    /// How often the Redis thread writes what changed, ms.
    pub flush_interval_ms: u64,
    /// Entries kept in each `tick:{token}:history` sorted set.
    pub history_len: u32,
    /// Instruments each shard keeps cache state for; more are counted, not cached.
    pub instruments_max: u32,
    /// (strategy, instrument) pairs each shard keeps the latest signal of.
    pub signals_max: u32,
    /// Wrap the token in `{}` so all keys of one instrument share a Redis Cluster slot.
    pub hash_tags: bool,
    /// `url` is one node of a Redis Cluster: commands go to the master owning each
    /// key's slot, following MOVED/ASK (needs `hash_tags`).
    pub cluster: bool,
    /// Expiry of `tick:` keys and histories, s; 0 for none.
    pub tick_ttl_s: u64,
    /// Expiry of `ohlc:` keys, s; 0 for none.
    pub ohlc_ttl_s: u64,
    /// Expiry of `signal:` keys, s; 0 for none.
    pub signal_ttl_s: u64,
    /// Expiry of `instrument:` keys, s; 0 for none.
    pub instrument_ttl_s: u64,
    /// Connect, read and write timeout of the Redis connection, ms.
    pub timeout_ms: u64,
    /// First reconnect delay after a failure, ms (full jitter, doubling).
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, ms.
    pub backoff_max_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            password: Secret::default(),
            password_file: String::new(),
            tls: false,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            max_connections: 4,
            key_prefix: String::new(),
            enabled: true,
            flush_interval_ms: 5,
            history_len: 100,
            instruments_max: 8_192,
            signals_max: 4_096,
            hash_tags: false,
            cluster: false,
            tick_ttl_s: 86_400,
            ohlc_ttl_s: 86_400,
            signal_ttl_s: 86_400,
            instrument_ttl_s: 604_800,
            timeout_ms: 1_000,
            backoff_initial_ms: 50,
            backoff_max_ms: 5_000,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("max_connections", &self.max_connections)
            .field("key_prefix", &self.key_prefix)
            .field("enabled", &self.enabled)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("history_len", &self.history_len)
            .field("instruments_max", &self.instruments_max)
            .field("signals_max", &self.signals_max)
            .field("hash_tags", &self.hash_tags)
            .field("cluster", &self.cluster)
            .field("tick_ttl_s", &self.tick_ttl_s)
            .field("ohlc_ttl_s", &self.ohlc_ttl_s)
            .field("signal_ttl_s", &self.signal_ttl_s)
            .field("instrument_ttl_s", &self.instrument_ttl_s)
            .field("timeout_ms", &self.timeout_ms)
            .field("backoff_initial_ms", &self.backoff_initial_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .finish()
    }
}

/// The PostgreSQL database of reference data and audit records.
///
/// The reference-data thread (`refdata`) connects with these settings; while
/// PostgreSQL is away it retries with full-jitter backoff between
/// `backoff_initial_ms` and `backoff_max_ms`, and the hot path runs on without it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, `postgres://` or `postgresql://`; may embed a password (shown redacted).
    pub url: String,
    /// A file holding the password, read at start and put into `url` (which must name
    /// a user and hold no password of its own).
    pub password_file: String,
    /// TLS required, the certificate verified for the URL's host (verify-full).
    pub tls: bool,
    /// PEM file of the CA to trust; empty: the system's roots.
    pub tls_ca_file: String,
    /// PEM client certificate, for `hostssl ... cert` in pg_hba.conf; empty: none.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// Longest wait for a TCP connect plus startup and authentication, in milliseconds.
    pub connect_timeout_ms: u64,
    /// First ceiling of the reconnect delay after a failure, in milliseconds; doubles each try.
    pub backoff_initial_ms: u64,
    /// Largest reconnect delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// How often the running appliance writes a `quality_snapshots` row (the quality
    /// report of the ticks received since the last one), in milliseconds; 0: never.
    pub quality_snapshot_interval_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            password_file: String::new(),
            tls: false,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            connect_timeout_ms: 2_000,
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
            quality_snapshot_interval_ms: 60_000,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("backoff_initial_ms", &self.backoff_initial_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field(
                "quality_snapshot_interval_ms",
                &self.quality_snapshot_interval_ms,
            )
            .finish()
    }
}

/// Sizes and times of the hot path.
///
/// Back-of-envelope for the defaults: a block of 65,536 rows × ~300 B ≈ 19 MiB; at
/// 100 k ticks/s that is ~0.65 s of data, so blocks seal on age (10 ms, ~1,000 rows)
/// below ~2.6 M ticks/s: the oldest tick of a block waits at most that for its journal
/// sync (journal-first), and the inserter, not the block size, sets ClickHouse's parts.
/// A ring of 65,536 slots holds ~0.65 s of ticks at 100 k ticks/s before the receiver
/// has to wait.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Rows at which a shard seals its open block (one block is one INSERT).
    pub block_rows_max: u32,
    /// Age at which a shard seals a non-empty block regardless of its rows, in milliseconds.
    pub flush_interval_ms: u64,
    /// Slots in each receiver→shard ring; a power of two.
    pub ring_slots: u32,
    /// Largest NATS message accepted, in bytes; larger ones are rejected and counted.
    pub payload_bytes_max: u32,
    /// Number of shard threads (parse, validate, build blocks); instruments are split among them.
    pub shards: u16,
    /// Number of writer threads, each with one ClickHouse connection.
    pub writers: u16,
    /// Longest time a drain (SIGTERM) waits for open blocks to become durable, in milliseconds.
    pub drain_timeout_ms: u64,
    /// How long a writer may hold sealed blocks, counted from the oldest message in
    /// them, to gather more into one INSERT (fewer, larger parts); 0 = INSERT at once.
    /// Cut to `flush_interval_ms` when longer.
    pub insert_linger_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            block_rows_max: 65_536,
            flush_interval_ms: 10,
            ring_slots: 65_536,
            payload_bytes_max: 1_048_576,
            shards: 1,
            writers: 1,
            drain_timeout_ms: 10_000,
            insert_linger_ms: 1_000,
        }
    }
}

/// Core pinning and wait strategy of the threads (DESIGN §1, roles).
///
/// With `pin = false` every core list may be empty and is ignored; with `pin = true` the
/// receiver must have a core, and the shard and writer lists must name one core per
/// thread, each of which must exist on the host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThreadsConfig {
    /// Whether threads are pinned to the cores below.
    pub pin: bool,
    /// Core of the NATS receiver thread; required when pinning.
    pub receiver_core: Option<usize>,
    /// Core of each shard thread, one per shard, in shard order.
    pub shard_cores: Vec<usize>,
    /// Core of each writer thread, one per writer, in writer order.
    pub writer_cores: Vec<usize>,
    /// Core of the Redis and PostgreSQL slow-path threads; unpinned when absent.
    pub slow_core: Option<usize>,
    /// What a hot thread does when its ring is empty.
    pub wait: WaitStrategy,
    /// Spins with a pause hint before a hybrid wait starts yielding.
    pub spin_count: u32,
    /// Yields before a hybrid wait starts parking.
    pub yield_count: u32,
    /// Longest single park of a park or hybrid wait, in microseconds.
    pub park_timeout_us: u64,
    /// Nice value of the hot-path threads (receivers, shards, writers), -20 to 19; the
    /// slow-path threads keep the process's. Below 0 needs RLIMIT_NICE or CAP_SYS_NICE;
    /// without it the threads run at the process's value, with one warning.
    pub hot_nice: i32,
    /// I/O priority class of the writer threads (journal appends and syncs).
    pub writer_io_class: WriterIoClass,
}

impl Default for ThreadsConfig {
    /// No pinning; hybrid wait of 100 spins, 10 yields, then 1 ms parks; hot threads
    /// at nice -10; writers in the process's I/O class.
    fn default() -> Self {
        Self {
            pin: false,
            receiver_core: None,
            shard_cores: Vec::new(),
            writer_cores: Vec::new(),
            slow_core: None,
            wait: WaitStrategy::Hybrid,
            spin_count: 100,
            yield_count: 10,
            park_timeout_us: 1_000,
            hot_nice: -10,
            writer_io_class: WriterIoClass::Inherit,
        }
    }
}

impl ClickHouseConfig {
    /// The `tls*` keys as the TLS module takes them.
    pub fn tls_settings(&self) -> crate::tls::Settings {
        crate::tls::Settings {
            enabled: self.tls,
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
            server_name: self.tls_server_name.clone(),
        }
    }

    /// The server each ClickHouse shard is written to, in shard order: the first of
    /// each `shards` entry, or `host:port` alone when `shards` is empty. Validation
    /// has checked every entry, so one that does not parse is left out here, never a
    /// panic.
    pub fn targets(&self) -> Vec<(String, u16)> {
        if self.shards.is_empty() {
            return vec![(self.host.clone(), self.port)];
        }
        self.shards
            .iter()
            .filter_map(|replicas| replicas.first().and_then(|r| parse_host_port(r).ok()))
            .collect()
    }

    /// Every shard's servers (its replicas), in shard order; `host:port` alone when
    /// `shards` is empty.
    pub fn replicas(&self) -> Vec<Vec<(String, u16)>> {
        if self.shards.is_empty() {
            return vec![vec![(self.host.clone(), self.port)]];
        }
        self.shards
            .iter()
            .map(|replicas| {
                replicas
                    .iter()
                    .filter_map(|r| parse_host_port(r).ok())
                    .collect()
            })
            .collect()
    }
}

/// Reads `host:port` (a bracketed `[v6]:port` too); `Err` says what is wrong.
pub fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("\"{text}\" has no port; write host:port, e.g. ch-1:9000"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains("://") || host.contains(char::is_whitespace) {
        return Err(format!(
            "\"{text}\" has no usable host; write a bare host name or IP and the port, e.g. ch-1:9000"
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((host.to_owned(), port)),
        _ => Err(format!(
            "\"{text}\" has port \"{port}\"; give the native-protocol port, 1 to 65535 (usually 9000)"
        )),
    }
}

/// The host named in a server URL, for checking its certificate.
pub(crate) fn url_host(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
}

impl NatsConfig {
    /// The `tls*` keys as the TLS module takes them; a `tls://` URL turns TLS on.
    pub fn tls_settings(&self) -> crate::tls::Settings {
        crate::tls::Settings {
            enabled: self.tls || self.url.starts_with("tls://"),
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
            server_name: self.tls_server_name.clone(),
        }
    }

    /// The URL's host, for the certificate check when no `tls_server_name` is set.
    pub fn host(&self) -> String {
        url_host(&self.url).unwrap_or_else(|| "127.0.0.1".to_owned())
    }

    /// The TLS client for the NATS connection, `None` without TLS.
    pub fn tls_client(&self) -> Result<Option<crate::tls::Client>, crate::tls::TlsError> {
        self.tls_settings().client("nats", &self.host())
    }
}

impl RedisConfig {
    /// The `tls*` keys as the TLS module takes them; a `rediss://` URL turns TLS on.
    /// The certificate is checked against the URL's host (redis-rs takes no other name).
    pub fn tls_settings(&self) -> crate::tls::Settings {
        crate::tls::Settings {
            enabled: self.tls || self.url.starts_with("rediss://"),
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
            server_name: String::new(),
        }
    }
}

impl PostgresConfig {
    /// The `tls*` keys as the TLS module takes them (verify-full: the URL's host).
    pub fn tls_settings(&self) -> crate::tls::Settings {
        crate::tls::Settings {
            enabled: self.tls,
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
            server_name: String::new(),
        }
    }
}

/// The control-plane HTTP listener.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port `/metrics`, `/health` and `/quality` are served on.
    pub addr: SocketAddr,
    /// Allow an `addr` other than loopback. The endpoint has no authentication, so
    /// serving it beyond this host is a decision, not a default.
    pub allow_remote: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)),
            allow_remote: false,
        }
    }
}

/// Most bytes of a stream name and the durable name together: a JetStream ack subject
/// is `$JS.ACK.<stream>.<durable>.` and five numbers (113 bytes at most beside the
/// names), and the receiver keeps ack subjects of up to 255 bytes.
pub const JETSTREAM_NAMES_BYTES_MAX: usize = 255 - 113;

/// The spill: memory-mapped segment files that hold blocks ClickHouse cannot take now.
///
/// Back-of-envelope for the defaults: 1 GiB holds ~3.5 M ticks at ~300 B (~50 of the
/// default 19 MiB blocks), about 35 s of a 100 k ticks/s feed before back-pressure.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpillConfig {
    /// Directory of the segment files; created at start if missing.
    pub dir: String,
    /// Most bytes all segments may hold together; past it the spill back-pressures upstream.
    pub spill_bytes_max: u64,
    /// Size of one segment file, in bytes; a segment is trimmed once all of it is replayed.
    pub segment_bytes: u64,
    /// Which blocks go through the journal: only those ClickHouse cannot take now, or
    /// every block before its acknowledgement (journal-first).
    pub mode: SpillMode,
    /// Journal-first only: how long the oldest journaled block waits before the
    /// journal's blocks go to ClickHouse in one INSERT per table, in ms. ClickHouse pays
    /// per part (one per INSERT and view), so about one INSERT a second per table.
    pub insert_interval_ms: u64,
    /// Journal-first only: pending rows of one table that make its INSERT due at once,
    /// before `insert_interval_ms`. Under a steady feed below this many rows a second
    /// the interval decides (one INSERT a second); above it, each INSERT starts as soon
    /// as the last has committed and this many rows wait, so ClickHouse is not left
    /// idle for the first second of a burst nor handed it all at the end.
    pub insert_rows: u64,
    /// Journal-first only: inserter threads per writer, each with its own ClickHouse
    /// connection. ClickHouse runs one INSERT (views included) on one thread, so a
    /// backlog (twice `insert_rows` beside an INSERT under way) shared out between
    /// two INSERTs at once goes in on two cores; while one INSERT keeps up, the
    /// others wait for it.
    pub inserters: u16,
    /// Journal-first only: send each `market_ticks` INSERT as one block sorted by the
    /// table key (`instrument_token, timestamp`), raw. ClickHouse skips its own sort of
    /// a sorted block: ~30% less server CPU per INSERT, views included. Costs the
    /// inserter a decode, sort and copy (~0.2-0.3 CPU-s per million ticks once warm),
    /// memory for one INSERT's rows (up to ~300 MiB at the 1 Mi-row cap; the block goes
    /// out a column at a time), and on the link the uncompressed bytes: turn it off for
    /// a ClickHouse across a slow network.
    pub sort_inserts: bool,
}

/// When a block enters the spill journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpillMode {
    /// Only when ClickHouse is away, refuses, or the writer falls behind: a block is
    /// acknowledged once INSERTed (or spilled). Receive-to-durable includes the INSERT.
    Overflow,
    /// Journal-first: every sealed block is appended and synced (group commit) and
    /// acknowledged then; an inserter thread per writer sends the journal to ClickHouse
    /// in large INSERTs. Receive-to-durable is the seal plus one fdatasync, whatever
    /// ClickHouse does; the disk takes every byte twice (journal, then ClickHouse).
    /// The default: receive-to-durable in tens of ms, without a ClickHouse part per block.
    #[default]
    Always,
}

impl Default for SpillConfig {
    fn default() -> Self {
        Self {
            dir: ".run/spill".to_owned(),
            spill_bytes_max: 1 << 30,
            segment_bytes: 64 << 20,
            mode: SpillMode::Always,
            insert_interval_ms: 1000,
            insert_rows: 262_144,
            inserters: 2,
            sort_inserts: true,
        }
    }
}

impl Config {
    /// Loads the configuration from its layers and validates it for this host.
    ///
    /// Layers, later ones winning: defaults, the TOML `file` (when given), the platform's
    /// environment variables read through `env`, then the `section.key=value` `overrides`
    /// from repeated `--set` flags. Production passes `&|name| std::env::var(name).ok()`.
    /// Validation uses [`host_cores`].
    ///
    /// # Errors
    ///
    /// The first problem found, as a [`ConfigError`] naming the file, key, variable or
    /// `--set` argument at fault and the fix.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        Self::load_on_host(file, env, overrides, host_cores())
    }

    /// Loads like [`Config::load`], validating for a host with `host_cores` cores.
    pub(crate) fn load_on_host(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &[String],
        host_cores: usize,
    ) -> Result<Config, ConfigError> {
        let (mut config, origins) = layer::resolve(file, env, overrides)?;
        secret_files::apply(&mut config, env)?;
        config
            .validate(host_cores)
            .map_err(|error| origins.attribute(error, env))?;
        Ok(config)
    }

    /// Loads the configuration like [`Config::load`] but does not validate it.
    ///
    /// For checking a file written for another host (`validate` with that host's cores).
    ///
    /// # Errors
    ///
    /// As [`Config::load`], less the validation errors ([`ConfigError::Invalid`]).
    pub fn load_unvalidated(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let (mut config, _) = layer::resolve(file, env, overrides)?;
        secret_files::apply(&mut config, env)?;
        Ok(config)
    }

    /// Every secret this config holds in clear text: the passwords, and the credentials
    /// inside the NATS, Redis and PostgreSQL URLs (as written and percent-decoded). For
    /// [`remember`], so that [`scrub`] can hide them wherever text leaves the process.
    #[must_use]
    pub fn secrets(&self) -> Vec<String> {
        let mut found = vec![
            self.clickhouse.password.expose().to_owned(),
            self.redis.password.expose().to_owned(),
        ];
        for url in [&self.nats.url, &self.redis.url, &self.postgres.url] {
            found.extend(url_secrets(url));
        }
        found.retain(|secret| !secret.is_empty());
        found
    }

    /// Returns the effective configuration as TOML with every password and URL password
    /// shown as `***`, for `--print-config`.
    #[must_use]
    pub fn to_toml_redacted(&self) -> String {
        let mut shown = self.clone();
        shown.nats.url = redact_url(&shown.nats.url);
        shown.redis.url = redact_url(&shown.redis.url);
        shown.postgres.url = redact_url(&shown.postgres.url);
        let header = "# Effective configuration: defaults <- file <- environment <- --set.\n\
                      # Secrets are shown as ***.\n";
        match toml::to_string(&shown) {
            Ok(body) => format!("{header}{body}"),
            Err(error) => format!("{header}# cannot render the configuration as TOML: {error}\n"),
        }
    }
}

/// Returns how many cores this host has, counting isolated ones: a core index is valid when
/// it is below this number.
///
/// Reads `/sys/devices/system/cpu/online` where there is one, because the cores a process
/// may run on by default (what `core_affinity::get_core_ids` lists) leave out the
/// `isolcpus=` cores that pinned hot threads are meant to use. Otherwise takes the highest
/// core id from `core_affinity` plus one, then `std::thread::available_parallelism`, then 1.
#[must_use]
pub fn host_cores() -> usize {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|text| layer::highest_listed_core(&text))
        .map(|highest| highest + 1);
    let affinity =
        core_affinity::get_core_ids().and_then(|ids| ids.iter().map(|core| core.id + 1).max());
    let parallelism = std::thread::available_parallelism()
        .ok()
        .map(std::num::NonZeroUsize::get);
    online.or(affinity).or(parallelism).unwrap_or(1).max(1)
}
