//! The one stop-and-deadline signal every wait looks at.
//!
//! ```text
//!   SIGTERM / SIGINT ──signal_hook──► stop flag ─┐
//!   a thread's panic, an end of input ───────────┴─► Alert ◄── each round of every wait loop:
//!        routing into a full ring, a free block, a writer retry, a spill sync, replay
//! ```
//!
//! `stopping()` says a drain was asked for: stop pulling, seal, store what can be
//! stored. `expired()` says the drain deadline (`ingest.drain_timeout_ms` after the
//! first look at the stop) has passed: give up waiting, leave what is not durable
//! unacknowledged (JetStream redelivers it) and return. The deadline starts at the first
//! thread that sees the stop, so a signal needs no clock read of its own, and once
//! expired the alert stays expired (a wait that gave up never sees it clear).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A stop request and the drain deadline that follows it.
#[derive(Debug)]
pub struct Alert {
    /// Set by the signal handler (through `flag()`), by `request_stop` or `abort`.
    stop: Arc<AtomicBool>,
    /// When the drain must be over; set once, by the first look after the stop.
    deadline: OnceLock<Instant>,
    /// Set by `abort`: expired whatever the deadline says.
    aborted: AtomicBool,
    /// Drain time allowed after the stop.
    drain_timeout: Duration,
}

impl Alert {
    /// An alert whose drain lasts at most `drain_timeout` after the stop.
    pub fn new(drain_timeout: Duration) -> Alert {
        Alert {
            stop: Arc::new(AtomicBool::new(false)),
            deadline: OnceLock::new(),
            aborted: AtomicBool::new(false),
            drain_timeout,
        }
    }

    /// The stop flag itself, for `signal_hook::flag::register`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Asks for a drain.
    pub fn request_stop(&self) {
        // Release pairs with the Acquire in `stopping`: what was done before the
        // request is seen by the thread that sees the stop.
        self.stop.store(true, Ordering::Release);
        self.deadline();
    }

    /// Stops at once: the deadline is now (a thread panicked, or nothing is left to
    /// wait for).
    pub fn abort(&self) {
        self.stop.store(true, Ordering::Release);
        self.aborted.store(true, Ordering::Release);
    }

    /// True once a drain was asked for.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The drain deadline, starting it if the stop was just seen; `None` before a stop.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.stopping() {
            return None;
        }
        Some(
            *self
                .deadline
                .get_or_init(|| Instant::now() + self.drain_timeout),
        )
    }

    /// True once the drain deadline has passed: stop waiting.
    pub fn expired(&self) -> bool {
        // Acquire pairs with the Release in `abort`.
        self.aborted.load(Ordering::Acquire) || self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Time left before the deadline (the whole drain timeout before a stop).
    pub fn remaining(&self) -> Duration {
        if self.aborted.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        match self.deadline() {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => self.drain_timeout,
        }
    }

    /// Sleeps `duration`, in slices, returning early once the alert expires (or, with
    /// `wake_on_stop`, as soon as a stop is asked for). Returns false when cut short.
    pub fn sleep(&self, duration: Duration, wake_on_stop: bool) -> bool {
        const SLICE: Duration = Duration::from_millis(20);
        let until = Instant::now() + duration;
        // Bound: `until`.
        loop {
            if self.expired() || (wake_on_stop && self.stopping()) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(SLICE));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The deadline starts at the stop, expiry sticks, and sleeps wake for it.
    use super::*;

    #[test]
    fn deadline_follows_the_stop_and_expiry_sticks() {
        let alert = Alert::new(Duration::from_millis(30));
        assert!(!alert.stopping());
        assert!(!alert.expired());
        assert_eq!(alert.deadline(), None);
        alert.flag().store(true, Ordering::Release);
        assert!(alert.stopping());
        assert!(!alert.expired());
        let started = Instant::now();
        assert!(!alert.sleep(Duration::from_secs(5), false));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(alert.expired());
        assert!(alert.expired());
    }

    #[test]
    fn abort_expires_at_once_and_sleep_can_wake_on_the_stop() {
        let alert = Alert::new(Duration::from_secs(60));
        assert!(alert.sleep(Duration::from_millis(1), true));
        alert.request_stop();
        assert!(!alert.expired());
        assert!(!alert.sleep(Duration::from_secs(5), true));
        alert.abort();
        assert!(alert.expired());
    }
}
