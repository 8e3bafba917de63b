//! The receiver → shard hop.
//!
//! - `frame_push_pop`: one 700-byte frame (a JSON tick with full depth) pushed and
//!   popped through our byte-framed rtrb ring on one thread: the per-message cost of
//!   the edge without cross-core traffic. Baseline: a `VecDeque` push/pop of the same
//!   bytes.
//! - `hop_round_trip`: a `u64` ping-ponged between two threads over two rtrb rings;
//!   half the round trip is the one-way hop (budget ≤ 25 ns on pinned cores; on a
//!   shared 2-core VM the figure includes the other thread's scheduling).
//!
//! Each bench checks its answer once outside the timed loop.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use alphapt_storage::ring::{frame_ring, FrameHeader, Kind};

const PAYLOAD: usize = 700;

fn header(seq: u64) -> FrameHeader {
    FrameHeader {
        kind: Kind::TickJson,
        flags: 0,
        stream_seq: seq,
        received_ns: 0,
        payload_bytes_original: PAYLOAD as u32,
    }
}

fn bench(c: &mut Criterion) {
    let payload = vec![b'x'; PAYLOAD];
    let subject = b"market.ticks.NSE.256265";
    let (mut producer, mut consumer) = frame_ring(1 << 20, 1 << 16);
    assert!(producer.push(header(1), subject, &payload));
    let checked = consumer.pop(|h, s, p| h.stream_seq == 1 && s == subject && p == &payload[..]);
    assert_eq!(checked, Some(true));

    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    group.bench_function("frame_push_pop", |b| {
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            producer.push(header(seq), subject, black_box(&payload));
            consumer.pop(|h, _, p| black_box(h.stream_seq + p.len() as u64))
        })
    });
    group.bench_function("vecdeque_push_pop_baseline", |b| {
        let mut queue: VecDeque<u8> = VecDeque::with_capacity(1 << 20);
        let mut out = vec![0u8; PAYLOAD];
        b.iter(|| {
            queue.extend(black_box(&payload).iter().copied());
            for (dst, src) in out.iter_mut().zip(queue.drain(..PAYLOAD)) {
                *dst = src;
            }
            black_box(out[0])
        })
    });
    group.bench_function("hop_round_trip", |b| {
        let (mut ping_tx, mut ping_rx) = rtrb::RingBuffer::<u64>::new(1024);
        let (mut pong_tx, mut pong_rx) = rtrb::RingBuffer::<u64>::new(1024);
        let echo = std::thread::spawn(move || loop {
            if let Ok(v) = ping_rx.pop() {
                if v == u64::MAX {
                    return;
                }
                while pong_tx.push(v).is_err() {
                    std::hint::spin_loop();
                }
            } else {
                std::hint::spin_loop();
            }
        });
        let mut next = 0u64;
        b.iter(|| {
            next += 1;
            while ping_tx.push(next).is_err() {
                std::hint::spin_loop();
            }
            loop {
                if let Ok(v) = pong_rx.pop() {
                    assert_eq!(v, next);
                    break;
                }
                std::hint::spin_loop();
            }
        });
        while ping_tx.push(u64::MAX).is_err() {}
        echo.join().unwrap();
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
