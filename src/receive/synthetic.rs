//! The built-in synthetic feed: generates realistic ticks as JSON, exactly as the
//! platform publishes them, and routes them like received messages, so parse,
//! validate, build and write all run for real. Open loop: message `i` is due at
//! `start + i / rate`, so a stall downstream shows as lag, never as a slower schedule.

use std::time::{Duration, Instant};

use crate::model::json::{write_tick_json, write_u64};
use crate::model::synthetic::SyntheticTicks;
use crate::pipeline::Router;
use crate::ring::Kind;

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct SyntheticConfig {
    /// Messages per second; 0 = as fast as the pipeline takes them.
    pub rate: u64,
    /// Distinct instruments.
    pub instruments: usize,
    /// Stop after this many messages (None = until drained).
    pub count: Option<u64>,
    /// Generator seed.
    pub seed: u64,
}

/// Unix time in ns.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Runs the feed until `count` messages or a drain; returns messages routed.
pub fn run(router: &mut Router, config: SyntheticConfig) -> u64 {
    let mut feed = SyntheticTicks::new(config.instruments, config.seed);
    let mut payload = Vec::with_capacity(2048);
    let mut subject = Vec::with_capacity(64);

    let start = Instant::now();
    let limit = config.count.unwrap_or(u64::MAX);
    let mut seq = 0u64;
    // The stage's main loop; bounded by `limit` and by the drain flag.
    while seq < limit && !router.stopping() {
        if let Some(offset_ns) = seq.saturating_mul(1_000_000_000).checked_div(config.rate) {
            let due = start + Duration::from_nanos(offset_ns);
            let now = Instant::now();
            if due > now {
                // Sleep in slices so a drain request is seen within a millisecond.
                std::thread::sleep((due - now).min(Duration::from_millis(1)));
                continue;
            }
        }
        seq += 1;
        let received_ns = now_ns();
        let tick = feed.next_tick(received_ns / 1_000_000, 0, seq);
        payload.clear();
        write_tick_json(&mut payload, &tick);
        subject.clear();
        subject.extend_from_slice(b"market.ticks.NSE.");
        write_u64(&mut subject, u64::from(tick.instrument_token));
        let shard = router.shard_of(tick.instrument_token);
        if !router.route(shard, Kind::TickJson, seq, received_ns, &subject, &payload) {
            seq -= 1;
            break;
        }
        if seq % 1024 == 0 {
            router.acked(router.watermark());
        }
    }
    router.finish_input();
    seq
}
