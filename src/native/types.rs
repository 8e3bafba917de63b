//! ClickHouse column types as the server names them in block headers, parsed into a
//! tree the column codec walks.
//!
//! The grammar is the server's own type syntax: a name, optionally followed by a
//! parenthesised argument list whose items are types, numbers, quoted strings, named
//! tuple elements (`price Float64`) or enum entries (`'ml' = 2`). Only the types the
//! project uses are understood; anything else is [`Error::UnsupportedType`], named.

use super::Error;

/// Deepest nesting accepted (`Array(Array(...))`). Our schema nests three deep
/// (`Array(Tuple(Float64, ...))`); the cap bounds the recursive parser on hostile input.
pub const TYPE_DEPTH_MAX: usize = 8;

/// One column type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `UInt8`.
    UInt8,
    /// `UInt16`.
    UInt16,
    /// `UInt32`.
    UInt32,
    /// `UInt64`.
    UInt64,
    /// `Int8`.
    Int8,
    /// `Int16`.
    Int16,
    /// `Int32`.
    Int32,
    /// `Int64`.
    Int64,
    /// `Float32`.
    Float32,
    /// `Float64`.
    Float64,
    /// `Bool` (one byte, 0 or 1; not in 18.16).
    Bool,
    /// `String`: length-prefixed bytes per row.
    String,
    /// `FixedString(n)`: exactly `n` bytes per row.
    FixedString(usize),
    /// `Date`: `UInt16` days since the epoch.
    Date,
    /// `DateTime` or `DateTime('tz')`: `UInt32` Unix seconds.
    DateTime(Option<String>),
    /// `DateTime64(P[, 'tz'])`: `Int64` ticks of 10^-P seconds.
    DateTime64(u8, Option<String>),
    /// `Decimal(P, S)` and the `Decimal32/64/128(S)` spellings: precision, scale.
    Decimal(u8, u8),
    /// `Enum8('a' = 1, ...)`: the entries, name and code.
    Enum8(Vec<(String, i8)>),
    /// `Enum16('a' = 1, ...)`.
    Enum16(Vec<(String, i16)>),
    /// `Nullable(T)`.
    Nullable(Box<ColumnType>),
    /// `LowCardinality(T)`; decoded into plain `T` values.
    LowCardinality(Box<ColumnType>),
    /// `Array(T)`.
    Array(Box<ColumnType>),
    /// `Tuple(T1, ...)`, element names kept when the server gives them.
    Tuple(Vec<(Option<String>, ColumnType)>),
}

impl ColumnType {
    /// Parses a server type name such as `Array(Tuple(price Float64, quantity UInt32))`.
    pub fn parse(text: &str) -> Result<ColumnType, Error> {
        let mut parser = Parser { text, pos: 0 };
        let ty = parser.parse_type(0)?;
        parser.skip_spaces();
        if parser.pos != text.len() {
            return Err(parser.unsupported("trailing text after the type"));
        }
        Ok(ty)
    }

    /// Bytes per row for fixed-width types; `None` for variable-width ones.
    pub fn fixed_width(&self) -> Option<usize> {
        Some(match self {
            ColumnType::UInt8 | ColumnType::Int8 | ColumnType::Bool | ColumnType::Enum8(_) => 1,
            ColumnType::UInt16 | ColumnType::Int16 | ColumnType::Date | ColumnType::Enum16(_) => 2,
            ColumnType::UInt32 | ColumnType::Int32 | ColumnType::Float32 => 4,
            ColumnType::DateTime(_) => 4,
            ColumnType::UInt64 | ColumnType::Int64 | ColumnType::Float64 => 8,
            ColumnType::DateTime64(..) => 8,
            ColumnType::Decimal(precision, _) => decimal_width(*precision),
            ColumnType::FixedString(n) => *n,
            _ => return None,
        })
    }
}

/// Storage width of a decimal of the given precision (Decimal32/64/128/256).
pub fn decimal_width(precision: u8) -> usize {
    match precision {
        0..=9 => 4,
        10..=18 => 8,
        19..=38 => 16,
        _ => 32,
    }
}

