//! Merging the layers as TOML tables and deserializing the result once.
//!
//! The file is parsed into a `toml::Table`; the environment ([`super::env`]) and each
//! `--set` value are written into it at their dotted key, converted to the TOML type of
//! that key's default; the table is then deserialized with `serde_path_to_error`, so serde's
//! `deny_unknown_fields` and type errors come back with the full dotted path, which is
//! looked up in [`Origins`] to say which layer put the bad value there.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{env, redact_url, Config, ConfigError, REDACTED};

/// Largest config file read, in bytes; a real one is a few KiB, so more is a wrong path.
const FILE_BYTES_MAX: u64 = 1 << 20;

/// Most entries in a core list given as text (`--set threads.shard_cores=2,3`).
const CORE_LIST_ENTRIES_MAX: usize = 1_024;

/// Keys whose values are secrets: never echoed in an error.
const SECRET_KEYS: [&str; 2] = ["clickhouse.password", "redis.password"];

/// Which layer set a key, for error messages.
#[derive(Clone, Debug)]
pub(crate) enum Origin {
    /// The TOML file at this path.
    File(PathBuf),
    /// The named environment variable.
    Env(&'static str),
    /// A `--set` argument (the key is in the message; the value is not kept, so a
    /// misspelt secret key cannot echo its value).
    Set,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "config file `{}`", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Set => f.write_str("--set"),
        }
    }
}

/// The layer that last set each dotted key, in the order they were set.
#[derive(Debug, Default)]
pub(crate) struct Origins {
    /// `(section.key, origin)` pairs; a later pair for the same key wins.
    entries: Vec<(String, Origin)>,
}

impl Origins {
    /// Records that `origin` set `key`.
    pub(crate) fn record(&mut self, key: &str, origin: Origin) {
        self.entries.push((key.to_owned(), origin));
    }

    /// Returns the layer that last set `path` (a dotted key, perhaps with a `[i]` index),
    /// or the one that set anything under it.
    fn of(&self, path: &str) -> Option<&Origin> {
        let key = path.split('[').next().unwrap_or(path);
        let prefix = format!("{key}.");
        self.entries
            .iter()
            .rev()
            .find(|(set, _)| set == key || set.starts_with(&prefix))
            .map(|(_, origin)| origin)
    }

    /// Describes where `path` came from, for an error message.
    fn describe(&self, path: &str) -> String {
        self.of(path)
            .map_or_else(|| "the defaults".to_owned(), Origin::to_string)
    }

    /// Rewrites a validation error about a key that an environment variable set into an
    /// error naming that variable and its value (never a password's, URLs redacted).
    pub(crate) fn attribute(
        &self,
        error: ConfigError,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> ConfigError {
        let ConfigError::Invalid { key, message } = error else {
            return error;
        };
        match self.of(&key) {
            Some(Origin::Env(var)) => ConfigError::Env {
                var: (*var).to_owned(),
                value: env::shown_value(var, lookup(var).as_deref().unwrap_or("")),
                message: format!("sets `{key}`, which {message}"),
            },
            _ => ConfigError::Invalid { key, message },
        }
    }
}

/// The TOML type a key takes, read off its default value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A string (also enums, addresses and secrets).
    Text,
    /// An integer.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A floating-point number.
    Float,
    /// A list of integers (the core lists).
    IntegerList,
    /// A list of lists of `host:port` (`clickhouse.shards`).
    ServerLists,
    /// Not in the defaults (an `Option` that defaults to absent, or an unknown key).
    Unknown,
}

/// Merges all layers and deserializes them, returning the config and who set what.
pub(crate) fn resolve(
    file: Option<&Path>,
    lookup: &dyn Fn(&str) -> Option<String>,
    overrides: &[String],
) -> Result<(Config, Origins), ConfigError> {
    let mut origins = Origins::default();
    let mut table = match file {
        Some(path) => read_file(path, &mut origins)?,
        None => Table::new(),
    };
    env::apply(&mut table, &mut origins, lookup)?;
    let schema = default_table();
    for text in overrides {
        apply_override(&mut table, &mut origins, &schema, text)?;
    }
    let config = decode(table, &origins)?;
    Ok((config, origins))
}

