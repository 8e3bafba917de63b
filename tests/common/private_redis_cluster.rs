//! A Redis Cluster of a test's own: `masters` redis-servers in cluster mode on free
//! loopback ports, slots spread by `redis-cli --cluster create`, each with a
//! directory of its own; killed and removed on drop.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// One node.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    dir: std::path::PathBuf,
}

/// The cluster.
pub struct PrivateRedisCluster {
    pub nodes: Vec<Node>,
}

/// A free port whose cluster bus port (port + 10,000, fixed by Redis) is free too: the
/// kernel's ephemeral ports reach 60,999, whose bus port would not exist.
fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl PrivateRedisCluster {
    pub fn start(masters: usize) -> PrivateRedisCluster {
        PrivateRedisCluster::start_with_replicas(masters, 0)
    }

    /// `masters` masters with `replicas` replicas each (listed after the masters in
    /// `nodes` only until a failover: read roles from the servers).
    pub fn start_with_replicas(masters: usize, replicas: usize) -> PrivateRedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("alphapt-rcluster-{}", super::suffix()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut node = Node {
                child: None,
                port,
                dir,
            };
            node.spawn();
            nodes.push(node);
        }
        let cluster = PrivateRedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli on PATH (bash .ci/services.sh installs it)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok();
        if replicas > 0 {
            wait_until("every replica synced", Duration::from_secs(30), || {
                cluster.nodes.iter().all(|n| {
                    let Ok(mut c) = n.try_conn() else {
                        return false;
                    };
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query(&mut c)
                        .unwrap_or_default();
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
            });
        }
        cluster
    }

    /// Until every node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        self.wait_ok_on(&self.nodes.iter().collect::<Vec<_>>());
    }

    /// Until each of `nodes` says `cluster_state:ok`.
    pub fn wait_ok_on(&self, nodes: &[&Node]) {
        wait_until("Redis Cluster state ok", Duration::from_secs(30), || {
            nodes.iter().all(|n| {
                let Ok(mut c) = n.try_conn() else {
                    return false;
                };
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(&mut c)
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            })
        });
    }

    /// The first node, as the appliance's `redis.url` (a seed).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }
}

impl Node {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_millis(500))
    }

    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("cluster node answers")
    }

    /// `master` or `slave`, as the node says now.
    pub fn role(&self) -> String {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut self.conn())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("role:"))
            .unwrap_or("")
            .trim()
            .to_owned()
    }

    /// The node's cluster id.
    pub fn id(&self) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.conn())
            .unwrap()
    }

    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .arg("--cluster-config-file")
            .arg(self.dir.join("nodes.conf"))
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no"])
            // A replica syncs at once, not after the 5 s wait for more replicas: one
            // that never synced refuses to fail over ("disconnected from master for
            // longer than allowed").
            .args(["--repl-diskless-sync-delay", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (bash .ci/services.sh installs it)");
        self.child = Some(child);
        wait_until("cluster node up", Duration::from_secs(20), || {
            self.try_conn().is_ok()
        });
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
