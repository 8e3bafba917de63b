//! Zero heap allocations per tick after warm-up: a counting global allocator watches
//! append → seal (encode + LZ4) of whole blocks once the buffers exist. Runs alone in
//! its own test binary, so no other test's allocations are counted.

use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::SealedBlock;
use alphapt_storage::native::Method;
use alphapt_storage::shard::{TickColumns, TickSchema};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[test]
fn append_and_seal_allocate_nothing_after_warm_up() {
    const ROWS: usize = 4_096;
    let mut feed = SyntheticTicks::new(300, 9);
    let ticks: Vec<_> = (0..ROWS as u64 * 3)
        .map(|i| {
            feed.next_tick(
                1_764_000_000_000 + i as i64,
                1_764_000_000_000 + i as i64,
                i,
            )
        })
        .collect();
    for (schema, compression) in [
        (TickSchema::modern(), Some(Method::Lz4)),
        (TickSchema::legacy(), Some(Method::Lz4)),
        (TickSchema::legacy(), None),
    ] {
        let mut columns = TickColumns::new(ROWS);
        let mut sealed = SealedBlock::with_capacity(ROWS);
        // Warm-up: the first block sizes the symbol dictionaries' tables.
        for t in &ticks[..ROWS] {
            assert!(columns.append(t));
        }
        columns.seal(&schema, compression, &mut sealed);

        let before = counting_alloc::allocations();
        for block in ticks[ROWS..].chunks(ROWS) {
            for t in block {
                assert!(columns.append(t));
            }
            columns.seal(&schema, compression, &mut sealed);
            assert_eq!(sealed.rows as usize, ROWS);
        }
        let after = counting_alloc::allocations();
        assert_eq!(after - before, 0, "allocations during {} ticks", 2 * ROWS);
    }
}

/// The journal-first inserter's merge into one sorted block: once its buffers have
/// grown to an INSERT's size, merging another of that size allocates nothing.
#[test]
fn a_sorted_merge_allocates_nothing_after_warm_up() {
    use alphapt_storage::native::merge::SortedMerge;
    use alphapt_storage::native::BlockFormat;
    use alphapt_storage::write::inserter::TICKS_KEY;

    const ROWS: usize = 2_048;
    let mut feed = SyntheticTicks::new(500, 5);
    for (schema, compression) in [
        (TickSchema::modern(), Some(Method::Lz4)),
        (TickSchema::legacy(), None),
    ] {
        let mut columns = TickColumns::new(ROWS);
        let mut sealed = SealedBlock::with_capacity(ROWS);
        let packets: Vec<Vec<u8>> = (0..8u64)
            .map(|block| {
                for i in 0..ROWS as u64 {
                    let at = 1_764_000_000_000 + (i % 97) as i64;
                    assert!(columns.append(&feed.next_tick(at, at, block * ROWS as u64 + i)));
                }
                columns.seal(&schema, compression, &mut sealed);
                sealed.bytes.clone()
            })
            .collect();
        let mut merge = SortedMerge::new(&schema.header(), &TICKS_KEY).unwrap();
        let mut out = Vec::new();
        let run = |merge: &mut SortedMerge, out: &mut Vec<u8>| {
            merge.clear();
            out.clear();
            merge.expect_rows(packets.len() * ROWS);
            for packet in &packets {
                merge.push_packet(packet, compression.is_some()).unwrap();
            }
            // As the inserter sends it: a column at a time through one kept buffer.
            let mut sent = 0;
            let done: Result<(), ()> = merge.write_pieces(BlockFormat::Protocol, out, &mut |p| {
                sent += p.len();
                Ok(())
            });
            done.unwrap();
            assert!(sent > 8 * ROWS * 100, "{sent} bytes for {} rows", 8 * ROWS);
        };
        run(&mut merge, &mut out);
        let before = counting_alloc::allocations();
        run(&mut merge, &mut out);
        run(&mut merge, &mut out);
        let after = counting_alloc::allocations();
        assert_eq!(after - before, 0, "allocations merging {} rows", 8 * ROWS);
        assert_eq!(merge.rows(), 8 * ROWS);
    }
}
