//! The load generator behind `alphapt-storage feed`: realistic JSON ticks from
//! [`SyntheticTicks`], optionally mixed with bad messages, published to NATS at an
//! open-loop rate, through JetStream (every PubAck checked) or core NATS.
//!
//! ```text
//!   SyntheticTicks ──Tick──► model::json (reused buffer) ──► PublishWindow (≤ window PubAcks out) ──► JetStream
//!        schedule: message i is due at start + i / rate          └─ or core PUB (--core) ──────────────────► NATS
//! ```
//!
//! Back-pressure: with JetStream, a full ack window blocks publishing until answers come
//! (at most `ack_timeout` without progress, then an error). The schedule is computed
//! from the start time, never "sleep after each send", so a stall shows as lag behind
//! schedule (reported) and is followed by a catch-up burst, as a real feed would do.
//!
//! The JSON has the shape of the platform's publisher (`shared/bench/python_stack.py`
//! `tick()`, Python's `json.dumps` separators `", "` and `": "`), with the timestamp as
//! ISO-8601 UTC with milliseconds and `Z`:
//!
//! ```text
//! {"instrument_token": 256265, "exchange": "NSE", "tradingsymbol": "SYN00000",
//!  "last_price": 1012.35, "last_quantity": 12, "average_price": 1011.0,
//!  "volume_traded": 123456, "oi": 5, "ohlc": {"open": .., "high": .., "low": .., "close": ..},
//!  "depth": {"buy": [{"price": .., "quantity": .., "orders": ..} ×5], "sell": [.. ×5]},
//!  "timestamp": "2025-11-24T16:00:00.000Z"}
//! ```
//!
//! Prices are printed from the fixed-point integer (shortest decimal with at least one
//! fraction digit, like Python's float repr of a 2-decimal price), never through `f64`.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use crate::model::json::{write_tick_json, write_tick_json_spoiled, write_u64, Spoil};
use crate::model::synthetic::{SplitMix64, SyntheticTicks};
use crate::model::Tick;
use crate::receive::nats::{NatsConn, NatsError, PublishWindow};
use crate::runtime::clock::now_ms;
use crate::shard::parse::encode_kite_full;
use crate::shard::parse::kite::KITE_FULL_BYTES;

/// Highest `--rate`, messages a second: ten times what one loopback publisher reaches.
pub const RATE_MAX: u64 = 10_000_000;
/// Highest `--count`: 10^10 messages, ~4 TB of JSON.
pub const COUNT_MAX: u64 = 10_000_000_000;
/// Highest `--instruments`: more than the NSE and BSE list together.
pub const INSTRUMENTS_MAX: usize = 100_000;
/// Highest `--window` of outstanding PubAcks; each costs ~60 B of server reply buffer.
pub const WINDOW_MAX: usize = 1 << 20;
/// Size of the oversized junk message, before capping at the server's max_payload.
pub const OVERSIZED_BYTES_MAX: usize = 10 << 20;
/// Every this many bad messages, one is oversized: "once in a while".
const OVERSIZED_EVERY: u64 = 100;
/// Sleeping shorter than this overshoots (timer slack ~50 µs); yield instead.
const SLEEP_MIN: Duration = Duration::from_micros(200);

/// The kinds of bad messages `--bad-ratio` mixes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadKind {
    /// The closing `}` replaced by `]`.
    MalformedJson,
    /// `last_price` as a string.
    WrongType,
    /// `last_price` left out.
    MissingField,
    /// `last_price` a million times the real one.
    AbsurdPrice,
    /// The message cut in half.
    Truncated,
    /// Bytes 0xFF 0xFE inside `tradingsymbol`.
    NonUtf8,
    /// Junk of `min(10 MiB, max_payload)` bytes.
    Oversized,
}

/// Number of [`BadKind`]s.
pub const BAD_KINDS: usize = 7;

impl BadKind {
    /// The JSON-level corruption this kind is, if the encoder makes it (the caller
    /// truncates and builds oversized payloads itself).
    pub fn spoil(self) -> Option<Spoil> {
        match self {
            BadKind::MalformedJson => Some(Spoil::MalformedJson),
            BadKind::WrongType => Some(Spoil::WrongType),
            BadKind::MissingField => Some(Spoil::MissingField),
            BadKind::AbsurdPrice => Some(Spoil::AbsurdPrice),
            BadKind::NonUtf8 => Some(Spoil::NonUtf8),
            BadKind::Truncated | BadKind::Oversized => None,
        }
    }

