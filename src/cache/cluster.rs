//! Redis Cluster (`redis.cluster = true`): the cache's pipelines split by the node
//! that owns each key's hash slot, and MOVED/ASK redirections followed.
//!
//! ```text
//!   connect: CLUSTER SLOTS from the first seed that answers (redis.url, then every
//!            master of the last map) ─► slot → node table (16,384 entries)
//!   request: one RESP pipeline of single-key commands
//!       ─► per command: key ─► CRC16 slot ─► owner ─► that node's sub-pipeline
//!       ─► one round trip per node, replies put back in the pipeline's order
//!       ─► a reply MOVED <slot> <host:port>: the table learns the new owner, the
//!          command goes there; ASK <slot> <host:port>: ASKING + the command go there
//!          once (a slot being migrated), the table keeps the old owner
//!       ─► at most REDIRECTS hops per command; more is an error of the whole request
//!   an I/O error on any node fails the request: the caller drops the cluster and
//!   connects again from the seeds (a failover shows up this way, then as MOVED)
//! ```
//!
//! Why not redis-rs's own cluster client: the cache thread encodes its pipelines once
//! into a reusable buffer ([`super::resp`]) and sends them with
//! `req_packed_commands`, which redis-rs's `ClusterConnection` does not route; its
//! `ClusterPipeline` would rebuild every command as a `Cmd` each flush. The routing
//! itself is a table lookup, and what it must get right (the slot function, the
//! redirection replies) is tested below against Redis's own vectors and in
//! `tests/redis_cluster.rs` against real servers.
//!
//! Every key of one instrument shares a slot when `redis.hash_tags` is on (config
//! requires it with `redis.cluster`), so a reader's transaction over one
//! instrument's keys stays on one node.

use redis::{ConnectionLike, Value};

/// Hash slots of a Redis Cluster.
pub const SLOTS: usize = 16_384;

/// Redirections followed for one command before the request fails.
const REDIRECTS: usize = 5;

/// No node owns the slot (a table entry).
const NONE: u16 = u16::MAX;

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum Redis Cluster slots use.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`: of the text between the first `{` and the next `}` when
/// that is not empty (a hash tag), else of the whole key.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// A redirection a node answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// The slot lives elsewhere now: remember it.
    Moved {
        /// The slot.
        slot: u16,
        /// Its owner, `host:port`.
        addr: String,
    },
    /// The slot is being migrated and this key already moved: ask there, once.
    Ask {
        /// The slot.
        slot: u16,
        /// The node importing it, `host:port`.
        addr: String,
    },
}

impl Redirect {
    /// From an error reply (`MOVED 3999 127.0.0.1:6381`); `None` for any other reply.
    pub fn parse(reply: &Value) -> Option<Redirect> {
        let Value::ServerError(error) = reply else {
            return None;
        };
        let details = error.details()?;
        let mut parts = details.split_ascii_whitespace();
        let slot: u16 = parts.next()?.parse().ok()?;
        let addr = parts.next()?.to_owned();
        if usize::from(slot) >= SLOTS || addr.rsplit_once(':').is_none() {
            return None;
        }
        match error.code() {
            "MOVED" => Some(Redirect::Moved { slot, addr }),
            "ASK" => Some(Redirect::Ask { slot, addr }),
            _ => None,
        }
    }
}

/// Which node owns each slot.
#[derive(Clone, Debug)]
pub struct SlotMap {
    /// Per slot: index into `nodes`, or [`NONE`].
    owner: Vec<u16>,
    /// `host:port` of each node met so far.
    nodes: Vec<String>,
}

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap {
            owner: vec![NONE; SLOTS],
            nodes: Vec::new(),
        }
    }
}

impl SlotMap {
    /// From a `CLUSTER SLOTS` reply: `[[start, end, [ip, port, id…], replicas…]…]`.
    /// An empty ip means the node that answered (`asked`, a `host:port`).
    pub fn from_cluster_slots(reply: &Value, asked: &str) -> Result<SlotMap, String> {
        let bad = |why: &str| format!("CLUSTER SLOTS answered something unexpected ({why})");
        let Value::Array(ranges) = reply else {
            return Err(bad("not an array"));
        };
        let asked_host = asked.rsplit_once(':').map_or(asked, |(h, _)| h);
        let mut map = SlotMap::default();
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(bad("a range is not an array"));
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(bad("a range lacks start, end or master"));
            };
            let host = match master.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => return Err(bad("a master lacks its address")),
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return Err(bad("a master lacks its port"));
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_owned()
            } else {
                host
            };
            if !(0..SLOTS as i64).contains(start) || !(*start..SLOTS as i64).contains(end) {
                return Err(bad("a slot range out of 0..16383"));
            }
            let node = map.node(&format!("{host}:{port}"));
            for slot in *start..=*end {
                map.owner[slot as usize] = node;
            }
        }
        Ok(map)
    }

    /// The index of `addr`, added when new.
    fn node(&mut self, addr: &str) -> u16 {
        match self.nodes.iter().position(|n| n == addr) {
            Some(i) => i as u16,
            None => {
                self.nodes.push(addr.to_owned());
                (self.nodes.len() - 1) as u16
            }
        }
    }

    /// The node owning `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<usize> {
        let node = self.owner[usize::from(slot)];
        (node != NONE).then_some(usize::from(node))
    }

    /// Slots without an owner.
    pub fn unowned(&self) -> usize {
        self.owner.iter().filter(|&&n| n == NONE).count()
    }

    /// Every node's `host:port`, by index.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }
}

