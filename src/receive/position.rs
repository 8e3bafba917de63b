//! The receiver's position in a JetStream stream: which deliveries to route, which to
//! pass over, and when the stream itself has a gap.
//!
//! ```text
//!   delivery (stream seq s, consumer seq c, delivered d) ──judge──► Route | Pass | Reposition
//!     s ≤ contiguous                      → Pass   (routed, stored or absent already)
//!     s > contiguous + 1, c = c_max + 1, d = 1 → gap [contiguous+1, s-1]: the stream has
//!                                           none of them (deleted, trimmed, purged); stepped over
//!     s > contiguous + 1 otherwise        → Reposition (a delivery was missed: restart the session)
//!     s in skip (stored at start)         → Pass
//!     else                                → Route
//! ```
//!
//! Why a gap can be read off the delivery metadata: a consumer hands out new messages in
//! stream order, each with the next consumer sequence, and redeliveries (`d > 1`) of
//! what it handed out before. So when a first delivery (`d = 1`) follows every earlier
//! delivery of the session (its consumer sequence is one above the highest seen), no
//! message between the last position and it exists in the stream any more. Anything
//! else means a delivery was missed, and the safe answer is to restart delivery at the
//! ack floor, never to freeze or to guess.
//!
//! Passed sequences still carry a current ack subject, so they serve as ack points; the
//! router counts them as handled (see `Router::pass`) so the watermark moves over them.

use crate::durable::stored::{Resume, SeqSet};

use super::nats::jetstream::AckInfo;

/// What to do with one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New: route it; call [`Position::routed`] once it is in a ring.
    Route,
    /// Already routed, stored or absent: do not route; it is an ack point.
    Pass,
    /// Out of order: restart delivery at the ack floor.
    Reposition,
}

/// A gap the stream has: sequences it no longer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// First absent sequence.
    pub first: u64,
    /// Last absent sequence.
    pub last: u64,
}

/// The receiver's position, across connections of one run.
#[derive(Clone, Debug, Default)]
pub struct Position {
    /// Every stream sequence at or below this was routed in this run, is stored, or is
    /// not in the stream. Acks never pass it. Written by `judge` and `routed`.
    contiguous: u64,
    /// Highest consumer sequence seen in the current consumer session.
    consumer_seq_max: u64,
    /// Sequences stored before this run started, above where delivery resumed.
    skip: SeqSet,
    /// Gaps stepped over.
    pub gaps_total: u64,
    /// Sequences in those gaps.
    pub gap_seqs_total: u64,
    /// Deliveries passed over because they were stored before this run.
    pub stored_passed_total: u64,
}

impl Position {
    /// Starts at a resume point read from the store.
    pub fn new(resume: Resume) -> Position {
        Position {
            contiguous: resume.position,
            consumer_seq_max: 0,
            skip: resume.skip,
            ..Position::default()
        }
    }

    /// Every sequence at or below this is routed, stored or absent.
    pub fn contiguous(&self) -> u64 {
        self.contiguous
    }

    /// A consumer session begins whose last delivery had consumer sequence
    /// `consumer_seq` (0 for a consumer just created).
    pub fn new_session(&mut self, consumer_seq: u64) {
        self.consumer_seq_max = consumer_seq;
    }

    /// Judges one delivery; a gap it reveals is returned beside the verdict (and
    /// already stepped over). No allocation.
    pub fn judge(&mut self, info: &AckInfo) -> (Verdict, Option<Gap>) {
        let seq = info.stream_seq;
        let in_order = info.consumer_seq == self.consumer_seq_max + 1;
        let consumer_seq_before = self.consumer_seq_max;
        self.consumer_seq_max = self.consumer_seq_max.max(info.consumer_seq);
        if seq <= self.contiguous {
            return (Verdict::Pass, None);
        }
        let mut gap = None;
        if seq > self.contiguous + 1 {
            if !(in_order && info.delivered == 1) {
                // Keep the highest consumer sequence as it was: the session restarts.
                self.consumer_seq_max = consumer_seq_before;
                return (Verdict::Reposition, None);
            }
            let found = Gap {
                first: self.contiguous + 1,
                last: seq - 1,
            };
            // Stored sequences inside the gap cannot be (the stream has none there),
            // unless they were stored from an older life of the stream; either way they
            // are passed.
            self.gaps_total += 1;
            self.gap_seqs_total += found.last - found.first + 1;
            self.contiguous = found.last;
            gap = Some(found);
        }
        if self.skip.contains(seq) {
            self.contiguous = seq;
            self.skip.remove_through(seq);
            self.stored_passed_total += 1;
            return (Verdict::Pass, gap);
        }
        (Verdict::Route, gap)
    }

