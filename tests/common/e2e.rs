//! End-to-end helpers: the binary as operators run it (`feed`, `run`, SIGTERM), a
//! test's own NATS objects and ClickHouse tables, counts of what is stored, and a
//! private nats-server to kill.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alphapt_storage::receive::nats::{JetStream, NatsConn, PublishWindow};

use super::{suffix, TestDb};

/// Names of one test's NATS objects.
pub struct Nats {
    pub stream: String,
    pub subjects: String,
    pub signals_stream: String,
    pub signals_subjects: String,
    pub durable: String,
}

impl Nats {
    pub fn new(tag: &str) -> Nats {
        let id = suffix();
        Nats {
            stream: format!("E2E_{tag}_{id}").to_uppercase(),
            subjects: format!("e2e{tag}{id}.ticks.>"),
            signals_stream: format!("E2ESIG_{tag}_{id}").to_uppercase(),
            signals_subjects: format!("e2e{tag}{id}.signals.>"),
            durable: format!("e2e{tag}{id}"),
        }
    }

    pub fn url() -> String {
        std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
    }

    /// The port of [`Nats::url`] (a proxy in front of it forwards there).
    pub fn port() -> u16 {
        let url = Nats::url();
        let port = url.rsplit(':').next().unwrap_or_default();
        port.trim_end_matches('/')
            .parse()
            .expect("NATS_URL ends in a port")
    }
}

