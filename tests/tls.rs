//! TLS to ClickHouse's native port, against the test server's TLS-only port
//! (`tcp_port_secure`, certificates from `.ci/services.sh`: a throwaway CA and a
//! certificate for 127.0.0.1). Queries and INSERTs go through; a feed goes end to end
//! with the appliance on the TLS port; and every way it can be wrong fails at connect
//! with one line saying why: an untrusted CA, an expired certificate, a name the
//! certificate does not carry, plaintext to the TLS port, TLS to the plaintext port.
//! Likewise NATS, against a private TLS-only nats-server with the same certificates.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use alphapt_storage::native::{Block, Column, Connection, Options, Values};
use alphapt_storage::receive::nats::NatsConn;
use alphapt_storage::tls::Settings;
use common::e2e::*;
use common::{options, TestDb};

fn secure_port() -> u16 {
    std::env::var("CLICKHOUSE_SECURE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9440)
}

/// Where `.ci/services.sh` put the test CA and the server certificate.
fn tls_dir() -> String {
    std::env::var("ALPHAPT_TEST_TLS_DIR").expect(
        "ALPHAPT_TEST_TLS_DIR is set by `eval \"$(bash .ci/services.sh env)\"` (make test does)",
    )
}

/// The test CA `.ci/services.sh` made.
fn test_ca() -> String {
    let dir = tls_dir();
    format!("{dir}/ca.pem")
}

fn tls_options(database: &str, port: u16, settings: Settings) -> Options {
    Options {
        port,
        tls: settings
            .client("clickhouse", "127.0.0.1")
            .map_err(|e| e.to_string())
            .transpose(),
        ..options(database, None)
    }
}

/// TLS trusting `ca_file`, presenting the test client certificate (every TLS server of
/// these tests requires one signed by the test CA).
fn trusting(ca_file: &str) -> Settings {
    let dir = tls_dir();
    Settings {
        enabled: true,
        ca_file: ca_file.to_owned(),
        cert_file: format!("{dir}/client.pem"),
        key_file: format!("{dir}/client.key"),
        ..Settings::default()
    }
}

/// `--set` flags for the binary: `section`'s CA, client certificate and key.
fn tls_files(section: &str) -> Vec<String> {
    let dir = tls_dir();
    let mut flags = Vec::new();
    for (key, file) in [
        ("tls_ca_file", "ca.pem"),
        ("tls_cert_file", "client.pem"),
        ("tls_key_file", "client.key"),
    ] {
        flags.push("--set".to_owned());
        flags.push(format!("{section}.{key}={dir}/{file}"));
    }
    flags
}

fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

fn refusal(options: &Options) -> String {
    match Connection::connect(options) {
        Ok(_) => panic!("connected: {options:?}"),
        Err(error) => error.to_string(),
    }
}

/// A file in the temp directory holding `text`.
fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("alphapt-tls-{}-{name}", common::suffix()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn queries_and_inserts_go_through_the_tls_port() {
    let db = TestDb::new("tls");
    let mut conn =
        Connection::connect(&tls_options(&db.name, secure_port(), trusting(&test_ca()))).unwrap();
    conn.execute("CREATE TABLE t (x UInt64) ENGINE = MergeTree ORDER BY x")
        .unwrap();
    let rows: Vec<u64> = (0..100_000).collect();
    let block = Block::new(vec![Column::new("x", "UInt64", Values::U64(rows)).unwrap()]).unwrap();
    conn.insert_block("t", &block).unwrap();
    let sum = conn.query("SELECT sum(x) FROM t").unwrap().scalar();
    assert_eq!(sum.and_then(|v| v.as_u64()), Some(100_000 * 99_999 / 2));
}

#[test]
fn every_wrong_setup_fails_at_connect_saying_why() {
    // A CA that did not sign the server's certificate.
    let other_ca = rcgen::generate_simple_self_signed(vec!["other CA".into()]).unwrap();
    let other = temp_file("other-ca.pem", &other_ca.cert.pem());
    let text = refusal(&tls_options(
        "",
        secure_port(),
        trusting(other.to_str().unwrap()),
    ));
    assert!(text.contains("not signed by a trusted CA"), "{text}");
    let _ = std::fs::remove_file(other);

    // A name the certificate does not carry.
    let text = refusal(&tls_options(
        "",
        secure_port(),
        Settings {
            server_name: "db.example.com".into(),
            ..trusting(&test_ca())
        },
    ));
    assert!(text.contains("does not name the host"), "{text}");

    // Plaintext to the TLS-only port.
    let text = refusal(&Options {
        port: secure_port(),
        ..options("", None)
    });
    assert!(text.contains("set clickhouse.tls = true"), "{text}");

    // TLS to the plaintext port.
    let plain = common::options("", None).port;
    let text = refusal(&tls_options("", plain, trusting(&test_ca())));
    assert!(
        text.contains("did not answer in TLS") || text.contains("is the port a TLS port"),
        "{text}"
    );
    assert!(text.contains("TLS"), "{text}");
}

#[test]
fn an_expired_certificate_is_refused() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

    // A TLS server presenting it; the client fails in the handshake, before ClickHouse.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if stream.conn.complete_io(&mut stream.sock).is_err() {
                break;
            }
        }
    });
    let ca_file = temp_file("expired-ca.pem", &ca.pem());
    let text = refusal(&tls_options("", port, trusting(ca_file.to_str().unwrap())));
    assert!(text.contains("has expired"), "{text}");
    server.join().unwrap();
    let _ = std::fs::remove_file(ca_file);
}

