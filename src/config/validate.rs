//! Checks that a deserialized configuration is possible on this host (STYLE §1,
//! "Bounded everything"): every size and time is non-zero and under its ceiling, relations
//! between keys hold, URLs parse with the right scheme, and pinned cores exist.
//!
//! The first problem found is returned as [`ConfigError::Invalid`], naming the key and the
//! fix; a URL is only ever shown redacted.

use super::{redact_url, Config, ConfigError, Source, WaitStrategy};

/// Most rows in one block: 1 Mi rows × ~300 B ≈ 300 MiB, the most one INSERT should carry.
pub const BLOCK_ROWS_MAX: u32 = 1 << 20;

/// Most slots in one ring: 16 Mi slots, ~2.8 min of ticks at 100 k ticks/s.
pub const RING_SLOTS_MAX: u32 = 1 << 24;

/// Largest accepted NATS payload, in bytes (64 MiB; NATS itself defaults to 1 MiB).
pub const PAYLOAD_BYTES_MAX: u32 = 64 << 20;

/// Most shard threads.
pub const SHARDS_MAX: u16 = 256;

/// Most writer threads (each holds one ClickHouse connection).
pub const WRITERS_MAX: u16 = 64;

/// Most messages in one JetStream pull request.
pub const FETCH_BATCH_MAX: u32 = 1 << 20;

/// Slowest Redis flush: a cache a second behind is no longer hot.
pub const REDIS_FLUSH_INTERVAL_MS_MAX: u64 = 1_000;

/// Longest tick history per instrument.
pub const REDIS_HISTORY_LEN_MAX: u32 = 100_000;

/// Most cache slots per shard (instruments, or strategy-instrument pairs).
pub const REDIS_SLOTS_MAX: u32 = 1 << 20;

/// Longest key expiry: a year.
pub const REDIS_TTL_S_MAX: u64 = 366 * 86_400;

/// Most Redis connections.
pub const REDIS_CONNECTIONS_MAX: u32 = 1_024;

/// Longest time setting accepted, in milliseconds (one hour): a bigger value is a unit slip.
pub const DURATION_MS_MAX: u64 = 3_600_000;

/// Longest single park, in microseconds (one second).
pub const PARK_TIMEOUT_US_MAX: u64 = 1_000_000;

/// Most spins or yields of a hybrid wait before it moves to its next step.
pub const WAIT_STEPS_MAX: u32 = 1_000_000;

/// Longest journal-first insert interval: a minute of blocks waits in the journal at
/// most (the spill must hold them: `spill_bytes_max`).
pub const INSERT_INTERVAL_MS_MAX: u64 = 60_000;
/// Largest `spill.insert_rows`: an INSERT carries at most 1,024 records anyway
/// (`write::inserter::RECORDS_PER_INSERT_MAX`), 67 M rows at the largest block.
pub const INSERT_ROWS_MAX: u64 = 64 << 20;
/// Most journal-first inserters per writer: each is a thread and a ClickHouse
/// connection, and more INSERTs at once than the server has cores only adds parts.
pub const INSERTERS_MAX: u64 = 8;

/// Checks one section's `tls*` keys: the files are read now (`built`), so a bad one
/// stops the start with its name, and files named with TLS off are a contradiction.
fn tls_keys(
    section: &str,
    settings: &crate::tls::Settings,
    built: Result<(), crate::tls::TlsError>,
) -> Result<(), ConfigError> {
    let key = format!("{section}.tls");
    if let Err(error) = built {
        return Err(invalid(&key, error.to_string()));
    }
    let named = [
        &settings.ca_file,
        &settings.cert_file,
        &settings.key_file,
        &settings.server_name,
    ];
    if !settings.enabled && named.iter().any(|v| !v.is_empty()) {
        return Err(invalid(
            &key,
            format!("is off but tls_* files or names are set; set {section}.tls = true to use them, or remove them"),
        ));
    }
    Ok(())
}

/// Shorthand for an [`ConfigError::Invalid`] about `key`.
fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message,
    }
}

/// Refuses a value outside `1..=max`, naming the unit in the message.
fn bounded(key: &str, value: u64, max: u64, unit: &str) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(invalid(key, "is 0; set it to 1 or more".to_owned()));
    }
    if value > max {
        return Err(invalid(
            key,
            format!("is {value} {unit}, over the limit of {max}; lower it"),
        ));
    }
    Ok(())
}

