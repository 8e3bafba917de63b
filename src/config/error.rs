//! Why a configuration was refused.
//!
//! Every message is one line that names the file, key, variable or `--set` text at fault
//! and ends with what the operator should do. No message carries a secret: password values
//! are never echoed and URLs are shown through [`super::redact_url`].

use std::path::PathBuf;

/// A configuration that cannot be loaded, with the key at fault and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file `{}`: {reason}; pass an existing, readable file to --config", path.display())]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading it failed, as the OS (or the size check) said.
        reason: String,
    },

    /// The config file is not valid TOML.
    #[error("config file `{}` is not valid TOML at line {line}, column {column}: {message}; fix the syntax there", path.display())]
    Parse {
        /// The file that failed to parse.
        path: PathBuf,
        /// The 1-based line of the first syntax error.
        line: usize,
        /// The 1-based column (in characters) of the first syntax error.
        column: usize,
        /// The TOML parser's description of the error.
        message: String,
    },

    /// A section or key that the configuration does not have.
    #[error("unknown key `{key}` in {origin}; expected {expected}; fix the spelling or remove it")]
    UnknownKey {
        /// The full dotted key, e.g. `ingest.block_rowz`.
        key: String,
        /// Where the key came from: the config file, an environment variable or `--set`.
        origin: String,
        /// The keys that are valid at that place, e.g. "one of `block_rows_max`, ...".
        expected: String,
    },

    /// A key whose value has the wrong type (a string where an integer belongs, ...).
    #[error("bad value for `{key}` in {origin}: found {found}; give {expected}")]
    WrongType {
        /// The full dotted key, e.g. `ingest.shards` or `threads.shard_cores[1]`.
        key: String,
        /// Where the value came from: the config file, an environment variable or `--set`.
        origin: String,
        /// What was found instead, e.g. "string \"four\"".
        found: String,
        /// What the key takes, e.g. "an integer 0-65535".
        expected: String,
    },

    /// A value of the right type that is impossible or unsafe (zero sizes, missing cores, ...).
    #[error("`{key}` {message}")]
    Invalid {
        /// The full dotted key at fault, e.g. `ingest.ring_slots`.
        key: String,
        /// What is wrong with it and the fix, e.g. "is 1000, not a power of two; ...".
        message: String,
    },

    /// An environment variable with a value the configuration cannot take.
    #[error("{}", env_line(var, value.as_deref(), message))]
    Env {
        /// The variable's name, e.g. `CLICKHOUSE_PORT`.
        var: String,
        /// The bad value as set (URLs redacted), or `None` for a password, which is never shown.
        value: Option<String>,
        /// What is wrong with it and the fix, e.g. "is not a port number (1-65535); ...".
        message: String,
    },

    /// A `--set` argument that is not of the form `section.key=value` or whose value does not fit.
    #[error("--set `{text}`: {message}")]
    Override {
        /// The argument as given, with any secret value replaced by `***`.
        text: String,
        /// What is wrong with it and the fix.
        message: String,
    },
}

/// Formats an environment error as `VAR="value" message`, or `VAR message` for a secret.
fn env_line(var: &str, value: Option<&str>, message: &str) -> String {
    match value {
        Some(value) => format!("{var}={value:?} {message}"),
        None => format!("{var} {message}"),
    }
}
