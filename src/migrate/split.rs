//! Splits a migration file into statements at top-level semicolons.
//!
//! ```text
//!  file text ──scan byte by byte──► [Statement { text, line }, ..]
//!             (a semicolon counts only outside quotes, comments and dollar quotes)
//! ```
//!
//! Pure: no I/O. The scanner is a small state machine over the lexical elements both
//! servers share — `'strings'`, `"identifiers"`, `` `identifiers` `` (ClickHouse),
//! `-- line` and `/* block */` comments (nested, as PostgreSQL allows), and
//! `$tag$ .. $tag$` dollar quotes (PostgreSQL function bodies; ClickHouse ≥ 23 heredocs).
//! The dialect only decides what a backslash means inside a quote: an escape in
//! ClickHouse, a plain character in PostgreSQL unless the string is `E'..'`.
//! A statement made only of comments and whitespace is dropped, so a file may end
//! with a comment or hold none at all (a legacy file that has nothing to do).

/// Which server's quoting rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Backslash escapes inside every kind of quote.
    ClickHouse,
    /// Standard-conforming strings: backslash escapes only inside `E'..'`.
    Postgres,
}

/// One statement, trimmed, without its closing semicolon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The statement text, comments inside it kept.
    pub text: String,
    /// 1-based line of the file where the statement's first token is.
    pub line: usize,
}

/// A file the scanner cannot split because a quote or comment never ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} opened on line {line} is never closed; close it (a stray quote in a comment counts only outside `--` and `/* */`)")]
pub struct SplitError {
    /// What was left open: "string", "quoted identifier", "block comment", "dollar quote".
    pub what: &'static str,
    /// 1-based line where it opened.
    pub line: usize,
}

/// Splits `sql` into statements. See the module doc for the rules.
pub fn split(sql: &str, dialect: Dialect) -> Result<Vec<Statement>, SplitError> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut line = 1;
    // Set by the first byte that is neither whitespace nor inside a comment.
    let mut first_token_line: Option<usize> = None;
    // Every iteration advances `i` by at least one byte, so the loop ends.
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        let opened_at = line;
        match b {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b';' => {
                push(&mut statements, &sql[start..i], first_token_line.take());
                i += 1;
                start = i;
            }
            b'-' if next == Some(b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |p| i + p);
            }
            b'/' if next == Some(b'*') => {
                i = skip_block_comment(bytes, i, &mut line).ok_or(SplitError {
                    what: "block comment",
                    line: opened_at,
                })?;
            }
            b'\'' | b'"' | b'`' => {
                first_token_line.get_or_insert(line);
                let escapes = match dialect {
                    Dialect::ClickHouse => true,
                    Dialect::Postgres => b == b'\'' && is_escape_string_prefix(bytes, i),
                };
                i = skip_quoted(bytes, i, escapes, &mut line).ok_or(SplitError {
                    what: if b == b'\'' {
                        "string"
                    } else {
                        "quoted identifier"
                    },
                    line: opened_at,
                })?;
            }
            b'$' => {
                first_token_line.get_or_insert(line);
                i = match dollar_tag(bytes, i) {
                    Some(tag) => {
                        skip_dollar_quoted(bytes, i, tag, &mut line).ok_or(SplitError {
                            what: "dollar quote",
                            line: opened_at,
                        })?
                    }
                    None => i + 1,
                };
            }
            _ => {
                if !b.is_ascii_whitespace() {
                    first_token_line.get_or_insert(line);
                }
                i += 1;
            }
        }
    }
    push(&mut statements, &sql[start..], first_token_line);
    Ok(statements)
}

/// Adds a statement unless it holds no token (only whitespace and comments).
fn push(statements: &mut Vec<Statement>, text: &str, first_token_line: Option<usize>) {
    if let Some(line) = first_token_line {
        statements.push(Statement {
            // Trimmed by the same rule that found its tokens (ASCII whitespace): a
            // Unicode space or a vertical tab counts as text here as it did there, so a
            // kept statement is never empty (cargo-fuzz: a file of one U+00A0).
            text: text
                .trim_matches(|c: char| c.is_ascii_whitespace())
                .to_string(),
            line,
        });
    }
}

