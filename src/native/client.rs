//! A connection that heals itself: reconnects with the shared capped, jittered
//! backoff (`runtime::backoff`), and pings before reusing a connection that sat idle.
//!
//! An INSERT cut mid-way (socket reset, timeout) may still be running on the server:
//! it goes on writing the blocks that arrived until it reads the cut. Whoever asks
//! next which blocks are stored must not ask before it ends, or a block it commits a
//! moment later is sent again. So the client remembers the cut INSERT's query id and,
//! before any request on a new connection, settles it: asks the server to kill it
//! and waits until `system.processes` no longer lists it, at most [`SETTLE_WAIT`]
//! per attempt (a retriable error after that; the caller backs off and tries again).
//!
//! Replicas: a client given several servers (one ClickHouse shard's replicas) keeps
//! to the one that answered last and, when it does not answer, tries the others in
//! turn before the connect fails. An INSERT cut on one replica cannot be settled on
//! another; a block it committed there reaches the new one by replication, and a
//! resend of the same bytes is dropped by ReplicatedMergeTree's block deduplication.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::connection::{Connection, Options};
use super::Error;
use crate::runtime::backoff::Backoff;

/// How long one request waits for a cut INSERT to end on the server before it gives
/// up with a retriable error. A closed socket ends the server's read at once; a
/// half-open one only after the server's own receive timeout, so this is a bound on
/// one attempt, not on the wait.
pub const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// A lazily connected, self-reconnecting ClickHouse client.
pub struct Client {
    /// How to connect: the replica in use.
    options: Options,
    /// Every replica of the shard, `options` among them; empty for one server.
    replicas: Vec<Options>,
    /// Index in `replicas` of the one in use.
    current: usize,
    /// The live connection, if any.
    connection: Option<Connection>,
    /// Reconnect pacing.
    backoff: Backoff,
    /// Idle time after which a connection is pinged before use.
    ping_after: Duration,
    /// Attempts per call before the last error is returned.
    attempts_max: u32,
    /// The query id of an INSERT a broken connection left unanswered, until the
    /// server is seen to have ended it.
    unsettled: Option<String>,
    /// Whether a connection was ever made (the next one is a reconnect).
    connected_once: bool,
    /// Connections made after the first, shared with whoever publishes the count.
    reconnects: Arc<AtomicU64>,
    /// The index in `replicas` of the one in use, for whoever publishes it.
    replica_in_use: Arc<AtomicU64>,
}

impl Client {
    /// A client that connects on first use.
    pub fn new(
        options: Options,
        backoff: Backoff,
        ping_after: Duration,
        attempts_max: u32,
    ) -> Client {
        assert!(attempts_max > 0, "attempts_max must be at least 1");
        Client {
            options,
            replicas: Vec::new(),
            current: 0,
            connection: None,
            backoff,
            ping_after,
            attempts_max,
            unsettled: None,
            connected_once: false,
            reconnects: Arc::default(),
            replica_in_use: Arc::default(),
        }
    }

    /// Fails over between `replicas` (one shard's servers, the first tried first): a
    /// connect that fails on the one in use goes on to the next before it errs.
    pub fn with_replicas(mut self, replicas: Vec<Options>) -> Client {
        if replicas.len() > 1 {
            self.options = replicas[0].clone();
            self.replicas = replicas;
            self.current = 0;
        }
        self
    }

