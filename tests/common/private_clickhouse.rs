//! Private ClickHouse 18.16 servers for the scale-out tests: a ClickHouse cluster of
//! servers of the test's own, all sharing one `<remote_servers>` cluster definition, so
//! a test can put a `Distributed` table over them, kill and restart a shard or a
//! replica, without touching the server the other tests share.
//!
//! [`PrivateCluster::start`] gives each shard one server; [`PrivateCluster::start_replicated`]
//! gives shard `i` `layout[i]` replicas, for `ReplicatedMergeTree`, which on 18.16 needs
//! ZooKeeper: a [`PrivateZooKeeper`] (a standalone ZooKeeper 3.8 of the test's own, a
//! plain java process from Debian's `zookeeper` package, which `.ci/services.sh all`
//! installs). Every replicated server has the macros `{shard}` (1-based shard number)
//! and `{replica}` (`s<shard>r<replica>`, 1-based, unique in the cluster), so
//! `ReplicatedMergeTree('/clickhouse/tables/{shard}/<db>/<table>', '{replica}')` works
//! as is; `ON CLUSTER` DDL works too (`<distributed_ddl>` is set). ZooKeeper paths do not
//! name the cluster: give each cluster its own ZooKeeper (~65 MB resident, ~0.3-0.5 s to
//! start idle) or distinct table paths.
//!
//! What 18.16 does with replicas (checked against these fixtures): a replica sees its
//! twin's insert within ~0.2 s; `SYSTEM SYNC REPLICA db.t` works; a block inserted again
//! on either replica (same rows, even in another order) is dropped as a duplicate
//! (`insert_deduplicate`, on by default; the client gets no error); with one replica of a
//! shard killed, inserts into its twin succeed, and `system.replicas` of the twin still
//! counts it active until its ZooKeeper session (5 s here) expires. A replica
//! [`PrivateClickHouse::spawn`]ed within ~5 s of its kill answers at once and takes
//! inserts, but resumes replication only ~10 s later (its old `is_active` znode is still
//! there at start, and 18.16 retries after 10 s; `system.replicas` shows `is_readonly` 0
//! all along, with a huge `absolute_delay` until then). A ZooKeeper restart
//! ([`PrivateZooKeeper::spawn`]) makes inserts fail for ~10 s.
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
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

/// A cluster of private servers. `servers` is flat, shard by shard and within a shard
/// replica by replica: with `layout` `[2, 1]`, `servers[0]` and `servers[1]` are shard 0's
/// replicas and `servers[2]` is shard 1. [`PrivateCluster::start`] has one replica per
/// shard, so there `servers[i]` is shard `i`.
pub struct PrivateCluster {
    pub servers: Vec<PrivateClickHouse>,
    /// The cluster's name in `<remote_servers>` (the first argument of `Distributed`).
    pub name: String,
    /// `layout[i]`: how many replicas shard `i` has (all 1 for `start`).
    pub layout: Vec<usize>,
}

/// The ports one server listens on.
#[derive(Clone, Copy)]
struct ServerPorts {
    tcp: u16,
    http: u16,
    /// The interserver HTTP port replicas fetch parts through (replicated clusters only).
    interserver: Option<u16>,
}

impl PrivateCluster {
    /// `shards` shards of one replica each, cluster named `name`, no ZooKeeper; waits
    /// (bounded, ~60 s, a clear panic with the server's err log tail) until every server
    /// answers.
    pub fn start(name: &str, shards: usize) -> PrivateCluster {
        assert!(shards > 0, "a cluster needs at least one shard");
        Self::launch_all(name, &vec![1; shards], None)
    }

    /// Shard `i` has `layout[i]` replicas (e.g. `&[2, 1]`), all using `zookeeper`; each
    /// server has the macros `{shard}` ("1", "2", ...) and `{replica}` (`s1r1`, `s1r2`,
    /// ..., see [`PrivateCluster::replica_name`]) and every shard
    /// `internal_replication`, so a `Distributed` table over `ReplicatedMergeTree` writes
    /// one replica and replication copies it. Waits like [`PrivateCluster::start`].
    pub fn start_replicated(
        name: &str,
        layout: &[usize],
        zookeeper: &PrivateZooKeeper,
    ) -> PrivateCluster {
        assert!(!layout.is_empty(), "a cluster needs at least one shard");
        assert!(
            layout.iter().all(|&replicas| replicas > 0),
            "every shard needs at least one replica: {layout:?}"
        );
        Self::launch_all(name, layout, Some(zookeeper.port()))
    }

