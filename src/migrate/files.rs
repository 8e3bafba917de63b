//! Migration files: names, loading, checksums and placeholder substitution.
//!
//! ```text
//!  migrations/<target>/                       Migration { version, name,
//!    NNN_name.sql            (up)     ──►       up, down?, legacy_up?, legacy_down? }
//!    NNN_name.down.sql       (rollback)         each a Script { path, text, checksum }
//!    NNN_name.legacy.sql     (up, ClickHouse < 20.1)
//!    NNN_name.legacy.down.sql(rollback, ClickHouse < 20.1)
//! ```
//!
//! [`parse_file_name`], [`assemble`] and [`substitute`] are pure; [`load_dir`] is the one
//! function that reads the disk. Files not ending in `.sql` (a README) are ignored;
//! a `.sql` file whose name does not follow the pattern is an error, so a typo never
//! silently skips a migration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Highest version number accepted; three digits are the convention, four allowed.
pub const VERSION_MAX: u32 = 9999;

/// What role a file plays for its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `NNN_name.sql`.
    Up,
    /// `NNN_name.down.sql`.
    Down,
    /// `NNN_name.legacy.sql`.
    LegacyUp,
    /// `NNN_name.legacy.down.sql`.
    LegacyDown,
}

/// One file's text and the checksum recorded when it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// The file's text as read.
    pub text: String,
    /// Lower-case hex SHA-256 of the file's bytes: stable across platforms and
    /// releases, unlike `std`'s hashers.
    pub checksum: String,
}

impl Script {
    /// A script from its path and text, checksummed.
    pub fn new(path: PathBuf, text: String) -> Script {
        let checksum = checksum(text.as_bytes());
        Script {
            path,
            text,
            checksum,
        }
    }

    /// The file name, for messages.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }
}

/// One numbered migration with every file that exists for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The number before the first underscore; unique within a target.
    pub version: u32,
    /// The part after it, e.g. `market_ticks`.
    pub name: String,
    /// The up file every server takes unless a legacy one applies.
    pub up: Script,
    /// The rollback, if written.
    pub down: Option<Script>,
    /// The up file for ClickHouse < 20.1.
    pub legacy_up: Option<Script>,
    /// The rollback for ClickHouse < 20.1 (falls back to `down`).
    pub legacy_down: Option<Script>,
}

impl Migration {
    /// The up file for this server generation.
    pub fn up_for(&self, legacy: bool) -> &Script {
        match (&self.legacy_up, legacy) {
            (Some(script), true) => script,
            _ => &self.up,
        }
    }

    /// The rollback for this server generation, if any.
    pub fn down_for(&self, legacy: bool) -> Option<&Script> {
        match (&self.legacy_down, legacy) {
            (Some(script), true) => Some(script),
            _ => self.down.as_ref(),
        }
    }
}

