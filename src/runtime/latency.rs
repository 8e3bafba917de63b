//! Latency as Prometheus histogram buckets, counted lock-free by the thread that
//! observes (a writer, per committed block) and summed over threads on scrape: a
//! merged distribution, not the worst thread's quantile.
//!
//! ```text
//!   writer / inserter: observe(latency, rows) ── fetch_add into its own buckets
//!   control thread: sum every thread's buckets ── alphapt_storage_latency_seconds_bucket{le=…}
//! ```
//!
//! Each message counts once. Receive to durable: from its own receive stamp, to the
//! millisecond (the block's `received_spread`). Receive to committed from the
//! journal (journal-first's inserters, whose records keep only the oldest stamp): with
//! its block's oldest message's wait, an upper bound for every message in the block.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, µs: 100 µs to 10 s (DESIGN budgets sit inside:
/// p99 < 50 ms), then +Inf.
pub const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// One histogram: a count per bucket (not cumulative; the last one is +Inf), the sum
/// of latencies (µs × messages) and the number of messages.
#[derive(Debug, Default)]
pub struct LatencyBuckets {
    counts: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A merged copy, for rendering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyTotals {
    /// Messages per bucket (not cumulative), +Inf last.
    pub counts: [u64; BOUNDS_US.len() + 1],
    /// Sum of latencies, µs × messages.
    pub sum_us: u64,
    /// Messages.
    pub count: u64,
}

impl LatencyBuckets {
    /// Counts `messages` messages of latency `latency_us`.
    #[inline]
    pub fn observe(&self, latency_us: u64, messages: u64) {
        let bucket = BOUNDS_US.partition_point(|b| *b < latency_us);
        self.counts[bucket].fetch_add(messages, Ordering::Relaxed);
        self.sum_us
            .fetch_add(latency_us.saturating_mul(messages), Ordering::Relaxed);
        self.count.fetch_add(messages, Ordering::Relaxed);
    }

    /// Adds this histogram into `totals`.
    pub fn add_to(&self, totals: &mut LatencyTotals) {
        for (t, c) in totals.counts.iter_mut().zip(&self.counts) {
            *t += c.load(Ordering::Relaxed);
        }
        totals.sum_us += self.sum_us.load(Ordering::Relaxed);
        totals.count += self.count.load(Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_merge() {
        let a = LatencyBuckets::default();
        let b = LatencyBuckets::default();
        a.observe(100, 3); // on a bound: that bucket (le is inclusive)
        a.observe(101, 1);
        b.observe(20_000_000, 2); // past 10 s: +Inf
        let mut totals = LatencyTotals::default();
        a.add_to(&mut totals);
        b.add_to(&mut totals);
        assert_eq!(totals.counts[0], 3);
        assert_eq!(totals.counts[1], 1);
        assert_eq!(totals.counts[BOUNDS_US.len()], 2);
        assert_eq!(totals.count, 6);
        assert_eq!(totals.sum_us, 300 + 101 + 40_000_000);
    }
}
