//! A connection that heals itself: reconnects with capped exponential backoff and full
//! jitter, and pings before reusing a connection that sat idle.
//!
//! Backoff follows "full jitter" (Brooker, *Exponential Backoff and Jitter*, AWS
//! Architecture Blog, 2015): the n-th wait is uniform in `[0, min(cap, base·2^n)]`,
//! which spreads reconnect storms of many writers better than a fixed ladder.

use std::time::Duration;

use rand::Rng;

use super::connection::{Connection, Options};
use super::Error;

/// Capped exponential backoff with full jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// First ceiling.
    initial: Duration,
    /// Largest ceiling.
    max: Duration,
    /// Consecutive failures so far.
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        assert!(
            initial <= max,
            "backoff initial {initial:?} above max {max:?}"
        );
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The ceiling of the next wait: `min(max, initial · 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next wait, uniform in `[0, ceiling]`, and one more attempt counted.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = ceiling.as_nanos() as u64;
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }

    /// Consecutive failures so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first step after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

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

#[cfg(test)]
mod tests {
    //! Backoff ceilings double up to the cap and every wait stays under its ceiling.
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_below_the_ceiling() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(1000));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay();
            assert!(delay <= ceiling);
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(50));
    }

    #[test]
    fn backoff_survives_many_attempts() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(5));
    }
}