    /// Every kind, in report order.
    pub const ALL: [BadKind; BAD_KINDS] = [
        BadKind::MalformedJson,
        BadKind::WrongType,
        BadKind::MissingField,
        BadKind::AbsurdPrice,
        BadKind::Truncated,
        BadKind::NonUtf8,
        BadKind::Oversized,
    ];

    /// Name in the summary line.
    pub fn name(self) -> &'static str {
        match self {
            BadKind::MalformedJson => "malformed_json",
            BadKind::WrongType => "wrong_type",
            BadKind::MissingField => "missing_field",
            BadKind::AbsurdPrice => "absurd_price",
            BadKind::Truncated => "truncated",
            BadKind::NonUtf8 => "non_utf8",
            BadKind::Oversized => "oversized",
        }
    }
}

/// What to publish and how.
#[derive(Clone, Debug)]
pub struct FeedOptions {
    /// Messages a second, open loop; 0 for as fast as possible.
    pub rate: u64,
    /// Messages to publish, good and bad.
    pub count: u64,
    /// Instruments to cycle through.
    pub instruments: usize,
    /// Fraction of bad messages, in `[0, 1]`.
    pub bad_ratio: f64,
    /// Core NATS instead of JetStream (no PubAcks).
    pub core: bool,
    /// Kite binary frames (one full-mode packet each) instead of JSON.
    pub kite: bool,
    /// Most JetStream publishes awaiting their PubAck.
    pub window: usize,
    /// Subjects are `<subject_prefix>.<exchange>.<token>`, e.g. `market.ticks`.
    pub subject_prefix: String,
    /// Seed of the tick generator and of the bad-message choice.
    pub seed: u64,
    /// Longest wait for any PubAck progress before giving up.
    pub ack_timeout: Duration,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            rate: 0,
            count: 100_000,
            instruments: 100,
            bad_ratio: 0.0,
            core: false,
            kite: false,
            window: 4096,
            subject_prefix: "market.ticks".to_owned(),
            seed: 1,
            ack_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the feed cannot run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// A flag out of range.
    #[error("{flag} {value} is out of range: {fix}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        fix: String,
    },
    /// NATS failed.
    #[error(transparent)]
    Nats(#[from] NatsError),
}

impl FeedOptions {
    /// Checks every flag against its bound.
    pub fn validate(&self) -> Result<(), FeedError> {
        let invalid =
            |flag, value: String, fix: String| Err(FeedError::Invalid { flag, value, fix });
        if self.rate > RATE_MAX {
            return invalid(
                "--rate",
                self.rate.to_string(),
                format!("use 0 (as fast as possible) to {RATE_MAX} msgs/s"),
            );
        }
        if self.count == 0 || self.count > COUNT_MAX {
            return invalid(
                "--count",
                self.count.to_string(),
                format!("use 1 to {COUNT_MAX}"),
            );
        }
        if self.instruments == 0 || self.instruments > INSTRUMENTS_MAX {
            return invalid(
                "--instruments",
                self.instruments.to_string(),
                format!("use 1 to {INSTRUMENTS_MAX}"),
            );
        }
        if !(0.0..=1.0).contains(&self.bad_ratio) {
            return invalid(
                "--bad-ratio",
                self.bad_ratio.to_string(),
                "use a fraction in [0, 1], e.g. 0.01".to_owned(),
            );
        }
        if self.window == 0 || self.window > WINDOW_MAX {
            return invalid(
                "--window",
                self.window.to_string(),
                format!("use 1 to {WINDOW_MAX}"),
            );
        }
        if !crate::receive::nats::wire::is_valid_subject(self.subject_prefix.as_bytes()) {
            return invalid(
                "subject prefix",
                self.subject_prefix.clone(),
                "use dot-separated tokens without spaces or wildcards".to_owned(),
            );
        }
        Ok(())
    }
}

