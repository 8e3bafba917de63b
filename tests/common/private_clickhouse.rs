//! Private ClickHouse 18.16 servers for the scale-out tests: a ClickHouse cluster of
//! servers of the test's own, each shard one server (one replica), all sharing one
//! `<remote_servers>` cluster definition, so a test can put a `Distributed` table over
//! them, kill and restart a shard, without touching the server the other tests share.
//!
//! Each server is a normal child process (`clickhouse-server` on PATH; `bash
//! .ci/services.sh all` installs it) with its own temp dir, config and data dir. Budget
//! ~150-300 MB of memory and 2-5 s of start-up per server on a loaded box (idle with an
//! empty data dir it is ~75-80 MB resident and answers in ~0.1 s), so keep clusters
//! small. A `Distributed` insert writes the rows of its own server's shard at once and
//! sends the others asynchronously unless the session has `SET insert_distributed_sync
//! = 1` (18.16 knows it); with equal weights, shard `i` (`servers[i]`) gets the rows whose
//! sharding key `% shards == i`. Never run `clickhouse-client --help` against 18.16: it
//! prints blank lines forever.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alphapt_storage::native::{Connection, Options};

/// How long a server may take to answer after it is spawned.
const START_LIMIT: Duration = Duration::from_secs(60);

/// One private clickhouse-server: a child process, its native port and its directory
/// (config.xml, users.xml, data/, log/), removed on drop.
pub struct PrivateClickHouse {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// A cluster of private servers, `servers[i]` being shard `i` (one replica each).
pub struct PrivateCluster {
    pub servers: Vec<PrivateClickHouse>,
    /// The cluster's name in `<remote_servers>` (the first argument of `Distributed`).
    pub name: String,
}

impl PrivateCluster {
    /// `shards` shards of one replica each, cluster named `name`; waits (bounded, ~60 s,
    /// a clear panic with the server's err log tail) until every server answers.
    pub fn start(name: &str, shards: usize) -> PrivateCluster {
        assert!(shards > 0, "a cluster needs at least one shard");
        // Every port is picked before any server starts (the cluster block lists them
        // all); the listeners are held until all are picked so none repeats.
        let listeners: Vec<(TcpListener, TcpListener)> = (0..shards)
            .map(|_| (free_port_listener(), free_port_listener()))
            .collect();
        let ports: Vec<(u16, u16)> = listeners
            .iter()
            .map(|(tcp, http)| (port_of(tcp), port_of(http)))
            .collect();
        drop(listeners);
        let remote_servers = remote_servers(name, &ports);
        let mut servers: Vec<PrivateClickHouse> = ports
            .iter()
            .map(|&(tcp_port, http_port)| {
                let dir = std::env::temp_dir().join(format!("alphapt-ch-{}", super::suffix()));
                for sub in ["data", "tmp", "user_files", "format_schemas", "log"] {
                    std::fs::create_dir_all(dir.join(sub)).unwrap();
                }
                std::fs::write(
                    dir.join("config.xml"),
                    config_xml(&dir, tcp_port, http_port, &remote_servers),
                )
                .unwrap();
                std::fs::write(dir.join("users.xml"), USERS_XML).unwrap();
                PrivateClickHouse {
                    child: None,
                    port: tcp_port,
                    dir,
                }
            })
            .collect();
        // Start them all, then wait for each: start-ups overlap.
        for server in &mut servers {
            server.launch();
        }
        for server in &mut servers {
            server.wait_ready();
        }
        PrivateCluster {
            servers,
            name: name.to_string(),
        }
    }

    /// "127.0.0.1:<port>" of every server, in shard order.
    pub fn addrs(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }
}

impl PrivateClickHouse {
    /// The native TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL and wait (no-op when not running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, dir and config; waits until it answers.
    pub fn spawn(&mut self) {
        self.kill();
        self.launch();
        self.wait_ready();
    }