/// How to open a connection to one node.
pub type Opener = Box<dyn FnMut(&str) -> Result<redis::Connection, String> + Send>;

/// Connections to a cluster's masters, opened as keys need them.
pub struct Cluster {
    map: SlotMap,
    conns: Vec<Option<redis::Connection>>,
    open: Opener,
    /// Per node: the commands of this request (RESP) and their places in it.
    buffers: Vec<(Vec<u8>, Vec<usize>)>,
    /// MOVED and ASK replies followed since [`Cluster::take_redirects`].
    redirects: u64,
}

impl Cluster {
    /// Reads the slot map from the first of `seeds` (`host:port`) that answers.
    pub fn connect(seeds: &[String], mut open: Opener) -> Result<Cluster, String> {
        let mut errors = Vec::new();
        for seed in seeds {
            let read = open(seed).and_then(|mut conn| {
                let reply = conn
                    .req_command(redis::cmd("CLUSTER").arg("SLOTS"))
                    .map_err(|e| e.to_string())?;
                let map = SlotMap::from_cluster_slots(&reply, seed)?;
                Ok((map, conn))
            });
            match read {
                Ok((map, conn)) => {
                    if map.unowned() == SLOTS {
                        errors.push(format!("{seed}: no slot is assigned yet"));
                        continue;
                    }
                    let mut conns: Vec<Option<redis::Connection>> =
                        map.nodes().iter().map(|_| None).collect();
                    if let Some(i) = map.nodes().iter().position(|n| n == seed) {
                        conns[i] = Some(conn);
                    }
                    return Ok(Cluster {
                        map,
                        conns,
                        open,
                        buffers: Vec::new(),
                        redirects: 0,
                    });
                }
                Err(e) => errors.push(format!("{seed}: {e}")),
            }
        }
        Err(format!(
            "no Redis Cluster node gave its slot map ({})",
            errors.join("; ")
        ))
    }

    /// Redirections followed since the last call.
    pub fn take_redirects(&mut self) -> u64 {
        std::mem::take(&mut self.redirects)
    }

    /// The slot map in use.
    pub fn map(&self) -> &SlotMap {
        &self.map
    }

    /// The connection to node `i`, opened if needed.
    pub fn conn(&mut self, i: usize) -> Result<&mut redis::Connection, String> {
        if self.conns.len() < self.map.nodes.len() {
            self.conns.resize_with(self.map.nodes.len(), || None);
        }
        if self.conns[i].is_none() {
            let addr = self.map.nodes[i].clone();
            let conn = (self.open)(&addr).map_err(|e| format!("{addr}: {e}"))?;
            self.conns[i] = Some(conn);
        }
        Ok(self.conns[i].as_mut().expect("opened above"))
    }