    /// The delivery judged `Route` is in its ring.
    pub fn routed(&mut self, seq: u64) {
        debug_assert_eq!(seq, self.contiguous + 1, "routed out of order");
        self.contiguous = seq;
    }

    /// A jump `judge` reported as a gap was the stream's other subject partitions (a
    /// filtered consumer never sees them): take it back out of the gap counts.
    pub fn not_ours(&mut self, gap: Gap) {
        self.gaps_total -= 1;
        self.gap_seqs_total -= gap.last - gap.first + 1;
    }

    /// The consumer's delivery restarts at `start_seq`: what lies below is routed,
    /// acked, stored or absent. Never moves the position back.
    pub fn restart_at(&mut self, start_seq: u64) {
        self.contiguous = self.contiguous.max(start_seq.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    //! Deliveries as nats-server makes them over a stream with deleted messages, stored
    //! ones and redeliveries: every existing unstored message is routed exactly once,
    //! nothing freezes, and a missed delivery asks for a restart.
    use super::*;

    fn delivery(stream_seq: u64, consumer_seq: u64, delivered: u64) -> AckInfo {
        AckInfo {
            stream_seq,
            consumer_seq,
            delivered,
            pending: 0,
            timestamp_ns: 0,
        }
    }

    #[test]
    fn deleted_messages_are_stepped_over_and_stored_ones_passed() {
        let mut skip = SeqSet::new();
        for seq in [6, 7, 12] {
            skip.insert(seq);
        }
        let mut position = Position::new(Resume {
            position: 2,
            skip,
            ..Resume::default()
        });
        position.new_session(0);
        // The stream holds 3, 4, 6, 7, 9, 12, 13 (5, 8, 10, 11 deleted).
        let stream = [3u64, 4, 6, 7, 9, 12, 13];
        let mut routed = Vec::new();
        let mut gaps = Vec::new();
        for (index, &seq) in stream.iter().enumerate() {
            let (verdict, gap) = position.judge(&delivery(seq, index as u64 + 1, 1));
            gaps.extend(gap);
            if verdict == Verdict::Route {
                position.routed(seq);
                routed.push(seq);
            } else {
                assert_eq!(verdict, Verdict::Pass, "{seq}");
            }
        }
        assert_eq!(routed, [3, 4, 9, 13]);
        assert_eq!(
            gaps,
            [
                Gap { first: 5, last: 5 },
                Gap { first: 8, last: 8 },
                Gap {
                    first: 10,
                    last: 11
                }
            ]
        );
        assert_eq!(position.contiguous(), 13);
        assert_eq!(position.gap_seqs_total, 4);
        assert_eq!(position.stored_passed_total, 3);
    }

    #[test]
    fn redeliveries_pass_and_a_missed_delivery_repositions() {
        let mut position = Position::new(Resume::default());
        position.new_session(0);
        for seq in 1..=3 {
            assert_eq!(position.judge(&delivery(seq, seq, 1)).0, Verdict::Route);
            position.routed(seq);
        }
        // A redelivery after ack_wait of something routed: passed.
        assert_eq!(position.judge(&delivery(2, 4, 2)).0, Verdict::Pass);
        // Consumer sequence 5 never arrived, and stream sequence 4 is missing.
        assert_eq!(position.judge(&delivery(5, 6, 1)).0, Verdict::Reposition);
        // A redelivery above the position with a jump: also a reposition.
        assert_eq!(position.judge(&delivery(6, 5, 2)).0, Verdict::Reposition);
        // The session restarts at the ack floor (2): 3 passes, 4 is routed.
        position.restart_at(3);
        position.new_session(0);
        assert_eq!(position.judge(&delivery(3, 1, 1)).0, Verdict::Pass);
        assert_eq!(position.judge(&delivery(4, 2, 1)).0, Verdict::Route);
        position.routed(4);
        assert_eq!(position.gaps_total, 0);
    }

    #[test]
    fn a_purge_while_down_is_one_gap() {
        let mut position = Position::new(Resume {
            position: 100,
            ..Resume::default()
        });
        position.new_session(0);
        let (verdict, gap) = position.judge(&delivery(5001, 1, 1));
        assert_eq!(verdict, Verdict::Route);
        assert_eq!(
            gap,
            Some(Gap {
                first: 101,
                last: 5000
            })
        );
    }
}
