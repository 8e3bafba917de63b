//! The binary's edges: every class of bad config, environment and flag gives one line
//! naming what is wrong and exits 2; `--print-config` never shows a secret; `health`
//! reports each component and exits 0/1/2.

mod common;

use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alphapt-storage"));
    command.args(args).env("RUST_LOG", "warn");
    for var in [
        "CLICKHOUSE_PASSWORD",
        "CLICKHOUSE_PASSWORD_FILE",
        "CREDENTIALS_DIRECTORY",
        "REDIS_PASSWORD",
        "MARKET_DATA_BATCH_SIZE",
        "MARKET_DATA_FLUSH_INTERVAL",
        "COMPRESSION_METHOD",
        "ENABLE_COMPRESSION",
    ] {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn refused(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let out = run(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].contains(needle), "`{needle}` not in: {}", lines[0]);
}

#[test]
fn bad_config_env_and_flags_are_refused_with_one_line() {
    let print = ["--print-config", "health"];
    refused(
        &["--set", "ingest.block_rowz=5", "--print-config", "health"],
        &[],
        "ingest.block_rowz",
    );
    refused(
        &["--set", "ingest.block_rows_max", "--print-config", "health"],
        &[],
        "ingest.block_rows_max",
    );
    refused(
        &[
            "--set",
            "ingest.block_rows_max=0",
            "--print-config",
            "health",
        ],
        &[],
        "block_rows_max",
    );
    refused(
        &[
            "--set",
            "ingest.ring_slots=1000",
            "--print-config",
            "health",
        ],
        &[],
        "ring_slots",
    );
    refused(
        &["--set", "ingest.ring_slots=256", "--print-config", "health"],
        &[],
        "`ingest.ring_slots` is 256 (256 KiB a ring), too small",
    );
    refused(
        &[
            "--set",
            "ingest.payload_bytes_max=67108864",
            "--print-config",
            "health",
        ],
        &[],
        "use ring_slots >= 262144",
    );
    refused(
        &["--set", "nats.url=http://x", "--print-config", "health"],
        &[],
        "nats.url",
    );
    refused(
        &[
            "--set",
            "threads.pin=true",
            "--set",
            "threads.receiver_core=999",
            "--print-config",
            "health",
        ],
        &[],
        "999",
    );
    refused(&print, &[("CLICKHOUSE_PORT", "90x0")], "CLICKHOUSE_PORT");
    refused(
        &print,
        &[("MARKET_DATA_FLUSH_INTERVAL", "soon")],
        "MARKET_DATA_FLUSH_INTERVAL",
    );
    refused(
        &print,
        &[("COMPRESSION_METHOD", "zstd")],
        "COMPRESSION_METHOD",
    );
    refused(
        &["--config", "/nonexistent/alphapt.toml", "health"],
        &[],
        "/nonexistent/alphapt.toml",
    );
    let bad_toml = std::env::temp_dir().join(format!("alphapt-bad-{}.toml", std::process::id()));
    std::fs::write(&bad_toml, "[ingest]\nblock_rows_max = \"many\"\n").unwrap();
    refused(
        &["--config", bad_toml.to_str().unwrap(), "health"],
        &[],
        "ingest.block_rows_max",
    );
    std::fs::remove_file(&bad_toml).unwrap();
    // Unknown flags are clap's: exit 2 with usage.
    assert_eq!(
        run(&["health", "--no-such-flag"], &[]).status.code(),
        Some(2)
    );
}