/// A cursor over the type text.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn unsupported(&self, why: &str) -> Error {
        Error::UnsupportedType {
            type_name: self.text.to_string(),
            reason: format!("{why} at byte {}", self.pos),
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn skip_spaces(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_spaces();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), Error> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unsupported(&format!("expected `{c}`")))
        }
    }

    fn ident(&mut self) -> Result<&'a str, Error> {
        self.skip_spaces();
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.unsupported("expected a type name"));
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    fn number(&mut self) -> Result<i64, Error> {
        self.skip_spaces();
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
            .map_or(rest.len(), |(i, _)| i);
        let value = rest[..len]
            .parse::<i64>()
            .map_err(|_| self.unsupported("expected a number"))?;
        self.pos += len;
        Ok(value)
    }

    fn small(&mut self, max: i64) -> Result<u8, Error> {
        let value = self.number()?;
        if !(0..=max).contains(&value) {
            return Err(self.unsupported(&format!("number {value} out of range 0..={max}")));
        }
        Ok(value as u8)
    }

    /// A single-quoted string with backslash escapes, as the server prints them.
    fn quoted(&mut self) -> Result<String, Error> {
        self.expect('\'')?;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                '\'' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                _ => out.push(c),
            }
        }
        Err(self.unsupported("unterminated quoted string"))
    }

    fn parse_type(&mut self, depth: usize) -> Result<ColumnType, Error> {
        if depth > TYPE_DEPTH_MAX {
            return Err(self.unsupported("type nested too deeply"));
        }
        let name = self.ident()?;
        let simple = match name {
            "UInt8" => Some(ColumnType::UInt8),
            "UInt16" => Some(ColumnType::UInt16),
            "UInt32" => Some(ColumnType::UInt32),
            "UInt64" => Some(ColumnType::UInt64),
            "Int8" => Some(ColumnType::Int8),
            "Int16" => Some(ColumnType::Int16),
            "Int32" => Some(ColumnType::Int32),
            "Int64" => Some(ColumnType::Int64),
            "Float32" => Some(ColumnType::Float32),
            "Float64" => Some(ColumnType::Float64),
            "Bool" => Some(ColumnType::Bool),
            "String" => Some(ColumnType::String),
            "Date" => Some(ColumnType::Date),
            _ => None,
        };
        if let Some(ty) = simple {
            return Ok(ty);
        }
        match name {
            "DateTime" => {
                let tz = if self.eat('(') {
                    let tz = self.quoted()?;
                    self.expect(')')?;
                    Some(tz)
                } else {
                    None
                };
                Ok(ColumnType::DateTime(tz))
            }
            "DateTime64" => {
                self.expect('(')?;
                let precision = self.small(9)?;
                let tz = if self.eat(',') {
                    Some(self.quoted()?)
                } else {
                    None
                };
                self.expect(')')?;
                Ok(ColumnType::DateTime64(precision, tz))
            }
            "FixedString" => {
                self.expect('(')?;
                let n = self.number()?;
                self.expect(')')?;
                if !(1..=(1 << 20)).contains(&n) {
                    return Err(self.unsupported("FixedString width out of range"));
                }
                Ok(ColumnType::FixedString(n as usize))
            }
            "Decimal" => {
                self.expect('(')?;
                let precision = self.small(76)?;
                self.expect(',')?;
                let scale = self.small(76)?;
                self.expect(')')?;
                Ok(ColumnType::Decimal(precision, scale))
            }
            "Decimal32" | "Decimal64" | "Decimal128" | "Decimal256" => {
                let precision = match name {
                    "Decimal32" => 9,
                    "Decimal64" => 18,
                    "Decimal128" => 38,
                    _ => 76,
                };
                self.expect('(')?;
                let scale = self.small(76)?;
                self.expect(')')?;
                Ok(ColumnType::Decimal(precision, scale))
            }
            "Enum8" => Ok(ColumnType::Enum8(
                self.enum_entries(i64::from(i8::MIN), i64::from(i8::MAX))?
                    .into_iter()
                    .map(|(n, v)| (n, v as i8))
                    .collect(),
            )),
            "Enum16" => Ok(ColumnType::Enum16(
                self.enum_entries(i64::from(i16::MIN), i64::from(i16::MAX))?
                    .into_iter()
                    .map(|(n, v)| (n, v as i16))
                    .collect(),
            )),
            "Nullable" => Ok(ColumnType::Nullable(Box::new(self.single_arg(depth)?))),
            "LowCardinality" => Ok(ColumnType::LowCardinality(Box::new(
                self.single_arg(depth)?,
            ))),
            "Array" => Ok(ColumnType::Array(Box::new(self.single_arg(depth)?))),
            "Tuple" => self.tuple(depth),
            _ => Err(self.unsupported(&format!("type `{name}` is not used by this project"))),
        }
    }

    fn single_arg(&mut self, depth: usize) -> Result<ColumnType, Error> {
        self.expect('(')?;
        let inner = self.parse_type(depth + 1)?;
        self.expect(')')?;
        Ok(inner)
    }

    fn enum_entries(&mut self, min: i64, max: i64) -> Result<Vec<(String, i64)>, Error> {
        self.expect('(')?;
        let mut entries = Vec::new();
        loop {
            let name = self.quoted()?;
            self.expect('=')?;
            let code = self.number()?;
            if !(min..=max).contains(&code) {
                return Err(self.unsupported("enum code out of range"));
            }
            entries.push((name, code));
            if !self.eat(',') {
                break;
            }
        }
        self.expect(')')?;
        Ok(entries)
    }

    fn tuple(&mut self, depth: usize) -> Result<ColumnType, Error> {
        self.expect('(')?;
        let mut elements = Vec::new();
        loop {
            // A named element is `name Type`: an identifier followed by another one.
            self.skip_spaces();
            let mark = self.pos;
            let first = self.ident()?;
            self.skip_spaces();
            let named = self.rest().starts_with(|c: char| c.is_ascii_alphabetic());
            self.pos = mark;
            let name = if named {
                self.ident()?;
                Some(first.to_string())
            } else {
                None
            };
            elements.push((name, self.parse_type(depth + 1)?));
            if !self.eat(',') {
                break;
            }
        }
        self.expect(')')?;
        Ok(ColumnType::Tuple(elements))
    }
}