    /// The node owning `key`'s slot.
    pub fn node_of(&self, key: &[u8]) -> Option<usize> {
        self.map.owner(key_slot(key))
    }

    /// Sends the pipeline `bytes`, whose commands start at `starts` (each command's
    /// second argument is its key; a command without one, e.g. PING, goes to every
    /// node that owns a slot). One reply per command, in order; per-command errors
    /// other than redirections are returned as replies, as one server would.
    pub fn request(&mut self, bytes: &[u8], starts: &[usize]) -> redis::RedisResult<Vec<Value>> {
        let nodes = self.map.nodes.len();
        if self.buffers.len() < nodes {
            self.buffers.resize_with(nodes, Default::default);
        }
        for (buf, places) in &mut self.buffers {
            buf.clear();
            places.clear();
        }
        let mut keyless = Vec::new();
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(bytes.len());
            let command = &bytes[start..end];
            match super::resp::command_key(command) {
                Some(key) => {
                    let slot = key_slot(key);
                    let Some(node) = self.map.owner(slot) else {
                        return Err(fail(format!("slot {slot} has no owner")));
                    };
                    let (buf, places) = &mut self.buffers[node];
                    buf.extend_from_slice(command);
                    places.push(i);
                }
                None => keyless.push(i),
            }
        }
        let mut replies = vec![Value::Nil; starts.len()];
        for node in 0..nodes {
            if !keyless.is_empty() && self.map.owner.contains(&(node as u16)) {
                for &i in &keyless {
                    let end = starts.get(i + 1).copied().unwrap_or(bytes.len());
                    self.buffers[node]
                        .0
                        .extend_from_slice(&bytes[starts[i]..end]);
                    self.buffers[node].1.push(i);
                }
            }
            if self.buffers[node].1.is_empty() {
                continue;
            }
            let (buf, places) = std::mem::take(&mut self.buffers[node]);
            let sent = self
                .conn(node)
                .map_err(fail)
                .and_then(|conn| conn.req_packed_commands(&buf, 0, places.len()));
            let got = sent.inspect_err(|_| self.conns[node] = None);
            self.buffers[node] = (buf, places);
            for (reply, &i) in got?.into_iter().zip(&self.buffers[node].1) {
                // A keyless command's reply is the first node's; an error wins.
                if matches!(replies[i], Value::Nil) || matches!(reply, Value::ServerError(_)) {
                    replies[i] = reply;
                }
            }
        }
        for (i, reply) in replies.iter_mut().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(bytes.len());
            self.follow(&bytes[starts[i]..end], reply)?;
        }
        Ok(replies)
    }

    /// Follows the redirections `reply` holds for `command`, replacing it with the
    /// final reply.
    fn follow(&mut self, command: &[u8], reply: &mut Value) -> redis::RedisResult<()> {
        for _ in 0..REDIRECTS {
            let Some(redirect) = Redirect::parse(reply) else {
                return Ok(());
            };
            self.redirects += 1;
            *reply = match redirect {
                Redirect::Moved { slot, addr } => {
                    let node = self.map.node(&addr);
                    self.map.owner[usize::from(slot)] = node;
                    let conn = self.conn(usize::from(node)).map_err(fail)?;
                    conn.req_packed_command(command)?
                }
                Redirect::Ask { addr, .. } => {
                    let node = self.map.node(&addr);
                    let mut asking = b"*1\r\n$6\r\nASKING\r\n".to_vec();
                    asking.extend_from_slice(command);
                    let conn = self.conn(usize::from(node)).map_err(fail)?;
                    let mut two = conn.req_packed_commands(&asking, 0, 2)?;
                    two.pop().unwrap_or(Value::Nil)
                }
            };
        }
        match Redirect::parse(reply) {
            Some(_) => Err(fail(format!(
                "more than {REDIRECTS} redirections for one key (the cluster is resharding in a loop?)"
            ))),
            None => Ok(()),
        }
    }
}

fn fail(message: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::ClusterDown, "Redis Cluster", message))
}

