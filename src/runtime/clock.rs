//! The wall clock the appliance stamps with: receive stamps, receive-to-durable
//! latency, spill record ages. One function so that every stage reads the same clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in ms; 0 if the system clock is before 1970 (a broken host clock shows up
/// as absurd latencies, never as a panic).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
