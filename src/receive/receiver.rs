//! The receiver thread: pulls messages from a JetStream durable consumer (or a core
//! NATS subscription), routes each by the instrument token in its subject, and acks
//! JetStream up to the durable watermark.
//!
//! ```text
//!   JetStream ──pull(batch, expires)──► receiver ──route(shard_of(token))──► frame rings
//!             ◄──+ACK on the reply of the last remembered seq ≤ watermark (AckAll)
//! ```
//!
//! Flow control: one pull request is outstanding at a time, for at most
//! `fetch_batch_max` messages, and only while the unacknowledged window leaves room
//! (the server enforces `max_ack_pending` too). A full ring blocks `route`, so the
//! receiver stops reading its socket; JetStream holds the rest. On core NATS there is
//! no upstream store: a full ring drops the message and counts it (`dropped_total`),
//! because not reading the socket would only make the server drop far more when it
//! closes the connection as a slow consumer.
//!
//! Acks: AckAll on message `m` acks every delivery up to `m`. The receiver remembers the
//! reply subject of one message in [`ACK_MARK_EVERY`] (and the last of every poll) in a
//! fixed ring, and acks the newest remembered one at or below the watermark. Must
//! never: parse payloads, ack what is not durable, drop a JetStream message.
//!
//! Reconnects: a connection lost after start is re-established with capped, jittered
//! backoff. The JetStream state (what was routed, contiguously, and the counts) carries
//! over; the consumer restarts delivery at its ack floor, deliveries already routed are
//! skipped (but serve as fresh ack points), so a nats-server restart neither loses nor
//! doubles a message. Core NATS resubscribes; what was published meanwhile is gone.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::native::Backoff;
use crate::pipeline::{shard_of, Router};
use crate::ring::Kind;

use super::nats::jetstream::{ack, parse_ack_subject, ConsumerSpec, JetStream};
use super::nats::wire::ServerOp;
use super::nats::{NatsConn, NatsError};

/// One message in this many leaves its ack subject behind as an ack point.
pub const ACK_MARK_EVERY: u64 = 256;
/// Ack points kept: 4,096 × 256 messages covers a million unacked messages.
pub const ACK_MARKS_MAX: usize = 4096;
/// Longest JetStream ack reply subject we keep (`$JS.ACK.<stream>.<consumer>.` + 7
/// numbers, or the 12-token form with domain and account hash).
pub const ACK_SUBJECT_BYTES_MAX: usize = 192;
/// How often acks go out when the watermark moved. Short: nats-server 2.9 delivers
/// markedly faster with a small pending set (receiver budget: 20 ms gave 0.78 of a
/// bare subscriber acking every pull, 1-2 ms about 0.87), and an ack is one small
/// PUB sent only when there is something new to acknowledge.
pub const ACK_INTERVAL: Duration = Duration::from_millis(1);
/// A pull request ends after this long even when fewer messages came, so a drain
/// waits at most this for the last deliveries (JetStream 2.9 cannot cancel a pull).
/// Short, because every drain pays it once per idle stream; an idle consumer then
/// sends ~10 small pull requests a second, nothing beside the message flow.
const PULL_EXPIRES: Duration = Duration::from_millis(100);
/// How long one socket poll waits when nothing is buffered.
const POLL_TIMEOUT: Duration = Duration::from_millis(2);

/// Where the receiver reads from.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// `nats://host:port`.
    pub url: String,
    /// JetStream, or plain subscriptions.
    pub jetstream: bool,
    /// What the messages are: ticks or strategy signals.
    pub kind: Kind,
    /// Stream of ticks.
    pub stream: String,
    /// Subjects of the stream (and the core subscription).
    pub subject: String,
    /// Durable consumer name.
    pub durable: String,
    /// Most messages per pull request.
    pub fetch_batch_max: u32,
    /// Redelivery delay of unacked messages.
    pub ack_wait: Duration,
    /// Most unacked messages in flight.
    pub max_ack_pending: u32,
    /// Connect and JetStream API timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the last acks when draining.
    pub drain_timeout: Duration,
    /// Stop after routing this many messages, then drain (benchmarks, replays of a
    /// known range); `None` runs until a drain request.
    pub count: Option<u64>,
}

