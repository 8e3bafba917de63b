//! A connection that heals itself: reconnects with the shared capped, jittered
//! backoff (`runtime::backoff`), and pings before reusing a connection that sat idle.

use std::time::Duration;

use super::connection::{Connection, Options};
use super::Error;
use crate::runtime::backoff::Backoff;

/// A lazily connected, self-reconnecting ClickHouse client.
pub struct Client {
    /// How to connect.
    options: Options,
    /// The live connection, if any.
    connection: Option<Connection>,
    /// Reconnect pacing.
    backoff: Backoff,
    /// Idle time after which a connection is pinged before use.
    ping_after: Duration,
    /// Attempts per call before the last error is returned.
    attempts_max: u32,
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
            connection: None,
            backoff,
            ping_after,
            attempts_max,
        }
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
            self.connection = None;
            self.connection = Some(Connection::connect(&self.options)?);
        }
        Ok(self.connection.as_mut().expect("set above"))
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
                Err(error) if !error.is_retriable() => return Err(error),
                Err(error) => {
                    if attempt < self.attempts_max {
                        tracing::warn!(error = %error, attempt, "ClickHouse request failed; retrying");
                    }
                    if self.connection.as_ref().is_some_and(Connection::is_broken) {
                        self.connection = None;
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
