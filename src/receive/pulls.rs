//! What this session's pull requests may still deliver, so the unacknowledged window
//! holds when pulls overlap.
//!
//! ```text
//!   pull(batch) ──► live: `outstanding`, given up on our clock at `expires_at`
//!                      │ our clock passes `expires_at` with some left
//!                      ▼
//!                   late: that remainder, until the server ends the request
//!                   (a 408 naming what it had left), or LATE_GRACE later once
//!                   nothing came for QUIET (2.9 may drop it without a word)
//!
//!   window room = max_ack_pending − unacked − late
//! ```
//!
//! Why a pull outlives our clock: the server's clock for a request starts when the
//! request arrives, after ours, and nats-server 2.9 drops an expired request silently
//! when it meets one while delivering, so the receiver gives a pull up on its own clock
//! (otherwise a pull cut short would stall delivery) and pulls again while the server
//! may still deliver on the last. The 408 that ends the old request then comes after
//! the new one went out. Before this count, that 408 zeroed the new pull's count, a
//! third pull went out, and pulls piled up: with each pull reaching the server 30 ms
//! late, a window test saw 4,764 and 6,077 messages delivered over a 4,000 bound.
//!
//! The server serves open requests round robin (2.9 moves a request with some left to
//! the back of its queue), so a delivery cannot be told apart by request. What is kept
//! exact is the sum over all open requests: a delivery takes one from `outstanding`
//! first, then from `late`, so the live pull ends as soon as a batch has come and the
//! next goes out (counting late first let a silently dropped request's remainder soak
//! up each new pull's deliveries, so every pull ran to its 100 ms expiry: ~9k
//! messages/s, seen in CI). A request the server ends with n left takes n off `late`
//! first (the oldest end first), then `outstanding`. Two steps guess:
//! - dropping `late` once the grace has passed and nothing came for [`QUIET`]. It errs
//!   toward too few in flight when the server was only slow (one 2 ms empty poll as the
//!   rule, with each pull reaching the server 30 ms late, let 11-178 messages past a
//!   2,000 window; 100 ms of quiet, none in eight runs). The server may still send the
//!   408 of a request so dropped (2.9 sends one when the next request arrives), and
//!   its count must not come off a later pull: the next such statuses are taken as
//!   theirs and their counts ignored, which errs toward too many;
//! - a status without a count (2.9's 408s all carry one) ends a whole request: the
//!   late count when it was the last late one, else the live pull.
//!
//! What no count on this side bounds: a server that stalls for seconds with several of
//! our pulls unread in its socket starts their clocks together (seen once under two
//! CPU hogs: nats-server logged a 7 s read loop, and 5,827 messages came over a 2,000
//! window). Nothing is lost; what does not fit waits in the socket (back-pressure).

use std::time::{Duration, Instant};

/// How long after our clock gave a pull up its remainder still counts, unless the
/// server ends it first. The server's clock starts when the request arrives; 50 ms
/// covers that way on a starved host (the drain's own wait is shorter: there a late
/// delivery is only passed over, here it would overshoot the window).
pub const LATE_GRACE: Duration = Duration::from_millis(50);

/// How long nothing must have come before a late remainder is dropped. Long: what a
/// request delivered before the server expired it can still be on its way (a starved
/// server flushes late), and a drop too soon lets the next pull overshoot; with a
/// 30 ms late way to the server, 20 ms still let 1-162 messages past a 2,000 window.
/// The wait costs nothing unless the window is that tight: by default it holds
/// hundreds of pulls.
pub const QUIET: Duration = Duration::from_millis(100);

/// Most requests dropped on the quiet rule whose status is still awaited. A request
/// the server dropped silently never reports, so the count is capped; two pulls at
/// most are open at once.
const UNREPORTED_MAX: u32 = 4;

/// The pull requests of one session (see the module doc).
#[derive(Debug)]
pub struct Pulls {
    /// What the live pull may still bring (0: none live).
    outstanding: u64,
    /// When the live (or last) pull ends on our clock.
    expires_at: Instant,
    /// What pulls given up on our clock may still bring.
    late: u64,
    /// How many requests `late` counts.
    late_requests: u32,
    /// When `late` may be dropped on a quiet socket.
    late_until: Instant,
    /// When a poll last handed over anything of ours (a delivery, a status).
    last_heard: Instant,
    /// Requests dropped from `late` on a quiet socket whose status may still come.
    unreported: u32,
}

impl Pulls {
    /// No pull sent yet.
    pub fn new(now: Instant) -> Self {
        Self {
            outstanding: 0,
            expires_at: now,
            late: 0,
            late_requests: 0,
            late_until: now,
            last_heard: now,
            unreported: 0,
        }
    }

    /// A pull for `batch` went out; our clock ends it at `expires_at`.
    pub fn sent(&mut self, batch: u64, expires_at: Instant) {
        self.outstanding = batch;
        self.expires_at = expires_at;
    }

