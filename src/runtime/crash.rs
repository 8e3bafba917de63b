//! Deterministic crash points for the fault tests: the process kills itself with
//! SIGKILL at a named moment, exactly as `kill -9` would, but at a moment a test can
//! choose instead of hitting it by chance. One point is a failure instead of a crash:
//! a disk that refuses a sync cannot be had on demand, so `marks_sync_error` makes the
//! n-th sync of replayed marks report EIO, and the run goes on.
//!
//! ```text
//!   ALPHAPT_CRASH_AT=<point>:<n>  ──arm (once, at start)──► ARMED = point, n
//!   writer: INSERT sent part-way ──► reached(MidInsert)       ─┐  the n-th pass of the
//!   writer: INSERT committed     ──► reached(InsertCommitted) ─┼─ armed point: SIGKILL
//!   writer: spill synced         ──► reached(SpillSynced)     ─┤  to itself
//!   inserter: marks in the map   ──► reached(MarksUnsynced)   ─┘
//!   journal: a replayed mark's   ──► fails(MarksSyncError) ──► the n-th pass: EIO
//!   sync (inserter or replay)
//!   run: start                   ──► armed(Panic) ──► panic! with clear-text secrets
//! ```
//!
//! Each point sits between a durable step and the step that acknowledges it, where a
//! crash is most likely to double or lose a message. Unarmed, a point costs one
//! relaxed load per INSERT (never per message). Armed, the run logs a warning at start
//! so that a forgotten variable on a production host is seen.

use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a crash point.
pub const CRASH_AT_VAR: &str = "ALPHAPT_CRASH_AT";

/// The moments a crash can be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Part of an INSERT's data is on the wire, its end marker is not.
    MidInsert = 1,
    /// An INSERT committed; its sequences are not yet marked durable (not acked).
    InsertCommitted = 2,
    /// A batch is synced into the spill; not yet marked durable (not acked).
    SpillSynced = 3,
    /// At the start of `run`: a panic whose message holds the connection settings in
    /// clear text, the worst a bug could print; the test checks they come out as `***`.
    Panic = 4,
    /// A journal-first INSERT's records are marked replayed in the journal's mapping;
    /// the marks are not yet synced and emptied segments not yet deleted.
    MarksUnsynced = 5,
    /// Not a crash: the n-th sync of replayed marks fails as a disk would (EIO).
    MarksSyncError = 6,
}

const POINTS: [(Point, &str); 6] = [
    (Point::MidInsert, "mid_insert"),
    (Point::InsertCommitted, "insert_committed"),
    (Point::SpillSynced, "spill_synced"),
    (Point::Panic, "panic"),
    (Point::MarksUnsynced, "marks_unsynced"),
    (Point::MarksSyncError, "marks_sync_error"),
];

/// Armed point in the high 32 bits, passes left before the crash in the low 32; 0 when
/// nothing is armed.
static ARMED: AtomicU64 = AtomicU64::new(0);

/// Reads [`CRASH_AT_VAR`] and arms its point. `Ok(None)` when unset; an error names
/// what is wrong with the value and the accepted forms.
pub fn arm_from_env() -> Result<Option<(Point, u32)>, String> {
    let Some(value) = std::env::var_os(CRASH_AT_VAR) else {
        return Ok(None);
    };
    let value = value.to_string_lossy();
    let (point, n) = parse(&value)?;
    ARMED.store(((point as u64) << 32) | u64::from(n), Ordering::Relaxed);
    Ok(Some((point, n)))
}