#[cfg(test)]
mod tests {
    //! The parser against the type names both servers print for our schema.
    use super::*;

    #[test]
    fn parses_the_types_we_use() {
        let cases = [
            ("UInt32", ColumnType::UInt32),
            ("DateTime", ColumnType::DateTime(None)),
            ("DateTime('UTC')", ColumnType::DateTime(Some("UTC".into()))),
            (
                "DateTime64(3, 'UTC')",
                ColumnType::DateTime64(3, Some("UTC".into())),
            ),
            ("Decimal(18, 4)", ColumnType::Decimal(18, 4)),
            ("Decimal64(2)", ColumnType::Decimal(18, 2)),
            (
                "LowCardinality(Nullable(String))",
                ColumnType::LowCardinality(Box::new(ColumnType::Nullable(Box::new(
                    ColumnType::String,
                )))),
            ),
            (
                "Enum8('traditional' = 1, 'ml' = 2, 'hybrid' = 3)",
                ColumnType::Enum8(vec![
                    ("traditional".into(), 1),
                    ("ml".into(), 2),
                    ("hybrid".into(), 3),
                ]),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(ColumnType::parse(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn parses_named_and_unnamed_tuples_in_arrays() {
        let named =
            ColumnType::parse("Array(Tuple(price Float64, quantity UInt32, orders UInt16))")
                .unwrap();
        let plain = ColumnType::parse("Array(Tuple(Float64, UInt32, UInt16))").unwrap();
        let ColumnType::Array(named) = named else {
            panic!("not an array")
        };
        let ColumnType::Tuple(elements) = *named else {
            panic!("not a tuple")
        };
        assert_eq!(elements[0], (Some("price".into()), ColumnType::Float64));
        assert_eq!(elements[2], (Some("orders".into()), ColumnType::UInt16));
        let ColumnType::Array(plain) = plain else {
            panic!("not an array")
        };
        assert!(matches!(*plain, ColumnType::Tuple(ref e) if e[1] == (None, ColumnType::UInt32)));
    }

    #[test]
    fn refuses_unknown_malformed_and_deep_types() {
        for text in [
            "UUID",
            "Array(",
            "DateTime64(12)",
            "Map(String, UInt8)",
            "UInt32 x",
            "Enum8('a' = 300)",
        ] {
            let err = ColumnType::parse(text).unwrap_err();
            assert!(err.to_string().contains(text), "{err}");
        }
        let deep = format!("{}UInt8{}", "Array(".repeat(20), ")".repeat(20));
        assert!(ColumnType::parse(&deep).is_err());
    }
}