    /// A pull is live: the next one waits for it.
    pub fn live(&self) -> bool {
        self.outstanding > 0
    }

    /// What pulls given up on our clock may still bring: held out of the window.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// When the last pull ends on our clock.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Nothing more can come on any pull of this session.
    pub fn none_open(&self) -> bool {
        self.outstanding == 0 && self.late == 0
    }

    /// One delivery (routed, passed over or refused) came on some open pull. The live
    /// pull's count goes first: it must end when a batch has come, whatever request the
    /// server served it on, or pulls stall to one per expiry.
    pub fn delivered(&mut self) {
        if self.outstanding > 0 {
            self.outstanding -= 1;
        } else if self.late > 0 {
            self.late -= 1;
            if self.late == 0 {
                // Every late request delivered its batch: none will report.
                self.late_requests = 0;
            }
        }
    }

    /// The server ended a request (a status other than 100), with `pending` of its
    /// batch undelivered when it says so. Requests end in the order they expire: one
    /// dropped on the quiet rule first, then a late one, then the live pull.
    pub fn ended(&mut self, pending: Option<u64>) {
        if self.unreported > 0 {
            // Its remainder went with the drop.
            self.unreported -= 1;
            return;
        }
        let late_one = self.late_requests > 0;
        if late_one {
            self.late_requests -= 1;
        }
        match pending {
            Some(left) => {
                let over = left.saturating_sub(self.late);
                self.late -= left.min(self.late);
                self.outstanding = self.outstanding.saturating_sub(over);
            }
            None if late_one => {
                if self.late_requests == 0 {
                    self.late = 0;
                }
            }
            None => self.outstanding = 0,
        }
        if self.late == 0 {
            self.late_requests = 0;
        }
    }

    /// Gives the live pull up when our clock passes its expiry: without this, a pull
    /// cut short by back-pressure and dropped silently by the server would stall
    /// delivery. Its remainder counts as late.
    pub fn expire(&mut self, now: Instant) {
        if self.outstanding > 0 && now >= self.expires_at {
            self.late += self.outstanding;
            self.late_requests += 1;
            self.outstanding = 0;
            self.late_until = self.expires_at + LATE_GRACE;
        }
    }

