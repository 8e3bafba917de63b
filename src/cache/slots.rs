//! The conflating hand-off: fixed slots of words, each behind a sequence lock. The
//! writer never waits and never does an atomic read-modify-write; the reader finds
//! what changed by comparing each slot's sequence with the one it last wrote.
//!
//! ```text
//!   shard (the one writer)                      Redis thread (the one reader)
//!   publish(slot): seq odd ─ words ─ seq even   for slot in 0..used(): seq(slot) ≠ written[slot]?
//!   take a new slot: used += 1 (release)           read(slot): copy words, retry while seq moves
//!                                                  written[slot] = seq read, once Redis took it
//! ```
//!
//! Only the latest state of a slot matters, so the writer overwrites it; changes the
//! reader never saw are conflated, and it counts them from the sequence: each change
//! adds 2. Every word is an atomic written and read with relaxed ordering between the
//! two sequence stores (the seqlock of Boehm, "Can seqlocks get along with programming
//! language memory models?", 2012), so a torn read is detected, never undefined
//! behaviour. On x86 all of the writer's operations are plain stores: an earlier
//! design set a dirty bit with `fetch_or`, and that locked instruction, waiting for
//! the slot's ~70 stores to drain, cost more than the whole update (benches/cache.rs).
//!
//! Memory is allocated once, at start: `slots × words` of `AtomicU64`.

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};

/// Times a reader tries one slot while its writer keeps changing it; then it leaves the
/// slot for the next round (a slot written that often is written again soon).
pub const READ_TRIES: usize = 16;

/// Slots of `words` words each, one writer, one reader.
pub struct SlotTable {
    words_per_slot: usize,
    words: Box<[AtomicU64]>,
    seqs: Box<[AtomicU64]>,
    /// Slots handed out so far (the writer takes them in order).
    used: AtomicUsize,
}

impl SlotTable {
    /// A table of `slots` slots of `words_per_slot` words, all zero.
    pub fn new(slots: usize, words_per_slot: usize) -> SlotTable {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        SlotTable {
            words_per_slot,
            words: zeros(slots * words_per_slot),
            seqs: zeros(slots),
            used: AtomicUsize::new(0),
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.seqs.len()
    }

    /// Words per slot.
    pub fn words_per_slot(&self) -> usize {
        self.words_per_slot
    }

    /// Slots in use: `0..used()`.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Writer side: says slots `0..used` are in use (after their first publish).
    pub fn set_used(&self, used: usize) {
        self.used.store(used, Ordering::Release);
    }

    fn slot_words(&self, slot: usize) -> &[AtomicU64] {
        let start = slot * self.words_per_slot;
        &self.words[start..start + self.words_per_slot]
    }

    /// Writer side: changes `slot` through `write` (which may read the words it wrote
    /// before: only this thread writes them). Only one thread may call this. `N` is
    /// the table's words per slot (checked once here, so constant offsets inside
    /// `write` need no bounds checks).
    #[inline]
    pub fn publish<const N: usize>(&self, slot: usize, write: impl FnOnce(&SlotWords<'_, N>)) {
        let words: &[AtomicU64; N] = self
            .slot_words(slot)
            .try_into()
            .expect("publish with the table's words per slot");
        let seq = &self.seqs[slot];
        let s = seq.load(Ordering::Relaxed);
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd store before the data stores.
        fence(Ordering::Release);
        write(&SlotWords(words));
        seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Reader side: the slot's sequence now (odd while it is being written).
    #[inline]
    pub fn seq(&self, slot: usize) -> u64 {
        self.seqs[slot].load(Ordering::Relaxed)
    }

    /// Reader side: copies `slot` into `out` (`words_per_slot` long) as one consistent
    /// state and returns its sequence; `None` when the writer kept changing it for
    /// [`READ_TRIES`] tries.
    pub fn read(&self, slot: usize, out: &mut [u64]) -> Option<u64> {
        let seq = &self.seqs[slot];
        let words = self.slot_words(slot);
        for _ in 0..READ_TRIES {
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            for (o, w) in out.iter_mut().zip(words) {
                *o = w.load(Ordering::Relaxed);
            }
            // Orders the data loads before the second sequence load.
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return Some(before);
            }
        }
        None
    }
}

/// One slot's `N` words, as the writer sees them inside [`SlotTable::publish`].
pub struct SlotWords<'a, const N: usize>(&'a [AtomicU64; N]);

impl<const N: usize> SlotWords<'_, N> {
    /// Word `i` as last written.
    #[inline]
    pub fn get(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }

    /// Sets word `i`.
    #[inline]
    pub fn set(&self, i: usize, value: u64) {
        self.0[i].store(value, Ordering::Relaxed);
    }

    /// Sets the words from `i` on.
    #[inline]
    pub fn set_all(&self, i: usize, values: &[u64]) {
        for (w, v) in self.0[i..i + values.len()].iter().zip(values) {
            w.store(*v, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn each_change_adds_two_to_the_sequence() {
        let table = SlotTable::new(130, 2);
        table.publish::<2>(129, |w| w.set(0, 1));
        table.publish::<2>(129, |w| w.set(0, 2));
        let mut out = [0; 2];
        assert_eq!(table.read(129, &mut out), Some(4));
        assert_eq!(out, [2, 0]);
        assert_eq!(table.seq(3), 0, "never written");
        table.publish::<2>(129, |w| w.set(1, w.get(0) + 5));
        assert_eq!(table.read(129, &mut out), Some(6));
        assert_eq!(out, [2, 7]);
    }

    #[test]
    fn a_reader_never_sees_a_half_written_slot() {
        // Every write puts the same value in all words; a torn read would mix two.
        let table = Arc::new(SlotTable::new(4, 32));
        table.set_used(4);
        let writer = {
            let table = table.clone();
            std::thread::spawn(move || {
                for v in 1..=200_000u64 {
                    table.publish::<32>((v % 4) as usize, |w| {
                        for i in 0..32 {
                            w.set(i, v);
                        }
                    });
                }
            })
        };
        let mut out = [0u64; 32];
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            for slot in 0..table.used() {
                if table.read(slot, &mut out).is_some() {
                    assert!(out.iter().all(|w| *w == out[0]), "torn read {out:?}");
                    reads += 1;
                }
            }
        }
        writer.join().unwrap();
        assert!(reads > 0);
    }
}