/// `--set` before and after the subcommand both count (clap alone keeps only the
/// later side's), the last one of a key winning.
#[test]
fn set_flags_on_both_sides_of_the_subcommand_all_apply() {
    let out = run(
        &[
            "--set",
            "ingest.shards=3",
            "--set",
            "ingest.writers=2",
            "run",
            "--set",
            "ingest.writers=4",
            "--print-config",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(parsed["ingest"]["shards"].as_integer(), Some(3));
    assert_eq!(parsed["ingest"]["writers"].as_integer(), Some(4));
}

#[test]
fn bad_validation_thresholds_are_refused_with_one_line() {
    // Each [validation] key out of range, from --set or from a file, is refused at
    // start naming the dotted key and the accepted range; a good value is shown.
    for (set, needle) in [
        (
            "validation.future_skew_ms=-1",
            "`validation.future_skew_ms` is -1",
        ),
        (
            "validation.stale_window_ms=0",
            "`validation.stale_window_ms` is 0",
        ),
        (
            "validation.price_jump_band_pct=0",
            "validation.price_jump_band_pct",
        ),
        ("validation.quantity_max=0", "validation.quantity_max"),
        ("validation.instruments_max=0", "1..=1048576"),
        (
            "validation.instruments_max=many",
            "validation.instruments_max",
        ),
        ("validation.quantity_maxx=1", "validation.quantity_maxx"),
    ] {
        refused(&["--set", set, "--print-config", "health"], &[], needle);
    }
    let file = std::env::temp_dir().join(format!("alphapt-validation-{}.toml", std::process::id()));
    std::fs::write(&file, "[validation]\nprice_jump_band_pct = 0\n").unwrap();
    refused(
        &["--config", file.to_str().unwrap(), "health"],
        &[],
        "`validation.price_jump_band_pct` is 0; use a value in 1..",
    );
    std::fs::remove_file(&file).unwrap();

    let out = run(
        &[
            "--set",
            "validation.stale_window_ms=5000",
            "--print-config",
            "health",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(
        parsed["validation"]["stale_window_ms"].as_integer(),
        Some(5000)
    );
    assert_eq!(
        parsed["validation"]["instruments_max"].as_integer(),
        Some(131_072)
    );
}

#[test]
fn print_config_shows_layers_and_hides_secrets() {
    let out = run(
        &[
            "--config",
            "tuning/default.toml",
            "--set",
            "ingest.shards=3",
            "--print-config",
            "health",
        ],
        &[
            ("CLICKHOUSE_PASSWORD", "hunter2-ch"),
            ("REDIS_PASSWORD", "hunter2-redis"),
            ("POSTGRES_URL", "postgres://u:hunter2-pg@127.0.0.1:5432/db"),
            ("NATS_URL", "nats://u:hunter2-nats@127.0.0.1:4222"),
            ("MARKET_DATA_BATCH_SIZE", "4096"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("hunter2"), "a secret leaked:\n{text}");
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(parsed["ingest"]["shards"].as_integer(), Some(3));
    assert_eq!(parsed["ingest"]["block_rows_max"].as_integer(), Some(4096));
    assert_eq!(parsed["clickhouse"]["password"].as_str(), Some("***"));
}

#[test]
fn health_reports_components_and_exit_status() {
    let db = common::TestDb::new("health");
    let port = std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "9000".into());
    let database = format!("clickhouse.database={}", db.name);
    let out = run(
        &["health", "--json", "--set", &database],
        &[("CLICKHOUSE_PORT", &port)],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let components = report["components"].as_array().unwrap();
    let names: Vec<&str> = components
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["clickhouse", "nats", "redis", "postgres"]);
    assert_eq!(components[0]["status"], "up", "{report}");
    assert!(components[0]["version"]
        .as_str()
        .unwrap()
        .starts_with(char::is_numeric));
    let expected = if components.iter().all(|c| c["status"] == "up") {
        0
    } else {
        1
    };
    assert_eq!(out.status.code(), Some(expected), "{report}");

    // A database that does not exist is degraded, ClickHouse unreachable is down.
    let missing = run(
        &["health", "--set", "clickhouse.database=alphapt_no_such_db"],
        &[("CLICKHOUSE_PORT", &port)],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("migrate up"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = listener.local_addr().unwrap().port().to_string();
    drop(listener);
    let down = run(&["health", "--json"], &[("CLICKHOUSE_PORT", &dead_port)]);
    assert_eq!(down.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&down.stdout).unwrap();
    assert_eq!(report["status"], "down");
}

/// A reader that went away (`| head`, a parent that stopped reading) ends the report
/// quietly: exit 0, no panic. The pipe's read end is closed before the child writes.
#[test]
fn a_closed_stdout_ends_the_report_without_a_panic() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe` writes on success.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = Command::new(env!("CARGO_BIN_EXE_alphapt-storage"))
        .args(["--print-config", "health"])
        .env("RUST_LOG", "warn")
        .stdout(write)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `http.addr` in use: the start stops at once, before any thread or server is
/// touched, with one line naming the key and the fix.
#[test]
fn a_control_port_in_use_stops_the_start_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http.addr={}", taken.local_addr().unwrap());
    let stderr = start_refused(&[&addr]);
    assert!(
        stderr.contains("http.addr") && stderr.contains("in use"),
        "{stderr}"
    );
}

/// Starts `run` over one synthetic tick with these settings, which must stop the
/// start: within 10 s, unsuccessfully. Returns what it printed on stderr.
fn start_refused(settings: &[&str]) -> String {
    let mut args = vec!["run", "--synthetic", "1", "--count", "1", "--quiet"];
    for setting in settings {
        args.extend(["--set", setting]);
    }
    let started = std::time::Instant::now();
    let out = run(&args, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    stderr
}

/// Receiver rings larger than the host's available memory (they are written whole at
/// start) stop the start with one line naming the keys, before any server is touched,
/// instead of ending in the OOM killer.
#[test]
fn rings_the_host_cannot_hold_stop_the_start_naming_the_keys() {
    const RING: u64 = 16 << 30; // ring_slots at its limit, 2^24 x 1 KiB
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let available_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemAvailable in /proc/meminfo");
    let shards = available_kib * 1024 / RING + 1;
    let stderr = start_refused(&[
        "http.addr=127.0.0.1:0",
        "ingest.ring_slots=16777216",
        &format!("ingest.shards={shards}"),
        &format!("ingest.writers={shards}"),
        // No server may be touched: nothing listens here.
        "clickhouse.port=1",
    ]);
    assert!(
        stderr.contains("ingest.ring_slots") && stderr.contains("MiB available"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("ClickHouse") && !stderr.contains("clickhouse"),
        "stopped before the servers: {stderr}"
    );
}

/// A password from a file reaches ClickHouse (the test server's `alphapt` user takes
/// `secret-pw`), and neither the output nor `--print-config` shows it; a file others
/// can read is warned about; a wrong password in the file fails as a wrong password.
#[test]
fn a_password_from_a_file_works_and_is_never_shown() {
    use std::os::unix::fs::PermissionsExt;
    let port = std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "9000".into());
    let dir = std::env::temp_dir().join(format!("alphapt-pwfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("clickhouse.password");
    std::fs::write(&file, "secret-pw\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let file = file.to_str().unwrap();
    let env = [
        ("CLICKHOUSE_PORT", port.as_str()),
        ("CLICKHOUSE_USERNAME", "alphapt"),
        ("CLICKHOUSE_PASSWORD_FILE", file),
    ];
    let out = run(
        &["health", "--json", "--set", "clickhouse.database=default"],
        &env,
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["components"][0]["status"], "up", "{report} {stderr}");
    assert!(stderr.contains("readable by group or others"), "{stderr}");
    let printed = run(&["--print-config", "health"], &env);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&printed.stdout),
        String::from_utf8_lossy(&printed.stderr)
    );
    assert!(printed.contains("password_file"), "{printed}");
    for text in [&*stdout, &*stderr, &printed] {
        assert!(!text.contains("secret-pw"), "shown: {text}");
    }
    std::fs::write(file, "wrong-pw\n").unwrap();
    let out = run(
        &["health", "--json", "--set", "clickhouse.database=default"],
        &env,
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["components"][0]["status"], "down", "{report}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wrong-pw"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bug that formats clear-text credentials into a panic (the `panic` crash point does
/// it on purpose) prints `***` in their place, written or percent-decoded; the process
/// still stops with exit 70, naming the thread.
#[test]
fn a_panic_carrying_secrets_prints_stars_instead() {
    let env = [
        ("ALPHAPT_CRASH_AT", "panic:1"),
        ("CLICKHOUSE_PASSWORD", "ch-Pw-41x"),
        ("REDIS_PASSWORD", "redis-Pw-93z"),
        ("NATS_URL", "nats://app:nats-Pw-58y@127.0.0.1:4222"),
        (
            "POSTGRES_URL",
            "postgres://app:pg-P%40ss-77w@127.0.0.1:5432/x",
        ),
    ];
    let out = run(&["run", "--synthetic", "1000", "--count", "10"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("thread 'main' panicked at"), "{stderr}");
    assert!(stderr.contains("ALPHAPT_CRASH_AT reached"), "{stderr}");
    assert!(stderr.contains("clickhouse.password=***"), "{stderr}");
    assert!(stderr.contains("nats://app:***@127.0.0.1:4222"), "{stderr}");
    for secret in [
        "ch-Pw-41x",
        "redis-Pw-93z",
        "nats-Pw-58y",
        "pg-P%40ss-77w",
        "pg-P@ss-77w",
    ] {
        assert!(!stderr.contains(secret), "{secret} shown: {stderr}");
        assert!(!stdout.contains(secret), "{secret} shown: {stdout}");
    }
}