/// Reads and parses the config file, recording each key it sets.
fn read_file(path: &Path, origins: &mut Origins) -> Result<Table, ConfigError> {
    let io_error = |reason: String| ConfigError::Io {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|error| io_error(error.to_string()))?;
    let mut text = String::new();
    file.take(FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|error| io_error(error.to_string()))?;
    if text.len() as u64 > FILE_BYTES_MAX {
        return Err(io_error(format!(
            "it is over {FILE_BYTES_MAX} bytes, far larger than any config file"
        )));
    }
    let table: Table = toml::from_str(&text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        let (line, column) = line_and_column(&text, offset);
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: one_line(error.message()),
        }
    })?;
    for (section, value) in &table {
        match value.as_table() {
            Some(keys) => {
                for key in keys.keys() {
                    origins.record(&format!("{section}.{key}"), Origin::File(path.to_owned()));
                }
            }
            None => origins.record(section, Origin::File(path.to_owned())),
        }
    }
    Ok(table)
}

/// Joins a possibly multi-line parser message into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Returns the 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The defaults as a TOML table: the schema that `--set` values are typed by.
fn default_table() -> Table {
    match Value::try_from(Config::default()) {
        Ok(Value::Table(table)) => table,
        _ => Table::new(),
    }
}

/// Writes `value` at the dotted `key` (`section.key`) of `table`, or removes the key when
/// `value` is `None`. Fails when the section exists but is not a table.
pub(crate) fn set(
    table: &mut Table,
    origins: &Origins,
    key: &str,
    value: Option<Value>,
) -> Result<(), ConfigError> {
    let (section, name) = key.split_once('.').unwrap_or(("", key));
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| Value::Table(Table::new()));
    let Some(keys) = entry.as_table_mut() else {
        return Err(ConfigError::WrongType {
            key: section.to_owned(),
            origin: origins.describe(section),
            found: format!("{} instead of a table", entry.type_str()),
            expected: format!("a [{section}] table"),
        });
    };
    match value {
        Some(value) => {
            keys.insert(name.to_owned(), value);
        }
        None => {
            keys.remove(name);
        }
    }
    Ok(())
}

/// Applies one `--set section.key=value` argument.
fn apply_override(
    table: &mut Table,
    origins: &mut Origins,
    schema: &Table,
    text: &str,
) -> Result<(), ConfigError> {
    let shown = redact_override(text);
    let refuse = |message: String| ConfigError::Override {
        text: shown.clone(),
        message,
    };
    let Some((key, value)) = text.split_once('=') else {
        return Err(refuse(
            "has no `=`; write section.key=value, e.g. --set ingest.shards=2".to_owned(),
        ));
    };
    let (key, value) = (key.trim(), value.trim());
    if !is_dotted_key(key) {
        return Err(refuse(format!(
            "`{key}` is not a section.key name; write e.g. --set ingest.shards=2"
        )));
    }
    let kind = kind_of(schema, key);
    let value = convert(kind, value).map_err(|expected| {
        refuse(format!(
            "`{key}` takes {expected}; give e.g. {}",
            example_of(kind, key)
        ))
    })?;
    set(table, origins, key, value)?;
    origins.record(key, Origin::Set);
    Ok(())
}

/// Returns true for a key whose value is a secret, or looks like one (a misspelt
/// `clickhouse.pasword` must not echo its value either).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    SECRET_KEYS.contains(&key.as_str())
        || ["pas", "pw", "secret", "token", "cred", "auth"]
            .iter()
            .any(|word| key.contains(word))
}

