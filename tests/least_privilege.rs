//! The appliance runs as the least-privilege user and role `migrate grants` describes:
//! on ClickHouse 18.16 a `users.xml` user confined to one database (`alphapt_writer`
//! in `.ci/clickhouse/users.xml`, its password read from a file), on PostgreSQL a role
//! made by running the printed statements. A feed goes end to end, the audit is
//! written, and neither can step outside: the role cannot drop a table, the user
//! cannot read another database.

mod common;

use std::time::Duration;

use alphapt_storage::native::Connection;
use common::e2e::*;
use common::pg::PgDb;
use common::{options, TestDb};

/// The database `alphapt_writer` may use (fixed: users.xml names it).
const DATABASE: &str = "alphapt_least_privilege";

#[test]
fn a_feed_runs_end_to_end_as_the_least_privilege_user_and_role() {
    const TICKS: u64 = 5_000;
    // ClickHouse: the admin creates the tables in the one database the user may reach.
    let mut admin = Connection::connect(&options("", None)).unwrap();
    admin
        .execute(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
        .unwrap();
    admin
        .execute(&format!("CREATE DATABASE {DATABASE}"))
        .unwrap();
    let db = TestDb {
        name: DATABASE.to_owned(),
    };
    let mut conn = db.connect(None);
    db.create_market_ticks(&mut conn);
    db.create_from_migration(&mut conn, "003_strategy_signals");
    db.create_from_migration(&mut conn, "004_rejected_messages");

    // PostgreSQL: the role from the statements `migrate grants` prints.
    let pg = PgDb::new();
    let role = format!("alphapt_lp_{}", common::suffix());
    let out = binary(&[
        "--set".into(),
        format!("postgres.url={}", pg.url()),
        "migrate".into(),
        "grants".into(),
        "--user".into(),
        role.clone(),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let postgres_part = text.split("\n\n").next().unwrap();
    pg.execute(postgres_part);
    let role_url = {
        let mut url = url::Url::parse(&pg.url()).unwrap();
        url.set_username(&role).unwrap();
        url.to_string()
    };

    let nats = Nats::new("leastpriv");
    feed_all(&db, &nats, TICKS, "0.02", "20");
    let password = std::env::temp_dir().join(format!("alphapt-writer-pw-{}", common::suffix()));
    std::fs::write(&password, "writer-pw\n").unwrap();
    let settings = [
        "--set".to_owned(),
        "clickhouse.username=alphapt_writer".to_owned(),
        "--set".to_owned(),
        format!("clickhouse.password_file={}", password.display()),
        "--set".to_owned(),
        format!("postgres.url={role_url}"),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let run = start_run(&db, &nats, &settings);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    let _ = std::fs::remove_file(&password);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    let audited: i64 = pg
        .client()
        .query_one("SELECT count(*) FROM ingest_audit", &[])
        .unwrap()
        .get(0);
    assert!(audited > 0, "the role wrote no audit rows: {summary}");
    assert!(!summary.contains("permission denied"), "{summary}");

    // Neither can step outside what it was given.
    let mut as_role = postgres::Client::connect(&role_url, postgres::NoTls).unwrap();
    let message = |error: postgres::Error| {
        error
            .as_db_error()
            .map_or_else(|| error.to_string(), |e| e.message().to_owned())
    };
    let refused = message(
        as_role
            .batch_execute("DROP TABLE ingest_audit")
            .unwrap_err(),
    );
    assert!(refused.contains("owner"), "{refused}");
    let refused = message(
        as_role
            .batch_execute("DELETE FROM ingest_audit")
            .unwrap_err(),
    );
    assert!(refused.contains("permission denied"), "{refused}");
    drop(as_role);
    let mut as_user = Connection::connect(&alphapt_storage::native::Options {
        user: "alphapt_writer".into(),
        password: "writer-pw".into(),
        ..options(DATABASE, None)
    })
    .unwrap();
    assert!(as_user.query("SELECT count() FROM market_ticks").is_ok());
    let refused = as_user
        .query("SELECT count() FROM default.alphapt_nowhere")
        .unwrap_err();
    assert!(refused.to_string().contains("alphapt_writer"), "{refused}");
    // The role goes with its grants; the database goes with `db`.
    drop(pg);
    let _ = common::pg::admin().batch_execute(&format!("DROP ROLE IF EXISTS {role}"));
}
