//! Helpers shared by the fuzz targets: a strict RFC 8259 JSON checker and a
//! re-speller that writes the same JSON value with other whitespace and string
//! escapes. Written for the fuzzer (simple, iterative, no recursion), not for speed.
//!
//! The JSON targets use them as oracles the parsers' docs promise:
//! - whatever the tick/signal parser accepts is JSON (`json_tests.rs`: "whatever we
//!   accept is JSON");
//! - spelling does not change the outcome: the tick parser's fast paths (guessed keys
//!   with `", "`/`": "` separators, word-at-a-time numbers, plain strings, templated
//!   timestamps) "can change the speed, never the outcome". The switch that turns
//!   them off is `#[cfg(test)]` only, so instead the same value is parsed in three
//!   spellings: the fast paths' favourite (`json.dumps` separators), compact, and one
//!   that defeats every fast path (newlines around tokens, ASCII letters and digits
//!   in strings written as `\u00XX`).

/// True when `ALPHAPT_FUZZ_SKIP_KNOWN=1` (run.sh: `FUZZ_SKIP_KNOWN=1`): the targets
/// then pass over inputs that would only find an already reported bug again (see
/// each target's `known_*` filter), so a run can look for the next one. Off by
/// default: a plain run must keep failing until the bug is fixed.
pub fn skip_known() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("ALPHAPT_FUZZ_SKIP_KNOWN").is_some_and(|v| v == "1"))
}

/// Known bug (reported; `src/shard/parse/json.rs` `Scanner::digits`): a number whose
/// integer part has 20 digits and still fits a `u64`, followed by a fraction,
/// overflows the mantissa (`attempt to multiply with overflow`; wraps in release).
/// True when `bytes` holds such a number: a run of 20 or more digits then `.`.
pub fn known_long_integer_with_fraction(bytes: &[u8]) -> bool {
    let mut run = 0usize;
    for &b in bytes {
        if b.is_ascii_digit() {
            run += 1;
        } else {
            if b == b'.' && run >= 20 {
                return true;
            }
            run = 0;
        }
    }
    false
}

/// One lexical token of a JSON text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token<'a> {
    /// `{ } [ ] : ,`
    Punct(u8),
    /// A string, the bytes between its quotes as written (escapes not decoded).
    Str(&'a [u8]),
    /// A number as written.
    Num(&'a [u8]),
    /// `true`, `false` or `null`.
    Lit(&'a [u8]),
}

/// What [`check`] found in a valid JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Json<'a> {
    /// The tokens in order.
    pub tokens: Vec<Token<'a>>,
    /// Deepest nesting of arrays and objects (a top-level object is 1).
    pub depth: usize,
}

impl Json<'_> {
    /// True when the top-level value is an object.
    pub fn is_object(&self) -> bool {
        self.tokens.first() == Some(&Token::Punct(b'{'))
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The length of the string body starting after an opening quote at `bytes[0]`
/// (so `bytes[1..1 + len]` is the body and `bytes[1 + len]` the closing quote), or
/// `None` when it is not a valid JSON string of valid UTF-8.
fn string_len(bytes: &[u8]) -> Option<usize> {
    let mut i = 1;
    loop {
        let b = *bytes.get(i)?;
        match b {
            b'"' => break,
            b'\\' => {
                match *bytes.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        let code = hex4(bytes.get(i + 2..i + 6)?)?;
                        i += 6;
                        // Surrogates only as a high-low pair, as serde_json and the
                        // parsers under test require (RFC 8259 §8.2 leaves lone ones
                        // to the implementation).
                        if (0xd800..0xdc00).contains(&code) {
                            if bytes.get(i..i + 2) != Some(&b"\\u"[..]) {
                                return None;
                            }
                            let low = hex4(bytes.get(i + 2..i + 6)?)?;
                            if !(0xdc00..0xe000).contains(&low) {
                                return None;
                            }
                            i += 6;
                        } else if (0xdc00..0xe000).contains(&code) {
                            return None;
                        }
                    }
                    _ => return None,
                }
            }
            0x00..=0x1f => return None,
            _ => i += 1,
        }
    }
    let body = &bytes[1..i];
    std::str::from_utf8(body).ok()?;
    Some(i - 1)
}

/// Four hex digits.
fn hex4(hex: &[u8]) -> Option<u32> {
    std::str::from_utf8(hex)
        .ok()
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| u32::from_str_radix(h, 16).ok())
}

/// The length of the number at the start of `bytes` (RFC 8259 §6), or `None`.
fn number_len(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    match bytes.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return None,
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    Some(i)
}

