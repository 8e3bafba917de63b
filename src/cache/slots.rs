//! The conflating hand-off: fixed slots of words, each behind a sequence lock, and a
//! bitmap of the slots changed since the reader last looked.
//!
//! ```text
//!   shard (the one writer)                      Redis thread (the one reader)
//!   publish(slot): seq odd ─ words ─ seq even   take_dirty(): swap each bitmap word to 0
//!                  fetch_or dirty bit ────────► read(slot): copy words, retry while seq moves
//!                  (bit already set = conflated)  mark(slot): a failed write sets it again
//! ```
//!
//! Only the latest state of a slot matters, so a writer never waits: it overwrites
//! the slot and sets its bit; if the bit was still set the reader had not yet seen the
//! previous state, and that update is counted as conflated. Every word is an atomic
//! written and read with relaxed ordering between the two sequence stores (the
//! seqlock of Boehm, "Can seqlocks get along with programming language memory
//! models?", 2012), so a torn read is detected, never undefined behaviour.
//! The dirty bit is set with one `fetch_or` after the data: a reader that swaps the
//! bit away before it is set simply sees it set again next time, and one that sees it
//! reads the new data (the `fetch_or` releases, the swap acquires).
//!
//! Memory is allocated once, at start: `slots × words` of `AtomicU64`.

use std::sync::atomic::{fence, AtomicI64, AtomicU64, Ordering};

/// Times a reader tries one slot while its writer keeps changing it; then it leaves the
/// slot marked for the next round (a slot written that often is written again soon).
pub const READ_TRIES: usize = 16;

/// Slots of `words` words each, one writer, one reader.
pub struct SlotTable {
    words_per_slot: usize,
    words: Box<[AtomicU64]>,
    seqs: Box<[AtomicU64]>,
    dirty: Box<[AtomicU64]>,
    /// When each slot's oldest unwritten change arrived (receive time, Unix ms); set by
    /// the writer when it sets a clear bit, read by the reader to report its lag.
    since_ms: Box<[AtomicI64]>,
}

impl SlotTable {
    /// A table of `slots` slots of `words_per_slot` words, all zero.
    pub fn new(slots: usize, words_per_slot: usize) -> SlotTable {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        SlotTable {
            words_per_slot,
            words: zeros(slots * words_per_slot),
            seqs: zeros(slots),
            dirty: zeros(slots.div_ceil(64)),
            since_ms: (0..slots).map(|_| AtomicI64::new(0)).collect(),
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

    fn slot_words(&self, slot: usize) -> &[AtomicU64] {
        let start = slot * self.words_per_slot;
        &self.words[start..start + self.words_per_slot]
    }

    /// Writer side: changes `slot` through `write` (which may read the words it wrote
    /// before: only this thread writes them) and marks it dirty. Returns true when the
    /// previous change had not been read yet (conflated). `now_ms` dates the change for
    /// the lag figure. Only one thread may call this for a table.
    #[inline]
    pub fn publish(&self, slot: usize, now_ms: i64, write: impl FnOnce(&SlotWords<'_>)) -> bool {
        let seq = &self.seqs[slot];
        let s = seq.load(Ordering::Relaxed);
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd store before the data stores.
        fence(Ordering::Release);
        write(&SlotWords(self.slot_words(slot)));
        seq.store(s.wrapping_add(2), Ordering::Release);
        let bit = 1u64 << (slot % 64);
        let before = self.dirty[slot / 64].fetch_or(bit, Ordering::AcqRel);
        if before & bit != 0 {
            return true;
        }
        self.since_ms[slot].store(now_ms, Ordering::Relaxed);
        false
    }

    /// Reader side: calls `each` with every slot marked since the last call, clearing
    /// the marks first.
    pub fn take_dirty(&self, mut each: impl FnMut(usize)) {
        for (w, word) in self.dirty.iter().enumerate() {
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                each(w * 64 + b);
            }
        }
    }

    /// Reader side: marks `slot` again (its write failed, or it was being written).
    pub fn mark(&self, slot: usize) {
        self.dirty[slot / 64].fetch_or(1 << (slot % 64), Ordering::AcqRel);
    }

    /// Reader side: the receive time of the oldest change not yet taken, if any.
    pub fn oldest_pending_ms(&self) -> Option<i64> {
        let mut oldest: Option<i64> = None;
        for (w, word) in self.dirty.iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let since = self.since_ms[w * 64 + b].load(Ordering::Relaxed);
                oldest = Some(oldest.map_or(since, |o| o.min(since)));
            }
        }
        oldest
    }

    /// When `slot`'s change was first marked (Unix ms).
    pub fn since_ms(&self, slot: usize) -> i64 {
        self.since_ms[slot].load(Ordering::Relaxed)
    }

    /// Reader side: copies `slot` into `out` (`words_per_slot` long) as one consistent
    /// state; false when the writer kept changing it for [`READ_TRIES`] tries.
    pub fn read(&self, slot: usize, out: &mut [u64]) -> bool {
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
                return true;
            }
        }
        false
    }
}

/// One slot's words, as the writer sees them inside [`SlotTable::publish`].
pub struct SlotWords<'a>(&'a [AtomicU64]);

impl SlotWords<'_> {
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
    fn a_second_change_before_the_read_is_conflated() {
        let table = SlotTable::new(130, 2);
        assert!(!table.publish(129, 10, |w| w.set(0, 1)));
        assert!(table.publish(129, 11, |w| w.set(0, 2)));
        assert_eq!(table.oldest_pending_ms(), Some(10));
        let mut seen = Vec::new();
        table.take_dirty(|s| seen.push(s));
        assert_eq!(seen, [129]);
        let mut out = [0; 2];
        assert!(table.read(129, &mut out));
        assert_eq!(out, [2, 0]);
        assert_eq!(table.oldest_pending_ms(), None);
        assert!(!table.publish(129, 12, |w| w.set(1, 7)));
        table.mark(3);
        let mut seen = Vec::new();
        table.take_dirty(|s| seen.push(s));
        assert_eq!(seen, [3, 129]);
    }

    #[test]
    fn a_reader_never_sees_a_half_written_slot() {
        // Every write puts the same value in all words; a torn read would mix two.
        let table = Arc::new(SlotTable::new(4, 32));
        let writer = {
            let table = table.clone();
            std::thread::spawn(move || {
                for v in 1..=200_000u64 {
                    table.publish((v % 4) as usize, 0, |w| {
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
            table.take_dirty(|slot| {
                if table.read(slot, &mut out) {
                    assert!(out.iter().all(|w| *w == out[0]), "torn read {out:?}");
                    reads += 1;
                }
            });
        }
        writer.join().unwrap();
        assert!(reads > 0);
    }
}
