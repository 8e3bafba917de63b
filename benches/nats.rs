//! The NATS wire parser over a read buffer of 10,000 JetStream deliveries as the
//! server writes them: `MSG <inbox> <sid> $JS.ACK.… <#bytes>` plus a ~600-byte JSON
//! tick from the feed encoder (representative of the receiver's input; a real read
//! holds fewer ops, since the socket hands out at most the kernel buffer at once).
//!
//! - `wire_parse`: `wire::parse` over the whole buffer, op by op, touching each payload.
//! - `naive_split` (baseline): the same bytes split at every `\r\n` by a plain byte
//!   loop (no memchr), which is the least any line-oriented reader must do; it does not
//!   even honour payload lengths, so it is a floor, not a competitor.
//!
//! Both count what they found once outside the timed loop (10,000 messages; 20,000
//! lines), so a fast wrong answer cannot pass as a win. Throughput is messages.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use alphapt_storage::model::json::write_tick_json;
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::receive::nats::wire::{self, ServerOp};

const MESSAGES: usize = 10_000;

fn buffer() -> Vec<u8> {
    let mut feed = SyntheticTicks::new(500, 3);
    let mut out = Vec::new();
    let mut payload = Vec::new();
    for index in 0..MESSAGES {
        let tick = feed.next_tick(1_764_000_000_000 + index as i64, 0, 0);
        payload.clear();
        write_tick_json(&mut payload, &tick);
        let reply = format!(
            "$JS.ACK.MARKET_TICKS.alphapt-storage.1.{}.{}.1764000000000000000.{}",
            index + 1,
            index + 1,
            MESSAGES - index - 1
        );
        out.extend_from_slice(
            format!(
                "MSG _INBOX.0123456789abcdef.pull2 2 {reply} {}\r\n",
                payload.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&payload);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses every op; returns (messages, payload bytes).
fn parse_all(buf: &[u8]) -> (usize, usize) {
    let mut head = 0;
    let (mut messages, mut bytes) = (0, 0);
    while let Some((op, used)) = wire::parse(&buf[head..], 1 << 20).expect("valid") {
        if let ServerOp::Msg(msg) = op {
            messages += 1;
            bytes += msg.payload.len();
        }
        head += used;
    }
    (messages, bytes)
}

/// Splits at every CRLF with a byte loop; returns the number of lines.
fn naive_split(buf: &[u8]) -> usize {
    let mut lines = 0;
    let mut index = 0;
    while index + 1 < buf.len() {
        if buf[index] == b'\r' && buf[index + 1] == b'\n' {
            lines += 1;
            index += 2;
        } else {
            index += 1;
        }
    }
    lines
}

fn bench(c: &mut Criterion) {
    let buf = buffer();
    let (messages, bytes) = parse_all(&buf);
    assert_eq!(messages, MESSAGES);
    assert!(bytes > MESSAGES * 400);
    assert_eq!(naive_split(&buf), 2 * MESSAGES);

    let mut group = c.benchmark_group("nats_wire");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("wire_parse", |b| b.iter(|| parse_all(black_box(&buf))));
    group.bench_function("naive_split", |b| b.iter(|| naive_split(black_box(&buf))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
