//! Secrets: a password type that never prints, and redaction of passwords inside URLs.
//!
//! STYLE §7: secrets never reach a log. A [`Secret`] prints as `***` through `Debug`,
//! `Display` and `Serialize`, so neither a `{:?}` of the config nor `--print-config` can
//! show it; [`Secret::expose`] is the one way to read it, at the point where a connection
//! is opened. URLs stay plain `String`s (the clients take them as text) and are passed
//! through [`redact_url`] wherever they are printed.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret, or the password inside a URL, prints as when it is set.
pub const REDACTED: &str = "***";

/// Query parameters whose value is a credential (libpq accepts `?password=`).
const SECRET_QUERY_PARAMS: [&str; 5] = ["password", "passwd", "pwd", "token", "secret"];

/// A password or token read from the config file, the environment or `--set`.
///
/// `Debug` prints `"***"` when set and `""` when empty; `Display` prints `***` or nothing.
/// Serializing writes `***` too, so a serialized config never holds the secret and does
/// not round-trip it: serialization exists only for `--print-config`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value` as a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret in clear text, for handing to a client library; never log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Returns true when no secret is set (the empty string).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text that stands in for the secret wherever it is shown.
    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            REDACTED
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.shown(), f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Returns `text` with the password of its user-info and any `password=`-like query
/// value replaced by `***`: `postgres://u:pw@h/db` becomes `postgres://u:***@h/db`.
///
/// Works on text, not on a parsed URL, so a malformed URL (the very one an error message
/// is about to show) is redacted too and the rest of it reads as the operator typed it.
/// Where the text is ambiguous it errs towards hiding: the user-info is taken to end at the
/// last `@` before any `?` or `#`, so a password holding `/` or `@` is still hidden.
#[must_use]
pub fn redact_url(text: &str) -> String {
    let authority_start = text.find("://").map_or(0, |at| at + "://".len());
    let query_start = text[authority_start..]
        .find(['?', '#'])
        .map(|at| authority_start + at);
    let head_end = query_start.unwrap_or(text.len());
    let mut out = String::with_capacity(text.len());
    let user_info_end = text[authority_start..head_end]
        .rfind('@')
        .map(|at| authority_start + at);
    let password_start = user_info_end.and_then(|end| {
        text[authority_start..end]
            .find(':')
            .map(|colon| authority_start + colon + 1)
    });
    match (password_start, user_info_end) {
        (Some(start), Some(end)) if start < end => {
            out.push_str(&text[..start]);
            out.push_str(REDACTED);
            out.push_str(&text[end..head_end]);
        }
        _ => out.push_str(&text[..head_end]),
    }
    if let Some(start) = query_start {
        out.push_str(&redact_query(&text[start..]));
    }
    out
}

/// Redacts credential-named parameters in a query (`?a=1&password=x`), keeping the rest.
fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (index, pair) in query.split('&').enumerate() {
        if index > 0 {
            out.push('&');
        }
        let body = pair.trim_start_matches(['?', '#']);
        let lead = &pair[..pair.len() - body.len()];
        match body.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_secret_param(name) => {
                out.push_str(lead);
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    out
}

/// Returns true when a query parameter's name says its value is a credential.
fn is_secret_param(name: &str) -> bool {
    SECRET_QUERY_PARAMS
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
}