/// What a feed run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeedReport {
    /// Messages published, good and bad.
    pub published: u64,
    /// PubAcks saying stored (JetStream only).
    pub acked: u64,
    /// PubAcks with an error (JetStream only).
    pub errors: u64,
    /// The first PubAck error.
    pub first_error: Option<String>,
    /// Highest stream sequence acknowledged.
    pub seq_last: u64,
    /// Payload bytes published, good and bad.
    pub payload_bytes: u64,
    /// Bad messages published, per kind, in [`BadKind::ALL`] order.
    pub bad: [u64; BAD_KINDS],
    /// Wall time from the first publish to the last answer.
    pub seconds: f64,
    /// Largest lag behind the open-loop schedule (0 when unlimited).
    pub lag_max: Duration,
    /// Whether it went through core NATS.
    pub core: bool,
}

impl FeedReport {
    /// Messages a second over the run.
    pub fn rate(&self) -> f64 {
        self.published as f64 / self.seconds.max(1e-9)
    }

    /// One line: published, acked, errors, bad by kind, seconds, msgs/s.
    pub fn summary_line(&self) -> String {
        let bad: u64 = self.bad.iter().sum();
        let kinds: Vec<String> = BadKind::ALL
            .iter()
            .zip(self.bad)
            .map(|(kind, count)| format!("{}={count}", kind.name()))
            .collect();
        format!(
            "feed {}: published {} (avg {} B) acked {} errors {} bad {} [{}] in {:.2} s = {:.0} msgs/s, lag max {:.1} ms{}",
            if self.core { "core" } else { "jetstream" },
            self.published,
            self.payload_bytes / self.published.max(1),
            self.acked,
            self.errors,
            bad,
            kinds.join(" "),
            self.seconds,
            self.rate(),
            self.lag_max.as_secs_f64() * 1e3,
            self.first_error.as_ref().map(|e| format!(", first error: {e}")).unwrap_or_default(),
        )
    }
}

/// Deterministic choice of which messages are bad and how.
#[derive(Debug)]
struct BadPlan {
    /// Random source, seeded from the options.
    rng: SplitMix64,
    /// A message is bad when a draw is below this (`ratio × 2^64`).
    threshold: u64,
    /// Whether every message is bad (`ratio == 1`, which `threshold` cannot express).
    always: bool,
    /// Bad messages chosen so far.
    chosen: u64,
}

impl BadPlan {
    fn new(ratio: f64, seed: u64) -> BadPlan {
        BadPlan {
            rng: SplitMix64::new(seed ^ 0x5bad_5eed),
            threshold: (ratio * 18_446_744_073_709_551_616.0) as u64,
            always: ratio >= 1.0,
            chosen: 0,
        }
    }

    /// The kind of the next message if it is to be bad.
    fn next(&mut self) -> Option<BadKind> {
        if !self.always && self.rng.next_u64() >= self.threshold {
            return None;
        }
        self.chosen += 1;
        if self.chosen % OVERSIZED_EVERY == OVERSIZED_EVERY - 1 {
            return Some(BadKind::Oversized);
        }
        Some(BadKind::ALL[(self.chosen % (BAD_KINDS as u64 - 1)) as usize])
    }
}

