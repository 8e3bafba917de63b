//! Block building for `market_ticks`, per stage, on 65,536 synthetic ticks (500
//! instruments, full 5-level depth both sides; representative of a busy NSE feed):
//!
//! - `append`: tick → column buffers, per row (budget ≤ 50 ns/row), for a full
//!   65,536-row block and for an 8,192-row block that stays in cache.
//! - `encode`: column buffers → raw Native block (no compression).
//! - `encode_lz4`: encode + LZ4 frames with checksums, what `seal` does.
//! - baselines over the same raw block bytes: `memcpy` and plain
//!   `lz4_flex::block::compress` (budget: encode_lz4 ≥ 0.8× of it, DESIGN §7).
//! - `append_seal_lz4`: the whole path for one block, as rows/s.
//! - `sorted_merge`: the journal-first inserter's sorted INSERT of four such blocks
//!   (262,144 rows, ~1 s of a busy feed): LZ4 packets → one raw block in key order
//!   (`merge_lz4`), the same from raw packets (`merge_raw`), and a `memcpy` of the
//!   raw blocks' bytes for scale.
//!
//! Each benchmark checks its answer once outside the timed loop (row count after a
//! decode), so a fast wrong result cannot pass as a win.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::SealedBlock;
use alphapt_storage::model::Tick;
use alphapt_storage::native::compress::{
    compress_frames, compress_table, frames_bytes_max, FrameReader, Method,
};
use alphapt_storage::native::merge::SortedMerge;
use alphapt_storage::native::{Block, BlockFormat};
use alphapt_storage::shard::columns::raw_bytes_max;
use alphapt_storage::shard::{TickColumns, TickSchema};
use alphapt_storage::write::inserter::TICKS_KEY;

const ROWS: usize = 65_536;

