//! Capped exponential backoff with full jitter, the one retry pacing every role uses
//! (ClickHouse writers, the NATS receiver, the reference-data loader).
//!
//! "Full jitter" (Brooker, *Exponential Backoff and Jitter*, AWS Architecture Blog,
//! 2015): the n-th wait is uniform in `[0, min(cap, base·2^n)]`, which spreads
//! reconnect storms of many writers better than a fixed ladder.

use std::time::Duration;

use rand::Rng;

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