/// Returns `text` (`key=value`) with the value hidden when the key is a secret or a URL.
fn redact_override(text: &str) -> String {
    match text.split_once('=') {
        None if is_secret_key(text) => {
            let key: String = text
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
                .collect();
            format!("{key} {REDACTED}")
        }
        Some((key, _)) if is_secret_key(key) => format!("{key}={REDACTED}"),
        Some((key, value)) if key.trim().ends_with("url") => {
            format!("{key}={}", redact_url(value))
        }
        _ => text.to_owned(),
    }
}

/// Returns true for `section.key`: two non-empty parts of `[a-z0-9_]`.
fn is_dotted_key(key: &str) -> bool {
    let is_name = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    };
    matches!(key.split_once('.'), Some((section, name)) if is_name(section) && is_name(name))
}

/// Returns the TOML type of `key` in the defaults.
fn kind_of(schema: &Table, key: &str) -> Kind {
    let (section, name) = key.split_once('.').unwrap_or(("", key));
    if key == "clickhouse.shards" {
        return Kind::ServerLists;
    }
    match schema.get(section).and_then(|keys| keys.get(name)) {
        Some(Value::String(_)) => Kind::Text,
        Some(Value::Integer(_)) => Kind::Integer,
        Some(Value::Boolean(_)) => Kind::Boolean,
        Some(Value::Float(_)) => Kind::Float,
        Some(Value::Array(_)) => Kind::IntegerList,
        Some(Value::Datetime(_) | Value::Table(_)) | None => Kind::Unknown,
    }
}

/// Converts `text` to a TOML value of `kind`; `Ok(None)` (empty text for a non-string key)
/// means "remove the key", restoring its default. `Err` holds what the key takes.
fn convert(kind: Kind, text: &str) -> Result<Option<Value>, &'static str> {
    if text.is_empty() && !matches!(kind, Kind::Text | Kind::IntegerList | Kind::ServerLists) {
        return Ok(None);
    }
    let value = match kind {
        Kind::Text => Value::String(text.to_owned()),
        Kind::Integer => Value::Integer(parse_integer(text).ok_or("an integer")?),
        Kind::Boolean => Value::Boolean(parse_bool(text).ok_or("true or false")?),
        Kind::Float => Value::Float(text.parse().map_err(|_| "a number")?),
        Kind::IntegerList => {
            parse_integer_list(text).ok_or("a comma-separated list of integers")?
        }
        Kind::ServerLists => {
            parse_server_lists(text).ok_or("shards separated by `;`, servers by `,`")?
        }
        Kind::Unknown => infer(text),
    };
    Ok(Some(value))
}

/// Reads an integer, allowing TOML's `_` digit separators (`65_536`).
fn parse_integer(text: &str) -> Option<i64> {
    text.replace('_', "").parse().ok()
}

/// Reads a boolean: `true/false`, `1/0`, `yes/no`, `on/off`, in any case.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    let text = text.trim().to_ascii_lowercase();
    match text.as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Reads `2,3,4` (or `[2, 3, 4]`, or empty for an empty list) as a TOML array of integers.
fn parse_integer_list(text: &str) -> Option<Value> {
    let inner = text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim();
    if inner.is_empty() {
        return Some(Value::Array(Vec::new()));
    }
    let mut items = Vec::new();
    for part in inner.split(',') {
        if items.len() == CORE_LIST_ENTRIES_MAX {
            return None;
        }
        items.push(Value::Integer(parse_integer(part.trim())?));
    }
    Some(Value::Array(items))
}

/// Reads `a:9000,b:9000;c:9000` (shards by `;`, a shard's servers by `,`; empty for
/// none) as a TOML array of arrays of strings. Entries are checked by validation.
fn parse_server_lists(text: &str) -> Option<Value> {
    let text = text.trim();
    if text.is_empty() {
        return Some(Value::Array(Vec::new()));
    }
    let mut shards = Vec::new();
    for shard in text.split(';') {
        if shards.len() == CORE_LIST_ENTRIES_MAX {
            return None;
        }
        let servers: Vec<Value> = shard
            .split(',')
            .map(|server| Value::String(server.trim().to_owned()))
            .take(CORE_LIST_ENTRIES_MAX)
            .collect();
        shards.push(Value::Array(servers));
    }
    Some(Value::Array(shards))
}