/// What the receiver did, for the final summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReceiverReport {
    /// Messages routed to shards.
    pub routed: u64,
    /// Highest sequence acknowledged (JetStream).
    pub acked: u64,
    /// Messages dropped (core NATS only: a full ring, a drain, or past `count`).
    pub dropped: u64,
}

/// A remembered ack point.
#[derive(Clone, Copy)]
struct AckMark {
    seq: u64,
    len: u8,
    subject: [u8; ACK_SUBJECT_BYTES_MAX],
}

/// Fixed-capacity ack points, oldest first.
struct AckMarks {
    marks: VecDeque<AckMark>,
    /// The newest delivery, always a candidate at the end of a poll (`seq` 0: none).
    /// Overwritten in place for every delivery: building a whole mark per message
    /// would copy ~400 bytes where the reply subject is ~100.
    latest: AckMark,
}

impl Default for AckMarks {
    fn default() -> AckMarks {
        AckMarks::new()
    }
}

impl AckMarks {
    fn new() -> AckMarks {
        AckMarks {
            marks: VecDeque::with_capacity(ACK_MARKS_MAX),
            latest: AckMark {
                seq: 0,
                len: 0,
                subject: [0; ACK_SUBJECT_BYTES_MAX],
            },
        }
    }

    fn note(&mut self, seq: u64, reply: &[u8]) {
        if reply.len() > ACK_SUBJECT_BYTES_MAX {
            return;
        }
        self.latest.seq = seq;
        self.latest.len = reply.len() as u8;
        self.latest.subject[..reply.len()].copy_from_slice(reply);
        if seq % ACK_MARK_EVERY == 0 {
            self.keep(self.latest);
        }
    }

    fn keep(&mut self, mark: AckMark) {
        if self.marks.back().is_some_and(|m| m.seq >= mark.seq) {
            return;
        }
        if self.marks.len() == ACK_MARKS_MAX {
            // Dropping the oldest only delays acks (a newer point is used once the
            // watermark passes it); it never acks too much.
            self.marks.pop_front();
        }
        self.marks.push_back(mark);
    }

    /// Forgets every point (their ack subjects may name a consumer since recreated).
    fn clear(&mut self) {
        self.marks.clear();
        self.latest.seq = 0;
    }

    fn end_of_poll(&mut self) {
        if self.latest.seq != 0 {
            self.keep(self.latest);
            self.latest.seq = 0;
        }
    }

    /// The newest point at or below `watermark`, removing it and everything older.
    fn take_through(&mut self, watermark: u64) -> Option<AckMark> {
        let mut best = None;
        while self.marks.front().is_some_and(|m| m.seq <= watermark) {
            best = self.marks.pop_front();
        }
        best
    }
}

/// Unix time in ns.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The instrument token a subject ends in: `<prefix>.<exchange>.<token>`. Only the
/// last token is read, so deployments may put a partition or environment in the
/// prefix (DESIGN §8) without touching routing.
pub fn subject_token(subject: &[u8]) -> Option<u32> {
    let last = subject.rsplit(|&b| b == b'.').next()?;
    if last.is_empty() || last.len() > 10 || !last.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(last).ok()?.parse().ok()
}

/// Routes one delivered message of `kind`; `false` when a drain stopped it.
fn route(router: &mut Router, kind: Kind, seq: u64, subject: &[u8], payload: &[u8]) -> bool {
    let (shard, kind) = destination(router, kind, subject);
    router.route(shard, kind, seq, now_ns(), subject, payload)
}

/// The shard and frame kind of a message, from its subject alone.
fn destination(router: &Router, kind: Kind, subject: &[u8]) -> (usize, Kind) {
    match subject_token(subject) {
        Some(token) => (shard_of(token, router.shards()), kind),
        // Unroutable messages are still data: shard 0 stores them as rejected.
        None => (0, Kind::Unknown),
    }
}