/// A migration directory that cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The directory or a file in it cannot be read.
    #[error("cannot read {path}: {source}; check the migrations directory (--dir)")]
    Read {
        /// What we tried to read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A `.sql` file whose name is not `NNN_name[.legacy][.down].sql`.
    #[error("{path}: {reason}; name migration files NNN_name.sql, NNN_name.down.sql, NNN_name.legacy.sql or NNN_name.legacy.down.sql (name in [a-z0-9_])")]
    BadName {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with the name.
        reason: &'static str,
    },
    /// Two files claim the same version and role, or the same version under two names.
    #[error(
        "version {version} is claimed by both {first} and {second}; give one of them a new number"
    )]
    DuplicateVersion {
        /// The version.
        version: u32,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// A rollback or legacy file whose up file is missing.
    #[error("{path} has no up file {expected}; add it or remove the stray file")]
    Orphan {
        /// The stray file.
        path: PathBuf,
        /// The file name that should exist beside it.
        expected: String,
    },
    /// A file is not UTF-8.
    #[error("{path} is not UTF-8 text; save it as UTF-8")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// A `{{placeholder}}` the runner does not know.
    #[error("{path}: unknown placeholder `{{{{{placeholder}}}}}`; the only one is `{{{{retention_days}}}}`")]
    UnknownPlaceholder {
        /// The file.
        path: PathBuf,
        /// The name between the braces.
        placeholder: String,
    },
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn checksum(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Splits a file name into (version, name, kind); `Ok(None)` for non-`.sql` files.
pub fn parse_file_name(file_name: &str) -> Result<Option<(u32, &str, Kind)>, &'static str> {
    let Some(stem) = file_name.strip_suffix(".sql") else {
        return Ok(None);
    };
    let (stem, kind) = if let Some(s) = stem.strip_suffix(".legacy.down") {
        (s, Kind::LegacyDown)
    } else if let Some(s) = stem.strip_suffix(".down") {
        (s, Kind::Down)
    } else if let Some(s) = stem.strip_suffix(".legacy") {
        (s, Kind::LegacyUp)
    } else {
        (stem, Kind::Up)
    };
    let (digits, name) = stem
        .split_once('_')
        .ok_or("no `_` between the version and the name")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 4 {
        return Err("the version must be 1 to 4 digits");
    }
    let version: u32 = digits.parse().map_err(|_| "the version is not a number")?;
    if version == 0 || version > VERSION_MAX {
        return Err("the version must be between 1 and 9999 (0 means `nothing applied`)");
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("the name must be non-empty [a-z0-9_]");
    }
    Ok(Some((version, name, kind)))
}

/// Groups named scripts into migrations, sorted by version, checking that every
/// version has one name and one up file.
pub fn assemble(scripts: Vec<Script>) -> Result<Vec<Migration>, FilesError> {
    type Parts = (String, BTreeMap<Kind, Script>);
    let mut by_version: BTreeMap<u32, Parts> = BTreeMap::new();
    for script in scripts {
        let file_name = script.file_name();
        let (version, name, kind) = match parse_file_name(&file_name) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => continue,
            Err(reason) => {
                return Err(FilesError::BadName {
                    path: script.path,
                    reason,
                })
            }
        };
        let entry = by_version
            .entry(version)
            .or_insert_with(|| (name.to_string(), BTreeMap::new()));
        let clash = if entry.0 != name {
            entry.1.values().next().map(|s| s.path.clone())
        } else {
            entry.1.get(&kind).map(|s| s.path.clone())
        };
        if let Some(first) = clash {
            return Err(FilesError::DuplicateVersion {
                version,
                first,
                second: script.path,
            });
        }
        entry.1.insert(kind, script);
    }
    let mut migrations = Vec::with_capacity(by_version.len());
    for (version, (name, mut parts)) in by_version {
        let Some(up) = parts.remove(&Kind::Up) else {
            let stray = parts
                .into_values()
                .next()
                .map(|s| s.path)
                .unwrap_or_default();
            return Err(FilesError::Orphan {
                path: stray,
                expected: format!("{version:03}_{name}.sql"),
            });
        };
        migrations.push(Migration {
            version,
            name,
            up,
            down: parts.remove(&Kind::Down),
            legacy_up: parts.remove(&Kind::LegacyUp),
            legacy_down: parts.remove(&Kind::LegacyDown),
        });
    }
    Ok(migrations)
}

/// Reads every file of `dir` and assembles the migrations in it.
pub fn load_dir(dir: &Path) -> Result<Vec<Migration>, FilesError> {
    let read_err = |path: &Path, source| FilesError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut scripts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let path = entry.map_err(|e| read_err(dir, e))?.path();
        let is_sql = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".sql"));
        if !is_sql {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| read_err(&path, e))?;
        let text =
            String::from_utf8(bytes).map_err(|_| FilesError::NotUtf8 { path: path.clone() })?;
        scripts.push(Script::new(path, text));
    }
    assemble(scripts)
}