/// Types a value for a key the defaults do not show: integer, then boolean, then float,
/// then string. Wrong guesses are caught by deserialization, which names the key.
fn infer(text: &str) -> Value {
    if let Some(integer) = parse_integer(text) {
        Value::Integer(integer)
    } else if text == "true" || text == "false" {
        Value::Boolean(text == "true")
    } else if let Ok(float) = text.parse::<f64>() {
        Value::Float(float)
    } else {
        Value::String(text.to_owned())
    }
}

/// An example `--set` argument for a key of `kind`.
fn example_of(kind: Kind, key: &str) -> String {
    match kind {
        Kind::Integer | Kind::Unknown => format!("{key}=2"),
        Kind::Boolean => format!("{key}=true"),
        Kind::Float => format!("{key}=0.5"),
        Kind::IntegerList => format!("{key}=2,3"),
        Kind::ServerLists => format!("{key}=ch-1:9000;ch-2:9000"),
        Kind::Text => format!("{key}=text"),
    }
}

/// Deserializes the merged table, turning serde's errors into ones that name the dotted
/// key and its layer.
fn decode(table: Table, origins: &Origins) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(Value::Table(table)).map_err(|error| {
        let key = error.path().to_string();
        let message = one_line(error.inner().message());
        classify(key, &message, origins)
    })
}

/// Sorts one serde message into [`ConfigError::UnknownKey`] or [`ConfigError::WrongType`].
fn classify(key: String, message: &str, origins: &Origins) -> ConfigError {
    let origin = origins.describe(&key);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let expected = rest
            .split_once(", expected ")
            .map_or("a key listed in tuning/default.toml", |(_, list)| list);
        return ConfigError::UnknownKey {
            key,
            origin,
            expected: expected.to_owned(),
        };
    }
    let (found, expected) = split_found_expected(message);
    let found = if is_secret_key(&key) {
        "a value that is not a string".to_owned()
    } else {
        found
    };
    let expected = match expected {
        Some(expected) => friendly(&expected),
        None if key == "http.addr" => "an address like 127.0.0.1:9464".to_owned(),
        None => "a value like the one in tuning/default.toml".to_owned(),
    };
    ConfigError::WrongType {
        key,
        origin,
        found,
        expected,
    }
}

/// Splits serde's "invalid type: X, expected Y" (and its kin) into `X` and `Y`.
fn split_found_expected(message: &str) -> (String, Option<String>) {
    let body = ["invalid type: ", "invalid value: ", "invalid length "]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .or_else(|| message.strip_prefix("unknown variant "))
        .unwrap_or(message);
    match body.split_once(", expected ") {
        Some((found, expected)) if message.starts_with("unknown variant ") => {
            let expected = expected.trim_start_matches("one of ");
            (found.to_owned(), Some(format!("one of {expected}")))
        }
        Some((found, expected)) => (found.to_owned(), Some(expected.to_owned())),
        None => (format!("an unusable value ({body})"), None),
    }
}

/// Rewrites serde's name of a type into words an operator reads.
fn friendly(expected: &str) -> String {
    let words = match expected {
        "u16" => "an integer 0-65535",
        "u32" => "an integer 0-4294967295",
        "u64" | "usize" => "a non-negative integer",
        "a boolean" => "true or false",
        "socket address" => "an address like 127.0.0.1:9464",
        "a sequence" => "a list of integers like [2, 3]",
        other if other.starts_with("struct ") => "a table of keys, like [ingest]",
        other => other,
    };
    words.to_owned()
}

/// Returns the highest core listed in Linux's CPU-list format (`0-3,8,10-11`), if any.
pub(crate) fn highest_listed_core(text: &str) -> Option<usize> {
    text.trim()
        .split(',')
        .filter_map(|range| {
            let last = range.rsplit('-').next()?;
            last.trim().parse::<usize>().ok()
        })
        .max()
}