/// Whether the quote at `quote` is the start of a PostgreSQL `E'..'` string: preceded
/// by `E`/`e` which itself does not continue an identifier.
fn is_escape_string_prefix(bytes: &[u8], quote: usize) -> bool {
    if quote == 0 || !matches!(bytes[quote - 1], b'E' | b'e') {
        return false;
    }
    quote < 2 || !(bytes[quote - 2].is_ascii_alphanumeric() || bytes[quote - 2] == b'_')
}

/// Index just past the closing quote of the quoted run opening at `open`, counting
/// newlines; a doubled quote is an escaped quote. `None` if it never closes.
fn skip_quoted(bytes: &[u8], open: usize, escapes: bool, line: &mut usize) -> Option<usize> {
    let quote = bytes[open];
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if escapes => {
                if bytes.get(i + 1) == Some(&b'\n') {
                    *line += 1;
                }
                i += 2;
                continue;
            }
            b'\n' => *line += 1,
            c if c == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                    continue;
                }
                return Some(i + 1);
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index just past the `*/` that closes the comment opening at `open`, with nesting.
fn skip_block_comment(bytes: &[u8], open: usize, line: &mut usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            (b'\n', _) => {
                *line += 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// The tag of a dollar quote opening at `open` (`$$` or `$name$`), including both
/// dollars; `None` when the `$` starts something else (`$1` parameters).
fn dollar_tag(bytes: &[u8], open: usize) -> Option<&[u8]> {
    // `a$b$` inside an identifier is not a quote.
    if open > 0 && (bytes[open - 1].is_ascii_alphanumeric() || bytes[open - 1] == b'_') {
        return None;
    }
    let rest = &bytes[open + 1..];
    let len = rest
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))?;
    if rest[len] != b'$' || rest.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some(&bytes[open..open + len + 2])
}

