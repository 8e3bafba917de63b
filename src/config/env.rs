//! The platform's environment variables (DESIGN §5) and the keys they set.
//!
//! Each variable is converted here to its key's TOML type and written into the merged
//! table; a value that cannot be converted is refused with the variable's name, its value
//! (never a password's; URLs redacted) and the fix. Range and relation checks happen once,
//! in validation, and [`super::layer::Origins::attribute`] names the variable there too.

use toml::{Table, Value};

use super::layer::{self, Origin, Origins};
use super::{redact_url, ConfigError};

/// How a variable's text is read.
#[derive(Clone, Copy, Debug)]
enum Reading {
    /// Plain text, taken as is.
    Text,
    /// A password: taken as is, never shown, and empty means "no password".
    Secret,
    /// A URL: taken as is, shown with its password redacted.
    Url,
    /// A TCP port, 1-65535.
    Port,
    /// A whole number that fits a `u32`; the text names what it counts.
    Count(&'static str),
    /// A duration in seconds, possibly fractional, stored as whole milliseconds.
    Seconds,
    /// A socket address, `IP:PORT`.
    Address,
}

/// The variables that map one-to-one onto a key, with how each is read.
const VARIABLES: [(&str, &str, Reading); 18] = [
    ("CLICKHOUSE_HOST", "clickhouse.host", Reading::Text),
    ("CLICKHOUSE_PORT", "clickhouse.port", Reading::Port),
    ("CLICKHOUSE_DATABASE", "clickhouse.database", Reading::Text),
    ("CLICKHOUSE_USERNAME", "clickhouse.username", Reading::Text),
    (
        "CLICKHOUSE_PASSWORD",
        "clickhouse.password",
        Reading::Secret,
    ),
    ("REDIS_URL", "redis.url", Reading::Url),
    ("REDIS_PASSWORD", "redis.password", Reading::Secret),
    (
        "REDIS_MAX_CONNECTIONS",
        "redis.max_connections",
        Reading::Count("connections"),
    ),
    (
        "MARKET_DATA_BATCH_SIZE",
        "ingest.block_rows_max",
        Reading::Count("rows"),
    ),
    (
        "MARKET_DATA_FLUSH_INTERVAL",
        "ingest.flush_interval_ms",
        Reading::Seconds,
    ),
    (
        "MARKET_DATA_BUFFER_SIZE",
        "ingest.ring_slots",
        Reading::Count("ring slots"),
    ),
    ("NATS_URL", "nats.url", Reading::Url),
    ("POSTGRES_URL", "postgres.url", Reading::Url),
    ("ALPHAPT_HTTP_ADDR", "http.addr", Reading::Address),
    (
        "CLICKHOUSE_PASSWORD_FILE",
        "clickhouse.password_file",
        Reading::Text,
    ),
    ("REDIS_PASSWORD_FILE", "redis.password_file", Reading::Text),
    (
        "POSTGRES_PASSWORD_FILE",
        "postgres.password_file",
        Reading::Text,
    ),
    (
        "ALPHAPT_RETENTION_DAYS",
        "clickhouse.retention_days",
        Reading::Count("days"),
    ),
];

/// Turns compression on or off; read together with [`COMPRESSION_METHOD`].
const ENABLE_COMPRESSION: &str = "ENABLE_COMPRESSION";

/// Names the compression; only `lz4` and `none` are supported.
const COMPRESSION_METHOD: &str = "COMPRESSION_METHOD";

/// The key both compression variables set.
const COMPRESSION_KEY: &str = "clickhouse.compression";

/// Longest flush interval accepted from the environment, in seconds (one hour).
const FLUSH_INTERVAL_S_MAX: f64 = 3_600.0;

/// Writes every set variable into `table` at its key.
pub(crate) fn apply(
    table: &mut Table,
    origins: &mut Origins,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (var, key, reading) in VARIABLES {
        let Some(raw) = lookup(var) else { continue };
        if raw.is_empty() && !matches!(reading, Reading::Secret) {
            continue;
        }
        let value = read(var, &raw, reading)?;
        layer::set(table, origins, key, Some(value))?;
        origins.record(key, Origin::Env(var));
    }
    apply_compression(table, origins, lookup)
}

/// Applies `ENABLE_COMPRESSION` and `COMPRESSION_METHOD`.
///
/// | ENABLE_COMPRESSION | COMPRESSION_METHOD | result |
/// | --- | --- | --- |
/// | unset | unset | the file's value |
/// | unset | m | m |
/// | false | any supported | `none` |
/// | true | unset or `lz4` | `lz4` |
/// | true | `none` | refused: a contradiction |
fn apply_compression(
    table: &mut Table,
    origins: &mut Origins,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let non_empty = |var: &str| lookup(var).filter(|text| !text.trim().is_empty());
    let method = match non_empty(COMPRESSION_METHOD) {
        Some(text) => Some(read_method(&text)?),
        None => None,
    };
    let enabled = match non_empty(ENABLE_COMPRESSION) {
        Some(text) => Some(layer::parse_bool(&text).ok_or_else(|| ConfigError::Env {
            var: ENABLE_COMPRESSION.to_owned(),
            value: Some(text.clone()),
            message: "is not a boolean; give true or false (1/0, yes/no, on/off also work), or unset it"
                .to_owned(),
        })?),
        None => None,
    };
    let (chosen, var) = match (enabled, method) {
        (None, None) => return Ok(()),
        (None, Some(method)) => (method, COMPRESSION_METHOD),
        (Some(false), _) => ("none", ENABLE_COMPRESSION),
        (Some(true), None | Some("lz4")) => ("lz4", ENABLE_COMPRESSION),
        (Some(true), Some(method)) => {
            return Err(ConfigError::Env {
                var: COMPRESSION_METHOD.to_owned(),
                value: Some(method.to_owned()),
                message: "contradicts ENABLE_COMPRESSION=true; set COMPRESSION_METHOD=lz4, or ENABLE_COMPRESSION=false to turn compression off"
                    .to_owned(),
            });
        }
    };
    layer::set(
        table,
        origins,
        COMPRESSION_KEY,
        Some(Value::String(chosen.to_owned())),
    )?;
    origins.record(COMPRESSION_KEY, Origin::Env(var));
    Ok(())
}

/// Reads `COMPRESSION_METHOD`, refusing anything but `lz4` and `none`.
fn read_method(text: &str) -> Result<&'static str, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "lz4" => Ok("lz4"),
        "none" => Ok("none"),
        _ => Err(ConfigError::Env {
            var: COMPRESSION_METHOD.to_owned(),
            value: Some(text.to_owned()),
            message: "is not a supported compression method; supported: lz4, none (zstd is not implemented); set one of them or unset it"
                .to_owned(),
        }),
    }
}