/// `host:port` of a `redis://` or `rediss://` URL, for the first seed.
pub fn url_addr(url: &str) -> Result<String, String> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| format!("bad Redis URL: {e}"))?;
    match info.addr {
        redis::ConnectionAddr::Tcp(host, port)
        | redis::ConnectionAddr::TcpTls { host, port, .. } => Ok(format!("{host}:{port}")),
        redis::ConnectionAddr::Unix(_) => {
            Err("a Unix socket cannot be a Redis Cluster seed; give a host and port".into())
        }
    }
}

/// The seed URL's settings (password, database, TLS) for the node at `addr`
/// (`host:port`, as CLUSTER SLOTS and redirections name it).
pub fn node_info(url: &str, addr: &str) -> Result<redis::ConnectionInfo, String> {
    let mut info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| format!("bad Redis URL: {e}"))?;
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("a Redis Cluster node address without a port: {addr}"))?;
    info.addr = match info.addr {
        redis::ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params,
        },
        _ => redis::ConnectionAddr::Tcp(host, port),
    };
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_specification_vectors() {
        // The CRC16 check value from the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        // CLUSTER KEYSLOT answers of a real server.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"tick:{256265}"), key_slot(b"ohlc:{256265}:1m"));
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
        assert_eq!(key_slot(b"foo{bar}{zap}"), crc16(b"bar") % 16384);
    }

    fn error(code: &str, details: &str) -> Value {
        redis::parse_redis_value(format!("-{code} {details}\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn redirections_are_read_and_anything_else_is_not() {
        assert_eq!(
            Redirect::parse(&error("MOVED", "3999 127.0.0.1:6381")),
            Some(Redirect::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            Redirect::parse(&error("ASK", "12 ::1:7000")),
            Some(Redirect::Ask {
                slot: 12,
                addr: "::1:7000".into()
            })
        );
        for (code, details) in [
            ("MOVED", "16384 h:1"),
            ("MOVED", "x h:1"),
            ("MOVED", "1"),
            ("ASK", "1 nohost"),
            ("WRONGTYPE", "Operation against a key"),
        ] {
            assert_eq!(
                Redirect::parse(&error(code, details)),
                None,
                "{code} {details}"
            );
        }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_slot_map_is_read_from_cluster_slots() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id0")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7003), bulk("id3")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7001), bulk("id1")]),
            ]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, "10.0.0.5:7001").unwrap();
        assert_eq!(map.nodes(), ["127.0.0.1:7000", "10.0.0.5:7001"]);
        assert_eq!(map.owner(0), Some(0));
        assert_eq!(map.owner(5460), Some(0));
        assert_eq!(map.owner(5461), Some(1));
        assert_eq!(map.unowned(), 0);
        let partial = Value::Array(vec![Value::Array(vec![
            Value::Int(10),
            Value::Int(20),
            Value::Array(vec![bulk("h"), Value::Int(1)]),
        ])]);
        let map = SlotMap::from_cluster_slots(&partial, "h:1").unwrap();
        assert_eq!(map.owner(9), None);
        assert_eq!(map.unowned(), SLOTS - 11);
        for bad in [
            Value::Nil,
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(5),
                Value::Int(16384),
                Value::Array(vec![bulk("h"), Value::Int(1)]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(5),
                Value::Int(4),
                Value::Array(vec![bulk("h"), Value::Int(1)]),
            ])]),
        ] {
            assert!(SlotMap::from_cluster_slots(&bad, "h:1").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_node_keeps_the_seed_password_database_and_tls() {
        let info = node_info("redis://:pw@seed:7000/3", "10.0.0.2:7001").unwrap();
        assert_eq!(
            info.addr,
            redis::ConnectionAddr::Tcp("10.0.0.2".into(), 7001)
        );
        assert_eq!(info.redis.password.as_deref(), Some("pw"));
        assert_eq!(info.redis.db, 3);
        let tls = node_info("rediss://seed:7000", "h:1").unwrap();
        assert!(
            matches!(tls.addr, redis::ConnectionAddr::TcpTls { ref host, port: 1, .. } if host == "h")
        );
        assert!(node_info("redis://seed:1", "noport").is_err());
        assert_eq!(url_addr("redis://a:1").unwrap(), "a:1");
        assert!(url_addr("redis+unix:///tmp/r.sock").is_err());
    }
}