    fn launch_all(name: &str, layout: &[usize], zookeeper: Option<u16>) -> PrivateCluster {
        let total: usize = layout.iter().sum();
        // Every port is picked before any server starts (the cluster block lists them
        // all); the listeners are held until all are picked so none repeats.
        let listeners: Vec<Vec<TcpListener>> = (0..total)
            .map(|_| {
                let n = if zookeeper.is_some() { 3 } else { 2 };
                (0..n).map(|_| free_port_listener()).collect()
            })
            .collect();
        let ports: Vec<ServerPorts> = listeners
            .iter()
            .map(|l| ServerPorts {
                tcp: port_of(&l[0]),
                http: port_of(&l[1]),
                interserver: l.get(2).map(port_of),
            })
            .collect();
        drop(listeners);
        let remote_servers = remote_servers(name, layout, &ports);
        let mut servers: Vec<PrivateClickHouse> = Vec::with_capacity(total);
        for (shard, &replicas) in layout.iter().enumerate() {
            for replica in 0..replicas {
                let ports = ports[servers.len()];
                let mut sections = remote_servers.clone();
                if let Some(zk_port) = zookeeper {
                    sections.push_str(&replication_xml(
                        zk_port,
                        shard,
                        &replica_name(shard, replica),
                        ports.interserver.expect("picked with zookeeper"),
                    ));
                }
                let dir = std::env::temp_dir().join(format!("alphapt-ch-{}", super::suffix()));
                for sub in ["data", "tmp", "user_files", "format_schemas", "log"] {
                    std::fs::create_dir_all(dir.join(sub)).unwrap();
                }
                std::fs::write(
                    dir.join("config.xml"),
                    config_xml(&dir, ports.tcp, ports.http, &sections),
                )
                .unwrap();
                std::fs::write(dir.join("users.xml"), USERS_XML).unwrap();
                servers.push(PrivateClickHouse {
                    child: None,
                    port: ports.tcp,
                    dir,
                });
            }
        }
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
            layout: layout.to_vec(),
        }
    }

    /// "127.0.0.1:<port>" of every server, flat, in `servers` order (shard order when
    /// each shard has one replica).
    pub fn addrs(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// "127.0.0.1:<port>" of every replica, per shard: `shard_addrs()[i][r]` is replica
    /// `r` of shard `i`.
    pub fn shard_addrs(&self) -> Vec<Vec<String>> {
        let addrs = self.addrs();
        let mut rest = addrs.as_slice();
        self.layout
            .iter()
            .map(|&replicas| {
                let (shard, tail) = rest.split_at(replicas);
                rest = tail;
                shard.to_vec()
            })
            .collect()
    }

    /// The shard (0-based) `servers[i]` belongs to.
    pub fn shard_of_server(&self, i: usize) -> usize {
        self.locate(i).0
    }

    /// The replica (0-based, within its shard) `servers[i]` is.
    pub fn replica_of_server(&self, i: usize) -> usize {
        self.locate(i).1
    }

    /// The index in `servers` of replica `replica` of shard `shard` (both 0-based).
    pub fn server_index(&self, shard: usize, replica: usize) -> usize {
        assert!(
            shard < self.layout.len() && replica < self.layout[shard],
            "no replica {replica} of shard {shard} in layout {:?}",
            self.layout
        );
        self.layout[..shard].iter().sum::<usize>() + replica
    }

    /// The `{replica}` macro of `servers[i]` (`s<shard>r<replica>`, both 1-based), as
    /// `system.replicas.replica_name` shows it (replicated clusters only).
    pub fn replica_name(&self, i: usize) -> String {
        let (shard, replica) = self.locate(i);
        replica_name(shard, replica)
    }

    fn locate(&self, i: usize) -> (usize, usize) {
        let mut first = 0;
        for (shard, &replicas) in self.layout.iter().enumerate() {
            if i < first + replicas {
                return (shard, i - first);
            }
            first += replicas;
        }
        panic!("no server {i} in layout {:?}", self.layout)
    }
}