/// Parses `<point>:<n>`, `n ≥ 1`.
pub fn parse(value: &str) -> Result<(Point, u32), String> {
    let names = POINTS.map(|(_, name)| name).join(", ");
    let (name, count) = value.split_once(':').ok_or_else(|| {
        format!("{CRASH_AT_VAR}={value:?}: expected <point>:<n>, a point among {names} and the pass to crash at (1 or more); unset it to run normally")
    })?;
    let point = POINTS
        .iter()
        .find(|(_, known)| *known == name)
        .map(|(point, _)| *point)
        .ok_or_else(|| {
            format!("{CRASH_AT_VAR}={value:?}: unknown point {name:?}; known points: {names}")
        })?;
    let n = count
        .parse::<u32>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| {
            format!(
                "{CRASH_AT_VAR}={value:?}: the pass {count:?} must be a whole number from 1 to {}",
                u32::MAX
            )
        })?;
    Ok((point, n))
}

/// Name of `point` as the variable spells it.
pub fn name(point: Point) -> &'static str {
    POINTS
        .iter()
        .find(|(known, _)| *known == point)
        .map_or("?", |(_, name)| name)
}

/// True when `point` is armed (a caller can prepare what the crash must show, such as
/// data already on the wire).
#[inline]
pub fn armed(point: Point) -> bool {
    ARMED.load(Ordering::Relaxed) >> 32 == point as u64
}

/// Passes `point`: kills the process when it is the armed point's n-th pass.
#[inline]
pub fn reached(point: Point) {
    if passes_nth(point) {
        crash();
    }
}

/// Passes `point`: true on the armed point's n-th pass only, where the caller fails as
/// the real operation could (for [`Point::MarksSyncError`]).
#[inline]
pub fn fails(point: Point) -> bool {
    passes_nth(point)
}

/// Counts a pass of `point`; true when it is the armed point's n-th.
#[inline]
fn passes_nth(point: Point) -> bool {
    let armed = ARMED.load(Ordering::Relaxed);
    armed >> 32 == point as u64 && count_down(armed)
}

#[cold]
fn count_down(mut armed: u64) -> bool {
    loop {
        let left = armed & u64::from(u32::MAX);
        if left == 0 {
            return false; // The n-th pass was another's (a crash under way, or done).
        }
        let next = armed - 1;
        match ARMED.compare_exchange(armed, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return left == 1,
            Err(now) if now >> 32 == armed >> 32 => armed = now,
            Err(_) => return false,
        }
    }
}

#[allow(unsafe_code)] // One libc call: the signal a test would send from outside.
fn crash() -> ! {
    eprintln!("alphapt-storage: {CRASH_AT_VAR} reached; killing the process (SIGKILL)");
    // SAFETY: kill(2) on our own pid with a constant signal has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught; this only runs if the kill itself failed.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_or_name_what_is_wrong() {
        assert_eq!(parse("mid_insert:1"), Ok((Point::MidInsert, 1)));
        assert_eq!(parse("spill_synced:40"), Ok((Point::SpillSynced, 40)));
        assert_eq!(parse("insert_committed:7"), Ok((Point::InsertCommitted, 7)));
        assert_eq!(parse("marks_unsynced:2"), Ok((Point::MarksUnsynced, 2)));
        assert_eq!(parse("marks_sync_error:1"), Ok((Point::MarksSyncError, 1)));
        for (bad, says) in [
            ("mid_insert", "expected <point>:<n>"),
            ("nowhere:1", "unknown point \"nowhere\""),
            ("mid_insert:0", "whole number from 1"),
            ("mid_insert:-3", "whole number from 1"),
            ("mid_insert:x", "whole number from 1"),
            ("", "expected <point>:<n>"),
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad:?}: {error}");
            assert!(error.contains(CRASH_AT_VAR), "{error}");
        }
        for (point, text) in POINTS {
            assert_eq!(name(point), text);
        }
    }

    #[test]
    fn an_unarmed_or_other_point_passes() {
        // Nothing armed in unit tests: every point passes.
        reached(Point::MidInsert);
        reached(Point::InsertCommitted);
        reached(Point::SpillSynced);
        reached(Point::MarksUnsynced);
        assert!(!fails(Point::MarksSyncError));
    }
}
