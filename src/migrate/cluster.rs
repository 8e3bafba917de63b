//! The reader side of a sharded ClickHouse cluster (DESIGN §8): `migrate up --cluster
//! NAME` runs the ordinary migrations on every shard's server (each shard holds the
//! same local tables and views), then gives every server a `Distributed` table per
//! reader table, `<table>_all`, over the cluster the servers define in
//! `<remote_servers>`:
//!
//! ```text
//!   writer w ──INSERT──► shard (w % shards): market_ticks (local) ──► its views
//!   reader ──SELECT──► market_ticks_all (Distributed, any server) ──► every shard's market_ticks
//! ```
//!
//! The sharding key of a table with `instrument_token` is `intHash64(instrument_token)`,
//! the hash the writers route by (`runtime::sizes::clickhouse_shard_of`), so a
//! `Distributed` INSERT, were anyone to make one, lands where the appliance puts the
//! rows; other tables take `rand()`. Per server rather than `ON CLUSTER`: that needs
//! ZooKeeper's distributed DDL queue, which a plain sharded 18.16 cluster lacks, and
//! `CREATE ... IF NOT EXISTS` on each server gives the same end state.

use crate::native::{self, Connection, Value};

use super::Error;

/// Tables readers query across shards, when the server has them.
pub const READER_TABLES: [&str; 6] = [
    "market_ticks",
    "rejected_messages",
    "strategy_signals",
    "ohlc_1m",
    "ml_features",
    "market_depth_snapshots",
];

/// Suffix of the `Distributed` tables.
pub const DISTRIBUTED_SUFFIX: &str = "_all";

/// The table readers query: `table` itself, or its `Distributed` `<table>_all` on a
/// cluster (`clickhouse.shards`), which reads every shard.
pub fn reader_table(table: &str, distributed: bool) -> String {
    if distributed {
        format!("{table}{DISTRIBUTED_SUFFIX}")
    } else {
        table.to_owned()
    }
}

/// Whether `name` can stand unquoted in the statements: letters, digits and `_`, not
/// starting with a digit, at most 63 bytes.
pub fn is_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn failed(op: String) -> impl FnOnce(native::Error) -> Error {
    move |source| Error::ClickHouse { op, source }
}

/// Creates `<table>_all` on the server of `options` for every reader table it has;
/// returns their names. Refuses a cluster the server does not define, naming it.
pub fn create_distributed(options: &native::Options, cluster: &str) -> Result<Vec<String>, Error> {
    let server = format!("{}:{}", options.host, options.port);
    let mut conn = Connection::connect(options).map_err(failed(format!("connect to {server}")))?;
    let defined = conn
        .query(&format!(
            "SELECT count() FROM system.clusters WHERE cluster = '{cluster}'"
        ))
        .map_err(failed(format!("reading system.clusters on {server}")))?;
    if defined.scalar().and_then(|v| v.as_u64()) == Some(0) {
        return Err(Error::ClickHouse {
            op: format!("--cluster {cluster} on {server}"),
            source: native::Error::Protocol(format!(
                "the server defines no cluster `{cluster}` (system.clusters); add it under <remote_servers> in every server's config, listing the servers of `clickhouse.shards` in the same order"
            )),
        });
    }
    let database = &options.database;
    let mut created = Vec::new();
    for table in READER_TABLES {
        let columns = conn
            .query(&format!(
                "SELECT name FROM system.columns WHERE database = '{database}' AND table = '{table}'"
            ))
            .map_err(failed(format!("reading the columns of {table} on {server}")))?
            .column("name");
        if columns.is_empty() {
            continue;
        }
        let has_token = columns
            .iter()
            .any(|c| matches!(c, Value::Bytes(name) if name == b"instrument_token"));
        let key = if has_token {
            "intHash64(instrument_token)"
        } else {
            "rand()"
        };
        let name = format!("{table}{DISTRIBUTED_SUFFIX}");
        conn.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {database}.{name} AS {database}.{table} \
             ENGINE = Distributed({cluster}, {database}, {table}, {key})"
        ))
        .map_err(failed(format!("creating {name} on {server}")))?;
        created.push(name);
    }
    Ok(created)
}

/// Drops every `<table>_all` on the server of `options` (before the local tables
/// they read go, at `migrate down --to 0`); returns what it dropped.
pub fn drop_distributed(options: &native::Options) -> Result<Vec<String>, Error> {
    let server = format!("{}:{}", options.host, options.port);
    let mut conn = Connection::connect(options).map_err(failed(format!("connect to {server}")))?;
    let mut dropped = Vec::new();
    for table in READER_TABLES {
        let name = format!("{table}{DISTRIBUTED_SUFFIX}");
        let exists = conn
            .query(&format!(
                "SELECT count() FROM system.tables WHERE database = '{}' AND name = '{name}'",
                options.database
            ))
            .map_err(failed(format!("reading system.tables on {server}")))?
            .scalar()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if exists > 0 {
            conn.execute(&format!("DROP TABLE IF EXISTS {}.{name}", options.database))
                .map_err(failed(format!("dropping {name} on {server}")))?;
            dropped.push(name);
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_plain_identifiers() {
        for good in ["alphapt", "desk_2", "_c"] {
            assert!(is_cluster_name(good), "{good}");
        }
        for bad in ["", "2desk", "a-b", "a b", "x'; DROP", &"c".repeat(64)] {
            assert!(!is_cluster_name(bad), "{bad}");
        }
    }
}