fn replica_name(shard: usize, replica: usize) -> String {
    format!("s{}r{}", shard + 1, replica + 1)
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

    /// Starts again on the same port, dir and config; waits until it answers. First
    /// removes the temporary part directories a killed server left behind (see
    /// [`PrivateClickHouse::remove_temporary_parts`]) and sets the `force_restore_data`
    /// flag, as an operator restarting a killed replica does: a replica killed between
    /// writing a part and registering it in ZooKeeper otherwise refuses to start ("The
    /// local set of parts of table ... doesn't look like the set of parts in
    /// ZooKeeper", 18.16 once the unregistered share passes
    /// `replicated_max_ratio_of_wrong_parts`, e.g. a view's table holding one small
    /// part). With the flag it moves such parts aside and fetches what ZooKeeper lists;
    /// the server removes the flag once started. Unreplicated tables ignore it.
    pub fn spawn(&mut self) {
        self.kill();
        self.remove_temporary_parts();
        let flags = self.dir.join("data/flags");
        std::fs::create_dir_all(&flags).unwrap();
        std::fs::write(flags.join("force_restore_data"), b"").unwrap();
        self.launch();
        self.wait_ready();
    }

    /// Removes `data/<db>/<table>/tmp_*` (parts an insert, merge or fetch was writing when
    /// the server was killed), as ClickHouse >= 21.4 does itself at start. 18.16 leaves
    /// them, and a replica killed while fetching a part then never gets that part: every
    /// retry fails with "Directory .../tmp_fetch_<part>/ already exists" (ClickHouse
    /// issue 14197) until `temporary_directories_lifetime` (a day) passes. Each removal
    /// is reported on stderr. Only for a stopped server.
    pub fn remove_temporary_parts(&self) {
        assert!(self.child.is_none(), "the server is running");
        let subdirs = |dir: PathBuf| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                .map(|entry| entry.path())
        };
        for table in subdirs(self.dir.join("data/data")).flat_map(subdirs) {
            for part in subdirs(table) {
                if part
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("tmp"))
                {
                    let removed = std::fs::remove_dir_all(&part);
                    eprintln!(
                        "private clickhouse-server on port {}: removing leftover {}: {removed:?}",
                        self.port,
                        part.display()
                    );
                }
            }
        }
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
    pub fn err_log_tail(&self) -> String {
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

/// The classpath of a ZooKeeper server from Debian's packages: zookeeper.jar's manifest
/// `Class-Path` names its dependencies (jute, netty, jetty, jackson, slf4j-api, ...);
/// slf4j-simple (libslf4j-java, a dependency) makes it log to stderr.
const ZK_CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

/// How long ZooKeeper may take to serve after it is spawned (~0.3-1 s idle).
const ZK_START_LIMIT: Duration = Duration::from_secs(30);

/// A private standalone ZooKeeper 3.8 (Debian's `zookeeper` package; `bash
/// .ci/services.sh all` installs it): a `java` child process on a loopback port of its
/// own, with its own temp dir (zoo.cfg, data/, zookeeper.log), removed on drop. ~50 MB
/// resident (`-Xmx128m`), no admin server (port 8080 stays free), the four-letter words
/// `ruok`, `srvr`, `stat`, `mntr` and `cons` allowed. Sessions may last 1-10 s.
pub struct PrivateZooKeeper {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl PrivateZooKeeper {
    /// Starts one and waits (bounded, ~30 s, a clear panic with its log tail) until it
    /// serves.
    pub fn start() -> PrivateZooKeeper {
        let port = port_of(&free_port_listener());
        let dir = std::env::temp_dir().join(format!("alphapt-zk-{}", super::suffix()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=500\n\
                 minSessionTimeout=1000\n\
                 maxSessionTimeout=10000\n\
                 initLimit=20\n\
                 syncLimit=10\n\
                 dataDir={}\n\
                 clientPort={port}\n\
                 clientPortAddress=127.0.0.1\n\
                 maxClientCnxns=0\n\
                 admin.enableServer=false\n\
                 4lw.commands.whitelist=ruok,srvr,stat,mntr,cons\n\
                 forceSync=no\n\
                 preAllocSize=4096\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut zookeeper = PrivateZooKeeper {
            child: None,
            port,
            dir,
        };
        zookeeper.launch();
        zookeeper.wait_ready();
        zookeeper
    }

    /// The client port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:<port>".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL and wait (no-op when not running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data (the znodes survive); waits until it
    /// serves.
    pub fn spawn(&mut self) {
        self.kill();
        self.launch();
        self.wait_ready();
    }

    /// Sends a four-letter word (`ruok`, `srvr`, `stat`, `mntr`, `cons`) and returns the
    /// answer; `None` if nothing answers within ~1.5 s.
    pub fn four_letter(&self, word: &str) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .ok()?;
        stream.write_all(word.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// The last lines of its log (its stdout and stderr), for panic messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(self.dir.join("zookeeper.log")).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        let mut out = String::from("--- tail of zookeeper.log:\n");
        for line in &lines[from..] {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// Spawns the JVM (no wait).
    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("zookeeper.log"))
            .unwrap();
        let child = Command::new("java")
            .args([
                "-Xmx128m",
                "-Xss512k",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-XX:-UsePerfData",
                "-Djava.awt.headless=true",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
                "-cp",
                ZK_CLASSPATH,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(self.dir.join("zoo.cfg"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("java on PATH (bash .ci/services.sh all installs zookeeper and a JRE)");
        self.child = Some(child);
    }

    /// Polls every 100 ms until `srvr` says it serves (`ruok` answers `imok` before it
    /// does); panics with the log tail if the child exits or the limit passes.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + ZK_START_LIMIT;
        loop {
            if self
                .four_letter("srvr")
                .is_some_and(|answer| answer.contains("Mode: standalone"))
            {
                return;
            }
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!(
                    "private ZooKeeper on port {} exited during start-up ({status}); dir {}\n{}",
                    self.port,
                    self.dir.display(),
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail();
                self.kill();
                panic!(
                    "private ZooKeeper on port {} did not serve within {ZK_START_LIMIT:?}; dir {}\n{tail}",
                    self.port,
                    self.dir.display(),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateZooKeeper {
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

/// The `<remote_servers>` block: cluster `name`, shard `i` the next `layout[i]` servers
/// of `ports`.
fn remote_servers(name: &str, layout: &[usize], ports: &[ServerPorts]) -> String {
    let mut xml = format!("    <remote_servers>\n        <{name}>\n");
    let mut ports = ports.iter();
    for &replicas in layout {
        xml.push_str("            <shard>\n");
        xml.push_str("                <internal_replication>true</internal_replication>\n");
        for server in ports.by_ref().take(replicas) {
            let _ = writeln!(
                xml,
                "                <replica><host>127.0.0.1</host><port>{}</port></replica>",
                server.tcp
            );
        }
        xml.push_str("            </shard>\n");
    }
    let _ = writeln!(xml, "        </{name}>\n    </remote_servers>");
    xml
}

/// What a replicated server adds: ZooKeeper (5 s sessions: a killed replica's
/// `is_active` znode goes soon, so restarted it can rejoin at its start-up retry 10 s
/// later), its macros, the interserver port its twins fetch parts from,
/// and the `ON CLUSTER` queue.
fn replication_xml(zk_port: u16, shard: usize, replica: &str, interserver_port: u16) -> String {
    format!(
        r#"
    <zookeeper>
        <node><host>127.0.0.1</host><port>{zk_port}</port></node>
        <session_timeout_ms>5000</session_timeout_ms>
        <operation_timeout_ms>10000</operation_timeout_ms>
    </zookeeper>
    <macros>
        <shard>{shard}</shard>
        <replica>{replica}</replica>
    </macros>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>{interserver_port}</interserver_http_port>
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
"#,
        shard = shard + 1,
    )
}

/// config.xml after `.ci/clickhouse/config.xml`, without TLS and with smaller caches;
/// `sections` (`<remote_servers>`, and for replicas ZooKeeper, macros, ...) at the end.
fn config_xml(dir: &std::path::Path, tcp_port: u16, http_port: u16, sections: &str) -> String {
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

{sections}</yandex>
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