/// Runs the receiver until a drain; then waits for the pipeline to make everything
/// routed durable and acks it. A lost connection after the first one succeeded is
/// re-established with capped, jittered backoff (JetStream state carries over, so
/// nothing is routed twice and acks resume); a failure to connect at start, or an
/// error that is not about the connection, ends the run. So does a stream that comes
/// back shorter than what was routed (recreated meanwhile): its sequences are new.
pub fn run(router: &mut Router, config: &ReceiverConfig) -> Result<ReceiverReport, NatsError> {
    let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
    let mut jetstream = JsState::default();
    let mut core = CoreState::default();
    // The stage's reconnect loop: one pass per connection.
    let outcome = loop {
        let session =
            NatsConn::connect(&config.url, config.connect_timeout).and_then(|mut conn| {
                backoff.reset();
                if config.jetstream {
                    run_jetstream(router, config, &mut conn, &mut jetstream)
                } else {
                    run_core(router, config, &mut conn, &mut core)
                }
            });
        let established = jetstream.established || core.established;
        let error = match session {
            Ok(()) => break Ok(()),
            Err(error) if established && connection_lost(&error) => error,
            Err(error) => break Err(error),
        };
        if jetstream.input_finished || router.stopping() {
            // Draining without a connection: what is routed still becomes durable, but
            // cannot be acked now; JetStream redelivers it and the next start skips
            // nothing and doubles nothing (it restarts at the ack floor).
            tracing::warn!(%error, "NATS connection lost while draining; unacked messages will be redelivered");
            break Ok(());
        }
        let delay = backoff.next_delay();
        tracing::warn!(%error, attempt = backoff.attempts(), retry_in_ms = delay.as_millis() as u64,
            "NATS connection lost; reconnecting");
        // In slices, so a drain request is not kept waiting for the whole delay.
        let until = Instant::now() + delay;
        while Instant::now() < until && !router.stopping() {
            std::thread::sleep(
                Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())),
            );
        }
    };
    router.finish_input();
    let report = if config.jetstream {
        jetstream.report
    } else {
        core.report
    };
    if report.dropped > 0 {
        tracing::error!(
            dropped = report.dropped,
            "Core NATS messages dropped: ring full, draining or past --count (no upstream store)"
        );
    }
    outcome.map(|()| report)
}

/// First and largest delay between reconnection attempts.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Errors that a new connection can cure.
fn connection_lost(error: &NatsError) -> bool {
    matches!(
        error,
        NatsError::Connect { .. }
            | NatsError::Io { .. }
            | NatsError::Closed
            | NatsError::Timeout { .. }
            | NatsError::NoResponders { .. }
    )
}

/// What the JetStream receiver knows across connections.
#[derive(Default)]
struct JsState {
    report: ReceiverReport,
    marks: AckMarks,
    /// Every stream sequence up to this one was routed in this run (or acked before):
    /// acks never pass it, so a gap is never acknowledged unseen; deliveries at or below
    /// it are never routed again.
    contiguous_last: u64,
    gap_logged: bool,
    drain_started: Option<Instant>,
    input_finished: bool,
    /// A session got as far as pulling once: later connection failures are worth
    /// retrying; before that they are configuration (no JetStream, wrong stream).
    established: bool,
}

/// What the core receiver knows across connections.
#[derive(Default)]
struct CoreState {
    report: ReceiverReport,
    /// Local sequence numbers: core NATS has none.
    seq: u64,
    /// Subscribed once: later connection failures are worth retrying.
    established: bool,
}

