//! The durable watermark: the highest stream sequence below which every message is
//! stored (in ClickHouse; later also in the spill file). JetStream is acked up to it.
//!
//! ```text
//!   receiver ── routes seq q to shard s: routed_last[s] = q (receiver-owned)
//!   writer   ── commits shard s's seal group: durable_last[s].store(x, Release)
//!   receiver ── watermark = min(receiver_last, min over pending s of durable_last[s])
//!               where s is pending when routed_last[s] > durable_last[s]
//! ```
//!
//! Why it is right: a shard receives its sequences in increasing order, seals every
//! open block at once (ticks, signals, rejects together) and its writer commits a
//! shard's blocks in order (one writer per shard, one batch at a time: an INSERT and a
//! spill sync are two outcomes of the same step, and replaying the spill later moves
//! no mark, those blocks being durable already), so the highest committed mark is the
//! contiguous prefix a ledger of out-of-order completions would compute; the last block of a seal group carries the shard's last
//! consumed sequence as `durable_through`. So every sequence routed to shard `s` up to
//! `durable_last[s]` is stored. A sequence `q ≤ watermark` routed to shard `t` is then
//! stored: either `t` has nothing pending (all routed are stored) or
//! `q ≤ watermark ≤ durable_last[t]`.

pub mod mark;
pub mod stored;

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// Per-shard durable sequences, written by writers, read by the receiver.
pub struct DurableMarks {
    /// `durable_last[s]`: every sequence routed to shard `s` up to this is stored.
    /// Cache-padded: each is written by one writer and polled by the receiver.
    marks: Vec<CachePadded<AtomicU64>>,
}

impl DurableMarks {
    /// Marks for `shards` shards, all at 0 (nothing stored yet).
    pub fn new(shards: usize) -> DurableMarks {
        DurableMarks {
            marks: (0..shards)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }

    /// A writer committed shard `shard`'s seal group through `seq`.
    pub fn commit(&self, shard: usize, seq: u64) {
        // Release pairs with the Acquire in `get`: the receiver that sees `seq` also
        // sees everything the writer did before (the INSERT's completion).
        let previous = self.marks[shard].fetch_max(seq, Ordering::Release);
        debug_assert!(
            previous <= seq,
            "shard {shard} durable mark went back from {previous} to {seq}"
        );
    }

    /// Shard `shard`'s durable sequence.
    pub fn get(&self, shard: usize) -> u64 {
        self.marks[shard].load(Ordering::Acquire)
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.marks.len()
    }

    /// True when there are no shards.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }
}

/// The watermark from the receiver's view: `receiver_last` (highest sequence routed
/// anywhere) and `routed_last[s]` (highest routed to shard `s`).
pub fn watermark(receiver_last: u64, routed_last: &[u64], marks: &DurableMarks) -> u64 {
    debug_assert_eq!(routed_last.len(), marks.len());
    watermark_of_group(receiver_last, routed_last, marks, 0)
}

/// [`watermark`] of one source's group of shards, `base..base + routed_last.len()`
/// (several partitions in one process: each receiver routes to shards of its own).
pub fn watermark_of_group(
    receiver_last: u64,
    routed_last: &[u64],
    marks: &DurableMarks,
    base: usize,
) -> u64 {
    debug_assert!(base + routed_last.len() <= marks.len());
    let mut mark = receiver_last;
    for (shard, &routed) in routed_last.iter().enumerate() {
        let durable = marks.get(base + shard);
        if routed > durable {
            mark = mark.min(durable);
        }
    }
    mark
}

#[cfg(test)]
mod tests {
    //! The watermark never passes an unstored sequence: checked against a brute-force
    //! oracle over random routings and commit orders.
    use super::*;
    use crate::model::synthetic::SplitMix64;

    #[test]
    fn watermark_matches_a_brute_force_oracle() {
        let mut rng = SplitMix64::new(17);
        for _ in 0..200 {
            let shards = 1 + rng.below(4) as usize;
            let marks = DurableMarks::new(shards);
            let mut routed_last = vec![0u64; shards];
            let mut stored = vec![true]; // Sequence 0 does not exist; treat as stored.
            let mut per_shard: Vec<Vec<u64>> = vec![Vec::new(); shards];
            let mut receiver_last = 0;
            for seq in 1..=60u64 {
                let shard = rng.below(shards as u64) as usize;
                routed_last[shard] = seq;
                per_shard[shard].push(seq);
                stored.push(false);
                receiver_last = seq;
                // Sometimes a shard commits everything it has so far.
                let s = rng.below(shards as u64) as usize;
                if rng.below(3) == 0 {
                    if let Some(&last) = per_shard[s].last() {
                        per_shard[s].iter().for_each(|&q| stored[q as usize] = true);
                        marks.commit(s, last);
                    }
                }
                let mark = watermark(receiver_last, &routed_last, &marks);
                let oracle = (0..=receiver_last)
                    .take_while(|&q| stored[q as usize])
                    .last()
                    .unwrap();
                assert!(
                    mark <= oracle,
                    "watermark {mark} passes unstored data (oracle {oracle})"
                );
            }
            for (s, sequences) in per_shard.iter().enumerate() {
                if let Some(&last) = sequences.last() {
                    marks.commit(s, last);
                }
            }
            assert_eq!(
                watermark(receiver_last, &routed_last, &marks),
                receiver_last
            );
        }
    }
}
