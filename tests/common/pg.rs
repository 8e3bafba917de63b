//! A PostgreSQL database of a test's own, with the migrations applied, dropped
//! afterwards.
#![allow(dead_code)]

use std::path::Path;

use alphapt_storage::migrate::postgres::PostgresTarget;
use alphapt_storage::migrate::{self, files, Target, TargetKind};

pub fn admin_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn admin() -> postgres::Client {
    postgres::Client::connect(&admin_url(), postgres::NoTls)
        .expect("PostgreSQL is up (run `bash .ci/services.sh all`)")
}

/// A PostgreSQL database with the migrations applied, dropped on drop.
pub struct PgDb {
    /// Its name.
    pub name: String,
}

impl PgDb {
    pub fn new() -> PgDb {
        let name = format!("alphapt_pg_test_{}", super::suffix());
        admin()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let db = PgDb { name };
        let mut target = PostgresTarget::connect(&db.url()).unwrap();
        for migration in files::load_dir(Path::new("migrations/postgres")).unwrap() {
            let script = migration.up_for(false);
            let statements = migrate::statements(script, TargetKind::Postgres, 90).unwrap();
            target
                .apply(
                    &migration,
                    &script.file_name(),
                    &script.checksum,
                    &statements,
                )
                .unwrap();
        }
        db
    }

    pub fn url(&self) -> String {
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(&format!("/{}", self.name));
        url.to_string()
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }

    pub fn execute(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap();
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = admin().batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}