/// Index just past the closing tag of the dollar quote opening at `open`.
fn skip_dollar_quoted(bytes: &[u8], open: usize, tag: &[u8], line: &mut usize) -> Option<usize> {
    let body = open + tag.len();
    let end = bytes[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map(|p| body + p)?;
    *line += bytes[open..end].iter().filter(|&&c| c == b'\n').count();
    Some(end + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(sql: &str, dialect: Dialect) -> Vec<String> {
        split(sql, dialect)
            .unwrap()
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    #[test]
    fn splits_at_top_level_semicolons_and_drops_empty_statements() {
        // Plain statements, a trailing one without semicolon, and empty ones between.
        assert_eq!(
            texts("SELECT 1;\n\nSELECT 2 ;;  \nSELECT 3", Dialect::ClickHouse),
            ["SELECT 1", "SELECT 2", "SELECT 3"]
        );
    }

    #[test]
    fn a_kept_statement_is_never_empty() {
        // Found by cargo-fuzz: Unicode whitespace and a vertical tab are text to the
        // tokenizer, so they are kept as text, not trimmed into an empty statement.
        for sql in ["\u{a0}", "\u{0b}", "\u{a0}-- c", " \u{3000} ;"] {
            for dialect in [Dialect::ClickHouse, Dialect::Postgres] {
                for statement in split(sql, dialect).unwrap() {
                    assert!(!statement.text.is_empty(), "{sql:?}");
                }
            }
        }
    }

    #[test]
    fn semicolons_inside_quotes_and_comments_do_not_split() {
        // Each quote and comment kind hides a semicolon; doubled quotes stay inside.
        let sql = "SELECT 'a;b', \"c;d\", `e;f`, 'it''s;'; -- x; y\nSELECT /* ; /* ; */ ; */ 2;";
        assert_eq!(
            texts(sql, Dialect::ClickHouse),
            [
                "SELECT 'a;b', \"c;d\", `e;f`, 'it''s;'",
                "-- x; y\nSELECT /* ; /* ; */ ; */ 2"
            ]
        );
    }

    #[test]
    fn comment_only_files_and_trailing_comments_yield_nothing_extra() {
        // A legacy file with nothing to do, and a comment after the last statement.
        assert!(texts("-- nothing here; on 18.16\n/* ; */\n", Dialect::ClickHouse).is_empty());
        assert_eq!(
            texts("SELECT 1; -- done;", Dialect::ClickHouse),
            ["SELECT 1"]
        );
    }

    #[test]
    fn backslash_rules_follow_the_dialect() {
        // ClickHouse: \' escapes. PostgreSQL: backslash is literal except in E'..'.
        assert_eq!(
            texts(r"SELECT 'a\';b'; SELECT 2", Dialect::ClickHouse),
            [r"SELECT 'a\';b'", "SELECT 2"]
        );
        assert_eq!(
            texts(r"SELECT 'C:\'; SELECT 2", Dialect::Postgres),
            [r"SELECT 'C:\'", "SELECT 2"]
        );
        assert_eq!(
            texts(r"SELECT E'a\';b'; SELECT 2", Dialect::Postgres),
            [r"SELECT E'a\';b'", "SELECT 2"]
        );
    }

    #[test]
    fn dollar_quoted_function_bodies_stay_whole() {
        // A plpgsql body full of semicolons, a tagged quote, and a $1 parameter.
        let sql = "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN PERFORM 1; RETURN NULL; END $$ LANGUAGE plpgsql;\n\
                   SELECT $x$ ; $$ ; $x$; PREPARE p AS SELECT $1; SELECT a$b$c;";
        assert_eq!(
            texts(sql, Dialect::Postgres),
            [
                "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN PERFORM 1; RETURN NULL; END $$ LANGUAGE plpgsql",
                "SELECT $x$ ; $$ ; $x$",
                "PREPARE p AS SELECT $1",
                "SELECT a$b$c"
            ]
        );
    }

    #[test]
    fn statements_carry_the_line_of_their_first_token() {
        // Lines count through comments, strings and dollar quotes.
        let sql = "-- head\nSELECT 1;\n\n/* two\nlines */ SELECT 'x\ny';\nSELECT $$\n$$;\nSELECT 4";
        let lines: Vec<usize> = split(sql, Dialect::Postgres)
            .unwrap()
            .iter()
            .map(|s| s.line)
            .collect();
        assert_eq!(lines, [2, 5, 7, 9]);
    }

    #[test]
    fn unterminated_quotes_and_comments_are_named_with_their_line() {
        // Each open construct is reported where it started.
        let err = split("SELECT 1;\nSELECT 'abc", Dialect::ClickHouse).unwrap_err();
        assert_eq!(
            err,
            SplitError {
                what: "string",
                line: 2
            }
        );
        let err = split("/* open", Dialect::ClickHouse).unwrap_err();
        assert_eq!(err.what, "block comment");
        let err = split("SELECT $$ body", Dialect::Postgres).unwrap_err();
        assert_eq!(err.what, "dollar quote");
        let err = split("SELECT `a", Dialect::ClickHouse).unwrap_err();
        assert_eq!(err.what, "quoted identifier");
    }

    proptest! {
        #[test]
        fn joining_plain_statements_splits_back_into_them(
            parts in proptest::collection::vec("[a-z0-9 ,()]{0,12}('[a-z;]{0,6}')?[a-z0-9 ]{0,6}", 1..8)
        ) {
            // Statements with semicolons only inside strings split back exactly;
            // blank ones vanish.
            let sql = parts.join(";\n");
            let expected: Vec<String> = parts
                .iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            prop_assert_eq!(texts(&sql, Dialect::ClickHouse), expected.clone());
            prop_assert_eq!(texts(&sql, Dialect::Postgres), expected);
        }

        #[test]
        fn never_panics_on_arbitrary_text(sql in "\\PC{0,80}") {
            // Any input either splits or names what is left open.
            let _ = split(&sql, Dialect::ClickHouse);
            let _ = split(&sql, Dialect::Postgres);
        }
    }
}