    /// Connects to the replica in use or, when it does not answer, to the next ones in
    /// turn; the one that answers stays in use.
    fn connect(&mut self) -> Result<Connection, Error> {
        if self.replicas.len() < 2 {
            return Connection::connect(&self.options);
        }
        let mut last = None;
        for step in 0..self.replicas.len() {
            let index = (self.current + step) % self.replicas.len();
            match Connection::connect(&self.replicas[index]) {
                Ok(connection) => {
                    if index != self.current {
                        let (from, to) = (&self.replicas[self.current], &self.replicas[index]);
                        tracing::warn!(from = %format!("{}:{}", from.host, from.port),
                            to = %format!("{}:{}", to.host, to.port), "ClickHouse replica failover");
                        self.current = index;
                        self.options = self.replicas[index].clone();
                        self.replica_in_use.store(index as u64, Ordering::Relaxed);
                    }
                    return Ok(connection);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.expect("at least one replica"))
    }

    /// Keeps the index of the replica in use in `counter` (a stats field).
    pub fn report_replica(&mut self, counter: Arc<AtomicU64>) {
        counter.store(self.current as u64, Ordering::Relaxed);
        self.replica_in_use = counter;
    }

    /// Counts reconnections into `counter` (a stats field) from now on.
    pub fn count_reconnects(&mut self, counter: Arc<AtomicU64>) {
        self.reconnects = counter;
    }

    /// The connection options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// A usable connection: the current one if healthy (pinged when idle long), or a
    /// new one.
    pub fn connection(&mut self) -> Result<&mut Connection, Error> {
        let stale = match &mut self.connection {
            Some(c) if c.is_broken() => true,
            Some(c) if c.idle() >= self.ping_after => c.ping().is_err(),
            Some(_) => false,
            None => true,
        };
        if stale {
            self.drop_connection();
            self.connection = Some(self.connect()?);
            if self.connected_once {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            self.connected_once = true;
        }
        let connection = self.connection.as_mut().expect("set above");
        if let Some(query_id) = &self.unsettled {
            settle(connection, query_id, SETTLE_WAIT)?;
            self.unsettled = None;
        }
        Ok(connection)
    }

    /// Drops the connection, keeping the id of an INSERT it left open.
    fn drop_connection(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            if let Some(query_id) = connection.take_open_insert() {
                self.unsettled = Some(query_id);
            }
        }
    }

    /// Runs `work` on a connection, reconnecting and retrying retriable failures with
    /// backoff, at most `attempts_max` times. Final errors return at once.
    pub fn run<T>(
        &mut self,
        mut work: impl FnMut(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut last = None;
        for attempt in 1..=self.attempts_max {
            let outcome = self.connection().and_then(&mut work);
            match outcome {
                Ok(value) => {
                    self.backoff.reset();
                    return Ok(value);
                }
                Err(error) if !error.is_retriable() => {
                    if self.connection.as_ref().is_some_and(Connection::is_broken) {
                        self.drop_connection();
                    }
                    return Err(error);
                }
                Err(error) => {
                    if attempt < self.attempts_max {
                        tracing::warn!(error = %error, attempt, "ClickHouse request failed; retrying");
                    }
                    if self.connection.as_ref().is_some_and(Connection::is_broken) {
                        self.drop_connection();
                    }
                    last = Some(error);
                    // No sleep after the last attempt: the caller paces its own retries.
                    if attempt < self.attempts_max {
                        std::thread::sleep(self.backoff.next_delay());
                    }
                }
            }
        }
        Err(last.expect("at least one attempt ran"))
    }
}

/// Waits until the server no longer runs the INSERT `query_id` (see the module doc):
/// kills it first (a cut INSERT has nothing left worth finishing; the blocks it
/// already wrote stay, and the stored-block check finds them), then polls
/// `system.processes`. A retriable timeout when `limit` passes first.
fn settle(connection: &mut Connection, query_id: &str, limit: Duration) -> Result<(), Error> {
    let quoted = query_id.replace('\\', "\\\\").replace('\'', "\\'");
    if let Err(error) = connection.execute(&format!("KILL QUERY WHERE query_id = '{quoted}' ASYNC"))
    {
        if connection.is_broken() {
            return Err(error);
        }
        // A user without the right to kill still waits for the query to end.
        tracing::debug!(%error, query_id, "Cannot kill a cut INSERT; waiting for it to end");
    }
    let sql = format!("SELECT count() FROM system.processes WHERE query_id = '{quoted}'");
    let deadline = std::time::Instant::now() + limit;
    // Bound: the deadline.
    loop {
        let running = connection
            .query(&sql)?
            .scalar()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if running == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Unsettled {
                query_id: query_id.to_string(),
                waited_ms: limit.as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