/// Replaces `{{retention_days}}` with its value; any other `{{..}}` is an error.
pub fn substitute(script: &Script, retention_days: u32) -> Result<String, FilesError> {
    let mut out = String::with_capacity(script.text.len());
    let mut rest = script.text.as_str();
    // Each round consumes at least the `{{` it found, so the loop ends.
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").unwrap_or(after.len());
        let placeholder = after[..close].trim();
        if placeholder != "retention_days" {
            return Err(FilesError::UnknownPlaceholder {
                path: script.path.clone(),
                placeholder: placeholder.to_string(),
            });
        }
        out.push_str(&retention_days.to_string());
        rest = after.get(close + 2..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(name: &str, text: &str) -> Script {
        Script::new(PathBuf::from(format!("m/{name}")), text.to_string())
    }

    #[test]
    fn file_names_parse_into_version_name_and_kind() {
        // Each suffix maps to its kind; other extensions are ignored.
        assert_eq!(
            parse_file_name("001_market_ticks.sql"),
            Ok(Some((1, "market_ticks", Kind::Up)))
        );
        assert_eq!(
            parse_file_name("012_x.down.sql"),
            Ok(Some((12, "x", Kind::Down)))
        );
        assert_eq!(
            parse_file_name("003_y.legacy.sql"),
            Ok(Some((3, "y", Kind::LegacyUp)))
        );
        assert_eq!(
            parse_file_name("003_y.legacy.down.sql"),
            Ok(Some((3, "y", Kind::LegacyDown)))
        );
        assert_eq!(parse_file_name("README.md"), Ok(None));
    }

    #[test]
    fn bad_file_names_are_refused() {
        // Missing version, zero, letters in the version, capitals in the name.
        for bad in [
            "market.sql",
            "000_a.sql",
            "1a_b.sql",
            "001_Bad.sql",
            "001_.sql",
            "12345_a.sql",
        ] {
            assert!(parse_file_name(bad).is_err(), "{bad}");
        }
        let err = assemble(vec![script("01-x.sql", "")]).unwrap_err();
        assert!(matches!(err, FilesError::BadName { .. }), "{err}");
    }

    #[test]
    fn files_group_into_sorted_migrations() {
        // Up, down and legacy files of two versions, given out of order.
        let migrations = assemble(vec![
            script("002_b.sql", "B"),
            script("001_a.down.sql", "a-"),
            script("001_a.legacy.sql", "A18"),
            script("001_a.sql", "A"),
        ])
        .unwrap();
        assert_eq!(migrations.len(), 2);
        assert_eq!(migrations[0].version, 1);
        assert_eq!(migrations[0].up_for(true).text, "A18");
        assert_eq!(migrations[0].up_for(false).text, "A");
        assert_eq!(migrations[0].down_for(true).unwrap().text, "a-");
        assert_eq!(migrations[1].name, "b");
        assert!(migrations[1].down.is_none());
    }

    #[test]
    fn duplicate_versions_and_orphans_are_refused() {
        // Same version under two names; a down file with no up file.
        let err = assemble(vec![script("001_a.sql", ""), script("001_b.sql", "")]).unwrap_err();
        assert!(
            matches!(err, FilesError::DuplicateVersion { version: 1, .. }),
            "{err}"
        );
        let err = assemble(vec![script("002_c.down.sql", "")]).unwrap_err();
        assert!(err.to_string().contains("002_c.sql"), "{err}");
    }

    #[test]
    fn checksums_are_sha256_of_the_bytes() {
        // The empty string's SHA-256 is a well-known constant.
        assert_eq!(
            checksum(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn placeholders_are_substituted_and_unknown_ones_refused() {
        // The retention placeholder takes the value, with or without inner spaces.
        let s = script(
            "001_a.sql",
            "TTL t + INTERVAL {{retention_days}} DAY, {{ retention_days }}",
        );
        assert_eq!(substitute(&s, 30).unwrap(), "TTL t + INTERVAL 30 DAY, 30");
        let err = substitute(&script("001_a.sql", "{{days}}"), 30).unwrap_err();
        assert!(err.to_string().contains("`{{days}}`"), "{err}");
    }
}
