//! What a thread does when its ring is empty: spin with a pause hint, then yield, then
//! park with a timeout (the `hybrid` strategy; `spin`, `yield` and `park` use one stage).
//! Modelled on crossbeam's `Backoff`, with the step counts from config.
//!
//! `spin` burns a core for the lowest wake-up latency (bare metal, pinned);
//! `park` costs a timeout of latency but no CPU (shared boxes); `hybrid` gets spin's
//! latency under load and park's thrift when idle.

use std::time::Duration;

use crate::config::WaitStrategy;

/// A per-thread waiting state machine.
#[derive(Clone, Debug)]
pub struct Waiter {
    /// The strategy.
    strategy: WaitStrategy,
    /// Spins before yielding (hybrid).
    spin_count: u32,
    /// Yields before parking (hybrid).
    yield_count: u32,
    /// Park timeout.
    park: Duration,
    /// Idle calls since the last `reset`.
    step: u32,
}

/// What the last `idle` call did, for tests and stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Busy-waited with a pause hint.
    Spin,
    /// Gave the core away.
    Yield,
    /// Slept up to the park timeout.
    Park,
}

impl Waiter {
    /// A waiter with the config's strategy and step counts.
    pub fn new(
        strategy: WaitStrategy,
        spin_count: u32,
        yield_count: u32,
        park_timeout_us: u64,
    ) -> Waiter {
        Waiter {
            strategy,
            spin_count,
            yield_count,
            park: Duration::from_micros(park_timeout_us),
            step: 0,
        }
    }

    /// Work was found: start again from the cheapest wait.
    #[inline]
    pub fn reset(&mut self) {
        self.step = 0;
    }

    /// Nothing to do: wait a little, longer the longer nothing comes.
    pub fn idle(&mut self) -> Step {
        let step = self.next_step();
        self.step = self.step.saturating_add(1);
        match step {
            Step::Spin => std::hint::spin_loop(),
            Step::Yield => std::thread::yield_now(),
            Step::Park => std::thread::park_timeout(self.park),
        }
        step
    }

    fn next_step(&self) -> Step {
        match self.strategy {
            WaitStrategy::Spin => Step::Spin,
            WaitStrategy::Yield => Step::Yield,
            WaitStrategy::Park => Step::Park,
            WaitStrategy::Hybrid if self.step < self.spin_count => Step::Spin,
            WaitStrategy::Hybrid
                if self.step < self.spin_count.saturating_add(self.yield_count) =>
            {
                Step::Yield
            }
            WaitStrategy::Hybrid => Step::Park,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Hybrid walks spin → yield → park and starts over after `reset`; the single
    //! strategies never change step.
    use super::*;

    #[test]
    fn hybrid_escalates_and_resets() {
        let mut waiter = Waiter::new(WaitStrategy::Hybrid, 3, 2, 10);
        let steps: Vec<Step> = (0..7).map(|_| waiter.idle()).collect();
        use Step::*;
        assert_eq!(steps, [Spin, Spin, Spin, Yield, Yield, Park, Park]);
        waiter.reset();
        assert_eq!(waiter.idle(), Spin);
    }

    #[test]
    fn single_strategies_hold_their_step() {
        for (strategy, step) in [
            (WaitStrategy::Spin, Step::Spin),
            (WaitStrategy::Yield, Step::Yield),
            (WaitStrategy::Park, Step::Park),
        ] {
            let mut waiter = Waiter::new(strategy, 1, 1, 10);
            assert!((0..5).all(|_| waiter.idle() == step));
        }
    }
}