/// Refuses a first reconnect delay above the ceiling of `section`'s backoff.
fn backoff_in_order(section: &str, initial_ms: u64, max_ms: u64) -> Result<(), ConfigError> {
    if initial_ms > max_ms {
        return Err(invalid(
            &format!("{section}.backoff_initial_ms"),
            format!(
                "is {initial_ms} ms, above `{section}.backoff_max_ms` ({max_ms} ms); lower it or raise the maximum"
            ),
        ));
    }
    Ok(())
}

/// Refuses an empty text value.
fn non_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(
            key,
            "is empty; give it a value (see tuning/default.toml)".to_owned(),
        ));
    }
    Ok(())
}

/// Refuses a URL that does not parse, has another scheme, or (when `host_required`) no host.
fn url(key: &str, text: &str, schemes: &[&str], host_required: bool) -> Result<(), ConfigError> {
    let example = format!("{}://127.0.0.1", schemes[0]);
    let parsed = url::Url::parse(text).map_err(|error| {
        invalid(
            key,
            format!(
                "is \"{}\", which is not a URL ({error}); write it like {example}",
                redact_url(text)
            ),
        )
    })?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(invalid(
            key,
            format!(
                "has scheme `{}`; use {}, e.g. {example}",
                parsed.scheme(),
                schemes
                    .iter()
                    .map(|scheme| format!("`{scheme}://`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    if host_required && parsed.host_str().map_or(true, str::is_empty) {
        return Err(invalid(
            key,
            format!(
                "is \"{}\", which names no host; write it like {example}",
                redact_url(text)
            ),
        ));
    }
    Ok(())
}

/// Refuses a JetStream stream or consumer name that the server would refuse.
fn jetstream_name(key: &str, value: &str) -> Result<(), ConfigError> {
    non_empty(key, value)?;
    let bad = value
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
    if let Some(bad) = bad {
        return Err(invalid(
            key,
            format!("is \"{value}\", which holds {bad:?}; JetStream names take no spaces, `.`, `*`, `>`, `/` or `\\`, so rename it"),
        ));
    }
    Ok(())
}

impl Config {
    /// Checks the configuration against its limits and against a host with `host_cores`
    /// cores (core indexes `0..host_cores`).
    ///
    /// # Errors
    ///
    /// The first problem found, as [`ConfigError::Invalid`] naming the key and the fix.
    pub fn validate(&self, host_cores: usize) -> Result<(), ConfigError> {
        self.validate_clickhouse()?;
        self.validate_nats()?;
        self.validate_slow_path()?;
        self.validate_ingest()?;
        self.validate_validation()?;
        self.validate_spill()?;
        self.validate_log()?;
        self.validate_http()?;
        self.validate_threads(host_cores)
    }

    /// Checks `[http]`: a non-loopback address only when asked for.
    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        if !h.addr.ip().is_loopback() && !h.allow_remote {
            return Err(invalid(
                "http.addr",
                format!(
                    "is {}, beyond this host, and /metrics, /health and /quality have no authentication; bind 127.0.0.1, or set http.allow_remote = true and firewall the port to the monitoring network",
                    h.addr
                ),
            ));
        }
        Ok(())
    }

    /// Checks `[log]`: a level, or comma-separated `target=level` directives (a bare
    /// word is a level here: the filter would take it as a target at trace, which is
    /// never what a misspelt level meant).
    fn validate_log(&self) -> Result<(), ConfigError> {
        const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
        let level = &self.log.level;
        non_empty("log.level", level)?;
        let bad = |what: String| {
            invalid(
                "log.level",
                format!("{level:?} is not a log filter: {what}; use a level (error, warn, info, debug, trace) or directives like \"warn,alphapt_storage=debug\""),
            )
        };
        for directive in level.split(',').map(str::trim) {
            let level_part = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
            if !LEVELS.contains(&level_part.to_ascii_lowercase().as_str()) {
                return Err(bad(format!("`{level_part}` is not a level")));
            }
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .map(|_| ())
            .map_err(|e| bad(e.to_string()))
    }

    /// Checks `[clickhouse]`.
    fn validate_clickhouse(&self) -> Result<(), ConfigError> {
        let c = &self.clickhouse;
        tls_keys(
            "clickhouse",
            &c.tls_settings(),
            c.tls_settings().client("clickhouse", &c.host).map(|_| ()),
        )?;
        non_empty("clickhouse.host", &c.host)?;
        if c.host.contains("://") || c.host.contains(char::is_whitespace) {
            return Err(invalid(
                "clickhouse.host",
                format!("is \"{}\"; give a bare host name or IP without scheme or spaces (the port goes in `clickhouse.port`)", redact_url(&c.host)),
            ));
        }
        if c.port == 0 {
            return Err(invalid(
                "clickhouse.port",
                "is 0; give the native-protocol port, usually 9000".to_owned(),
            ));
        }
        self.validate_clickhouse_shards()?;
        let database_ok = c.database.bytes().enumerate().all(|(index, byte)| {
            byte == b'_' || byte.is_ascii_alphabetic() || (index > 0 && byte.is_ascii_digit())
        });
        if c.database.is_empty() || !database_ok {
            return Err(invalid(
                "clickhouse.database",
                format!("is \"{}\"; use letters, digits and `_`, not starting with a digit (e.g. alphapt)", c.database),
            ));
        }
        non_empty("clickhouse.username", &c.username)?;
        bounded(
            "clickhouse.connect_timeout_ms",
            c.connect_timeout_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        bounded(
            "clickhouse.io_timeout_ms",
            c.io_timeout_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        bounded(
            "clickhouse.backoff_initial_ms",
            c.backoff_initial_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        bounded(
            "clickhouse.backoff_max_ms",
            c.backoff_max_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        bounded(
            "clickhouse.ping_interval_ms",
            c.ping_interval_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        // DateTime ends in 2106: ~27 years of retention is the most a TTL can mean.
        bounded(
            "clickhouse.retention_days",
            u64::from(c.retention_days),
            10_000,
            "days",
        )?;
        backoff_in_order("clickhouse", c.backoff_initial_ms, c.backoff_max_ms)?;
        Ok(())
    }

    /// Checks `[nats]`, including that JetStream does not redeliver before a block can seal.
    fn validate_nats(&self) -> Result<(), ConfigError> {
        let n = &self.nats;
        url("nats.url", &n.url, &["nats", "tls"], true)?;
        tls_keys("nats", &n.tls_settings(), n.tls_client().map(|_| ()))?;
        if n.stream_max_bytes != 0 && !(1 << 20..=i64::MAX as u64).contains(&n.stream_max_bytes) {
            return Err(invalid(
                "nats.stream_max_bytes",
                format!(
                    "is {}; use 0 (unlimited) or 1048576 (1 MiB) to {} bytes: a smaller stream would discard messages before the appliance could read them",
                    n.stream_max_bytes,
                    i64::MAX
                ),
            ));
        }
        jetstream_name("nats.stream_ticks", &n.stream_ticks)?;
        jetstream_name("nats.stream_signals", &n.stream_signals)?;
        jetstream_name("nats.durable", &n.durable)?;
        for (key, stream) in [
            ("nats.stream_ticks", &n.stream_ticks),
            ("nats.stream_signals", &n.stream_signals),
        ] {
            // A partition's consumer is named `<durable>-p<id>`.
            let suffix = if n.partitions > 0 {
                super::PARTITION_SUFFIX_BYTES_MAX
            } else {
                0
            };
            let bytes = stream.len() + n.durable.len() + suffix;
            if bytes > super::JETSTREAM_NAMES_BYTES_MAX {
                return Err(invalid(
                    "nats.durable",
                    format!(
                        "is {} bytes and `{key}` {} bytes: {bytes} together, above {}, so JetStream's ack subjects would outgrow what the receiver keeps and nothing could be acknowledged; shorten them",
                        n.durable.len(),
                        stream.len(),
                        super::JETSTREAM_NAMES_BYTES_MAX
                    ),
                ));
            }
        }
        for (key, subject) in [
            ("nats.subject_ticks", &n.subject_ticks),
            ("nats.subject_signals", &n.subject_signals),
        ] {
            non_empty(key, subject)?;
            if subject.contains(char::is_whitespace) {
                return Err(invalid(
                    key,
                    format!("is \"{subject}\"; NATS subjects take no spaces, so remove them"),
                ));
            }
        }
        self.validate_partitions()?;
        bounded(
            "nats.fetch_batch_max",
            u64::from(n.fetch_batch_max),
            u64::from(FETCH_BATCH_MAX),
            "messages",
        )?;
        bounded("nats.ack_wait_ms", n.ack_wait_ms, DURATION_MS_MAX, "ms")?;
        // A tick waits at most the flush interval before its INSERT starts (the writer
        // linger is cut to it), so that must stay under the redelivery delay.
        if n.source == Source::Jetstream && n.ack_wait_ms <= self.ingest.flush_interval_ms {
            return Err(invalid(
                "nats.ack_wait_ms",
                format!(
                    "is {} ms, not longer than `ingest.flush_interval_ms` ({} ms), so JetStream would redeliver ticks before their block is stored; raise it to several flush intervals (the default is 30000)",
                    n.ack_wait_ms, self.ingest.flush_interval_ms
                ),
            ));
        }
        Ok(())
    }

    /// Checks `clickhouse.shards` (DESIGN §8): every entry `host:port`, no server
    /// twice, at most [`super::CLICKHOUSE_REPLICAS_MAX`] replicas a shard, and
    /// pipeline shards and writers that divide among the ClickHouse shards (each
    /// writer serves one of them).
    fn validate_clickhouse_shards(&self) -> Result<(), ConfigError> {
        use super::{parse_host_port, CLICKHOUSE_REPLICAS_MAX, CLICKHOUSE_SHARDS_MAX};
        let shards = &self.clickhouse.shards;
        if shards.is_empty() {
            return Ok(());
        }
        let key = "clickhouse.shards";
        if shards.len() > CLICKHOUSE_SHARDS_MAX {
            return Err(invalid(
                key,
                format!(
                    "lists {} shards; at most {CLICKHOUSE_SHARDS_MAX}",
                    shards.len()
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (index, replicas) in shards.iter().enumerate() {
            let number = index + 1;
            if replicas.is_empty() {
                return Err(invalid(
                    key,
                    format!("shard {number} lists no server; give at least one host:port"),
                ));
            }
            if replicas.len() > CLICKHOUSE_REPLICAS_MAX {
                return Err(invalid(
                    key,
                    format!(
                        "shard {number} lists {} servers; at most {CLICKHOUSE_REPLICAS_MAX}",
                        replicas.len()
                    ),
                ));
            }
            for replica in replicas {
                let (host, port) = parse_host_port(replica)
                    .map_err(|e| invalid(key, format!("shard {number}: {e}")))?;
                if !seen.insert((host.to_ascii_lowercase(), port)) {
                    return Err(invalid(
                        key,
                        format!("names {replica} twice; each server belongs to one shard"),
                    ));
                }
            }
        }
        let count = shards.len();
        let i = &self.ingest;
        if usize::from(i.shards) % count != 0 {
            return Err(invalid(
                "ingest.shards",
                format!(
                    "is {}, not a multiple of the {count} ClickHouse shards in `clickhouse.shards`; each pipeline shard writes to one ClickHouse shard: set it to {}",
                    i.shards,
                    count * usize::from(i.shards).div_ceil(count)
                ),
            ));
        }
        if usize::from(i.writers).min(usize::from(i.shards)) % count != 0 {
            return Err(invalid(
                "ingest.writers",
                format!(
                    "is {}, not a multiple of the {count} ClickHouse shards in `clickhouse.shards`; each writer inserts into one ClickHouse shard: set it to {count}",
                    i.writers
                ),
            ));
        }
        Ok(())
    }

    /// Checks `nats.partitions` and `nats.partition_ids` (DESIGN §8).
    fn validate_partitions(&self) -> Result<(), ConfigError> {
        use crate::receive::partition::{Mapping, PARTITIONS_MAX};
        let n = &self.nats;
        if n.partitions == 0 {
            if !n.partition_ids.is_empty() {
                return Err(invalid(
                    "nats.partition_ids",
                    format!(
                        "is {:?} but `nats.partitions` is 0 (off); set `nats.partitions` to the count the nats-server mapping uses, or remove the ids",
                        n.partition_ids
                    ),
                ));
            }
            return Ok(());
        }
        if n.partitions > PARTITIONS_MAX {
            return Err(invalid(
                "nats.partitions",
                format!("is {}; give 1 to {PARTITIONS_MAX} (0: off)", n.partitions),
            ));
        }
        match n.partition_ids.as_slice() {
            [] => {
                return Err(invalid(
                    "nats.partition_ids",
                    format!(
                        "is empty; with `nats.partitions = {}` name the partition this appliance consumes, as `[id]` with id 0 to {}",
                        n.partitions,
                        n.partitions - 1
                    ),
                ))
            }
            ids => {
                if let Some(id) = ids.iter().find(|id| **id >= n.partitions) {
                    return Err(invalid(
                        "nats.partition_ids",
                        format!(
                            "names partition {id}, but there are {} (0 to {})",
                            n.partitions,
                            n.partitions - 1
                        ),
                    ));
                }
                let mut sorted = ids.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != ids.len() {
                    return Err(invalid(
                        "nats.partition_ids",
                        format!("is {ids:?}: it names a partition twice; list each once"),
                    ));
                }
                // Each partition has a group of shards of its own (its sequences in
                // order per shard), each group a multiple of the ClickHouse shards.
                let per = ids.len() as u64 * self.clickhouse.shards.len().max(1) as u64;
                if u64::from(self.ingest.shards) % per != 0 {
                    return Err(invalid(
                        "ingest.shards",
                        format!(
                            "is {}; with {} partitions and {} ClickHouse shard(s) it must be a multiple of {per} (each partition gets a group of shards of its own); use {}",
                            self.ingest.shards,
                            ids.len(),
                            self.clickhouse.shards.len().max(1),
                            per.max(u64::from(self.ingest.shards).div_ceil(per) * per)
                        ),
                    ));
                }
            }
        }
        for (key, subject) in [
            ("nats.subject_ticks", &n.subject_ticks),
            ("nats.subject_signals", &n.subject_signals),
        ] {
            Mapping::new(subject, n.partitions)
                .map_err(|e| invalid(key, format!("cannot be partitioned: {e}")))?;
        }
        Ok(())
    }

    /// Checks the hot-cache settings of `[redis]`.
    fn validate_redis_cache(&self) -> Result<(), ConfigError> {
        let r = &self.redis;
        let host = super::url_host(&r.url).unwrap_or_default();
        tls_keys(
            "redis",
            &r.tls_settings(),
            r.tls_settings().client("redis", &host).map(|_| ()),
        )?;
        let r = &self.redis;
        bounded(
            "redis.flush_interval_ms",
            r.flush_interval_ms,
            REDIS_FLUSH_INTERVAL_MS_MAX,
            "ms",
        )?;
        bounded(
            "redis.history_len",
            u64::from(r.history_len),
            u64::from(REDIS_HISTORY_LEN_MAX),
            "entries",
        )?;
        bounded(
            "redis.instruments_max",
            u64::from(r.instruments_max),
            u64::from(REDIS_SLOTS_MAX),
            "instruments",
        )?;
        bounded(
            "redis.signals_max",
            u64::from(r.signals_max),
            u64::from(REDIS_SLOTS_MAX),
            "signals",
        )?;
        bounded("redis.timeout_ms", r.timeout_ms, DURATION_MS_MAX, "ms")?;
        bounded(
            "redis.backoff_initial_ms",
            r.backoff_initial_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        bounded(
            "redis.backoff_max_ms",
            r.backoff_max_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        backoff_in_order("redis", r.backoff_initial_ms, r.backoff_max_ms)?;
        if r.cluster && !r.hash_tags {
            return Err(invalid(
                "redis.cluster",
                "is on but `redis.hash_tags` is off; set `redis.hash_tags = true` so every key of one instrument shares a slot (readers fetch them in one transaction, which Redis Cluster allows on one slot only)".to_owned(),
            ));
        }
        for (key, ttl) in [
            ("redis.tick_ttl_s", r.tick_ttl_s),
            ("redis.ohlc_ttl_s", r.ohlc_ttl_s),
            ("redis.signal_ttl_s", r.signal_ttl_s),
            ("redis.instrument_ttl_s", r.instrument_ttl_s),
        ] {
            if ttl > REDIS_TTL_S_MAX {
                return Err(invalid(
                    key,
                    format!("is {ttl} s, over the limit of {REDIS_TTL_S_MAX} (a year); lower it, or 0 for keys that never expire"),
                ));
            }
        }
        if let Some(bad) = r.key_prefix.chars().find(|c| {
            c.is_whitespace() || c.is_control() || (r.hash_tags && (*c == '{' || *c == '}'))
        }) {
            return Err(invalid(
                "redis.key_prefix",
                format!(
                    "holds {bad:?}; use letters, digits and punctuation without spaces{}",
                    if r.hash_tags {
                        " (and no braces: `redis.hash_tags` puts the token in braces)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(())
    }

    /// Checks `[redis]` and `[postgres]`.
    fn validate_slow_path(&self) -> Result<(), ConfigError> {
        let p = &self.postgres;
        let host = super::url_host(&p.url).unwrap_or_else(|| "localhost".to_owned());
        tls_keys(
            "postgres",
            &p.tls_settings(),
            p.tls_settings().client("postgres", &host).map(|_| ()),
        )?;
        url("redis.url", &self.redis.url, &["redis", "rediss"], true)?;
        bounded(
            "redis.max_connections",
            u64::from(self.redis.max_connections),
            u64::from(REDIS_CONNECTIONS_MAX),
            "connections",
        )?;
        self.validate_redis_cache()?;
        // libpq URLs may leave the host out and give a socket directory in `?host=`.
        url(
            "postgres.url",
            &self.postgres.url,
            &["postgres", "postgresql"],
            false,
        )?;
        let p = &self.postgres;
        bounded(
            "postgres.connect_timeout_ms",
            p.connect_timeout_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        bounded(
            "postgres.backoff_initial_ms",
            p.backoff_initial_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        bounded(
            "postgres.backoff_max_ms",
            p.backoff_max_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        backoff_in_order("postgres", p.backoff_initial_ms, p.backoff_max_ms)?;
        let every = p.quality_snapshot_interval_ms;
        if every != 0 {
            if every < 1_000 {
                return Err(invalid(
                    "postgres.quality_snapshot_interval_ms",
                    format!("is {every} ms; a snapshot reads ClickHouse, so take one at most every second (1000 or more), or 0 for none"),
                ));
            }
            bounded(
                "postgres.quality_snapshot_interval_ms",
                every,
                DURATION_MS_MAX,
                "ms",
            )?;
        }
        Ok(())
    }

    /// Checks `[ingest]`.
    fn validate_ingest(&self) -> Result<(), ConfigError> {
        let i = &self.ingest;
        bounded(
            "ingest.block_rows_max",
            u64::from(i.block_rows_max),
            u64::from(BLOCK_ROWS_MAX),
            "rows",
        )?;
        bounded(
            "ingest.flush_interval_ms",
            i.flush_interval_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        bounded(
            "ingest.ring_slots",
            u64::from(i.ring_slots),
            u64::from(RING_SLOTS_MAX),
            "slots",
        )?;
        if !i.ring_slots.is_power_of_two() {
            let above = i
                .ring_slots
                .checked_next_power_of_two()
                .unwrap_or(RING_SLOTS_MAX);
            return Err(invalid(
                "ingest.ring_slots",
                format!(
                    "is {}, not a power of two (the ring indexes by bit mask); use {} or {}",
                    i.ring_slots,
                    above / 2,
                    above
                ),
            ));
        }
        bounded(
            "ingest.payload_bytes_max",
            u64::from(i.payload_bytes_max),
            u64::from(PAYLOAD_BYTES_MAX),
            "bytes",
        )?;
        // The receiver->shard ring must hold two of the largest frames, or a message
        // at the payload limit could never be routed.
        let ring_bytes = u64::from(i.ring_slots) * crate::ring::RING_SLOT_BYTES as u64;
        let frame_max = crate::ring::frame_bytes(
            crate::ring::SUBJECT_BYTES_MAX,
            (i.payload_bytes_max as usize).max(crate::ring::TRUNCATED_BYTES),
        ) as u64;
        if ring_bytes < 2 * frame_max {
            let slots = (2 * frame_max)
                .div_ceil(crate::ring::RING_SLOT_BYTES as u64)
                .next_power_of_two();
            return Err(invalid(
                "ingest.ring_slots",
                format!(
                    "is {} ({} KiB a ring), too small for two messages of `ingest.payload_bytes_max` = {} bytes; \
                     use ring_slots >= {slots} or a smaller payload_bytes_max",
                    i.ring_slots,
                    ring_bytes / 1024,
                    i.payload_bytes_max
                ),
            ));
        }
        bounded(
            "ingest.shards",
            u64::from(i.shards),
            u64::from(SHARDS_MAX),
            "shards",
        )?;
        bounded(
            "ingest.writers",
            u64::from(i.writers),
            u64::from(WRITERS_MAX),
            "writers",
        )?;
        bounded(
            "ingest.drain_timeout_ms",
            i.drain_timeout_ms,
            DURATION_MS_MAX,
            "ms",
        )?;
        // 0 is meaningful here (no lingering), so only the ceiling applies.
        if i.insert_linger_ms > DURATION_MS_MAX {
            return Err(invalid(
                "ingest.insert_linger_ms",
                format!(
                    "is {} ms, over the limit of {DURATION_MS_MAX}; lower it (0 = INSERT at once)",
                    i.insert_linger_ms
                ),
            ));
        }
        Ok(())
    }

    /// Checks `[validation]` with the validator's own rule, so the loader and
    /// `Validator::new` can never disagree about what is allowed.
    fn validate_validation(&self) -> Result<(), ConfigError> {
        self.validation.check().map_err(|error| {
            invalid(
                &format!("validation.{}", error.key),
                format!(
                    "is {}; use a value in {} ({})",
                    error.value, error.range, error.fix
                ),
            )
        })
    }

    /// Checks `[spill]`.
    fn validate_spill(&self) -> Result<(), ConfigError> {
        let s = &self.spill;
        non_empty("spill.dir", &s.dir)?;
        bounded(
            "spill.spill_bytes_max",
            s.spill_bytes_max,
            u64::MAX,
            "bytes",
        )?;
        bounded("spill.segment_bytes", s.segment_bytes, u64::MAX, "bytes")?;
        bounded(
            "spill.insert_interval_ms",
            s.insert_interval_ms,
            INSERT_INTERVAL_MS_MAX,
            "ms",
        )?;
        bounded("spill.insert_rows", s.insert_rows, INSERT_ROWS_MAX, "rows")?;
        bounded(
            "spill.inserters",
            u64::from(s.inserters),
            INSERTERS_MAX,
            "threads",
        )?;
        // Journal-first journals every block before its ack: a block no segment can
        // hold would stop intake for good, so the worst-case block must fit one.
        if s.mode == super::SpillMode::Always {
            let block = crate::pipeline::block_bytes_max(self.ingest.block_rows_max as usize);
            let record = crate::spill::record_bytes(block) as u64;
            let room = s
                .segment_bytes
                .saturating_sub(crate::spill::format::SEGMENT_HEADER_BYTES as u64);
            if record > room {
                return Err(invalid(
                    "spill.segment_bytes",
                    format!(
                        "is {} bytes, but one block of `ingest.block_rows_max` = {} rows can take {record} bytes in the journal, and journal-first (`spill.mode = \"always\"`) journals every block; raise spill.segment_bytes to at least {} or lower ingest.block_rows_max",
                        s.segment_bytes,
                        self.ingest.block_rows_max,
                        record + crate::spill::format::SEGMENT_HEADER_BYTES as u64
                    ),
                ));
            }
        }
        // A journal needs two segments: the active one keeps the room of its replayed
        // records until it is full (`spill::SEGMENTS_MIN`).
        if s.segment_bytes.saturating_mul(crate::spill::SEGMENTS_MIN) > s.spill_bytes_max {
            return Err(invalid(
                "spill.segment_bytes",
                format!(
                    "is {} bytes, more than half of `spill.spill_bytes_max` ({} bytes); a journal needs {} segments (the active one keeps the room of its already-stored blocks until it is full), so lower the segment size or raise the maximum",
                    s.segment_bytes, s.spill_bytes_max, crate::spill::SEGMENTS_MIN
                ),
            ));
        }
        Ok(())
    }

    /// Checks `[threads]`: wait bounds always; cores only when pinning.
    fn validate_threads(&self, host_cores: usize) -> Result<(), ConfigError> {
        let t = &self.threads;
        if t.spin_count > WAIT_STEPS_MAX {
            return Err(invalid(
                "threads.spin_count",
                format!(
                    "is {}, over the limit of {WAIT_STEPS_MAX}; lower it, or use `wait = \"spin\"`",
                    t.spin_count
                ),
            ));
        }
        if t.yield_count > WAIT_STEPS_MAX {
            return Err(invalid("threads.yield_count", format!("is {}, over the limit of {WAIT_STEPS_MAX}; lower it, or use `wait = \"yield\"`", t.yield_count)));
        }
        bounded(
            "threads.park_timeout_us",
            t.park_timeout_us,
            PARK_TIMEOUT_US_MAX,
            "µs",
        )?;
        if !(-20..=19).contains(&t.hot_nice) {
            return Err(invalid(
                "threads.hot_nice",
                format!(
                    "is {}, outside Linux's nice range -20 to 19; use e.g. -10 (hot threads first) or 0 (no preference)",
                    t.hot_nice
                ),
            ));
        }
        if !t.pin {
            return Ok(());
        }
        let receiver = t.receiver_core.ok_or_else(|| {
            invalid("threads.receiver_core", "is not set but `threads.pin = true`; name the receiver's core (e.g. 2) or set `threads.pin = false`".to_owned())
        })?;
        let exists = |key: &str, core: usize| {
            if core < host_cores {
                return Ok(());
            }
            Err(invalid(
                key,
                format!(
                    "names core {core}, which does not exist on this {host_cores}-core host (cores 0-{}); remove it or set `threads.pin = false`",
                    host_cores.saturating_sub(1)
                ),
            ))
        };
        exists("threads.receiver_core", receiver)?;
        if let Some(slow) = t.slow_core {
            exists("threads.slow_core", slow)?;
        }
        for &core in &t.shard_cores {
            exists("threads.shard_cores", core)?;
        }
        for &core in &t.writer_cores {
            exists("threads.writer_cores", core)?;
        }
        let counts = [
            (
                "threads.shard_cores",
                t.shard_cores.len(),
                "ingest.shards",
                usize::from(self.ingest.shards),
                "shard",
            ),
            (
                "threads.writer_cores",
                t.writer_cores.len(),
                "ingest.writers",
                usize::from(self.ingest.writers),
                "writer",
            ),
        ];
        for (key, listed, count_key, count, role) in counts {
            if listed != count {
                return Err(invalid(
                    key,
                    format!("lists {listed} cores but `{count_key}` is {count}; with `threads.pin = true` give exactly one core per {role}, or change `{count_key}`"),
                ));
            }
        }
        if t.wait == WaitStrategy::Spin {
            self.validate_spin_cores(receiver)?;
        }
        Ok(())
    }

    /// With `wait = "spin"`, refuses two threads on one core: a spinning thread never gives
    /// its core up, so the other starves.
    fn validate_spin_cores(&self, receiver: usize) -> Result<(), ConfigError> {
        let t = &self.threads;
        let mut owners: Vec<(usize, String)> = vec![(receiver, "the receiver".to_owned())];
        let lists = [
            ("threads.shard_cores", &t.shard_cores, "shard"),
            ("threads.writer_cores", &t.writer_cores, "writer"),
        ];
        let slow = t
            .slow_core
            .map(|core| ("threads.slow_core", core, "the slow path".to_owned()));
        let listed = lists.iter().flat_map(|(key, cores, role)| {
            cores
                .iter()
                .enumerate()
                .map(move |(index, &core)| (*key, core, format!("{role} {index}")))
        });
        for (key, core, name) in listed.chain(slow) {
            if let Some((_, owner)) = owners.iter().find(|(taken, _)| *taken == core) {
                return Err(invalid(
                    key,
                    format!("gives core {core} to {name}, which {owner} already runs on; with `threads.wait = \"spin\"` two threads on one core starve each other, so give each its own core or use `wait = \"hybrid\"`"),
                ));
            }
            owners.push((core, name));
        }
        Ok(())
    }
}