#[test]
fn a_missing_or_empty_ca_file_is_refused_when_the_config_loads() {
    let empty = temp_file("empty.pem", "");
    for (file, says) in [
        ("/no/such/ca.pem".to_owned(), "not a readable file"),
        (
            empty.to_str().unwrap().to_owned(),
            "no usable PEM certificate",
        ),
    ] {
        let out = binary(&[
            "--set".into(),
            "clickhouse.tls=true".into(),
            "--set".into(),
            format!("clickhouse.tls_ca_file={file}"),
            "--print-config".into(),
            "health".into(),
        ])
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("clickhouse.tls_ca_file") && stderr.contains(says),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_file(empty);
    // TLS files without `tls = true` are a contradiction, not ignored.
    let out = binary(&[
        "--set".into(),
        format!("clickhouse.tls_ca_file={}", test_ca()),
        "--print-config".into(),
        "health".into(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("clickhouse.tls = true"));
}

#[test]
fn a_feed_goes_end_to_end_over_tls() {
    const TICKS: u64 = 5_000;
    let (db, mut conn) = tables("tlse2e");
    let nats = Nats::new("tlse2e");
    feed_all(&db, &nats, TICKS, "0.02", "20");
    let port = format!("clickhouse.port={}", secure_port());
    let files = tls_files("clickhouse");
    let mut flags = vec!["--set", &port, "--set", "clickhouse.tls=true"];
    flags.extend(strs(&files));
    let run = start_run(&db, &nats, &flags);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
    // Nothing went around TLS: the run only knew the secure port.
    assert!(!summary.contains("ClickHouse TLS"), "{summary}");
}

fn tls_nats() -> PrivateNats {
    let dir = tls_dir();
    PrivateNats::start_tls(NatsTls {
        cert: format!("{dir}/server.pem"),
        key: format!("{dir}/server.key"),
        ca: test_ca(),
        client_cert: format!("{dir}/client.pem"),
        client_key: format!("{dir}/client.key"),
    })
}

/// A TLS-only nats-server: the feed publishes and the appliance consumes over TLS
/// (upgraded after INFO, as NATS does), every tick stored once.
#[test]
fn a_feed_goes_end_to_end_through_a_tls_only_nats_server() {
    const TICKS: u64 = 5_000;
    let server = tls_nats();
    let (db, mut conn) = tables("tlsnats");
    let nats = Nats::new("tlsnats");
    let url = format!("nats.url={}", server.url());
    let files = tls_files("nats");
    let mut flags = vec!["--set", &url];
    flags.extend(strs(&files));
    let mut feed_flags = flags.clone();
    feed_flags.extend(["--count", "5000", "--instruments", "20"]);
    let published = feed(&db, &nats, &feed_flags);
    assert!(published.contains("acked 5000 errors 0"), "{published}");
    let run = start_run(&db, &nats, &flags);
    wait_stored(&mut conn, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(&mut conn), (TICKS, TICKS, 1, TICKS), "{summary}");
}

#[test]
fn a_tls_only_nats_server_refuses_plaintext_and_an_untrusted_ca_clearly() {
    let server = tls_nats();
    let plain = format!("nats://127.0.0.1:{}", server.port);
    let Err(error) = NatsConn::connect(&plain, Duration::from_secs(2)) else {
        panic!("plaintext accepted by a TLS-only server");
    };
    let error = error.to_string();
    assert!(error.contains("requires TLS"), "{error}");

    let other_ca = rcgen::generate_simple_self_signed(vec!["other CA".into()]).unwrap();
    let other = temp_file("nats-other-ca.pem", &other_ca.cert.pem());
    let client = Settings {
        enabled: true,
        ca_file: other.to_str().unwrap().to_owned(),
        ..Settings::default()
    }
    .client("nats", "127.0.0.1")
    .unwrap();
    let Err(error) = NatsConn::connect_with(&server.url(), Duration::from_secs(2), client.as_ref())
    else {
        panic!("an untrusted CA accepted");
    };
    let error = error.to_string();
    assert!(error.contains("not signed by a trusted CA"), "{error}");
    let _ = std::fs::remove_file(other);
}

/// A redis-server taking TLS only (its own port, the test certificates), requiring a
/// client certificate signed by the test CA.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = tls_dir();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &format!("{dir}/server.pem")])
            .args(["--tls-key-file", &format!("{dir}/server.key")])
            .args(["--tls-ca-cert-file", &format!("{dir}/ca.pem")])
            .args([
                "--tls-auth-clients",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = TlsRedis { child, port };
        common::wait_until("TLS redis-server", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hot cache over TLS: the appliance writes a feed's latest ticks to a TLS-only
/// Redis; plaintext and an untrusted CA are refused, named.
#[test]
fn the_redis_cache_is_written_over_tls_and_plaintext_is_refused() {
    use alphapt_storage::cache::redis::connect;
    const TICKS: u64 = 2_000;
    let redis = TlsRedis::start();
    let trusted = trusting(&test_ca());
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let mut conn = connect(&url, "", &trusted, Duration::from_secs(2)).unwrap();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");

    let plain = format!("redis://127.0.0.1:{}", redis.port);
    let refused =
        connect(&plain, "", &Settings::default(), Duration::from_secs(2)).and_then(|mut c| {
            redis::cmd("PING")
                .query::<String>(&mut c)
                .map_err(|e| e.to_string())
        });
    assert!(refused.is_err(), "plaintext answered: {refused:?}");
    let other_ca = rcgen::generate_simple_self_signed(vec!["other CA".into()]).unwrap();
    let other = temp_file("redis-other-ca.pem", &other_ca.cert.pem());
    let untrusted = Settings {
        ca_file: other.to_str().unwrap().to_owned(),
        ..trusted.clone()
    };
    let Err(error) = connect(&url, "", &untrusted, Duration::from_secs(2)) else {
        panic!("an untrusted CA accepted");
    };
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    let _ = std::fs::remove_file(other);

    // The appliance's Redis thread over TLS.
    let (db, mut ch) = tables("tlsredis");
    let nats = Nats::new("tlsredis");
    feed_all(&db, &nats, TICKS, "0", "20");
    let url_set = format!("redis.url={url}");
    let files = tls_files("redis");
    let mut flags = vec!["--set", &url_set];
    flags.extend(strs(&files));
    let run = start_run(&db, &nats, &flags);
    wait_stored(&mut ch, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", db.redis_prefix()))
        .query(&mut conn)
        .unwrap();
    assert!(keys.len() >= 20, "{} keys: {summary}", keys.len());
    assert!(summary.contains("redis cache:"), "{summary}");
}

/// A PostgreSQL cluster of the test's own taking TLS connections only (pg_hba:
/// `hostssl` trust with `clientcert=verify-full`, so a client certificate signed by the
/// test CA and naming the user is required; `hostnossl` reject), with the test
/// certificates; stopped on drop.
struct TlsPostgres {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
}

impl TlsPostgres {
    fn start() -> TlsPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL installed (bash .ci/services.sh installs it)")
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").is_file())
            .expect("initdb");
        let tls = tls_dir();
        let dir = std::env::temp_dir().join(format!("alphapt-pgtls-{}", common::suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(format!("{tls}/{file}"), dir.join(file)).unwrap();
        }
        let as_postgres = |args: &[&str]| {
            let status = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "{args:?}");
        };
        let d = dir.to_str().unwrap().to_owned();
        let status = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres", &d])
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::set_permissions(
            dir.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let initdb = bin.join("initdb");
        as_postgres(&[
            initdb.to_str().unwrap(),
            "-D",
            &format!("{d}/data"),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        std::fs::write(
            dir.join("data/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust clientcert=verify-full\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={d} -c ssl=on \
             -c ssl_cert_file={d}/server.pem -c ssl_key_file={d}/server.key -c ssl_ca_file={d}/ca.pem"
        );
        let pg_ctl = bin.join("pg_ctl");
        as_postgres(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            &format!("{d}/data"),
            "-o",
            &options,
            "-l",
            &format!("{d}/log"),
            "-w",
            "start",
        ]);
        TlsPostgres { dir, bin, port }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                &format!("{}/data", self.dir.display()),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL over TLS (verify-full): migrations and the appliance's audit go through
/// a TLS-only server; plaintext and an untrusted CA are refused, named.
#[test]
fn postgres_is_reached_over_tls_only_and_plaintext_is_refused() {
    use alphapt_storage::tls::connect_postgres;
    const TICKS: u64 = 2_000;
    let pg = TlsPostgres::start();
    let trusted = trusting(&test_ca());
    let mut config: postgres::Config = pg.url().parse().unwrap();
    let mut client = connect_postgres(&mut config, &trusted).unwrap();
    let on: String = client.query_one("SHOW ssl", &[]).unwrap().get(0);
    assert_eq!(on, "on");
    drop(client);

    let plain = connect_postgres(&mut pg.url().parse().unwrap(), &Settings::default());
    let error = format!("{:?}", plain.err().expect("plaintext refused"));
    assert!(
        error.contains("no encryption") || error.contains("pg_hba"),
        "{error}"
    );
    let other_ca = rcgen::generate_simple_self_signed(vec!["other CA".into()]).unwrap();
    let other = temp_file("pg-other-ca.pem", &other_ca.cert.pem());
    let untrusted = connect_postgres(
        &mut pg.url().parse().unwrap(),
        &trusting(other.to_str().unwrap()),
    );
    let error = format!("{:?}", untrusted.err().expect("untrusted CA refused"));
    assert!(
        error.contains("UnknownIssuer") || error.contains("certificate"),
        "{error}"
    );
    let _ = std::fs::remove_file(other);

    // Migrations and the appliance's audit over TLS.
    let url = format!("postgres.url={}", pg.url());
    let files = tls_files("postgres");
    let (db, mut ch) = tables("tlspg");
    let nats = Nats::new("tlspg");
    let mut flags = vec!["--set", &url, "--set", "postgres.tls=true"];
    flags.extend(strs(&files));
    let mut migrate: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    migrate.extend([
        "--set".into(),
        format!("clickhouse.database={}", db.name),
        "migrate".into(),
        "up".into(),
    ]);
    let migrated = binary(&migrate).output().unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    feed_all(&db, &nats, TICKS, "0", "20");
    let run = start_run(&db, &nats, &flags);
    wait_stored(&mut ch, TICKS, Duration::from_secs(120));
    let summary = drain(run);
    let mut config: postgres::Config = pg.url().parse().unwrap();
    let mut client = connect_postgres(&mut config, &trusted).unwrap();
    let audited: i64 = client
        .query_one("SELECT count(*) FROM ingest_audit", &[])
        .unwrap()
        .get(0);
    assert!(audited > 0, "{summary}");
}

/// Every TLS server of these tests requires a client certificate signed by the test
/// CA. Without one, or with one the server's CA did not sign, each of the four refuses
/// and the error says it is about the client certificate.
#[test]
fn a_missing_or_untrusted_client_certificate_is_refused_by_each_server() {
    use alphapt_storage::tls::connect_postgres;
    let no_cert = Settings {
        enabled: true,
        ca_file: test_ca(),
        ..Settings::default()
    };
    let stranger = rcgen::generate_simple_self_signed(vec!["stranger".into()]).unwrap();
    let cert = temp_file("stranger.pem", &stranger.cert.pem());
    let key = temp_file("stranger.key", &stranger.key_pair.serialize_pem());
    let untrusted = Settings {
        cert_file: cert.to_str().unwrap().to_owned(),
        key_file: key.to_str().unwrap().to_owned(),
        ..no_cert.clone()
    };
    let cases = [
        ("no client certificate", &no_cert),
        ("an untrusted one", &untrusted),
    ];

    for (case, settings) in cases {
        let text = refusal(&tls_options("", secure_port(), settings.clone()));
        assert!(
            text.contains("client certificate"),
            "ClickHouse, {case}: {text}"
        );
    }

    let nats = tls_nats();
    for (case, settings) in cases {
        let client = settings.client("nats", "127.0.0.1").unwrap();
        let text =
            match NatsConn::connect_with(&nats.url(), Duration::from_secs(2), client.as_ref()) {
                Ok(_) => panic!("NATS, {case}: connected"),
                Err(error) => error.to_string(),
            };
        assert!(text.contains("client certificate"), "NATS, {case}: {text}");
    }

    let redis = TlsRedis::start();
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    for (case, settings) in cases {
        let text =
            alphapt_storage::cache::redis::connect(&url, "", settings, Duration::from_secs(2))
                .and_then(|mut c| {
                    redis::cmd("PING")
                        .query::<String>(&mut c)
                        .map_err(|e| e.to_string())
                })
                .expect_err(case);
        assert!(text.contains("client certificate"), "Redis, {case}: {text}");
    }

    let pg = TlsPostgres::start();
    for (case, settings) in cases {
        let mut config: postgres::Config = pg.url().parse().unwrap();
        let text = match connect_postgres(&mut config, settings) {
            Ok(_) => panic!("PostgreSQL, {case}: connected"),
            Err(error) => error.to_string(),
        };
        assert!(
            text.contains("client certificate"),
            "PostgreSQL, {case}: {text}"
        );
    }
    let _ = std::fs::remove_file(cert);
    let _ = std::fs::remove_file(key);
}

/// A new server certificate signed by the test CA, made with openssl into a temp
/// directory: (certificate, key) paths.
fn rotated_server_certificate() -> (String, String) {
    let dir = tls_dir();
    let out = std::env::temp_dir().join(format!("alphapt-tls-rotated-{}", common::suffix()));
    std::fs::create_dir_all(&out).unwrap();
    let o = out.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (bash .ci/services.sh installs it)");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(
        out.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=rotated",
        "-keyout",
        &format!("{o}/server.key"),
        "-out",
        &format!("{o}/server.csr"),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &format!("{o}/server.csr"),
        "-CA",
        &format!("{dir}/ca.pem"),
        "-CAkey",
        &format!("{dir}/ca.key"),
        "-CAcreateserial",
        "-CAserial",
        &format!("{o}/ca.srl"),
        "-days",
        "2",
        "-extfile",
        &format!("{o}/ext"),
        "-out",
        &format!("{o}/server.pem"),
    ]);
    (format!("{o}/server.pem"), format!("{o}/server.key"))
}

/// The TLS-only nats-server killed under a running appliance and started again with a
/// rotated certificate (same CA, same store): the receiver reconnects over TLS,
/// presenting its client certificate again, and takes what is published after the
/// restart; every message of both halves is stored once.
#[test]
fn a_tls_nats_server_restarted_with_a_rotated_certificate_is_reconnected_to() {
    const HALF: u64 = 20_000;
    let mut server = tls_nats();
    let (db, mut conn) = tables("tlsrotate");
    let nats = Nats::new("tlsrotate");
    let url = format!("nats.url={}", server.url());
    let files = tls_files("nats");
    let mut flags = vec!["--set", &url];
    flags.extend(strs(&files));
    let mut feed_flags = flags.clone();
    feed_flags.extend(["--count", "20000", "--instruments", "200"]);
    let published = feed(&db, &nats, &feed_flags);
    assert!(published.contains("acked 20000 errors 0"), "{published}");
    let run = start_run(&db, &nats, &flags);
    wait_stored(&mut conn, HALF, Duration::from_secs(120));

    server.kill();
    let (cert, key) = rotated_server_certificate();
    let tls = server.tls.as_mut().unwrap();
    tls.cert = cert.clone();
    tls.key = key;
    std::thread::sleep(Duration::from_millis(500));
    server.spawn();
    let published = feed(&db, &nats, &feed_flags);
    assert!(published.contains("acked 20000 errors 0"), "{published}");
    wait_stored(&mut conn, 2 * HALF, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(
        stored(&mut conn),
        (2 * HALF, 2 * HALF, 1, 2 * HALF),
        "{summary}"
    );
    assert!(
        summary.contains("NATS connection lost; reconnecting"),
        "{summary}"
    );
    let _ = std::fs::remove_dir_all(std::path::Path::new(&cert).parent().unwrap());
}