fn run_jetstream(
    router: &mut Router,
    config: &ReceiverConfig,
    conn: &mut NatsConn,
    state: &mut JsState,
) -> Result<(), NatsError> {
    let mut js = JetStream::new(config.connect_timeout);
    let (stream, _) = js.ensure_stream(conn, &config.stream, &[config.subject.as_str()])?;
    if stream.last_seq < state.contiguous_last {
        // Skipping "already routed" sequences of a new stream would drop its messages.
        return Err(NatsError::StreamReset {
            stream: config.stream.clone(),
            last_seq: stream.last_seq,
            routed_through: state.contiguous_last,
        });
    }
    let spec = ConsumerSpec {
        stream: &config.stream,
        durable: &config.durable,
        filter_subject: "",
        ack_wait: config.ack_wait,
        max_ack_pending: config.max_ack_pending,
    };
    let (mut info, outcome) = js.ensure_consumer(conn, &spec)?;
    let ack_floor = info.ack_floor.stream_seq;
    if info.num_ack_pending > 0 || info.delivered.stream_seq > ack_floor {
        // An earlier session (or connection) ended with messages delivered but not
        // acked. JetStream would redeliver them only after ack_wait, behind newer ones;
        // restarting at the ack floor keeps delivery in stream order, which the
        // watermark relies on. What this run already routed is skipped below.
        tracing::warn!(
            ack_floor,
            unacked = info.num_ack_pending,
            routed_through = state.contiguous_last,
            "Restarting delivery at the ack floor after an unclean stop"
        );
        info = js.restart_consumer_at(conn, &spec, ack_floor + 1)?;
    }
    tracing::info!(stream = %config.stream, durable = %config.durable, outcome = ?outcome,
        ack_floor, max_ack_pending = config.max_ack_pending, "JetStream consumer ready");
    debug_assert!(info.num_ack_pending == 0);
    let inbox = conn.new_inbox("pull");
    let sid = conn.subscribe(&inbox, None)?;
    state.established = true;

    // Ack subjects of an earlier connection may name a consumer since recreated.
    state.marks.clear();
    state.report.acked = state.report.acked.max(ack_floor);
    state.contiguous_last = state.contiguous_last.max(ack_floor);
    let JsState {
        report,
        marks,
        contiguous_last,
        gap_logged,
        drain_started,
        input_finished,
        established: _,
    } = state;
    let mut outstanding: u64 = 0;
    let mut pull_expires_at = Instant::now();
    let mut last_ack = Instant::now();
    // The stage's main loop: ends when drained and acked, or at the drain deadline.
    loop {
        let remaining = config
            .count
            .map_or(u64::MAX, |count| count.saturating_sub(report.routed));
        if (router.stopping() || remaining == 0) && drain_started.is_none() {
            *drain_started = Some(Instant::now());
        }
        if drain_started.is_none() && outstanding == 0 {
            let unacked = router.received_last().saturating_sub(report.acked);
            let room = u64::from(config.max_ack_pending).saturating_sub(unacked);
            // Never pull past `count`: what is delivered but not routed would wait
            // out ack_wait on the server.
            let batch = room.min(u64::from(config.fetch_batch_max)).min(remaining);
            if batch > 0 {
                js.pull(
                    conn,
                    &config.stream,
                    &config.durable,
                    batch as u32,
                    PULL_EXPIRES,
                    &inbox,
                )?;
                outstanding = batch;
                pull_expires_at = Instant::now() + PULL_EXPIRES;
            }
        } else if outstanding > 0 && Instant::now() >= pull_expires_at {
            // The server has expired the request by now (its clock started later than
            // ours). 2.9 drops an expired request without a 408 when it finds it while
            // looking for a waiting pull, so without this a pull cut short by
            // back-pressure would stall delivery forever. Deliveries still in the socket
            // are routed as usual: the inbox is the same.
            outstanding = 0;
        }
        conn.poll(POLL_TIMEOUT, |op| {
            let ServerOp::Msg(msg) = op else { return };
            if msg.sid != sid {
                return;
            }
            if let Some(status) = msg.status() {
                // 404 no messages, 408 request expired, 409 consumer limits: the pull is over.
                if status != 100 {
                    outstanding = 0;
                }
                return;
            }
            outstanding = outstanding.saturating_sub(1);
            if config.count.is_some_and(|count| report.routed >= count) {
                // Past `count` (a late delivery of an expired pull): not routed, so not
                // acked; the next start restarts delivery at the ack floor.
                return;
            }
            let Some(ack_info) = msg.reply.and_then(parse_ack_subject) else {
                tracing::warn!("JetStream delivery without an ack subject; ignored");
                return;
            };
            let seq = ack_info.stream_seq;
            if seq <= *contiguous_last {
                // Redelivered (after ack_wait, or after a reconnect restarted delivery
                // at the ack floor) while still in the pipeline: routing it again would
                // store it twice. Its ack subject is current, so it may serve as an
                // ack point (out-of-order points are ignored).
                marks.note(seq, msg.reply.unwrap_or_default());
                return;
            }
            if seq != *contiguous_last + 1 && !*gap_logged {
                tracing::error!(
                    expected = *contiguous_last + 1,
                    got = seq,
                    "Gap in JetStream delivery; acks hold below it until restart"
                );
                *gap_logged = true;
            }
            if !route(router, config.kind, seq, msg.subject, msg.payload) {
                return;
            }
            if !*gap_logged {
                *contiguous_last = seq;
            }
            report.routed += 1;
            marks.note(seq, msg.reply.unwrap_or_default());
        })?;
        marks.end_of_poll();
        // Draining: every delivery of the last pull is routed (it ends within
        // PULL_EXPIRES), then the shards may seal for good.
        if drain_started.is_some() && outstanding == 0 && !*input_finished {
            router.finish_input();
            *input_finished = true;
        }
        if last_ack.elapsed() >= ACK_INTERVAL || *input_finished {
            let watermark = router.watermark().min(*contiguous_last);
            if let Some(mark) = marks.take_through(watermark) {
                ack(conn, &mark.subject[..mark.len as usize])?;
                conn.flush()?;
                report.acked = mark.seq;
                router.acked(mark.seq);
            }
            last_ack = Instant::now();
        }
        if let Some(started) = *drain_started {
            if *input_finished && report.acked >= router.received_last() {
                return Ok(());
            }
            if started.elapsed() >= config.drain_timeout {
                tracing::error!(acked = report.acked, received = router.received_last(),
                    "Drain timeout before everything was durable; JetStream will redeliver the rest");
                return Ok(());
            }
            if *input_finished {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn run_core(
    router: &mut Router,
    config: &ReceiverConfig,
    conn: &mut NatsConn,
    state: &mut CoreState,
) -> Result<(), NatsError> {
    let sid = conn.subscribe(&config.subject, None)?;
    state.established = true;
    let CoreState {
        report,
        seq,
        established: _,
    } = state;
    let count = config.count.unwrap_or(u64::MAX);
    // The stage's main loop: ends on a drain request or after `count` messages.
    while !router.stopping() && report.routed < count {
        conn.poll(POLL_TIMEOUT, |op| {
            let ServerOp::Msg(msg) = op else { return };
            if msg.sid != sid {
                return;
            }
            *seq += 1;
            let (shard, kind) = destination(router, config.kind, msg.subject);
            // Past `count` within the last read: not stored, so counted as dropped.
            if report.routed < count
                && router.try_route(shard, kind, *seq, now_ns(), msg.subject, msg.payload)
            {
                report.routed += 1;
            } else {
                report.dropped += 1;
            }
        })?;
        router.watermark();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Ack points: the newest remembered point at or below the watermark is chosen,
    //! and a full ring only delays acks.
    use super::*;

    #[test]
    fn subject_tokens_are_the_last_numeric_token() {
        assert_eq!(subject_token(b"market.ticks.NSE.256265"), Some(256_265));
        assert_eq!(subject_token(b"p3.market.ticks.NFO.12"), Some(12));
        for bad in [
            &b"market.ticks.NSE"[..],
            b"market.ticks.NSE.",
            b"x.99999999999",
            b"a.-1",
            b"",
        ] {
            assert_eq!(
                subject_token(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn ack_marks_pick_the_newest_point_below_the_watermark() {
        let mut marks = AckMarks::new();
        for seq in 1..=1000u64 {
            marks.note(seq, format!("$JS.ACK.S.C.1.{seq}.{seq}.0.0").as_bytes());
        }
        marks.end_of_poll();
        let mark = marks.take_through(700).unwrap();
        assert_eq!(mark.seq, 512);
        assert!(marks.take_through(700).is_none());
        let mark = marks.take_through(1000).unwrap();
        assert_eq!(mark.seq, 1000);
        assert_eq!(
            &mark.subject[..mark.len as usize],
            b"$JS.ACK.S.C.1.1000.1000.0.0"
        );
    }

    #[test]
    fn full_mark_ring_drops_oldest_points_only() {
        let mut marks = AckMarks::new();
        let total = (ACK_MARKS_MAX as u64 + 10) * ACK_MARK_EVERY;
        for seq in 1..=total {
            marks.note(seq, b"$JS.ACK.S.C.1.1.1.0.0");
        }
        assert_eq!(marks.marks.len(), ACK_MARKS_MAX);
        assert!(marks.take_through(5 * ACK_MARK_EVERY).is_none());
        assert_eq!(marks.take_through(total).unwrap().seq, total);
    }
}
