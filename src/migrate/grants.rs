//! The least privileges the running appliance needs, as statements an administrator
//! runs once after `migrate up` (`alphapt-storage migrate grants`). The migrator itself
//! runs as an owner; `run` does not need to.
//!
//! What `run` does, and so what it needs:
//!
//! ```text
//!   ClickHouse  INSERT  market_ticks, strategy_signals, rejected_messages (and the
//!                       views' target tables the INSERTs feed)
//!               SELECT  the same (stored-block look-ups, resume point, /quality)
//!               system.processes (its own and a killed run's INSERTs), KILL QUERY of
//!               its own cut INSERTs
//!   PostgreSQL  SELECT instruments, LISTEN (no grant needed)
//!               INSERT + SELECT ingest_audit, quality_snapshots (the audit INSERT skips
//!               rows already there), their id sequences
//! ```
//!
//! ClickHouse 18.16 has no SQL access control: its users live in `users.xml`, where
//! `allow_databases` confines a user to the appliance's database (and `system`) but
//! cannot withhold DROP inside it. Servers with access control (20.x and later) take
//! the GRANT statements, which withhold every DDL right.

/// The statements for user/role `user` on ClickHouse database `database` and
/// PostgreSQL database `pg_database`, as one text with a comment heading each part.
pub fn text(user: &str, database: &str, pg_database: &str) -> String {
    format!(
        "\
-- PostgreSQL: run as the tables' owner, connected to database {pg_database}.
-- LISTEN needs no grant. Give the role a password, or trust it by pg_hba.conf.
CREATE ROLE {user} LOGIN;
GRANT CONNECT ON DATABASE {pg_database} TO {user};
GRANT USAGE ON SCHEMA public TO {user};
GRANT SELECT ON instruments TO {user};
GRANT SELECT, INSERT ON ingest_audit, quality_snapshots TO {user};
GRANT USAGE ON SEQUENCE ingest_audit_id_seq, quality_snapshots_id_seq TO {user};

-- ClickHouse with SQL access control (20.x and later): run as an admin.
CREATE USER IF NOT EXISTS {user} IDENTIFIED WITH sha256_password BY 'change-me';
GRANT SELECT, INSERT ON {database}.* TO {user};

-- ClickHouse 18.16: no GRANT; add the user to users.xml (users.d/{user}.xml). It can
-- reach {database} and system only, but could still DROP inside {database}.
-- <yandex><users><{user}>
--   <password_sha256_hex>(echo -n 'change-me' | sha256sum)</password_sha256_hex>
--   <networks><ip>127.0.0.1</ip></networks>
--   <profile>default</profile><quota>default</quota>
--   <allow_databases><database>{database}</database></allow_databases>
-- </{user}></users></yandex>
"
    )
}

/// Whether `name` can stand unquoted in both servers' statements: ASCII letters,
/// digits and `_`, not starting with a digit, at most 63 bytes (PostgreSQL's limit).
pub fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_table_run_writes_and_only_plain_identifiers_pass() {
        let text = text("app", "ticks", "refdata");
        for needle in [
            "GRANT SELECT ON instruments TO app",
            "ingest_audit, quality_snapshots",
            "ON ticks.* TO app",
            "<database>ticks</database>",
            "CONNECT ON DATABASE refdata",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(is_plain_identifier("alphapt_app"));
        for bad in ["", "1app", "app; DROP", "a-b", "\"x\""] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }
}
