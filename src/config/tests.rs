//! Tests of loading, layering, validation and redaction. Files are written under the
//! system temp directory with unique names and removed on drop; the environment is a
//! closure over a map, never the process's own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Cores of the host the tests pretend to run on, so results do not depend on the machine.
const TEST_HOST_CORES: usize = 2;

/// A config file under the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    /// Writes `text` to a fresh, uniquely named file.
    fn new(text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "alphapt-config-test-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("the temp directory is writable");
        Self(path)
    }

    /// The file's path.
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An environment lookup over the given pairs.
fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

/// `--set` arguments as the command line would pass them.
fn sets(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// Loads `text` as the config file with the given environment and overrides, validated
/// for a [`TEST_HOST_CORES`]-core host.
fn load(text: &str, env: &[(&str, &str)], overrides: &[&str]) -> Result<Config, ConfigError> {
    let file = TempFile::new(text);
    Config::load_on_host(
        Some(file.path()),
        &env_of(env),
        &sets(overrides),
        TEST_HOST_CORES,
    )
}

/// Loads and expects a refusal, returning it.
fn refused(text: &str, env: &[(&str, &str)], overrides: &[&str]) -> ConfigError {
    match load(text, env, overrides) {
        Ok(config) => panic!("expected a refusal, loaded {config:?}"),
        Err(error) => error,
    }
}

/// A tuning file of this crate.
fn tuning(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tuning")
        .join(name)
}

#[test]
fn empty_file_gives_defaults() {
    // An empty file is valid and yields the documented defaults.
    let config = load("", &[], &[]).expect("an empty file loads");
    assert_eq!(config, Config::default());
    assert_eq!(config.clickhouse.port, 9000);
    assert_eq!(config.clickhouse.compression, Compression::Lz4);
    assert_eq!(config.nats.source, Source::Jetstream);
    assert_eq!(config.threads.wait, WaitStrategy::Hybrid);
    assert_eq!(config.http.addr.to_string(), "127.0.0.1:9464");
    assert_eq!(config.spill.spill_bytes_max, 1 << 30);
    let no_file = Config::load_on_host(None, &env_of(&[]), &[], TEST_HOST_CORES);
    assert_eq!(no_file, Ok(Config::default()));
}

#[test]
fn default_tuning_file_is_the_defaults() {
    // tuning/default.toml parses, validates on 2 cores, and documents the real defaults.
    let path = tuning("default.toml");
    let config = Config::load_on_host(Some(&path), &env_of(&[]), &[], TEST_HOST_CORES);
    assert_eq!(config, Ok(Config::default()));
}

#[test]
fn bare_metal_tuning_file_validates_on_16_cores() {
    // tuning/bare-metal-16c.toml parses, validates on 16 cores, and is refused on 2.
    let path = tuning("bare-metal-16c.toml");
    let config = Config::load_unvalidated(Some(&path), &env_of(&[]), &[]).expect("parses");
    assert_eq!(config.validate(16), Ok(()));
    assert!(config.threads.pin);
    assert_eq!(config.threads.receiver_core, Some(2));
    assert_eq!(config.threads.shard_cores, vec![3, 4, 5, 6]);
    assert_eq!(config.threads.writer_cores, vec![7, 8]);
    assert_eq!(config.threads.slow_core, Some(1));
    assert_eq!(config.threads.wait, WaitStrategy::Spin);
    let error = config
        .validate(2)
        .expect_err("core 2 does not exist on 2 cores");
    assert!(error.to_string().contains("2-core host"), "{error}");
}

#[test]
fn layers_apply_file_then_env_then_set() {
    // One key set in the file, the environment and --set: each later layer wins.
    let file = "[ingest]\nblock_rows_max = 1000\n";
    let env = [("MARKET_DATA_BATCH_SIZE", "2000")];
    let set = ["ingest.block_rows_max=3000"];
    assert_eq!(
        load(file, &[], &[]).map(|c| c.ingest.block_rows_max),
        Ok(1000)
    );
    assert_eq!(
        load(file, &env, &[]).map(|c| c.ingest.block_rows_max),
        Ok(2000)
    );
    assert_eq!(
        load(file, &env, &set).map(|c| c.ingest.block_rows_max),
        Ok(3000)
    );
    assert_eq!(
        load(file, &[], &set).map(|c| c.ingest.block_rows_max),
        Ok(3000)
    );
    // An empty variable counts as unset.
    let empty = [("MARKET_DATA_BATCH_SIZE", ""), ("CLICKHOUSE_PORT", "")];
    assert_eq!(
        load(file, &empty, &[]).map(|c| c.ingest.block_rows_max),
        Ok(1000)
    );
}

#[test]
fn every_env_variable_reaches_its_key() {
    // Each platform variable sets the key DESIGN §5 maps it to.
    let env = [
        ("CLICKHOUSE_HOST", "ch-1"),
        ("CLICKHOUSE_PORT", "9440"),
        ("CLICKHOUSE_DATABASE", "ticks"),
        ("CLICKHOUSE_USERNAME", "writer"),
        ("CLICKHOUSE_PASSWORD", "pw"),
        ("REDIS_URL", "rediss://redis-1:6380"),
        ("REDIS_PASSWORD", "rpw"),
        ("REDIS_MAX_CONNECTIONS", "16"),
        ("MARKET_DATA_BATCH_SIZE", "5000"),
        ("MARKET_DATA_FLUSH_INTERVAL", "2"),
        ("MARKET_DATA_BUFFER_SIZE", "8192"),
        ("COMPRESSION_METHOD", "none"),
        ("NATS_URL", "tls://nats-1:4222"),
        ("POSTGRES_URL", "postgresql://pg-1/db"),
        ("ALPHAPT_HTTP_ADDR", "0.0.0.0:9000"),
    ];
    let config = load("", &env, &["http.allow_remote=true"]).expect("loads");
    assert_eq!(config.clickhouse.host, "ch-1");
    assert_eq!(config.clickhouse.port, 9440);
    assert_eq!(config.clickhouse.database, "ticks");
    assert_eq!(config.clickhouse.username, "writer");
    assert_eq!(config.clickhouse.password.expose(), "pw");
    assert_eq!(config.redis.url, "rediss://redis-1:6380");
    assert_eq!(config.redis.password.expose(), "rpw");
    assert_eq!(config.redis.max_connections, 16);
    assert_eq!(config.ingest.block_rows_max, 5000);
    assert_eq!(config.ingest.flush_interval_ms, 2000);
    assert_eq!(config.ingest.ring_slots, 8192);
    assert_eq!(config.clickhouse.compression, Compression::None);
    assert_eq!(config.nats.url, "tls://nats-1:4222");
    assert_eq!(config.postgres.url, "postgresql://pg-1/db");
    assert_eq!(config.http.addr.to_string(), "0.0.0.0:9000");
}

#[test]
fn unknown_key_in_file_names_dotted_key() {
    // A misspelt key in the file is refused with its dotted path, the file and the valid keys.
    let error = refused("[ingest]\nblock_rowz = 5\n", &[], &[]);
    let ConfigError::UnknownKey { key, origin, .. } = &error else {
        panic!("expected UnknownKey, got {error:?}");
    };
    assert_eq!(key, "ingest.block_rowz");
    assert!(origin.contains("config file"), "{origin}");
    let message = error.to_string();
    assert!(message.contains("`ingest.block_rowz`"), "{message}");
    assert!(message.contains("block_rows_max"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    let error = refused("[ingestt]\nshards = 1\n", &[], &[]);
    assert!(
        matches!(&error, ConfigError::UnknownKey { key, .. } if key == "ingestt"),
        "{error:?}"
    );
}

#[test]
fn wrong_type_in_file_names_key_and_type() {
    // A value of the wrong type is refused with its dotted path and what the key takes.
    let error = refused("[ingest]\nshards = \"four\"\n", &[], &[]);
    let ConfigError::WrongType { key, expected, .. } = &error else {
        panic!("expected WrongType, got {error:?}");
    };
    assert_eq!(key, "ingest.shards");
    assert!(expected.contains("integer"), "{expected}");
    let error = refused("[threads]\nshard_cores = [1, \"x\"]\n", &[], &[]);
    assert!(
        matches!(&error, ConfigError::WrongType { key, .. } if key == "threads.shard_cores[1]"),
        "{error:?}"
    );
    let error = refused("[clickhouse]\ncompression = \"zstd\"\n", &[], &[]);
    assert!(error.to_string().contains("`lz4`"), "{error}");
}

#[test]
fn unknown_key_in_set_is_refused() {
    // A --set of a key or section that does not exist is refused like one in the file.
    let error = refused("", &[], &["ingest.block_rowz=5"]);
    let ConfigError::UnknownKey { key, origin, .. } = &error else {
        panic!("expected UnknownKey, got {error:?}");
    };
    assert_eq!(key, "ingest.block_rowz");
    assert!(origin.contains("--set"), "{origin}");
    let error = refused("", &[], &["ingress.shards=2"]);
    assert!(
        matches!(&error, ConfigError::UnknownKey { key, .. } if key == "ingress"),
        "{error:?}"
    );
}

#[test]
fn malformed_set_is_refused() {
    // A --set without `=`, without a section, or with a value of the wrong type is refused.
    let error = refused("", &[], &["ingest.shards"]);
    assert!(matches!(&error, ConfigError::Override { .. }), "{error:?}");
    assert!(error.to_string().contains("section.key=value"), "{error}");
    let error = refused("", &[], &["shards=2"]);
    assert!(matches!(&error, ConfigError::Override { .. }), "{error:?}");
    let error = refused("", &[], &["ingest.shards=four"]);
    assert!(error.to_string().contains("takes an integer"), "{error}");
    let error = refused("", &[], &["threads.pin=maybe"]);
    assert!(error.to_string().contains("true or false"), "{error}");
}

#[test]
fn writer_io_class_is_realtime_or_inherit() {
    assert_eq!(
        Config::default().threads.writer_io_class,
        WriterIoClass::Inherit
    );
    let config = load("", &[], &["threads.writer_io_class=realtime"]).expect("realtime");
    assert_eq!(config.threads.writer_io_class, WriterIoClass::Realtime);
    let config = load("", &[], &["threads.writer_io_class=inherit"]).expect("inherit");
    assert_eq!(config.threads.writer_io_class, WriterIoClass::Inherit);
    let config = load("[threads]\nwriter_io_class = \"realtime\"\n", &[], &[]).expect("realtime");
    assert_eq!(config.threads.writer_io_class, WriterIoClass::Realtime);
    for bad in ["rt", "idle", "best-effort", "4"] {
        let set = format!("threads.writer_io_class={bad}");
        let text = refused("", &[], &[&set]).to_string();
        assert!(text.contains("writer_io_class"), "{bad}: {text}");
    }
}

#[test]
fn hot_nice_takes_linux_nice_values_only() {
    assert_eq!(Config::default().threads.hot_nice, -10);
    for good in ["-20", "0", "19"] {
        let set = format!("threads.hot_nice={good}");
        let config = load("", &[], &[&set]).expect("a nice value");
        assert_eq!(config.threads.hot_nice.to_string(), good);
    }
    for bad in ["-21", "20", "100"] {
        let set = format!("threads.hot_nice={bad}");
        let error = refused("", &[], &[&set]);
        let text = error.to_string();
        assert!(text.contains("threads.hot_nice"), "{text}");
        assert!(text.contains("-20 to 19"), "{text}");
    }
}

#[test]
fn set_converts_to_the_key_type() {
    // --set values take the type of their key: integers, strings, core lists, options.
    let config = load(
        "",
        &[],
        &[
            "threads.shard_cores=0,1",
            "threads.receiver_core=1",
            "redis.key_prefix=7",
            "ingest.ring_slots=131_072",
            "threads.pin=false",
        ],
    )
    .expect("loads");
    assert_eq!(config.threads.shard_cores, vec![0, 1]);
    assert_eq!(config.threads.receiver_core, Some(1));
    assert_eq!(config.redis.key_prefix, "7");
    assert_eq!(config.ingest.ring_slots, 131_072);
    let reset = load(
        "[threads]\nreceiver_core = 1\n",
        &[],
        &["threads.receiver_core="],
    );
    assert_eq!(reset.map(|c| c.threads.receiver_core), Ok(None));
}

#[test]
fn bad_env_port_names_variable() {
    // A non-numeric CLICKHOUSE_PORT is refused naming the variable, its value and the fix.
    let error = refused("", &[("CLICKHOUSE_PORT", "90x0")], &[]);
    assert_eq!(
        error.to_string(),
        "CLICKHOUSE_PORT=\"90x0\" is not a port number (1-65535); unset it or give a number"
    );
    let error = refused("", &[("CLICKHOUSE_PORT", "0")], &[]);
    assert!(
        matches!(&error, ConfigError::Env { var, .. } if var == "CLICKHOUSE_PORT"),
        "{error:?}"
    );
}

#[test]
fn flush_interval_env_is_in_seconds() {
    // MARKET_DATA_FLUSH_INTERVAL is seconds, fractional allowed, stored as milliseconds.
    let ms = |value: &str| {
        load("", &[("MARKET_DATA_FLUSH_INTERVAL", value)], &[]).map(|c| c.ingest.flush_interval_ms)
    };
    assert_eq!(ms("0.5"), Ok(500));
    assert_eq!(ms("1"), Ok(1000));
    assert_eq!(ms("0.025"), Ok(25));
}

#[test]
fn bad_flush_interval_env_is_refused() {
    // Non-numbers, non-positive, sub-millisecond and over-an-hour intervals are refused by name.
    for bad in ["abc", "-1", "0", "0.0001", "NaN", "inf", "500ms", "7200"] {
        let error = refused("", &[("MARKET_DATA_FLUSH_INTERVAL", bad)], &[]);
        let ConfigError::Env { var, value, .. } = &error else {
            panic!("expected Env for {bad:?}, got {error:?}");
        };
        assert_eq!(var, "MARKET_DATA_FLUSH_INTERVAL");
        assert_eq!(value.as_deref(), Some(bad));
        assert!(error.to_string().contains("seconds"), "{error}");
    }
}

#[test]
fn compression_method_zstd_is_refused() {
    // COMPRESSION_METHOD=zstd is refused with the list of supported methods.
    let error = refused("", &[("COMPRESSION_METHOD", "zstd")], &[]);
    assert!(
        matches!(&error, ConfigError::Env { var, .. } if var == "COMPRESSION_METHOD"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("lz4, none"), "{message}");
    assert!(message.contains("\"zstd\""), "{message}");
}

#[test]
fn enable_compression_false_turns_compression_off() {
    // ENABLE_COMPRESSION=false (or 0/no) sets compression to none; true with none is refused.
    for off in ["false", "0", "no", "FALSE"] {
        let config = load("", &[("ENABLE_COMPRESSION", off)], &[]).expect("loads");
        assert_eq!(config.clickhouse.compression, Compression::None, "{off}");
    }
    let on = load(
        "[clickhouse]\ncompression = \"none\"\n",
        &[("ENABLE_COMPRESSION", "yes")],
        &[],
    );
    assert_eq!(on.map(|c| c.clickhouse.compression), Ok(Compression::Lz4));
    let both = [
        ("ENABLE_COMPRESSION", "true"),
        ("COMPRESSION_METHOD", "none"),
    ];
    assert!(matches!(refused("", &both, &[]), ConfigError::Env { .. }));
    let error = refused("", &[("ENABLE_COMPRESSION", "perhaps")], &[]);
    assert!(
        error
            .to_string()
            .starts_with("ENABLE_COMPRESSION=\"perhaps\""),
        "{error}"
    );
}

#[test]
fn zero_block_rows_max_is_refused() {
    // block_rows_max = 0 is refused by key from the file and by variable from the environment.
    let error = refused("[ingest]\nblock_rows_max = 0\n", &[], &[]);
    assert!(
        matches!(&error, ConfigError::Invalid { key, .. } if key == "ingest.block_rows_max"),
        "{error:?}"
    );
    assert!(error.to_string().contains("1 or more"), "{error}");
    let error = refused("", &[("MARKET_DATA_BATCH_SIZE", "0")], &[]);
    assert!(
        error
            .to_string()
            .starts_with("MARKET_DATA_BATCH_SIZE=\"0\" sets `ingest.block_rows_max`"),
        "{error}"
    );
    let error = refused("[ingest]\nblock_rows_max = 2000000\n", &[], &[]);
    assert!(error.to_string().contains("1048576"), "{error}");
}

#[test]
fn ring_slots_must_be_a_power_of_two() {
    // A ring size that is not a power of two is refused with the two nearest that are.
    let error = refused("[ingest]\nring_slots = 1000\n", &[], &[]);
    assert!(
        matches!(&error, ConfigError::Invalid { key, .. } if key == "ingest.ring_slots"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("512") && message.contains("1024"),
        "{message}"
    );
}

#[test]
fn missing_config_file_is_refused() {
    // A config file that does not exist is refused naming the path and --config.
    let path = std::env::temp_dir().join("alphapt-config-test-does-not-exist.toml");
    let error = Config::load(Some(&path), &env_of(&[]), &[]).expect_err("no such file");
    assert!(matches!(&error, ConfigError::Io { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("alphapt-config-test-does-not-exist.toml"),
        "{message}"
    );
    assert!(message.contains("--config"), "{message}");
}

#[test]
fn malformed_toml_reports_file_and_line() {
    // A TOML syntax error is refused with the file name and the line of the error.
    let error = refused("[ingest]\nshards = 1\nwriters = \n", &[], &[]);
    let ConfigError::Parse { path, line, .. } = &error else {
        panic!("expected Parse, got {error:?}");
    };
    assert_eq!(*line, 3);
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert!(!error.to_string().contains('\n'), "{error}");
}

#[test]
fn urls_must_parse_and_have_the_right_scheme() {
    // Malformed URLs and wrong schemes are refused by key; from the environment, by variable.
    let cases = [
        ("[nats]\nurl = \"http://127.0.0.1:4222\"\n", "nats.url"),
        ("[redis]\nurl = \"not a url\"\n", "redis.url"),
        ("[redis]\nurl = \"redis://\"\n", "redis.url"),
        ("[postgres]\nurl = \"mysql://u@h/db\"\n", "postgres.url"),
    ];
    for (file, expected) in cases {
        let error = refused(file, &[], &[]);
        assert!(
            matches!(&error, ConfigError::Invalid { key, .. } if key == expected),
            "{error:?}"
        );
    }
    let error = refused("", &[("NATS_URL", "http://u:nats-pw@h:4222")], &[]);
    assert!(
        matches!(&error, ConfigError::Env { var, .. } if var == "NATS_URL"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("scheme `http`"), "{message}");
    assert!(!message.contains("nats-pw"), "{message}");
}

#[test]
fn validation_section_layers_and_reaches_every_key() {
    // Every [validation] key loads from the file, `--set` wins over it, and the
    // bare-metal example sets its own thresholds.
    let file = "[validation]\nfuture_skew_ms = 500\nstale_window_ms = 5000\n\
                price_jump_band_pct = 5\nquantity_max = 1000\ninstruments_max = 4096\n\
                expected_fields = \"volume\"\n";
    let config = load(file, &[], &["validation.quantity_max=2000"]).expect("loads");
    assert_eq!(
        config.validation,
        ValidationConfig {
            future_skew_ms: 500,
            stale_window_ms: 5000,
            price_jump_band_pct: 5,
            quantity_max: 2000,
            instruments_max: 4096,
            expected_fields: crate::config::FieldSet(crate::shard::parse::FIELD_VOLUME),
        }
    );
    let path = tuning("bare-metal-16c.toml");
    let bare = Config::load_unvalidated(Some(&path), &env_of(&[]), &[]).expect("parses");
    assert_eq!(bare.validation.instruments_max, 65_536);
    assert_eq!(bare.validation.future_skew_ms, 500);
}

#[test]
fn bad_validation_values_name_the_key_and_the_fix() {
    // Each out-of-range threshold is refused by its dotted key with the accepted range
    // and the default; a negative count is a type error naming the key; a misspelt key
    // lists the real ones.
    let cases = [
        ("future_skew_ms = -1", "validation.future_skew_ms", "0.."),
        ("stale_window_ms = 0", "validation.stale_window_ms", "60000"),
        (
            "price_jump_band_pct = 0",
            "validation.price_jump_band_pct",
            "1..",
        ),
        ("quantity_max = 0", "validation.quantity_max", "10000000"),
        (
            "instruments_max = 0",
            "validation.instruments_max",
            "1048576",
        ),
        (
            "instruments_max = 2000000",
            "validation.instruments_max",
            "131072",
        ),
    ];
    for (line, expected, hint) in cases {
        let error = refused(&format!("[validation]\n{line}\n"), &[], &[]);
        assert!(
            matches!(&error, ConfigError::Invalid { key, .. } if key == expected),
            "{line}: {error:?}"
        );
        assert!(error.to_string().contains(hint), "{line}: {error}");
    }
    let error = refused("", &[], &["validation.price_jump_band_pct=-5"]);
    assert!(
        matches!(&error, ConfigError::WrongType { key, .. } if key == "validation.price_jump_band_pct"),
        "{error:?}"
    );
    let error = refused("[validation]\nstale_window_s = 60\n", &[], &[]);
    assert!(
        matches!(&error, ConfigError::UnknownKey { key, .. } if key == "validation.stale_window_s"),
        "{error:?}"
    );
    assert!(error.to_string().contains("stale_window_ms"), "{error}");
}

#[test]
fn postgres_backoff_is_bounded_and_ordered() {
    // The reference-data reconnect delays follow the same rules as ClickHouse's.
    let error = refused("[postgres]\nbackoff_initial_ms = 0\n", &[], &[]);
    assert!(
        matches!(&error, ConfigError::Invalid { key, .. } if key == "postgres.backoff_initial_ms"),
        "{error:?}"
    );
    let error = refused(
        "[postgres]\nbackoff_initial_ms = 5000\nbackoff_max_ms = 1000\n",
        &[],
        &[],
    );
    assert!(
        error.to_string().contains("postgres.backoff_max_ms"),
        "{error}"
    );
}

#[test]
fn ack_wait_must_exceed_flush_interval() {
    // JetStream would redeliver every tick if it gave up before a block could seal.
    let slow = "[ingest]\nflush_interval_ms = 1000\n[nats]\nack_wait_ms = 500\n";
    let error = refused(slow, &[], &[]);
    assert!(
        matches!(&error, ConfigError::Invalid { key, .. } if key == "nats.ack_wait_ms"),
        "{error:?}"
    );
    let core = load(&format!("{slow}source = \"core\"\n"), &[], &[]);
    assert!(core.is_ok(), "{core:?}");
}

#[test]
fn pinned_core_must_exist() {
    // With pin = true a core beyond the host's is refused naming the core, list and fix.
    let file = "[threads]\npin = true\nreceiver_core = 0\nshard_cores = [9]\nwriter_cores = [1]\n";
    let error = refused(file, &[], &[]);
    assert_eq!(
        error.to_string(),
        "`threads.shard_cores` names core 9, which does not exist on this 2-core host (cores 0-1); \
         remove it or set `threads.pin = false`"
    );
    let unpinned = "[threads]\npin = false\nshard_cores = [9]\n";
    assert!(load(unpinned, &[], &[]).is_ok());
}

#[test]
fn pinned_core_lists_match_thread_counts() {
    // With pin = true each shard and writer needs one core, and the receiver needs one.
    let file = "[ingest]\nshards = 2\n[threads]\npin = true\nreceiver_core = 0\nshard_cores = [1]\nwriter_cores = [1]\n";
    let error = refused(file, &[], &[]);
    assert!(
        matches!(&error, ConfigError::Invalid { key, .. } if key == "threads.shard_cores"),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("lists 1 cores but `ingest.shards` is 2"),
        "{error}"
    );
    let file = "[threads]\npin = true\nreceiver_core = 0\nshard_cores = [1]\nwriter_cores = []\n";
    let error = refused(file, &[], &[]);
    assert!(
        matches!(&error, ConfigError::Invalid { key, .. } if key == "threads.writer_cores"),
        "{error:?}"
    );
    let file = "[threads]\npin = true\nshard_cores = [1]\nwriter_cores = [1]\n";
    let error = refused(file, &[], &[]);
    assert!(
        matches!(&error, ConfigError::Invalid { key, .. } if key == "threads.receiver_core"),
        "{error:?}"
    );
    let shared =
        "[threads]\npin = true\nreceiver_core = 0\nshard_cores = [1]\nwriter_cores = [1]\n";
    assert!(
        load(shared, &[], &[]).is_ok(),
        "hybrid threads may share cores"
    );
}

#[test]
fn spinning_threads_need_their_own_cores() {
    // With wait = "spin" two hot threads on one core are refused.
    let file = "[threads]\npin = true\nwait = \"spin\"\nreceiver_core = 0\nshard_cores = [1]\nwriter_cores = [1]\n";
    let error = refused(file, &[], &[]);
    assert!(
        matches!(&error, ConfigError::Invalid { key, .. } if key == "threads.writer_cores"),
        "{error:?}"
    );
    assert!(error.to_string().contains("shard 0"), "{error}");
}

/// Passwords planted in every place a secret can live, for the redaction tests.
const PLANTED: [&str; 5] = [
    "ch-pw-111",
    "redis-pw-222",
    "pg-pw-333",
    "redis-url-pw-444",
    "nats-pw-555",
];

/// A config with each of [`PLANTED`] in a password or URL.
fn config_with_secrets() -> Config {
    let file = format!("[clickhouse]\npassword = \"{}\"\n", PLANTED[0]);
    let postgres = format!("postgres://u:{}@h:5432/db", PLANTED[2]);
    let redis = format!("redis://:{}@h:6379", PLANTED[3]);
    let nats = format!("nats://u:{}@h:4222", PLANTED[4]);
    let env = [
        ("REDIS_PASSWORD", PLANTED[1]),
        ("POSTGRES_URL", postgres.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("NATS_URL", nats.as_str()),
    ];
    let config = load(&file, &env, &[]).expect("loads");
    assert_eq!(config.clickhouse.password.expose(), PLANTED[0]);
    assert_eq!(config.redis.password.expose(), PLANTED[1]);
    config
}

#[test]
fn debug_hides_every_secret() {
    // `{:?}` of a config holding passwords and URL passwords shows none of them.
    let shown = format!("{:?} {:#?}", config_with_secrets(), config_with_secrets());
    for secret in PLANTED {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(shown.contains("***"), "{shown}");
    assert!(shown.contains("postgres://u:***@h:5432/db"), "{shown}");
}

#[test]
fn redacted_toml_hides_every_secret_and_parses() {
    // to_toml_redacted shows no secret and reads back as TOML and as a Config.
    let text = config_with_secrets().to_toml_redacted();
    for secret in PLANTED {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(toml::from_str::<toml::Table>(&text).is_ok(), "{text}");
    let back: Config = toml::from_str(&text).expect("reads back as a Config");
    assert_eq!(back.clickhouse.password.expose(), REDACTED);
    assert_eq!(back.nats.url, "nats://u:***@h:4222");
    let defaults: Config = toml::from_str(&Config::default().to_toml_redacted()).expect("parses");
    assert_eq!(defaults, Config::default());
}

#[test]
fn secret_errors_never_echo_the_value() {
    // Errors about secret keys, even misspelt ones, do not show the value given.
    let error = refused("", &[], &["clickhouse.pasword=hunter2"]);
    assert!(!error.to_string().contains("hunter2"), "{error}");
    let error = refused("", &[], &["clickhouse.password hunter2"]);
    assert!(!error.to_string().contains("hunter2"), "{error}");
    let error = refused("[redis]\npassword = 123456789\n", &[], &[]);
    assert!(!error.to_string().contains("123456789"), "{error}");
}

#[test]
fn secret_prints_stars_or_nothing() {
    // A set Secret prints as *** and an empty one as nothing, through Debug and Display.
    let set = Secret::new("hunter2");
    assert_eq!(format!("{set:?}"), "\"***\"");
    assert_eq!(set.to_string(), "***");
    assert_eq!(set.expose(), "hunter2");
    let empty = Secret::default();
    assert_eq!(format!("{empty:?}"), "\"\"");
    assert_eq!(empty.to_string(), "");
}

#[test]
fn redact_url_hides_passwords_only() {
    // redact_url hides user-info passwords and password query values, and keeps the rest.
    let cases = [
        ("redis://:pw@host:6379", "redis://:***@host:6379"),
        ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
        ("nats://u:pw@h", "nats://u:***@h"),
        ("postgres://u:p/w@d@h:5432/db", "postgres://u:***@h:5432/db"),
        (
            "postgres://u@h/db?sslmode=require&password=pw",
            "postgres://u@h/db?sslmode=require&password=***",
        ),
        (
            "postgres://h/db?password=pw",
            "postgres://h/db?password=***",
        ),
        ("redis://host:6379", "redis://host:6379"),
        ("redis://:@host", "redis://:@host"),
        ("not a url", "not a url"),
        ("", ""),
    ];
    for (input, expected) in cases {
        assert_eq!(redact_url(input), expected, "{input}");
    }
}

#[test]
fn online_core_list_is_read() {
    // The Linux CPU-list format gives the highest core, which host_cores turns into a count.
    assert_eq!(layer::highest_listed_core("0-15\n"), Some(15));
    assert_eq!(layer::highest_listed_core("0,2-3,8"), Some(8));
    assert_eq!(layer::highest_listed_core("0"), Some(0));
    assert_eq!(layer::highest_listed_core(""), None);
    assert!(host_cores() >= 1);
}

#[test]
fn spill_mode_and_insert_interval_load_and_bad_ones_are_refused() {
    let config = load(
        "",
        &[],
        &[
            "spill.mode=always",
            "spill.insert_interval_ms=250",
            "spill.insert_rows=500000",
            "spill.inserters=3",
            "spill.sort_inserts=false",
        ],
    )
    .unwrap();
    assert!(!config.spill.sort_inserts);
    assert!(load("", &[], &[]).unwrap().spill.sort_inserts);
    assert_eq!(config.spill.inserters, 3);
    assert_eq!(load("", &[], &[]).unwrap().spill.inserters, 2);
    assert_eq!(config.spill.mode, SpillMode::Always);
    assert_eq!(config.spill.insert_interval_ms, 250);
    assert_eq!(config.spill.insert_rows, 500_000);
    assert_eq!(load("", &[], &[]).unwrap().spill.insert_rows, 262_144);
    assert_eq!(load("", &[], &[]).unwrap().spill.mode, SpillMode::Always);
    let overflow = load("", &[], &["spill.mode=overflow"]).unwrap();
    assert_eq!(overflow.spill.mode, SpillMode::Overflow);
    let error = refused("", &[], &["spill.mode=sometimes"]);
    let text = error.to_string();
    assert!(
        text.contains("spill.mode") && text.contains("`always`"),
        "names the key and what it takes: {text}"
    );
    for (bad, key) in [
        ("spill.insert_interval_ms=0", "spill.insert_interval_ms"),
        (
            "spill.insert_interval_ms=600000",
            "spill.insert_interval_ms",
        ),
        ("spill.insert_rows=0", "spill.insert_rows"),
        ("spill.insert_rows=100000000", "spill.insert_rows"),
        ("spill.insert_rows=-1", "spill.insert_rows"),
        ("spill.inserters=0", "spill.inserters"),
        ("spill.inserters=9", "spill.inserters"),
        ("spill.inserters=two", "spill.inserters"),
        ("spill.sort_inserts=maybe", "spill.sort_inserts"),
    ] {
        let text = refused("", &[], &[bad]).to_string();
        assert!(text.contains(key), "{bad}: {text}");
    }
}

/// Journal-first journals every block, so a segment too small for the largest block
/// (a full reject block, ~4.6 MB) would stop intake for good: refused, naming the size
/// it needs. Overflow mode only spills what ClickHouse cannot take: a small segment is
/// allowed there (a block too large for it is held instead).
#[test]
fn a_journal_first_segment_smaller_than_a_block_is_refused() {
    let small = [
        "spill.segment_bytes=1048576",
        "spill.spill_bytes_max=2097152",
    ];
    let text = refused("", &[], &small).to_string();
    assert!(
        text.contains("spill.segment_bytes")
            && text.contains("ingest.block_rows_max")
            && text.contains("raise spill.segment_bytes to at least"),
        "says what it needs: {text}"
    );
    let overflow = [small[0], small[1], "spill.mode=overflow"];
    assert!(load("", &[], &overflow).is_ok());
    assert!(load("", &[], &[]).is_ok(), "the defaults hold a block");
}

/// One journal of a single segment can be full with nothing pending (the active
/// segment keeps the room of its stored blocks): a maximum under two segments is
/// refused, naming both keys; exactly two loads.
#[test]
fn a_spill_maximum_under_two_segments_is_refused() {
    let text = refused(
        "",
        &[],
        &[
            "spill.segment_bytes=1048576",
            "spill.spill_bytes_max=1572864",
            "spill.mode=overflow",
        ],
    )
    .to_string();
    assert!(
        text.contains("spill.segment_bytes") && text.contains("spill.spill_bytes_max"),
        "names both keys: {text}"
    );
    assert!(text.contains("2 segments"), "says why: {text}");
    let two = load(
        "",
        &[],
        &[
            "spill.segment_bytes=1048576",
            "spill.spill_bytes_max=2097152",
            "spill.mode=overflow",
        ],
    )
    .unwrap();
    assert_eq!(two.spill.spill_bytes_max, 2 << 20);
}

#[test]
fn ack_policy_loads_and_a_bad_one_is_refused() {
    let config = load("", &[], &["nats.ack_policy=all"]).unwrap();
    assert_eq!(config.nats.ack_policy, AckPolicy::All);
    assert_eq!(load("", &[], &[]).unwrap().nats.ack_policy, AckPolicy::None);
    let text = refused("[nats]\nack_policy = \"explicit\"\n", &[], &[]).to_string();
    assert!(
        text.contains("nats.ack_policy") && text.contains("`none`"),
        "names the key and what it takes: {text}"
    );
}

#[test]
fn expected_fields_load_as_names_and_a_wrong_name_is_refused() {
    use crate::config::FieldSet;
    use crate::shard::parse::{FIELD_OHLC, FIELD_OI, FIELD_VOLUME};
    let default = load("", &[], &[]).unwrap().validation.expected_fields;
    assert_eq!(default, FieldSet::PLATFORM_TICK);
    assert_eq!(
        default.to_string(),
        "tradingsymbol,last_quantity,volume,exchange_time"
    );
    let listed = load(
        "[validation]\nexpected_fields = [\"oi\", \"ohlc\"]\n",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(
        listed.validation.expected_fields,
        FieldSet(FIELD_OI | FIELD_OHLC)
    );
    let text = load("[validation]\nexpected_fields = \"volume, oi\"\n", &[], &[]).unwrap();
    assert_eq!(
        text.validation.expected_fields,
        FieldSet(FIELD_VOLUME | FIELD_OI)
    );
    let set = load("", &[], &["validation.expected_fields=ohlc"]).unwrap();
    assert_eq!(set.validation.expected_fields, FieldSet(FIELD_OHLC));
    let none = load("", &[], &["validation.expected_fields="]).unwrap();
    assert_eq!(none.validation.expected_fields, FieldSet(0));
    let error = refused(
        "",
        &[],
        &["validation.expected_fields=volume,open_interest"],
    )
    .to_string();
    assert!(
        error.contains("validation.expected_fields")
            && error.contains("open_interest")
            && error.contains("tradingsymbol"),
        "names the key, the wrong name and the right ones: {error}"
    );
}

#[test]
fn redis_cache_settings_are_checked_with_the_fix() {
    let cases: [(&[&str], &str, &str); 7] = [
        (
            &["redis.flush_interval_ms=0"],
            "redis.flush_interval_ms",
            "is 0",
        ),
        (
            &["redis.flush_interval_ms=5000"],
            "redis.flush_interval_ms",
            "over the limit of 1000",
        ),
        (
            &["redis.instruments_max=0"],
            "redis.instruments_max",
            "is 0",
        ),
        (
            &["redis.tick_ttl_s=99999999"],
            "redis.tick_ttl_s",
            "0 for keys that never expire",
        ),
        (
            &["redis.hash_tags=true", "redis.key_prefix=a{b}:"],
            "redis.key_prefix",
            "no braces",
        ),
        (
            &["redis.backoff_initial_ms=9000"],
            "redis.backoff_initial_ms",
            "above `redis.backoff_max_ms`",
        ),
        (
            &["redis.cluster=true"],
            "redis.cluster",
            "set `redis.hash_tags = true`",
        ),
    ];
    for (sets, key, fix) in cases {
        let text = refused("", &[], sets).to_string();
        assert!(text.contains(key) && text.contains(fix), "{sets:?}: {text}");
    }
    let config = load("", &[], &["redis.hash_tags=true", "redis.key_prefix=prod:"]).unwrap();
    assert!(config.redis.hash_tags);
    assert_eq!(config.redis.key_prefix, "prod:");
    let cluster = load("", &[], &["redis.cluster=true", "redis.hash_tags=true"]).unwrap();
    assert!(cluster.redis.cluster);
}

#[test]
fn log_settings_load_and_bad_ones_are_refused() {
    let config = load(
        "",
        &[],
        &["log.format=json", "log.level=warn,alphapt_storage=debug"],
    )
    .unwrap();
    assert_eq!(config.log.format, crate::config::LogFormat::Json);
    assert_eq!(config.log.level, "warn,alphapt_storage=debug");
    assert_eq!(load("", &[], &[]).unwrap().log.level, "info");
    for (toml, key, says) in [
        ("[log]\nformat = \"xml\"\n", "log.format", "`json`"),
        ("[log]\nlevel = \"loud\"\n", "log.level", "not a log filter"),
        ("[log]\nlevel = \"\"\n", "log.level", "empty"),
    ] {
        let text = refused(toml, &[], &[]).to_string();
        assert!(text.contains(key) && text.contains(says), "{toml}: {text}");
    }
}

#[test]
fn stream_max_bytes_is_zero_or_at_least_a_mebibyte() {
    assert_eq!(load("", &[], &[]).unwrap().nats.stream_max_bytes, 0);
    let config = load("", &[], &["nats.stream_max_bytes=2147483648"]).unwrap();
    assert_eq!(config.nats.stream_max_bytes, 2 << 30);
    let text = refused("[nats]\nstream_max_bytes = 1000\n", &[], &[]).to_string();
    assert!(
        text.contains("nats.stream_max_bytes") && text.contains("1048576"),
        "{text}"
    );
}

/// A password file with `mode`, for the secret-file tests.
fn secret_file(text: &str, mode: u32) -> TempFile {
    use std::os::unix::fs::PermissionsExt;
    let file = TempFile::new(text);
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    file
}

#[test]
fn passwords_come_from_files_keys_variables_and_systemd_credentials() {
    let ch = secret_file("ch-pw-1\n", 0o600);
    let ch_path = ch.path().to_str().unwrap().to_owned();
    let set = format!("clickhouse.password_file={ch_path}");
    let config = load("", &[], &[&set]).unwrap();
    assert_eq!(config.clickhouse.password.expose(), "ch-pw-1");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    // Never shown: not in Debug, not in --print-config.
    assert!(!format!("{config:?}").contains("ch-pw-1"));
    assert!(!config.to_toml_redacted().contains("ch-pw-1"));

    let redis = secret_file("r-pw\r\n", 0o644);
    let config = load(
        "",
        &[("REDIS_PASSWORD_FILE", redis.path().to_str().unwrap())],
        &[],
    )
    .unwrap();
    assert_eq!(config.redis.password.expose(), "r-pw");
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("redis.password_file") && w.contains("chmod 600")),
        "{:?}",
        config.warnings
    );

    let pg = secret_file("p@ss word", 0o400);
    let config = load(
        "",
        &[("POSTGRES_PASSWORD_FILE", pg.path().to_str().unwrap())],
        &["postgres.url=postgres://app@127.0.0.1:5432/x"],
    )
    .unwrap();
    assert_eq!(
        config.postgres.url,
        "postgres://app:p%40ss%20word@127.0.0.1:5432/x"
    );
    assert!(!config.to_toml_redacted().contains("p%40ss"));

    // systemd: a credential is read when nothing else names a password.
    let dir = std::env::temp_dir().join(format!("alphapt-creds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("clickhouse_password"), "from-systemd\n").unwrap();
    let creds = [("CREDENTIALS_DIRECTORY", dir.to_str().unwrap())];
    let config = load("", &creds, &[]).unwrap();
    assert_eq!(config.clickhouse.password.expose(), "from-systemd");
    let config = load("", &creds, &["clickhouse.password=given"]).unwrap();
    assert_eq!(config.clickhouse.password.expose(), "given");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_password_files_are_refused_naming_the_key_and_file_never_the_content() {
    let good = secret_file("hunter2", 0o600);
    let good_path = good.path().to_str().unwrap().to_owned();
    let empty = secret_file("\n", 0o600);
    let two_lines = secret_file("hunter2\nmore\n", 0o600);
    let big = secret_file(&"x".repeat(5000), 0o600);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["clickhouse.password_file=/no/such/file".into()],
            "cannot read it",
        ),
        (
            vec![format!(
                "clickhouse.password_file={}",
                empty.path().display()
            )],
            "is empty",
        ),
        (
            vec![format!(
                "clickhouse.password_file={}",
                two_lines.path().display()
            )],
            "more than one line",
        ),
        (
            vec![format!("clickhouse.password_file={}", big.path().display())],
            "at most 4096 bytes",
        ),
        (
            vec![
                format!("clickhouse.password_file={good_path}"),
                "clickhouse.password=also".into(),
            ],
            "keep one of them",
        ),
        (
            vec![
                format!("postgres.password_file={good_path}"),
                "postgres.url=postgres://127.0.0.1/x".into(),
            ],
            "name a user",
        ),
        (
            vec![
                format!("postgres.password_file={good_path}"),
                "postgres.url=postgres://u:pw@127.0.0.1/x".into(),
            ],
            "keep one of them",
        ),
    ];
    for (overrides, says) in cases {
        let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
        let text = refused("", &[], &overrides).to_string();
        assert!(
            text.contains("password_file") && text.contains(says),
            "{overrides:?}: {text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn a_remote_control_address_needs_allow_remote() {
    let text = refused("", &[("ALPHAPT_HTTP_ADDR", "0.0.0.0:9464")], &[]).to_string();
    assert!(
        text.contains("http.addr") && text.contains("http.allow_remote = true"),
        "{text}"
    );
    let config = load(
        "",
        &[("ALPHAPT_HTTP_ADDR", "0.0.0.0:9464")],
        &["http.allow_remote=true"],
    )
    .unwrap();
    assert!(config.http.allow_remote);
    assert!(load("", &[], &["http.addr=[::1]:9464"]).is_ok());
}

#[test]
fn url_secrets_are_found_as_written_and_decoded() {
    assert_eq!(url_secrets("nats://u:pw@h"), ["pw"]);
    assert_eq!(url_secrets("postgres://u:p%40ss@h/db"), ["p%40ss", "p@ss"]);
    assert_eq!(
        url_secrets("postgres://u@h/db?sslmode=require&password=x%2Fy"),
        ["x%2Fy", "x/y"]
    );
    assert!(url_secrets("redis://host:6379").is_empty());
    assert!(url_secrets("postgres://u@h/db?password=").is_empty());
    // A broken escape is kept as written (nothing to decode).
    assert_eq!(url_secrets("redis://:a%zz@h"), ["a%zz"]);
}

#[test]
fn scrub_hides_each_secret_longest_first() {
    let secrets = vec!["hunter22".to_owned(), "hunter2".to_owned()];
    assert_eq!(
        scrub_with("pw=hunter22 and hunter2", &secrets),
        "pw=*** and ***"
    );
    let untouched = scrub_with("nothing here", &secrets);
    assert!(matches!(untouched, std::borrow::Cow::Borrowed(_)));
    assert_eq!(scrub_with("hunter2", &[]), "hunter2");
}

#[test]
fn config_secrets_lists_passwords_and_url_credentials() {
    let mut config = Config::default();
    config.clickhouse.password = Secret::new("ch");
    config.redis.password = Secret::new("rd");
    config.nats.url = "nats://u:nt@h:4222".to_owned();
    config.postgres.url = "postgres://u:p%21@h/db".to_owned();
    let mut secrets = config.secrets();
    secrets.sort();
    assert_eq!(secrets, ["ch", "nt", "p!", "p%21", "rd"]);
}

#[test]
fn partitions_name_the_durable_and_the_filter() {
    let config = load("[nats]\npartitions = 12\npartition_ids = [7]\n", &[], &[]).expect("loads");
    assert_eq!(config.nats.partition(), Some(7));
    assert_eq!(config.nats.durable_name(), "alphapt-storage-p7");
    assert_eq!(
        config.nats.filter_subject("market.ticks.>").as_deref(),
        Some("market.ticks.7.*.*")
    );
    let set = load("", &[], &["nats.partitions=2", "nats.partition_ids=1"]).expect("loads");
    assert_eq!(set.nats.partition(), Some(1));
    let two = load(
        "[nats]\npartitions = 4\npartition_ids = [3, 1]\n[ingest]\nshards = 2\n",
        &[],
        &[],
    )
    .expect("loads");
    assert_eq!(two.nats.served(), [Some(3), Some(1)]);
    assert_eq!(two.nats.durable_of(Some(1)), "alphapt-storage-p1");
    assert_eq!(
        two.nats.filter_of("market.ticks.>", Some(1)).as_deref(),
        Some("market.ticks.1.*.*")
    );
    let off = load("", &[], &[]).expect("loads");
    assert_eq!(off.nats.served(), [None]);
    assert_eq!(off.nats.partition(), None);
    assert_eq!(off.nats.durable_name(), "alphapt-storage");
    assert_eq!(off.nats.filter_subject("market.ticks.>"), None);
}

#[test]
fn bad_partitions_are_refused_saying_why() {
    for (text, says) in [
        ("[nats]\npartition_ids = [1]\n", "`nats.partitions` is 0"),
        ("[nats]\npartitions = 4\n", "is empty"),
        ("[nats]\npartitions = 4\npartition_ids = [4]\n", "0 to 3"),
        (
            "[nats]\npartitions = 4\npartition_ids = [0, 1]\n[ingest]\nshards = 3\n",
            "multiple of 2",
        ),
        (
            "[nats]\npartitions = 4\npartition_ids = [1, 3, 1]\n",
            "names a partition twice",
        ),
        ("[nats]\npartitions = 4\npartition_ids = [1, 4]\n", "0 to 3"),
        (
            "[nats]\npartitions = 2000\npartition_ids = [0]\n",
            "1 to 1024",
        ),
        (
            "[nats]\npartitions = 4\npartition_ids = [0]\nsubject_ticks = \"ticks\"\n",
            "cannot be partitioned",
        ),
    ] {
        let error = refused(text, &[], &[]).to_string();
        assert!(error.contains(says), "{text}: {error}");
    }
}

#[test]
fn clickhouse_shards_come_from_the_file_or_a_set() {
    let file = "[clickhouse]\nshards = [[\"ch-1:9000\"], [\"ch-2:9001\"]]\n[ingest]\nshards = 4\nwriters = 2\n";
    let config = load(file, &[], &[]).expect("loads");
    assert_eq!(
        config.clickhouse.targets(),
        [("ch-1".to_owned(), 9000), ("ch-2".to_owned(), 9001)]
    );
    let set = load(
        "",
        &[],
        &[
            "clickhouse.shards=ch-1:9000; [::1]:9002",
            "ingest.shards=2",
            "ingest.writers=2",
        ],
    )
    .expect("loads");
    assert_eq!(
        set.clickhouse.targets(),
        [("ch-1".to_owned(), 9000), ("::1".to_owned(), 9002)]
    );
    // Empty: the one server of host and port.
    let single = load("", &[], &["clickhouse.shards="]).expect("loads");
    assert_eq!(
        single.clickhouse.targets(),
        [("127.0.0.1".to_owned(), 9000)]
    );
}

#[test]
fn bad_clickhouse_shards_are_refused_saying_why() {
    let two = ["ingest.shards=2", "ingest.writers=2"];
    for (set, says) in [
        ("clickhouse.shards=ch-1", "has no port"),
        ("clickhouse.shards=ch-1:0;ch-2:9000", "1 to 65535"),
        ("clickhouse.shards=:9000;ch-2:9000", "no usable host"),
        (
            "clickhouse.shards=http://ch:9000;ch-2:9000",
            "no usable host",
        ),
        (
            "clickhouse.shards=ch-1:9000;ch-1:9000",
            "names ch-1:9000 twice",
        ),
        (
            "clickhouse.shards=ch-1:9000,a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8;ch-2:9000",
            "at most 8",
        ),
        (
            "clickhouse.shards=ch-1:9000;;ch-2:9000",
            "shard 2: \"\" has no port",
        ),
    ] {
        let mut sets = vec![set];
        sets.extend(two);
        let error = refused("", &[], &sets).to_string();
        assert!(error.contains("clickhouse.shards"), "{set}: {error}");
        assert!(error.contains(says), "{set}: {error}");
    }
    let error = refused(
        "",
        &[],
        &[
            "clickhouse.shards=a:1;b:2",
            "ingest.shards=3",
            "ingest.writers=2",
        ],
    )
    .to_string();
    assert!(
        error.contains("ingest.shards") && error.contains("set it to 4"),
        "{error}"
    );
    let error = refused(
        "",
        &[],
        &[
            "clickhouse.shards=a:1;b:2",
            "ingest.shards=2",
            "ingest.writers=1",
        ],
    )
    .to_string();
    assert!(
        error.contains("ingest.writers") && error.contains("set it to 2"),
        "{error}"
    );
}