    /// After a poll that ended at `now` and `heard` something of ours (or held it):
    /// past the grace, with nothing heard for [`QUIET`], the server has ended the
    /// late pulls and nothing they sent is still unread.
    pub fn polled(&mut self, now: Instant, heard: bool) {
        if heard {
            self.last_heard = now;
            return;
        }
        if self.late > 0 && now >= self.late_until && now >= self.last_heard + QUIET {
            self.late = 0;
            self.unreported = (self.unreported + self.late_requests).min(UNREPORTED_MAX);
            self.late_requests = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn expired_pull(batch: u64, delivered: u64) -> (Pulls, Instant) {
        let t0 = Instant::now();
        let mut pulls = Pulls::new(t0);
        pulls.sent(batch, t0 + 100 * MS);
        for _ in 0..delivered {
            pulls.delivered();
        }
        pulls.expire(t0 + 100 * MS);
        (pulls, t0 + 100 * MS)
    }

    #[test]
    fn a_whole_batch_ends_the_pull_without_a_late_remainder() {
        let (pulls, _) = expired_pull(10, 10);
        assert!(!pulls.live());
        assert!(pulls.none_open());
        assert_eq!(pulls.late(), 0);
    }

    #[test]
    fn our_clock_moves_the_remainder_to_late_and_frees_the_next_pull() {
        let t0 = Instant::now();
        let mut pulls = Pulls::new(t0);
        pulls.sent(10, t0 + 100 * MS);
        pulls.expire(t0 + 99 * MS);
        assert!(pulls.live(), "not before its expiry");
        pulls.delivered();
        pulls.expire(t0 + 100 * MS);
        assert!(!pulls.live());
        assert_eq!(pulls.late(), 9);
        assert!(!pulls.none_open());
    }

    #[test]
    fn the_old_requests_408_after_the_next_pull_leaves_the_next_pull_counted() {
        // The pile-up this module exists for: a 408 for the given-up pull arriving
        // after the next pull went out must not end the next one.
        let (mut pulls, at) = expired_pull(1000, 0);
        pulls.sent(1000, at + 100 * MS);
        pulls.ended(Some(1000));
        assert_eq!(pulls.late(), 0);
        assert!(pulls.live(), "the new pull is still open");
        pulls.ended(Some(1000));
        assert!(pulls.none_open());
    }

    #[test]
    fn deliveries_count_against_the_live_pull_first_and_a_408_takes_what_it_names() {
        let (mut pulls, at) = expired_pull(1000, 400);
        pulls.sent(1000, at + 100 * MS);
        for _ in 0..700 {
            pulls.delivered();
        }
        // Round robin: 350 of those were the old request's, so it ends with 250 left;
        // the live one has 650 to come, and the sum (300 + 600) holds that and more.
        assert_eq!(pulls.late(), 600);
        pulls.ended(Some(250));
        assert_eq!(pulls.late(), 350, "the 408 takes its count off late");
        assert!(pulls.live());
        for _ in 0..300 {
            pulls.delivered();
        }
        assert!(!pulls.live(), "a whole batch came: the next pull may go");
        assert_eq!(
            pulls.late(),
            350,
            "held out of the window until the quiet rule"
        );
        // More left than counted late: the rest comes off the live pull's count.
        let (mut pulls, at) = expired_pull(1000, 400);
        pulls.sent(1000, at + 100 * MS);
        pulls.ended(Some(700));
        assert_eq!(pulls.late(), 0);
        assert!(pulls.live(), "900 still counted live");
        pulls.ended(Some(900));
        assert!(pulls.none_open());
    }

    #[test]
    fn a_remainder_dropped_silently_never_slows_the_next_pulls() {
        // The server dropped the old request with 600 left and no 408; deliveries flow
        // on, so the socket is never quiet. Each new pull must still end after its
        // batch, not at its expiry.
        let (mut pulls, at) = expired_pull(1000, 400);
        for round in 0..5u32 {
            pulls.sent(1000, at + (round + 1) * 100 * MS);
            for _ in 0..1000 {
                assert!(pulls.live(), "round {round}");
                pulls.delivered();
                pulls.polled(at + round * 100 * MS, true);
            }
            assert!(
                !pulls.live(),
                "round {round}: the batch came, the pull is over"
            );
        }
        assert_eq!(pulls.late(), 600, "only the window is the smaller for it");
    }

    #[test]
    fn a_status_without_a_count_ends_the_oldest_whole_request() {
        let (mut pulls, at) = expired_pull(10, 0);
        pulls.sent(10, at + 100 * MS);
        pulls.expire(at + 100 * MS);
        pulls.sent(10, at + 200 * MS);
        assert_eq!(pulls.late(), 20);
        pulls.ended(None);
        assert_eq!(
            pulls.late(),
            20,
            "one of two late requests ended: keep counting"
        );
        pulls.ended(None);
        assert_eq!(pulls.late(), 0);
        assert!(pulls.live());
        pulls.ended(None);
        assert!(pulls.none_open());
    }

    #[test]
    fn late_is_dropped_only_after_a_quiet_spell_past_the_grace() {
        let (mut pulls, at) = expired_pull(10, 0);
        pulls.polled(at + LATE_GRACE - MS, false);
        assert_eq!(pulls.late(), 10, "too early");
        pulls.polled(at + LATE_GRACE - MS, true);
        pulls.polled(at + LATE_GRACE, false);
        assert_eq!(pulls.late(), 10, "something came just before");
        pulls.polled(at + LATE_GRACE + QUIET - 2 * MS, false);
        assert_eq!(pulls.late(), 10, "not quiet for long enough");
        pulls.polled(at + LATE_GRACE + QUIET - MS, false);
        assert_eq!(pulls.late(), 0);
    }

    #[test]
    fn a_408_after_the_quiet_drop_does_not_take_the_next_pulls_count() {
        // 2.9 sends the old request's 408 when the next request reaches it, after the
        // quiet rule dropped the old remainder: that count must not come off again.
        let (mut pulls, at) = expired_pull(2000, 1878);
        pulls.polled(at + LATE_GRACE, false);
        assert!(pulls.none_open());
        pulls.sent(122, at + LATE_GRACE + 100 * MS);
        pulls.ended(Some(122));
        assert!(pulls.live(), "the new pull still has 122 to bring");
        pulls.ended(Some(122));
        assert!(pulls.none_open(), "its own 408 ends it");
    }

    #[test]
    fn a_late_pull_that_delivers_its_batch_reports_nothing() {
        let (mut pulls, at) = expired_pull(10, 4);
        pulls.sent(10, at + 100 * MS);
        for _ in 0..16 {
            pulls.delivered();
        }
        assert!(pulls.none_open(), "16 came: both batches");
        pulls.sent(10, at + 200 * MS);
        pulls.ended(Some(10));
        assert!(pulls.none_open(), "the next status is the live pull's");
    }

    #[test]
    fn a_second_pull_given_up_adds_to_late_and_moves_the_grace() {
        let (mut pulls, at) = expired_pull(10, 0);
        pulls.sent(10, at + 100 * MS);
        pulls.expire(at + 100 * MS);
        assert_eq!(pulls.late(), 20);
        pulls.polled(at + LATE_GRACE, false);
        assert_eq!(pulls.late(), 20, "the second pull's grace counts");
        pulls.polled(at + 100 * MS + LATE_GRACE, false);
        assert!(pulls.none_open());
    }
}