impl Nats {
    /// Publishes `(subject tail, payload)` signals to JetStream once the appliance
    /// has created the signals stream, each acknowledged by the server.
    pub fn publish_signals(&self, messages: impl IntoIterator<Item = (String, String)>) {
        let mut publisher = NatsConn::connect(&Nats::url(), Duration::from_secs(2)).unwrap();
        let js = JetStream::new(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(20);
        while js
            .stream_info(&mut publisher, &self.signals_stream)
            .unwrap()
            .is_none()
        {
            assert!(Instant::now() < deadline, "signals stream never created");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut window = PublishWindow::new(&mut publisher, 256).unwrap();
        let prefix = self.signals_subjects.trim_end_matches(".>");
        for (tail, payload) in messages {
            let subject = format!("{prefix}.{tail}");
            window
                .publish(
                    &mut publisher,
                    subject.as_bytes(),
                    payload.as_bytes(),
                    Duration::from_secs(10),
                )
                .unwrap();
        }
        window
            .finish(&mut publisher, Duration::from_secs(10))
            .unwrap();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Ok(mut conn) = NatsConn::connect(&Nats::url(), Duration::from_secs(2)) {
            let js = JetStream::new(Duration::from_secs(2));
            let _ = js.delete_stream(&mut conn, &self.stream);
            let _ = js.delete_stream(&mut conn, &self.signals_stream);
        }
    }
}

/// The `--set` flags that point both commands at this test's objects.
pub fn sets(db: &TestDb, nats: &Nats) -> Vec<String> {
    let port = std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "9000".into());
    [
        format!("clickhouse.database={}", db.name),
        format!("clickhouse.port={port}"),
        format!("nats.url={}", Nats::url()),
        format!("nats.stream_ticks={}", nats.stream),
        format!("nats.subject_ticks={}", nats.subjects),
        format!("nats.durable={}", nats.durable),
        format!("spill.dir={}", db.spill_dir().display()),
        format!("nats.stream_signals={}", nats.signals_stream),
        format!("nats.subject_signals={}", nats.signals_subjects),
        "ingest.flush_interval_ms=200".into(),
        "ingest.block_rows_max=32768".into(),
        "nats.ack_wait_ms=5000".into(),
        "ingest.drain_timeout_ms=20000".into(),
        format!("redis.key_prefix={}", db.redis_prefix()),
        // Any free port: parallel appliances must not share the control endpoint's.
        "http.addr=127.0.0.1:0".into(),
    ]
    .into_iter()
    .chain(ack_policy_setting())
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

/// `TEST_ACK_POLICY=all|none` runs every appliance of a test under that
/// `nats.ack_policy` (`make test` runs the crash suites a second time under AckAll;
/// the default is AckNone). A test's own `--set nats.ack_policy=...`, which comes
/// later, still wins: those test one policy's own behaviour.
fn ack_policy_setting() -> Option<String> {
    let policy = std::env::var("TEST_ACK_POLICY").ok()?;
    assert!(
        policy == "all" || policy == "none",
        "TEST_ACK_POLICY={policy:?}: set it to all or none, or leave it unset"
    );
    Some(format!("nats.ack_policy={policy}"))
}

/// Pins a test's appliances to AckAll: the test reads the consumer's ack floor as the
/// durable point, which only AckAll's acks make it (an AckNone consumer's floor is
/// what was delivered).
pub const ACK_ALL: [&str; 2] = ["--set", "nats.ack_policy=all"];

/// Overflow mode with a spill too small for one sealed block (~150-250 KB): while
/// ClickHouse is away the writer holds its block, so nothing routed becomes durable
/// and the window above the durable point fills.
pub const SPILL_HOLDS_NO_BLOCK: [&str; 6] = [
    "--set",
    "spill.mode=overflow",
    "--set",
    "spill.segment_bytes=65536",
    "--set",
    "spill.spill_bytes_max=131072",
];

pub fn binary(args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alphapt-storage"));
    command.args(args).env("RUST_LOG", "warn");
    command
}

pub fn feed(db: &TestDb, nats: &Nats, extra: &[&str]) -> String {
    let mut args = sets(db, nats);
    args.push("feed".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    let output = binary(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "feed failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Publishes `count` ticks (`bad_ratio` of them deliberately bad) over `instruments`
/// instruments to JetStream and checks every one was acknowledged.
pub fn feed_all(db: &TestDb, nats: &Nats, count: u64, bad_ratio: &str, instruments: &str) {
    let published = feed(
        db,
        nats,
        &[
            "--count",
            &count.to_string(),
            "--bad-ratio",
            bad_ratio,
            "--instruments",
            instruments,
        ],
    );
    assert!(
        published.contains(&format!("acked {count} errors 0")),
        "{published}"
    );
}

/// A running appliance; killed if the test fails before draining it, and then its
/// output so far is printed. Its stdout and stderr go to a file, not a pipe: a pipe
/// nobody reads until exit blocks the appliance's logging once 64 KiB are written,
/// which would stall its threads and look like an appliance hang.
pub struct Running {
    child: Option<Child>,
    log: std::path::PathBuf,
    /// Kept after the run (E2E_RUN_LOG_DIR), not removed.
    keep: bool,
}

impl Running {
    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the run has written so far (stdout and stderr, interleaved).
    pub fn output(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        terminate_pid(self.pid());
    }

    /// Waits (bounded: killed and failed past `limit`) for the run to exit by itself;
    /// returns its status and output.
    pub fn exit_within(
        mut self,
        limit: Duration,
        what: &str,
    ) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, self.output());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "run did not {what} within {limit:?}; its output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                // The test failed with the run still going: what it said is the clue.
                let text = self.output();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(300)..];
                eprintln!("--- the run's output (last {} lines) ---", tail.len());
                for line in tail {
                    eprintln!("{line}");
                }
                eprintln!("--- end of the run's output ---");
            }
        }
        if !self.keep {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

pub fn start_run(db: &TestDb, nats: &Nats, extra: &[&str]) -> Running {
    start_run_env(db, nats, extra, &[])
}

/// `start_run` with environment variables of its own (a crash point, say).
pub fn start_run_env(db: &TestDb, nats: &Nats, extra: &[&str], env: &[(&str, &str)]) -> Running {
    let mut args = sets(db, nats);
    args.push("run".into());
    args.push("--quiet".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    // At info level: a failing test prints the tail (see `Drop`), which must say what
    // the run was doing. E2E_RUN_LOG_DIR=<dir> also keeps every run's log there.
    let kept = std::env::var_os("E2E_RUN_LOG_DIR");
    let dir = kept
        .clone()
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let log = dir.join(format!("alphapt-run-{}.log", super::suffix()));
    let file = std::fs::File::create(&log).unwrap();
    let child = binary(&args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    Running {
        child: Some(child),
        log,
        keep: kept.is_some(),
    }
}

/// Kills the run with SIGKILL: no drain, no final ack. Returns what it had written.
pub fn kill(mut running: Running) -> String {
    let mut child = running.child.take().expect("running");
    child.kill().unwrap();
    child.wait().unwrap();
    running.output()
}

/// Sends SIGTERM to process `pid`.
pub fn terminate_pid(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sends SIGTERM and waits (bounded) for exit 0; returns the run's output.
pub fn drain(running: Running) -> String {
    running.terminate();
    let (status, text) = running.exit_within(Duration::from_secs(60), "drain");
    assert!(status.success(), "run exited {status}: {text}");
    text
}

/// Waits (bounded: killed and failed past `limit`) for `child` to exit by itself;
/// returns its status and stdout + stderr.
pub fn wait_exit(
    mut child: Child,
    limit: Duration,
    what: &str,
) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return (status, text);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("run did not {what} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a run armed with `ALPHAPT_CRASH_AT` to kill itself; fails unless it
/// ended by SIGKILL at its crash point. Returns its output.
pub fn run_until_crash(running: Running) -> String {
    use std::os::unix::process::ExitStatusExt;
    let (status, text) = running.exit_within(Duration::from_secs(120), "reach its crash point");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the crash point must end the run with SIGKILL, got {status}: {text}"
    );
    assert!(text.contains("ALPHAPT_CRASH_AT reached"), "{text}");
    text
}

/// The end of most exactly-once tests: waits until `ticks` rows are stored, drains the
/// run, and checks every sequence 1..=ticks is stored once and the consumer settled at
/// the end. Returns the run's summary.
pub fn drain_stored_once(
    conn: &mut alphapt_storage::native::Connection,
    run: Running,
    nats: &Nats,
    ticks: u64,
) -> String {
    wait_stored(conn, ticks, Duration::from_secs(120));
    let summary = drain(run);
    assert_eq!(stored(conn), (ticks, ticks, 1, ticks), "{summary}");
    consumer_settled(nats, ticks);
    summary
}

pub fn stored(conn: &mut alphapt_storage::native::Connection) -> (u64, u64, u64, u64) {
    let q = conn
        .query(
            "SELECT count() AS c, uniqExact(s) AS u, min(s) AS lo, max(s) AS hi FROM \
             (SELECT stream_seq AS s FROM market_ticks UNION ALL SELECT stream_seq AS s FROM rejected_messages)",
        )
        .unwrap();
    let get = |name: &str| q.column(name)[0].as_u64().unwrap();
    (get("c"), get("u"), get("lo"), get("hi"))
}

pub fn wait_stored(conn: &mut alphapt_storage::native::Connection, expected: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while stored(conn).0 < expected {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} stored",
            stored(conn).0
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn consumer_settled(nats: &Nats, last: u64) {
    consumer_settled_at(&Nats::url(), nats, last);
}

pub fn consumer_settled_at(url: &str, nats: &Nats, last: u64) {
    let mut conn = NatsConn::connect(url, Duration::from_secs(2)).unwrap();
    let info = JetStream::new(Duration::from_secs(2))
        .consumer_info(&mut conn, &nats.stream, &nats.durable)
        .unwrap()
        .expect("the durable exists");
    assert_eq!(info.num_pending, 0, "{info:?}");
    // nats-server 2.9 reports an ack floor of 0 for a consumer created at a start
    // sequence with nothing delivered since: settled at the delivered mark then.
    let floor = if info.delivered.consumer_seq == info.ack_floor.consumer_seq {
        info.delivered.stream_seq.max(info.ack_floor.stream_seq)
    } else {
        info.ack_floor.stream_seq
    };
    assert_eq!(floor, last, "{info:?}");
    assert_eq!(info.delivered.stream_seq, last, "{info:?}");
    // With the ack floor at the last sequence, AckAll has acknowledged every delivery
    // up to it: nothing of ours can be pending. nats-server 2.9 may still list a few
    // deliveries as pending after redeliveries (its pending-list bookkeeping, cf.
    // nats-io/nats-server#6093). CI saw 2 left after 24,539 redeliveries, and 2 after
    // 138 redeliveries that ended before the floor caught up, so the offset between
    // consumer and stream sequences no longer showed them. So under AckAll a count
    // left below the floor is reported, not failed; under any other policy nothing may
    // be pending.
    if info.ack_policy != "all" {
        assert_eq!(info.num_ack_pending, 0, "{info:?}");
        // AckNone has no ack window on the server: the receiver bounds what it pulls.
        assert_eq!(info.ack_policy, "none", "{info:?}");
        return;
    }
    if info.num_ack_pending > 0 {
        eprintln!(
            "consumer settled at {last}; nats-server still lists {} deliveries below the ack floor as pending",
            info.num_ack_pending
        );
    }
    assert!(
        info.max_ack_pending > 1000,
        "the ack window is sized, not defaulted: {info:?}"
    );
}

pub fn tables(tag: &str) -> (TestDb, alphapt_storage::native::Connection) {
    let db = TestDb::new(tag);
    let mut conn = db.connect(None);
    db.create_market_ticks(&mut conn);
    db.create_from_migration(&mut conn, "003_strategy_signals");
    db.create_from_migration(&mut conn, "004_rejected_messages");
    (db, conn)
}

/// A nats-server of the test's own (port, store dir), so killing it disturbs no
/// other test; killed on drop.
pub struct PrivateNats {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: std::path::PathBuf,
    /// TLS only: the server's certificate and key, and the CA clients trust.
    pub tls: Option<NatsTls>,
    /// A config file the server reads (`-c`), such as subject mappings.
    pub config_file: Option<std::path::PathBuf>,
}

/// The files of a TLS-only private nats-server. With a client pair set, the server
/// requires a client certificate signed by `ca` (`--tlsverify`) and [`PrivateNats::connect`]
/// presents this one.
pub struct NatsTls {
    pub cert: String,
    pub key: String,
    pub ca: String,
    pub client_cert: String,
    pub client_key: String,
}

impl PrivateNats {
    pub fn start() -> PrivateNats {
        PrivateNats::start_with(None)
    }

    /// A server that takes TLS connections only.
    pub fn start_tls(tls: NatsTls) -> PrivateNats {
        PrivateNats::start_with(Some(tls))
    }

    /// A server that also reads `config` (nats-server's config syntax) from a file.
    pub fn start_with_config(config: &str) -> PrivateNats {
        PrivateNats::start_configured(None, Some(config))
    }

    fn start_with(tls: Option<NatsTls>) -> PrivateNats {
        PrivateNats::start_configured(tls, None)
    }

    fn start_configured(tls: Option<NatsTls>, config: Option<&str>) -> PrivateNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("alphapt-nats-{}", suffix()));
        let config_file = config.map(|text| {
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join("nats-server.conf");
            std::fs::write(&file, text).unwrap();
            file
        });
        let mut server = PrivateNats {
            child: None,
            port,
            dir,
            tls,
            config_file,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client for this server: TLS with its CA when it is TLS-only.
    pub fn connect(&self) -> Result<NatsConn, alphapt_storage::receive::nats::NatsError> {
        let tls = self.tls.as_ref().map(|t| {
            alphapt_storage::tls::Settings {
                enabled: true,
                ca_file: t.ca.clone(),
                cert_file: t.client_cert.clone(),
                key_file: t.client_key.clone(),
                ..Default::default()
            }
            .client("nats", "127.0.0.1")
            .unwrap()
            .unwrap()
        });
        NatsConn::connect_with(&self.url(), Duration::from_secs(1), tls.as_ref())
    }

    pub fn spawn(&mut self) {
        let mut command = Command::new("nats-server");
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir);
        if let Some(file) = &self.config_file {
            command.arg("-c").arg(file);
        }
        if let Some(tls) = &self.tls {
            command.args(["--tls", "--tlscert", &tls.cert, "--tlskey", &tls.key]);
            if !tls.client_cert.is_empty() {
                command.args(["--tlsverify", "--tlscacert", &tls.ca]);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (bash .ci/services.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.connect().is_err() {
            assert!(
                Instant::now() < deadline,
                "private nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The port of the ClickHouse the tests use.
pub fn clickhouse_port() -> u16 {
    std::env::var("CLICKHOUSE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9000)
}

/// The number that follows the word `label` in `summary` after the first `after`
/// (words split at spaces, `)` and `;`): `summary_figure(s, "journal sync ms", "p99")`.
pub fn summary_figure(summary: &str, after: &str, label: &str) -> f64 {
    let rest = summary
        .split_once(after)
        .unwrap_or_else(|| panic!("no '{after}' in the summary: {summary}"))
        .1;
    let mut words = rest.split([' ', ')', ';']).filter(|w| !w.is_empty());
    words.position(|w| w == label);
    words
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {label} after '{after}' in the summary: {summary}"))
}

/// A metric without labels from the control endpoint at `addr`.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, text) = get(addr, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}")) as u64
}

/// The consumer's ack policy as nats-server reports it (`all`, `none`).
pub fn consumer_ack_policy(nats: &Nats) -> String {
    consumer_info(nats).expect("the durable exists").ack_policy
}

fn consumer_info(nats: &Nats) -> Option<alphapt_storage::receive::nats::ConsumerInfo> {
    let mut nc = NatsConn::connect(&Nats::url(), Duration::from_secs(2)).unwrap();
    JetStream::new(Duration::from_secs(2))
        .consumer_info(&mut nc, &nats.stream, &nats.durable)
        .unwrap()
}

/// What the appliance serving `addr` has made durable, as its consumer shows it: the ack
/// floor under AckAll; under AckNone (whose floor is only what was delivered) the
/// durable watermark it reports, the mark it would resume above. 0 before the
/// appliance has set its consumer up.
pub fn durable_point(nats: &Nats, addr: SocketAddr) -> u64 {
    match consumer_info(nats) {
        None => 0,
        Some(info) if info.ack_policy == "all" => info.ack_floor.stream_seq,
        Some(_) => metric(addr, "alphapt_storage_durable_watermark"),
    }
}

/// The consumer's ack floor now.
pub fn ack_floor(nats: &Nats) -> u64 {
    ack_floor_at(&Nats::url(), nats)
}

/// The consumer's ack floor now, on the server at `url`.
pub fn ack_floor_at(url: &str, nats: &Nats) -> u64 {
    let mut nc = NatsConn::connect(url, Duration::from_secs(2)).unwrap();
    let js = JetStream::new(Duration::from_secs(2));
    js.consumer_info(&mut nc, &nats.stream, &nats.durable)
        .unwrap()
        .map_or(0, |info| info.ack_floor.stream_seq)
}

/// Waits until `run` has made `seq` and all below it durable, as [`durable_point`]
/// reads it (AckAll: acknowledged).
pub fn wait_durable(nats: &Nats, run: &Running, seq: u64, limit: Duration) {
    let addr = control_addr(run);
    let deadline = Instant::now() + limit;
    loop {
        let at = durable_point(nats, addr);
        if at >= seq {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "durable only through {at} of {seq}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A feed of `count` ticks (`format`: `json` or `kite`) at `rate` a second over 100
/// instruments, in the background.
pub fn feeder(db: &TestDb, nats: &Nats, count: u64, rate: u64, format: &str) -> Child {
    let mut args = sets(db, nats);
    args.extend([
        "feed".to_string(),
        "--format".into(),
        format.into(),
        "--count".into(),
        count.to_string(),
        "--rate".into(),
        rate.to_string(),
        "--instruments".into(),
        "100".into(),
    ]);
    binary(&args).stdout(Stdio::piped()).spawn().unwrap()
}

pub fn feeder_done(feeder: Child) {
    let (status, text) = wait_exit(feeder, Duration::from_secs(120), "feed");
    assert!(status.success(), "feed failed: {text}");
}

/// The endpoint's address, from the run's log line.
pub fn control_addr(run: &Running) -> SocketAddr {
    let mut addr = None;
    super::wait_until(
        "the control endpoint's log line",
        Duration::from_secs(20),
        || {
            addr = run
                .output()
                .lines()
                .find(|l| l.contains("Control endpoint"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.parse().ok());
            addr.is_some()
        },
    );
    addr.unwrap()
}

/// One request, the whole response (status, body).
pub fn request(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(raw);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

/// A private nats-server running the partition mapping for `nats`'s subjects.
pub fn partitioned_server(db: &super::TestDb, nats: &Nats, partitions: u32) -> PrivateNats {
    let mut args = sets(db, nats);
    args.extend(["partitions".into(), partitions.to_string()]);
    let printed = binary(&args).output().unwrap();
    assert!(printed.status.success(), "{printed:?}");
    PrivateNats::start_with_config(&String::from_utf8(printed.stdout).unwrap())
}

/// The flags of an appliance serving partition `id` of 2 on `server`, with a spill
/// directory of its own.
pub fn partition_flags(db: &super::TestDb, server: &PrivateNats, id: u32) -> Vec<String> {
    partitions_flags(db, server, 2, &[id])
}

/// The flags of an appliance serving partitions `ids` of `count` on `server`, with a
/// spill directory of its own and, for several, one shard per partition.
pub fn partitions_flags(
    db: &super::TestDb,
    server: &PrivateNats,
    count: u32,
    ids: &[u32],
) -> Vec<String> {
    let names: Vec<String> = ids.iter().map(u32::to_string).collect();
    let spill = db.spill_dir().join(format!("p{}", names.join("-")));
    let mut sets = vec![
        format!("nats.url={}", server.url()),
        format!("nats.partitions={count}"),
        format!("nats.partition_ids={}", names.join(",")),
        format!("spill.dir={}", spill.display()),
    ];
    if ids.len() > 1 {
        sets.push(format!("ingest.shards={}", ids.len()));
    }
    sets.into_iter()
        .flat_map(|set| ["--set".to_owned(), set])
        .collect()
}

pub fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// Flips one payload byte of the middle pending record of the first journal under the
/// spill `root` that holds at least `min_pending` pending ones, in place (never
/// truncating: a running appliance maps the file and sees the change). Returns that
/// record as the scan saw it, and its journal directory.
pub fn flip_pending_record(
    root: &std::path::Path,
    min_pending: usize,
) -> (alphapt_storage::spill::RecordSummary, std::path::PathBuf) {
    use alphapt_storage::spill::{all_journal_dirs, Journal};
    use std::io::{Seek, SeekFrom};
    for dir in all_journal_dirs(root).unwrap() {
        let scan = Journal::scan_read_only(&dir).unwrap();
        let pending: Vec<_> = scan.records.iter().filter(|r| r.pending).collect();
        if pending.len() < min_pending.max(1) {
            continue;
        }
        let victim = *pending[pending.len() / 2];
        let segment = scan
            .segments
            .iter()
            .find(|s| s.segment_seq == victim.pos.segment_seq)
            .unwrap();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment.file)
            .unwrap();
        // The payload starts after the 72-byte record header (src/spill/format.rs).
        let flip_at = victim.pos.offset + 72 + victim.payload_bytes / 2;
        let mut byte = [0u8];
        file.seek(SeekFrom::Start(flip_at)).unwrap();
        file.read_exact(&mut byte).unwrap();
        file.seek(SeekFrom::Start(flip_at)).unwrap();
        file.write_all(&[byte[0] ^ 0x5a]).unwrap();
        file.sync_all().unwrap();
        return (victim, dir);
    }
    panic!(
        "no journal under {} holds {min_pending} pending records",
        root.display()
    );
}

/// Drains `run` after one record of `rows` rows was damaged in its journal: every other
/// of the `ticks` stored once, the damaged record set aside with an error that says so,
/// and the drain not held to its deadline by it. Returns the run's output.
pub fn drain_with_one_set_aside(
    conn: &mut alphapt_storage::native::Connection,
    run: Running,
    ticks: u64,
    rows: u64,
) -> String {
    let started = Instant::now();
    let summary = drain(run);
    let took = started.elapsed();
    let (count, distinct, _, _) = stored(conn);
    assert_eq!(
        (count, distinct),
        (ticks - rows, ticks - rows),
        "all but the damaged record's {rows} rows: {summary}"
    );
    assert!(
        summary.contains("A journaled block is damaged") && summary.contains("set aside"),
        "{summary}"
    );
    assert!(
        !summary.contains("Drain deadline passed") && took < Duration::from_secs(15),
        "the drain did not wait on the damaged record ({took:?}): {summary}"
    );
    summary
}
