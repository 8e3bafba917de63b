//! A redis-server of a test's own (port, optional password), to kill and start again
//! empty without disturbing the Redis other tests share; killed on drop.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// A redis-server of the test's own, to kill and start again empty.
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
    /// `--requirepass`, when set.
    password: Option<String>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        PrivateRedis::start_with(None)
    }

    pub fn start_with(password: Option<&str>) -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = PrivateRedis {
            child: None,
            port,
            password: password.map(str::to_owned),
        };
        server.spawn();
        server
    }

    /// The server's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (bash .ci/services.sh installs it)");
        self.child = Some(child);
        let url = self.url();
        wait_until("private redis-server", Duration::from_secs(20), || {
            redis::Client::open(url.as_str())
                .unwrap()
                .get_connection_with_timeout(Duration::from_millis(200))
                .is_ok()
        });
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
