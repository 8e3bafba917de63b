//! The Redis hand-off allocates nothing per tick or signal: after the first sight of
//! each instrument (and each strategy-instrument pair), `TickCache::update` and
//! `SignalCache::update` only store into the slot tables and the history queue sized
//! at start, new instruments up to the table's size included. Its own binary, for the
//! counting allocator.

use std::sync::Arc;

use alphapt_storage::cache::{SignalCache, TickCache};
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::{Price, Symbol};
use alphapt_storage::shard::signals::Signal;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[test]
fn the_cache_hand_off_allocates_nothing() {
    let mut feed = SyntheticTicks::new(300, 9);
    let ticks: Vec<_> = (0..20_000u64)
        .map(|i| feed.next_tick(1_764_000_000_000 + i as i64 * 7, 1_764_000_000_000, i))
        .collect();
    let signals: Vec<Signal> = (0..2_000u32)
        .map(|i| Signal {
            timestamp_ms: 1_764_000_000_000 + i64::from(i),
            stream_seq: u64::from(i),
            strategy_id: Symbol::new(if i % 2 == 0 { b"mom" } else { b"rev" }).unwrap(),
            instrument_token: 256_265 + i % 40,
            signal_type: Symbol::new(b"BUY").unwrap(),
            price: Price::from_f64(100.5).unwrap(),
            ..Signal::default()
        })
        .collect();
    let (history, mut queue) = alphapt_storage::cache::tick::history_queue();
    let mut cache = TickCache::new(Arc::new(TickCache::table(1024)), history);
    let mut signal_cache = SignalCache::new(Arc::new(SignalCache::table(256)));

    let before = counting_alloc::allocations();
    for t in &ticks {
        cache.update(t);
    }
    for s in &signals {
        signal_cache.update(s);
    }
    let after = counting_alloc::allocations();
    assert_eq!(
        after - before,
        0,
        "allocations during {} ticks and {} signals",
        ticks.len(),
        signals.len()
    );
    assert_eq!((cache.untracked, signal_cache.untracked), (0, 0));
    assert_eq!(
        queue.slots(),
        ticks.len(),
        "every tick's history entry queued"
    );
    assert_eq!(queue.pop().unwrap().n, 0);
}