/// Checks `bytes` is one JSON text (RFC 8259: one value, whitespace around it, UTF-8
/// strings) and returns its tokens, or `None`.
pub fn check(bytes: &[u8]) -> Option<Json<'_>> {
    // Grammar states: what may come next.
    #[derive(Clone, Copy, PartialEq)]
    enum Expect {
        /// A value (top level, after `:` or `,` in an array, or after `[`).
        Value,
        /// A value or `]` (right after `[`).
        ValueOrClose,
        /// A key (after `,` in an object).
        Key,
        /// A key or `}` (right after `{`).
        KeyOrClose,
        /// `:` after a key.
        Colon,
        /// `,` or the closing bracket of the innermost container; or the end.
        CommaOrClose,
    }
    let mut tokens = Vec::new();
    let mut stack: Vec<u8> = Vec::new();
    let mut depth = 0;
    let mut expect = Expect::Value;
    let mut i = 0;
    loop {
        while bytes.get(i).copied().is_some_and(is_ws) {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else {
            return (expect == Expect::CommaOrClose && stack.is_empty())
                .then_some(Json { tokens, depth });
        };
        if stack.is_empty() && expect == Expect::CommaOrClose {
            return None; // Trailing bytes after the top-level value.
        }
        let value = matches!(expect, Expect::Value | Expect::ValueOrClose);
        match b {
            b'{' | b'[' if value => {
                stack.push(b);
                depth = depth.max(stack.len());
                tokens.push(Token::Punct(b));
                expect = if b == b'{' {
                    Expect::KeyOrClose
                } else {
                    Expect::ValueOrClose
                };
                i += 1;
            }
            b'}' | b']' => {
                let open = if b == b'}' { b'{' } else { b'[' };
                let ok = match expect {
                    Expect::CommaOrClose => true,
                    Expect::KeyOrClose => b == b'}',
                    Expect::ValueOrClose => b == b']',
                    _ => false,
                };
                if !ok || stack.pop() != Some(open) {
                    return None;
                }
                tokens.push(Token::Punct(b));
                expect = Expect::CommaOrClose;
                i += 1;
            }
            b',' if expect == Expect::CommaOrClose => {
                tokens.push(Token::Punct(b));
                expect = if stack.last() == Some(&b'{') {
                    Expect::Key
                } else {
                    Expect::Value
                };
                i += 1;
            }
            b':' if expect == Expect::Colon => {
                tokens.push(Token::Punct(b));
                expect = Expect::Value;
                i += 1;
            }
            b'"' if value || matches!(expect, Expect::Key | Expect::KeyOrClose) => {
                let len = string_len(&bytes[i..])?;
                tokens.push(Token::Str(&bytes[i + 1..i + 1 + len]));
                expect = if value {
                    Expect::CommaOrClose
                } else {
                    Expect::Colon
                };
                i += len + 2;
            }
            b'-' | b'0'..=b'9' if value => {
                let len = number_len(&bytes[i..])?;
                tokens.push(Token::Num(&bytes[i..i + len]));
                expect = Expect::CommaOrClose;
                i += len;
            }
            b't' | b'f' | b'n' if value => {
                let literal: &[u8] = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                if bytes.get(i..i + literal.len()) != Some(literal) {
                    return None;
                }
                tokens.push(Token::Lit(literal));
                expect = Expect::CommaOrClose;
                i += literal.len();
            }
            _ => return None,
        }
    }
}

/// Ways to write the same JSON value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// `json.dumps` defaults: `", "` and `": "`, nothing else; what the fast paths expect.
    Python,
    /// No whitespace at all.
    Compact,
    /// Newline and tab around every token, and every ASCII letter and digit inside
    /// strings (keys included) as a `\u00XX` escape: no fast path can take it.
    Escaped,
}

/// Writes `json` in `spelling`.
pub fn respell(json: &Json<'_>, spelling: Spelling) -> Vec<u8> {
    let mut out = Vec::new();
    for token in &json.tokens {
        if spelling == Spelling::Escaped {
            out.extend_from_slice(b"\n\t");
        }
        match *token {
            Token::Punct(p) => {
                out.push(p);
                if spelling == Spelling::Python && matches!(p, b',' | b':') {
                    out.push(b' ');
                }
            }
            Token::Num(text) | Token::Lit(text) => out.extend_from_slice(text),
            Token::Str(body) => {
                out.push(b'"');
                if spelling == Spelling::Escaped {
                    escape_alnum(body, &mut out);
                } else {
                    out.extend_from_slice(body);
                }
                out.push(b'"');
            }
        }
    }
    if spelling == Spelling::Escaped {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Copies a string body, writing ASCII letters and digits that are not part of an
/// existing escape as `\u00XX`.
fn escape_alnum(body: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'\\' {
            // Keep the escape as written: `\X` or `\uXXXX`.
            let len = if body.get(i + 1) == Some(&b'u') { 6 } else { 2 };
            let end = (i + len).min(body.len());
            out.extend_from_slice(&body[i..end]);
            i = end;
        } else if b.is_ascii_alphanumeric() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
            i += 1;
        } else {
            out.push(b);
            i += 1;
        }
    }
}

/// Bytes as a Rust-style escaped string, for assertion messages.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_follows_rfc_8259() {
        for good in [
            &br#"{}"#[..],
            br#" {"a": [1, -0.5e+3, "x\u00e9\n", true, null, {}]} "#,
            br#"[]"#,
            br#""s""#,
            br#"0"#,
            br#""\ud83d\ude00""#,
        ] {
            assert!(check(good).is_some(), "{}", show(good));
        }
        for bad in [
            &b""[..],
            b"{",
            b"{}}",
            b"{} x",
            b"[1,]",
            b"{\"a\"}",
            b"{\"a\":}",
            b"01",
            b"1.",
            b"-",
            b"\"\x01\"",
            b"\"\\x\"",
            b"\"\xff\"",
            b"nul",
            b"[1 2]",
            b"{,}",
            br#""\ud800""#,
            br#""\udc00\ud800""#,
            br#""\ud800\u0041""#,
        ] {
            assert!(check(bad).is_none(), "{}", show(bad));
        }
    }

    #[test]
    fn respellings_are_the_same_json() {
        let text = br#"{"last_price": 1.5, "x": ["a\"b", {"k": null}]}"#;
        let json = check(text).unwrap();
        for spelling in [Spelling::Python, Spelling::Compact, Spelling::Escaped] {
            let again = respell(&json, spelling);
            let parsed: serde_json::Value = serde_json::from_slice(&again).unwrap();
            assert_eq!(
                parsed,
                serde_json::from_slice::<serde_json::Value>(text).unwrap()
            );
            assert_eq!(check(&again).unwrap().depth, json.depth);
        }
    }
}