fn ticks() -> Vec<Tick> {
    let mut feed = SyntheticTicks::new(500, 3);
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

fn filled(ticks: &[Tick]) -> TickColumns {
    let mut columns = TickColumns::new(ROWS);
    for t in ticks {
        assert!(columns.append(t));
    }
    columns
}

fn verify(schema: &TickSchema, ticks: &[Tick]) -> usize {
    let mut columns = filled(ticks);
    let mut sealed = SealedBlock::with_capacity(ROWS);
    columns.seal(schema, Some(Method::Lz4), &mut sealed);
    let mut input = &sealed.bytes[2..]; // Data packet type + empty table name.
    let mut frames = FrameReader::new(&mut input);
    let block = Block::decode(BlockFormat::Protocol, &mut frames).expect("our block decodes");
    assert_eq!(block.rows as usize, ROWS);
    assert_eq!(block.columns.len(), schema.len());
    sealed.raw_bytes
}

fn bench(c: &mut Criterion) {
    let schema = TickSchema::modern();
    let ticks = ticks();
    let raw_bytes = verify(&schema, &ticks);
    let columns = filled(&ticks);
    let mut raw = Vec::with_capacity(raw_bytes_max(ROWS));
    columns.encode(&schema, BlockFormat::Protocol, &mut raw);
    assert_eq!(raw.len(), raw_bytes);
    println!(
        "block: {ROWS} rows, {raw_bytes} raw bytes ({:.0} B/row)",
        raw_bytes as f64 / ROWS as f64
    );

    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("append_65536_rows", |b| {
        let mut columns = TickColumns::new(ROWS);
        b.iter(|| {
            columns.clear();
            for t in &ticks {
                columns.append(black_box(t));
            }
            black_box(columns.rows())
        })
    });
    // The same work on a block small enough to stay in cache: the difference is
    // the cost of streaming ~17 MB of column buffers through memory per 64 Ki rows.
    const SMALL: usize = 8_192;
    group.throughput(Throughput::Elements(SMALL as u64));
    group.bench_function("append_8192_rows", |b| {
        let mut columns = TickColumns::new(SMALL);
        b.iter(|| {
            columns.clear();
            for t in &ticks[..SMALL] {
                columns.append(black_box(t));
            }
            black_box(columns.rows())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(raw_bytes as u64));
    group.sample_size(20);
    let mut out = Vec::with_capacity(frames_bytes_max(raw_bytes_max(ROWS)));
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&raw));
            black_box(out.len())
        })
    });
    group.bench_function("encode", |b| {
        let mut buffer = Vec::with_capacity(raw_bytes_max(ROWS));
        b.iter(|| {
            buffer.clear();
            columns.encode(&schema, BlockFormat::Protocol, &mut buffer);
            black_box(buffer.len())
        })
    });
    group.bench_function("lz4_flex_block_compress", |b| {
        b.iter(|| black_box(lz4_flex::compress(black_box(&raw)).len()))
    });
    group.bench_function("encode_lz4", |b| {
        let mut buffer = Vec::with_capacity(raw_bytes_max(ROWS));
        let mut table = compress_table();
        b.iter(|| {
            buffer.clear();
            columns.encode(&schema, BlockFormat::Protocol, &mut buffer);
            out.clear();
            compress_frames(Method::Lz4, &buffer, &mut out, &mut table);
            black_box(out.len())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("block");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    group.bench_function("append_seal_lz4", |b| {
        // Warm, reused buffers, as a shard runs after its first block.
        let mut columns = TickColumns::new(ROWS);
        let mut sealed = SealedBlock::with_capacity(ROWS);
        b.iter(|| {
            for t in &ticks {
                columns.append(t);
            }
            columns.seal(&schema, Some(Method::Lz4), &mut sealed);
            black_box(sealed.bytes.len())
        })
    });
    group.finish();

    bench_merge(c, &schema, &ticks);
}

fn bench_merge(c: &mut Criterion, schema: &TickSchema, ticks: &[Tick]) {
    const BLOCKS: u64 = 4;
    let packets = |compression: Option<Method>| -> Vec<Vec<u8>> {
        let mut columns = TickColumns::new(ROWS);
        let mut sealed = SealedBlock::with_capacity(ROWS);
        (0..BLOCKS)
            .map(|block| {
                for t in ticks {
                    let mut t = *t;
                    t.timestamp_ms += block as i64 * ROWS as i64;
                    t.stream_seq += block * ROWS as u64;
                    columns.append(&t);
                }
                columns.seal(schema, compression, &mut sealed);
                sealed.bytes.clone()
            })
            .collect()
    };
    let lz4 = packets(Some(Method::Lz4));
    let raw = packets(None);
    let mut merge = SortedMerge::new(&schema.header(), &TICKS_KEY).expect("ticks merge");
    let mut out = Vec::new();
    let run = |merge: &mut SortedMerge, out: &mut Vec<u8>, input: &[Vec<u8>], lz4: bool| {
        merge.clear();
        merge.expect_rows(BLOCKS as usize * ROWS);
        out.clear();
        for packet in input {
            merge.push_packet(packet, lz4).expect("our packets merge");
        }
        // As the inserter sends it: a column at a time, each handed on (here counted).
        let mut sent = 0;
        let done: Result<(), ()> = merge.write_pieces(BlockFormat::Protocol, out, &mut |piece| {
            sent += black_box(piece).len();
            Ok(())
        });
        done.map(|()| sent).expect("counting cannot fail")
    };
    // Checked once: every row out, sorted by token (the key's first column).
    run(&mut merge, &mut out, &lz4, true);
    out.clear();
    merge.write(BlockFormat::Protocol, &mut out);
    let block = Block::decode(BlockFormat::Protocol, &mut &out[..]).expect("merged block decodes");
    assert_eq!(block.rows, BLOCKS * ROWS as u64);
    let tokens: Vec<u64> = (0..block.rows as usize)
        .map(|r| {
            block
                .column("instrument_token")
                .unwrap()
                .values
                .get(r)
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]));

    let mut group = c.benchmark_group("sorted_merge");
    group.throughput(Throughput::Elements(BLOCKS * ROWS as u64));
    group.sample_size(10);
    group.bench_function("merge_lz4", |b| {
        b.iter(|| black_box(run(&mut merge, &mut out, &lz4, true)))
    });
    // A merge's first INSERT of this size: its buffers grow (and fault in) as it goes.
    group.bench_function("merge_lz4_cold", |b| {
        b.iter(|| {
            let mut merge = SortedMerge::new(&schema.header(), &TICKS_KEY).expect("ticks merge");
            black_box(run(&mut merge, &mut Vec::new(), &lz4, true))
        })
    });
    group.bench_function("merge_raw", |b| {
        b.iter(|| black_box(run(&mut merge, &mut out, &raw, false)))
    });
    let bytes: usize = raw.iter().map(Vec::len).sum();
    let mut copy = Vec::with_capacity(bytes);
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            copy.clear();
            raw.iter().for_each(|p| copy.extend_from_slice(p));
            black_box(copy.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
