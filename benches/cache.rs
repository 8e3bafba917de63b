//! The shard side of the Redis hand-off (`cache::TickCache::update`), per tick, over
//! 65,536 ticks of 500 instruments with full depth (budget ≤ 30 ns/tick, issue 15).
//! As in the shard, each tick is handed over from one scratch `Tick` that the parser
//! just wrote (so it is in L1): the loop sets the scratch's instrument, time, sequence
//! and price from a precomputed table of 65,536 (token, price) pairs, then calls
//! `update`. (An earlier version passed 65,536 distinct 336-byte ticks: it measured
//! DRAM streaming of the 21 MB input more than the hand-off.)
//!
//! - `update_unread`: nobody reads the table, so every dirty bit stays set (the
//!   conflating case); the history queue is emptied, unread, after each pass of 65,536
//!   (half its capacity).
//! - `update_with_reader`: a second thread drains the history queue every
//!   millisecond (the Redis thread: every 5–10 ms, at a rate 150 times lower than
//!   this loop's, so it never finds the queue full) and reads every slot every 5 ms,
//!   as the Redis thread does, so slot and queue lines move between cores. A reader
//!   spinning on the queue without pause tripled the time: it pulls each line away
//!   while the shard is still filling it.
//! - baseline `copy_tick`: the same scratch updates, then a plain copy of the `Tick`
//!   into a per-instrument array: the least any hand-off of the whole tick costs.
//!
//! The answer is checked once outside the timed loop: every slot read back holds the
//! last good tick of its instrument.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use alphapt_storage::cache::tick::{history_queue, TickSlot};
use alphapt_storage::cache::TickCache;
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::{Price, Tick};

const ROWS: usize = 65_536;
const INSTRUMENTS: usize = 500;

fn ticks() -> Vec<Tick> {
    let mut feed = SyntheticTicks::new(INSTRUMENTS, 3);
    (0..ROWS as u64)
        .map(|i| {
            feed.next_tick(
                1_764_000_000_000 + i as i64,
                1_764_000_000_001 + i as i64,
                i + 1,
            )
        })
        .collect()
}

fn verify(ticks: &[Tick]) {
    let table = Arc::new(TickCache::table(8192));
    let (history, _reader) = history_queue();
    let mut cache = TickCache::new(table.clone(), history);
    let mut last = std::collections::HashMap::new();
    for t in ticks {
        cache.update(t);
        last.insert(t.instrument_token, *t);
    }
    let mut slot = TickSlot::new();
    let mut seen = 0;
    for s in 0..INSTRUMENTS {
        assert!(slot.read(&table, s).is_some());
        assert_eq!(slot.latest, last.get(&slot.token).copied(), "slot {s}");
        seen += 1;
    }
    assert_eq!(seen, last.len());
}

fn bench(c: &mut Criterion) {
    let ticks = ticks();
    verify(&ticks);
    let mut group = c.benchmark_group("cache");
    group.throughput(Throughput::Elements(ROWS as u64));

    let keys: Vec<(u32, Price)> = ticks
        .iter()
        .map(|t| (t.instrument_token, t.last_price))
        .collect();
    let mut scratch = ticks[0];
    // The scratch takes tick `i`'s instrument and price, a time 1 ms after the last.
    let mut i = 0u64;
    let mut next = move |scratch: &mut Tick| {
        let (token, price) = keys[i as usize % ROWS];
        scratch.instrument_token = token;
        scratch.last_price = price;
        scratch.timestamp_ms = 1_764_000_000_000 + i as i64;
        scratch.stream_seq = i + 1;
        i += 1;
    };

    group.bench_function("update_unread", |b| {
        let table = Arc::new(TickCache::table(8192));
        let (history, mut reader) = history_queue();
        let mut cache = TickCache::new(table, history);
        b.iter(|| {
            for _ in 0..ROWS {
                next(&mut scratch);
                cache.update(black_box(&scratch));
            }
            let all = reader.slots();
            reader.read_chunk(all).unwrap().commit_all();
        });
    });

    group.bench_function("update_with_reader", |b| {
        let table = Arc::new(TickCache::table(8192));
        let (history, mut queue) = history_queue();
        let mut cache = TickCache::new(table.clone(), history);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut slot = TickSlot::new();
                let mut read_at = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let all = queue.slots();
                    for record in queue.read_chunk(all).unwrap() {
                        black_box(record);
                    }
                    if read_at.elapsed() >= Duration::from_millis(5) {
                        for s in 0..table.used() {
                            black_box(slot.read(&table, s));
                        }
                        read_at = std::time::Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        b.iter(|| {
            for _ in 0..ROWS {
                next(&mut scratch);
                cache.update(black_box(&scratch));
            }
        });
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    });

    group.bench_function("copy_tick", |b| {
        let mut latest = vec![Tick::default(); 8192];
        b.iter(|| {
            for n in 0..ROWS {
                next(&mut scratch);
                latest[n % INSTRUMENTS] = *black_box(&scratch);
            }
            black_box(&latest);
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