/// Converts one variable's text to the TOML value of its key.
fn read(var: &'static str, raw: &str, reading: Reading) -> Result<Value, ConfigError> {
    let text = raw.trim();
    let refuse = |message: String| ConfigError::Env {
        var: var.to_owned(),
        value: shown_value(var, raw),
        message,
    };
    match reading {
        Reading::Text | Reading::Url => Ok(Value::String(text.to_owned())),
        Reading::Secret => Ok(Value::String(raw.to_owned())),
        Reading::Port => match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Value::Integer(i64::from(port))),
            _ => Err(refuse(
                "is not a port number (1-65535); unset it or give a number".to_owned(),
            )),
        },
        Reading::Count(noun) => match text.replace('_', "").parse::<u32>() {
            Ok(count) => Ok(Value::Integer(i64::from(count))),
            Err(_) => Err(refuse(format!(
                "is not a whole number of {noun} (0-{}); unset it or give a number",
                u32::MAX
            ))),
        },
        Reading::Seconds => read_seconds(text).map_err(refuse),
        Reading::Address => match text.parse::<std::net::SocketAddr>() {
            Ok(_) => Ok(Value::String(text.to_owned())),
            Err(_) => Err(refuse(
                "is not a socket address; give IP:PORT like 127.0.0.1:9464 or [::1]:9464, or unset it"
                    .to_owned(),
            )),
        },
    }
}

/// Reads a flush interval given in seconds (`0.5`, `1`, `2.25`) as whole milliseconds.
fn read_seconds(text: &str) -> Result<Value, String> {
    let fix = "give seconds as a number like 0.5 or 1, or unset it";
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("is not a number of seconds; {fix}"))?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("is not a positive number of seconds; {fix}"));
    }
    if seconds > FLUSH_INTERVAL_S_MAX {
        return Err(format!(
            "is over {FLUSH_INTERVAL_S_MAX} seconds (the value is in seconds, not milliseconds); {fix}"
        ));
    }
    let milliseconds = (seconds * 1_000.0).round();
    if milliseconds < 1.0 {
        return Err(format!("is under 1 millisecond; {fix}"));
    }
    // In range: 1 ..= 3_600_000, checked above, so the cast neither truncates nor wraps.
    Ok(Value::Integer(milliseconds as i64))
}

/// The value of `var` as an error may show it: `None` for a password, URLs redacted.
pub(crate) fn shown_value(var: &str, raw: &str) -> Option<String> {
    let reading = VARIABLES
        .iter()
        .find(|(name, _, _)| *name == var)
        .map(|(_, _, reading)| *reading);
    match reading {
        Some(Reading::Secret) => None,
        Some(Reading::Url) => Some(redact_url(raw)),
        _ => Some(raw.to_owned()),
    }
}