/// Publishes `options.count` ticks on `conn`. The stream must exist (JetStream mode).
pub fn run(conn: &mut NatsConn, options: &FeedOptions) -> Result<FeedReport, FeedError> {
    options.validate()?;
    let mut ticks = SyntheticTicks::new(options.instruments, options.seed);
    let mut plan = BadPlan::new(options.bad_ratio, options.seed);
    let mut window = if options.core {
        None
    } else {
        Some(PublishWindow::new(conn, options.window)?)
    };
    let oversized = if options.bad_ratio > 0.0 {
        junk(OVERSIZED_BYTES_MAX.min(conn.payload_bytes_max()))
    } else {
        Vec::new()
    };
    let mut payload = Vec::with_capacity(4096);
    let mut subject = Vec::with_capacity(128);
    let mut report = FeedReport {
        core: options.core,
        ..FeedReport::default()
    };
    let start = Instant::now();
    for index in 0..options.count {
        if options.rate > 0 {
            let due = start
                + Duration::from_nanos(
                    (u128::from(index) * 1_000_000_000 / u128::from(options.rate)) as u64,
                );
            pace(conn, due, &mut report.lag_max)?;
        }
        let tick = ticks.next_tick(now_ms(), 0, 0);
        let bad = plan.next();
        payload.clear();
        match bad {
            Some(BadKind::Oversized) => payload.extend_from_slice(&oversized),
            Some(BadKind::Truncated) => {
                write_good(&mut payload, &tick, options.kite);
                payload.truncate(payload.len() / 2);
            }
            None => write_good(&mut payload, &tick, options.kite),
            other => write_tick_json_spoiled(&mut payload, &tick, other.and_then(BadKind::spoil)),
        }
        if let Some(kind) = bad {
            report.bad[kind as usize] += 1;
        }
        subject.clear();
        subject.extend_from_slice(options.subject_prefix.as_bytes());
        subject.push(b'.');
        subject.extend_from_slice(tick.exchange.as_bytes());
        subject.push(b'.');
        write_u64(&mut subject, u64::from(tick.instrument_token));
        match window.as_mut() {
            Some(window) => window.publish(conn, &subject, &payload, options.ack_timeout)?,
            None => conn.publish(&subject, None, &payload)?,
        }
        report.published += 1;
        report.payload_bytes += payload.len() as u64;
    }
    match window.as_mut() {
        Some(window) => {
            let counts = window.finish(conn, options.ack_timeout)?;
            report.acked = counts.acked;
            report.errors = counts.errors;
            report.seq_last = counts.seq_last;
            report.first_error = counts.first_error.clone();
        }
        // PONG after our PING means the server has read every PUB before it.
        None => conn.round_trip(options.ack_timeout)?,
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Waits until `due` (flushing first, so what is queued leaves on time), or records how
/// far behind schedule we are.
fn pace(conn: &mut NatsConn, due: Instant, lag_max: &mut Duration) -> Result<(), NatsError> {
    let now = Instant::now();
    if now >= due {
        *lag_max = (*lag_max).max(now - due);
        return Ok(());
    }
    conn.flush()?;
    // Loop bound: ends at `due`; each pass sleeps or yields.
    loop {
        let now = Instant::now();
        if now >= due {
            return Ok(());
        }
        if due - now >= SLEEP_MIN {
            std::thread::sleep(due - now - SLEEP_MIN / 2);
        } else {
            std::thread::yield_now();
        }
    }
}

/// A good message: the platform's JSON, or a Kite WebSocket frame holding one
/// full-mode packet (`int16 count = 1`, `int16 length = 184`, the packet; big-endian).
fn write_good(out: &mut Vec<u8>, tick: &Tick, kite: bool) {
    if !kite {
        return write_tick_json(out, tick);
    }
    let mut packet = [0u8; KITE_FULL_BYTES];
    encode_kite_full(tick, &mut packet);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(KITE_FULL_BYTES as u16).to_be_bytes());
    out.extend_from_slice(&packet);
}

/// A junk payload of `bytes` bytes: printable, not JSON.
fn junk(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| b"junk{[\"x"[i % 8]).collect()
}

#[cfg(test)]
mod tests {
    //! The encoder against serde_json as the oracle; prices and dates against known text.
    use super::*;

    #[test]
    fn bad_plan_is_deterministic_and_near_its_ratio() {
        let draw = |ratio| {
            let mut plan = BadPlan::new(ratio, 3);
            let mut counts = [0u64; BAD_KINDS];
            for _ in 0..100_000 {
                if let Some(kind) = plan.next() {
                    counts[kind as usize] += 1;
                }
            }
            counts
        };
        assert_eq!(draw(0.1), draw(0.1));
        let total: u64 = draw(0.1).iter().sum();
        assert!((9_000..11_000).contains(&total), "{total}");
        assert!(draw(0.1).iter().all(|&n| n > 0));
        assert_eq!(draw(0.0).iter().sum::<u64>(), 0);
        assert_eq!(draw(1.0).iter().sum::<u64>(), 100_000);
    }

    #[test]
    fn flags_are_bounded() {
        let ok = FeedOptions::default();
        assert!(ok.validate().is_ok());
        for bad in [
            FeedOptions {
                bad_ratio: 1.5,
                ..ok.clone()
            },
            FeedOptions {
                bad_ratio: f64::NAN,
                ..ok.clone()
            },
            FeedOptions {
                count: 0,
                ..ok.clone()
            },
            FeedOptions {
                rate: RATE_MAX + 1,
                ..ok.clone()
            },
            FeedOptions {
                instruments: 0,
                ..ok.clone()
            },
            FeedOptions {
                window: 0,
                ..ok.clone()
            },
        ] {
            let text = bad.validate().unwrap_err().to_string();
            assert!(text.contains("out of range"), "{text}");
            assert!(!text.contains('\n'));
        }
    }
}
