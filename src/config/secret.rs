//! Secrets: a password type that never prints, and redaction of passwords inside URLs.
//!
//! STYLE §7: secrets never reach a log. A [`Secret`] prints as `***` through `Debug`,
//! `Display` and `Serialize`, so neither a `{:?}` of the config nor `--print-config` can
//! show it; [`Secret::expose`] is the one way to read it, at the point where a connection
//! is opened. URLs stay plain `String`s (the clients take them as text) and are passed
//! through [`redact_url`] wherever they are printed.
//!
//! Redaction at each print site is the rule; [`scrub`] is the net under it. Once the
//! config is loaded the binary [`remember`]s its clear-text secrets, and the panic hook,
//! the top-level error and every log line pass through [`scrub`], so a bug that formats
//! a password into text the sites above never saw still prints `***`:
//!
//! ```text
//!   Config::load ─► Config::secrets() ─► remember() ─► KNOWN (set once)
//!   panic message ─┐
//!   error chain ───┼─► scrub(text) ─► "***" in place of each known secret ─► stderr
//!   log line ──────┘
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

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
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for span in secret_spans(text) {
        out.push_str(&text[at..span.start]);
        out.push_str(REDACTED);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

/// The credentials inside a URL's text (the user-info password and `password=`-like
/// query values), as written and, where they differ, percent-decoded as a client would
/// use them: what [`scrub`] must look for.
#[must_use]
pub fn url_secrets(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for span in secret_spans(text) {
        let written = &text[span];
        found.push(written.to_owned());
        let decoded = percent_decoded(written);
        if decoded != written {
            found.push(decoded);
        }
    }
    found
}

/// Byte ranges of the credentials in `text`, in order, never overlapping.
fn secret_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let authority_start = text.find("://").map_or(0, |at| at + "://".len());
    let query_start = text[authority_start..]
        .find(['?', '#'])
        .map(|at| authority_start + at);
    let head_end = query_start.unwrap_or(text.len());
    let mut spans = Vec::new();
    let user_info_end = text[authority_start..head_end]
        .rfind('@')
        .map(|at| authority_start + at);
    let password_start = user_info_end.and_then(|end| {
        text[authority_start..end]
            .find(':')
            .map(|colon| authority_start + colon + 1)
    });
    if let (Some(start), Some(end)) = (password_start, user_info_end) {
        if start < end {
            spans.push(start..end);
        }
    }
    if let Some(query_start) = query_start {
        let mut pair_start = query_start;
        for pair in text[query_start..].split('&') {
            let body = pair.trim_start_matches(['?', '#']);
            let body_start = pair_start + (pair.len() - body.len());
            if let Some((name, value)) = body.split_once('=') {
                if !value.is_empty() && is_secret_param(name) {
                    let value_start = body_start + name.len() + 1;
                    spans.push(value_start..value_start + value.len());
                }
            }
            pair_start += pair.len() + 1;
        }
    }
    spans
}

/// `%XX` escapes decoded; an escape that is not two hex digits, or bytes that do not
/// form UTF-8, are kept as written.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// Returns true when a query parameter's name says its value is a credential.
fn is_secret_param(name: &str) -> bool {
    SECRET_QUERY_PARAMS
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
}

/// The secrets of this process, remembered once the config is loaded, for [`scrub`].
static KNOWN: OnceLock<Vec<String>> = OnceLock::new();

/// Remembers the secrets [`scrub`] hides from then on (the first call wins; the config
/// is loaded once a process). Empty values are dropped; longer ones are replaced first
/// so that a secret holding a shorter one is hidden whole.
pub fn remember(secrets: Vec<String>) {
    let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    secrets.dedup();
    let _ = KNOWN.set(secrets);
}

/// `text` with every remembered secret replaced by `***`: the last guard for text that
/// leaves the process by a path no redaction was written for (panic messages, top-level
/// errors, log lines). Borrows `text` when there is nothing to hide.
#[must_use]
pub fn scrub(text: &str) -> Cow<'_, str> {
    scrub_with(text, KNOWN.get().map_or(&[], Vec::as_slice))
}

/// [`scrub`] against the given secrets (longest first).
#[must_use]
pub fn scrub_with<'a>(text: &'a str, secrets: &[String]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for secret in secrets {
        if !secret.is_empty() && out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    out
}