    /// A native connection to this server's `database`.
    pub fn connect(&self, database: &str) -> Connection {
        Connection::connect(&self.options(database)).unwrap_or_else(|e| {
            panic!(
                "connecting to private ClickHouse on port {}: {e}\n{}",
                self.port,
                self.err_log_tail()
            )
        })
    }

    fn options(&self, database: &str) -> Options {
        Options {
            host: "127.0.0.1".into(),
            port: self.port,
            database: database.into(),
            user: "default".into(),
            password: String::new(),
            compression: None,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(20),
            query_id_prefix: String::new(),
            tls: None,
        }
    }

    /// Spawns the process (no wait).
    fn launch(&mut self) {
        let stdout = std::fs::File::create(self.dir.join("log/stdout.log")).unwrap();
        let stderr = std::fs::File::create(self.dir.join("log/stderr.log")).unwrap();
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("clickhouse-server on PATH (bash .ci/services.sh all installs it)");
        self.child = Some(child);
    }

    /// Polls every 100 ms until `SELECT 1` answers; panics with the err log tail if the
    /// child exits or the limit passes.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        // Short timeouts: a probe must not outlast the deadline or miss the child's exit.
        let options = Options {
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(1),
            ..self.options("")
        };
        loop {
            if let Ok(mut conn) = Connection::connect(&options) {
                if conn.query("SELECT 1").is_ok() {
                    return;
                }
            }
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!(
                    "private clickhouse-server on port {} exited during start-up ({status}); dir {}\n{}",
                    self.port,
                    self.dir.display(),
                    self.err_log_tail()
                );
            }
            if Instant::now() >= deadline {
                let tail = self.err_log_tail();
                self.kill();
                panic!(
                    "private clickhouse-server on port {} did not answer within {START_LIMIT:?}; dir {}\n{tail}",
                    self.port,
                    self.dir.display(),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the err log and of stderr, for panic messages.
    fn err_log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["log/clickhouse-server.err.log", "log/stderr.log"] {
            let text = std::fs::read(self.dir.join(name)).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(20);
            let _ = writeln!(out, "--- tail of {name}:");
            for line in &lines[from..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().unwrap().port()
}

/// The `<remote_servers>` block: cluster `name`, one shard of one replica per port.
fn remote_servers(name: &str, ports: &[(u16, u16)]) -> String {
    let mut xml = format!("    <remote_servers>\n        <{name}>\n");
    for &(tcp_port, _) in ports {
        xml.push_str("            <shard>\n");
        xml.push_str("                <internal_replication>true</internal_replication>\n");
        let _ = writeln!(
            xml,
            "                <replica><host>127.0.0.1</host><port>{tcp_port}</port></replica>"
        );
        xml.push_str("            </shard>\n");
    }
    let _ = writeln!(xml, "        </{name}>\n    </remote_servers>");
    xml
}

/// config.xml after `.ci/clickhouse/config.xml`, without TLS and with smaller caches.
fn config_xml(
    dir: &std::path::Path,
    tcp_port: u16,
    http_port: u16,
    remote_servers: &str,
) -> String {
    let dir = dir.display();
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{dir}/log/clickhouse-server.log</log>
        <errorlog>{dir}/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>

    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{tcp_port}</tcp_port>
    <http_port>{http_port}</http_port>

    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>32</max_concurrent_queries>

    <uncompressed_cache_size>16777216</uncompressed_cache_size>
    <mark_cache_size>33554432</mark_cache_size>

    <path>{dir}/data/</path>
    <tmp_path>{dir}/tmp/</tmp_path>
    <user_files_path>{dir}/user_files/</user_files_path>
    <format_schema_path>{dir}/format_schemas/</format_schema_path>

    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>

    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>

    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>

{remote_servers}</yandex>
"#
    )
}

/// users.xml: `default` without a password on loopback, a small default profile and an
/// unlimited default quota (18.16 wants the interval spelled out).
const USERS_XML: &str = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
            <background_pool_size>2</background_pool_size>
            <background_schedule_pool_size>2</background_schedule_pool_size>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"#;
