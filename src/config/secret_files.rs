//! Passwords read from files: a `*_file` key (or its `*_PASSWORD_FILE` variable) names
//! a file whose one line is the password, and under systemd a credential
//! (`LoadCredential=clickhouse_password:…`) lands in `$CREDENTIALS_DIRECTORY`, read
//! when nothing else names a password. Resolved once, after the layers and before
//! validation:
//!
//! ```text
//!   clickhouse.password_file ─┐                    ┌─► clickhouse.password (Secret)
//!   redis.password_file ──────┼─► read, check ─────┼─► redis.password (Secret)
//!   postgres.password_file ───┘   (size, mode)     └─► postgres.url's userinfo
//!   $CREDENTIALS_DIRECTORY/<server>_password ──────────► the same, when nothing is set
//! ```
//!
//! A file that cannot be read, is empty or oversized, or a password given both ways, is
//! a refusal naming the key and the file (never its content). A file that others can
//! read is a warning, carried in [`Config::warnings`] and logged at start.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Secret};

/// Largest password file read: a password is a line, not a document.
const PASSWORD_FILE_BYTES_MAX: u64 = 4096;

/// Where a password came from, for messages.
enum From {
    /// A `*_file` key.
    Key(&'static str, PathBuf),
    /// A systemd credential.
    Credential(PathBuf),
}

/// Fills the passwords named by files and credentials into `config`.
pub(super) fn apply(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let credentials = env("CREDENTIALS_DIRECTORY")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from);
    let credential = |name: &str| {
        credentials
            .as_ref()
            .map(|dir| dir.join(name))
            .filter(|path| path.is_file())
    };
    let source = |key: &'static str, file: &str, set: bool, name: &str| {
        if !file.is_empty() {
            Some(From::Key(key, PathBuf::from(file)))
        } else if !set {
            credential(name).map(From::Credential)
        } else {
            None
        }
    };

    let ch = &config.clickhouse;
    if let Some(from) = source(
        "clickhouse.password_file",
        &ch.password_file,
        !ch.password.is_empty(),
        "clickhouse_password",
    ) {
        refuse_both(&from, "clickhouse.password", !ch.password.is_empty())?;
        let password = read(&from, &mut config.warnings)?;
        config.clickhouse.password = Secret::new(password);
    }
    let redis = &config.redis;
    let redis_url_has_password = url_password(&redis.url);
    if let Some(from) = source(
        "redis.password_file",
        &redis.password_file,
        !redis.password.is_empty() || redis_url_has_password,
        "redis_password",
    ) {
        refuse_both(
            &from,
            "redis.password",
            !redis.password.is_empty() || redis_url_has_password,
        )?;
        let password = read(&from, &mut config.warnings)?;
        config.redis.password = Secret::new(password);
    }
    let pg = &config.postgres;
    let pg_has_password = url_password(&pg.url);
    if let Some(from) = source(
        "postgres.password_file",
        &pg.password_file,
        pg_has_password,
        "postgres_password",
    ) {
        refuse_both(&from, "postgres.url", pg_has_password)?;
        let password = read(&from, &mut config.warnings)?;
        config.postgres.url = with_password(&config.postgres.url, &password).ok_or_else(|| {
            invalid(
                "postgres.password_file",
                "needs `postgres.url` to name a user (postgres://user@host/db) to put the password with".to_owned(),
            )
        })?;
    }
    Ok(())
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message,
    }
}

/// A password both in the config and in a file is a contradiction, not a precedence.
fn refuse_both(from: &From, other: &str, other_set: bool) -> Result<(), ConfigError> {
    match from {
        From::Key(key, _) if other_set => Err(invalid(
            key,
            format!("is set and so is the password in `{other}`; keep one of them"),
        )),
        _ => Ok(()),
    }
}

/// The password in the file: its first line, without the line end.
fn read(from: &From, warnings: &mut Vec<String>) -> Result<String, ConfigError> {
    let (key, path) = match from {
        From::Key(key, path) => (*key, path.as_path()),
        From::Credential(path) => ("CREDENTIALS_DIRECTORY", path.as_path()),
    };
    let refuse = |what: String| invalid(key, format!("{}: {what}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| refuse(format!("cannot read it ({e})")))?;
    if !meta.is_file() {
        return Err(refuse("is not a file".to_owned()));
    }
    if meta.len() > PASSWORD_FILE_BYTES_MAX {
        return Err(refuse(format!(
            "is {} bytes; a password file holds one line (at most {PASSWORD_FILE_BYTES_MAX} bytes)",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| refuse(format!("cannot read it as UTF-8 text ({e})")))?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(refuse(
            "is empty; write the password on its first line".to_owned(),
        ));
    }
    if line.contains('\n') {
        return Err(refuse(
            "holds more than one line; a password file holds the password alone".to_owned(),
        ));
    }
    if matches!(from, From::Key(..)) {
        if let Some(mode) = others_can_read(path) {
            warnings.push(format!(
                "{key} {} is readable by group or others (mode {mode:o}); `chmod 600` it",
                path.display()
            ));
        }
    }
    Ok(line.to_owned())
}

/// The file's permission bits when group or others may read it (Unix).
fn others_can_read(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Whether `url`'s userinfo holds a password (`scheme://user:pw@host`).
fn url_password(url: &str) -> bool {
    userinfo(url).is_some_and(|(_, info)| info.contains(':'))
}

/// The byte offset after `scheme://` and the userinfo before `@`, when there is one.
fn userinfo(url: &str) -> Option<(usize, &str)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((start, &rest[..at]))
}

/// `url` with `password` put after its user, percent-encoded; `None` when the URL
/// names no user.
fn with_password(url: &str, password: &str) -> Option<String> {
    let (start, info) = userinfo(url)?;
    if info.is_empty() || info.contains(':') {
        return None;
    }
    let mut out = String::with_capacity(url.len() + password.len() * 3 + 1);
    out.push_str(&url[..start + info.len()]);
    out.push(':');
    for byte in password.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out.push_str(&url[start + info.len()..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_after_the_user_percent_encoded() {
        assert_eq!(
            with_password("postgres://app@db:5432/x?sslmode=require", "p@ss:w/rd%").as_deref(),
            Some("postgres://app:p%40ss%3Aw%2Frd%25@db:5432/x?sslmode=require")
        );
        assert_eq!(with_password("postgres://db:5432/x", "pw"), None);
        assert_eq!(with_password("postgres://app:old@db/x", "pw"), None);
        assert!(url_password("redis://:pw@h:6379"));
        assert!(!url_password("redis://h:6379/0"));
        assert!(!url_password("postgres://app@db/x"));
    }

    #[test]
    fn the_driver_reads_back_the_password_as_written() {
        let password = "p@ss:w/rd% é";
        let url = with_password("postgres://app@127.0.0.1:5432/x", password).unwrap();
        let parsed: postgres::Config = url.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(password.as_bytes()));
        assert_eq!(parsed.get_user(), Some("app"));
    }
}
