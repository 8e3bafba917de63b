//! Zero heap allocations per tick after warm-up: a counting global allocator watches
//! append → seal (encode + LZ4) of whole blocks once the buffers exist. Runs alone in
//! its own test binary, so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::native::Method;
use alphapt_storage::shard::{SealedBlock, TickColumns, TickSchema};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for block in ticks[ROWS..].chunks(ROWS) {
            for t in block {
                assert!(columns.append(t));
            }
            columns.seal(&schema, compression, &mut sealed);
            assert_eq!(sealed.rows as usize, ROWS);
        }
        let after = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(after - before, 0, "allocations during {} ticks", 2 * ROWS);
    }
}
