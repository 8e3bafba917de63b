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

/// `sql` with a `CREATE TABLE`'s `ENGINE = <Kind>MergeTree` (arguments, if any,
/// kept) made `Replicated<Kind>MergeTree('/clickhouse/tables/{shard}/<db>/<table>',
/// '{replica}', ...)`: every replica of a shard (the servers' `{shard}` macro) shares
/// the table's ZooKeeper path, and each registers under its `{replica}` macro. Any
/// other statement, or a table whose engine is not a MergeTree, comes back as it was.
pub fn replicated(sql: &str, database: &str) -> String {
    let Some(table) = created_table(sql) else {
        return sql.to_owned();
    };
    let Some(at) = find_word(sql, "ENGINE") else {
        return sql.to_owned();
    };
    let after = &sql[at + "ENGINE".len()..];
    let trimmed = after.trim_start();
    let Some(rest) = trimmed.strip_prefix('=') else {
        return sql.to_owned();
    };
    let rest = rest.trim_start();
    let name_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let engine = &rest[..name_len];
    if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
        return sql.to_owned();
    }
    let mut args = format!("'/clickhouse/tables/{{shard}}/{database}/{table}', '{{replica}}'");
    let mut tail = &rest[name_len..];
    if let Some(inner) = tail.strip_prefix('(') {
        if let Some(close) = inner.find(')') {
            let given = inner[..close].trim();
            if !given.is_empty() {
                args.push_str(", ");
                args.push_str(given);
            }
            tail = &inner[close + 1..];
        }
    }
    let head_len = sql.len() - rest.len();
    format!("{}Replicated{engine}({args}){tail}", &sql[..head_len])
}

/// The name in `CREATE TABLE [IF NOT EXISTS] [db.]name`, without the database.
fn created_table(sql: &str) -> Option<&str> {
    let words: Vec<&str> = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .flat_map(str::split_whitespace)
        .take(6)
        .collect();
    let rest = match words.as_slice() {
        [c, t, rest @ ..]
            if c.eq_ignore_ascii_case("CREATE") && t.eq_ignore_ascii_case("TABLE") =>
        {
            rest
        }
        _ => return None,
    };
    let name = match rest {
        [i, n, e, name, ..]
            if i.eq_ignore_ascii_case("IF")
                && n.eq_ignore_ascii_case("NOT")
                && e.eq_ignore_ascii_case("EXISTS") =>
        {
            name
        }
        [name, ..] => name,
        [] => return None,
    };
    let name = name.split('(').next().unwrap_or(name);
    let name = name.rsplit('.').next().unwrap_or(name);
    (!name.is_empty()).then_some(name)
}

/// Byte offset of `word` in `sql` as a whole word outside `--` comments, ASCII case
/// insensitive.
fn find_word(sql: &str, word: &str) -> Option<usize> {
    let mut offset = 0;
    for line in sql.split_inclusive('\n') {
        let code = line.split("--").next().unwrap_or(line);
        let upper = code.to_ascii_uppercase();
        let mut from = 0;
        while let Some(i) = upper[from..].find(word) {
            let start = from + i;
            let end = start + word.len();
            let before = upper[..start].bytes().last();
            let after = upper.as_bytes().get(end).copied();
            let boundary =
                |b: Option<u8>| b.map_or(true, |b| !(b.is_ascii_alphanumeric() || b == b'_'));
            if boundary(before) && boundary(after) {
                return Some(offset + start);
            }
            from = end;
        }
        offset += line.len();
    }
    None
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
    fn merge_tree_engines_become_replicated_with_the_shards_path() {
        let sql = "CREATE TABLE IF NOT EXISTS market_ticks\n(\n    k UInt32 -- ENGINE = Memory in a comment\n)\nENGINE = MergeTree\nPARTITION BY toYYYYMMDD(t)\nORDER BY k";
        let out = replicated(sql, "alphapt");
        assert!(
            out.contains("ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/alphapt/market_ticks', '{replica}')\nPARTITION BY"),
            "{out}"
        );
        assert!(out.contains("-- ENGINE = Memory in a comment"), "{out}");
        let agg = replicated(
            "CREATE TABLE db.ohlc_1m (k UInt32) ENGINE = AggregatingMergeTree() ORDER BY k",
            "d",
        );
        assert!(
            agg.contains("ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/d/ohlc_1m', '{replica}') ORDER BY k"),
            "{agg}"
        );
        let with_args = replicated(
            "CREATE TABLE r (k UInt32, v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY k",
            "d",
        );
        assert!(with_args.contains("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/d/r', '{replica}', v) ORDER BY k"), "{with_args}");
        for unchanged in [
            "CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO ohlc_1m AS SELECT 1",
            "ALTER TABLE market_ticks MODIFY TTL t + INTERVAL 1 DAY",
            "CREATE TABLE m (k UInt32) ENGINE = Memory",
            "CREATE TABLE x (k UInt32) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY k",
        ] {
            assert_eq!(replicated(unchanged, "d"), unchanged);
        }
    }

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
