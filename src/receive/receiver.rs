//! The receiver thread: pulls messages from a JetStream durable consumer (or a core
//! NATS subscription), routes each by the instrument token in its subject, and acks
//! JetStream up to the durable watermark.
//!
//! ```text
//!   JetStream ──pull(batch, expires)──► receiver ──route(shard_of(token))──► frame rings
//!             ◄──+ACK on the reply of the last remembered seq ≤ watermark (AckAll)
//! ```
//!
//! Flow control: one pull request is live at a time, for at most `fetch_batch_max`
//! messages, and only while the unacknowledged window leaves room (the server enforces
//! `max_ack_pending` too); a pull given up on our clock keeps what it may still bring
//! out of the window until the server is done with it ([`super::pulls`]). A delivery
//! whose ring is full stays in the read buffer (`NatsConn::poll_held`): the receiver
//! stops reading its socket and
//! pulls no more, so JetStream holds the rest, but its loop goes on acknowledging what
//! becomes durable while it waits for room, so a long back-pressure (ClickHouse away,
//! spill full) neither stalls the ack floor nor has JetStream redeliver what is already
//! routed once `ack_wait` passes. On core NATS there is
//! no upstream store: a full ring drops the message and counts it (`dropped_total`),
//! because not reading the socket would only make the server drop far more when it
//! closes the connection as a slow consumer.
//!
//! Acks: AckAll on message `m` acks every delivery up to `m`. The receiver remembers the
//! reply subject of one message in [`ACK_MARK_EVERY`] (and the last of every poll) in a
//! fixed ring, and acks the newest remembered one at or below the watermark. Must
//! never: parse payloads, ack what is not durable, drop a JetStream message.
//!
//! AckNone (`nats.ack_policy = "none"`): no ack is ever sent and no reply subject kept;
//! the watermark is still followed (it is this run's durable point for a reconnect and
//! the drain), the pull window is the same, and at start the store above the local
//! durable mark (`durable::mark`, written with the watermark at most once a second),
//! not an ack floor, decides the position; without a mark, the whole store. Only on
//! limits-retention streams.
//!
//! Position: at the first session the store decides where delivery resumes
//! (`durable::stored`: the ack floor, then the stored sequences above it); the consumer
//! is deleted and created at that point unless it already sits exactly there with our
//! settings, so a recreated or edited consumer, a config change or an unclean stop never
//! stores a message twice. Deliveries are judged by [`position`](super::position):
//! stored or already-routed ones are passed over (and serve as ack points), gaps the
//! stream has (deleted, trimmed, purged) are stepped over, counted and logged, never a
//! freeze.
//!
//! Reconnects: a connection lost after start is re-established with capped, jittered
//! backoff. The position carries over; the consumer restarts delivery after what this
//! run made durable (acked, or durable while the connection was away), deliveries
//! already routed are passed over, so a nats-server restart neither loses nor doubles
//! a message. Those passed-over deliveries are the only ack points for what was routed
//! before the restart: a drain that comes before they do goes on pulling them (never
//! routing them) up to what was routed, so a clean stop leaves the consumer settled.
//! A stream with another creation time is a new stream: the run stops with an error (a
//! restart reads the store again). Core NATS resubscribes; what was published
//! meanwhile is gone.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::pipeline::Router;
use crate::ring::Kind;
use crate::runtime::Backoff;

use crate::durable::mark::{LocalMark, MARK_INTERVAL};
use crate::durable::stored::{
    read_stored, resume, wait_for_killed_inserts, Resume, SeqSet, StreamTables, OTHER_INSERTS_WAIT,
};

use super::nats::jetstream::{
    ack, parse_ack_subject, ConsumerInfo, ConsumerSpec, JetStream, StreamInfo,
};
use super::nats::wire::{Msg, ServerOp};
use super::nats::{NatsConn, NatsError};
use super::position::{Gap, Position, Verdict};
use super::pulls::Pulls;

/// One message in this many leaves its ack subject behind as an ack point.
pub const ACK_MARK_EVERY: u64 = 256;
/// Ack points kept: 4,096 × 256 messages covers a million unacked messages.
pub const ACK_MARKS_MAX: usize = 4096;
/// Longest JetStream ack reply subject we keep: `$JS.ACK.<stream>.<consumer>.` and 5
/// numbers of up to 20 digits is 113 bytes + the two names, so config refuses names
/// longer together than [`crate::config::JETSTREAM_NAMES_BYTES_MAX`]; a longer subject at run time (the
/// 12-token form with a domain and account hash) stops the session with an error,
/// never a silent "not acked".
pub const ACK_SUBJECT_BYTES_MAX: usize = 255;
const _: () = assert!(crate::config::JETSTREAM_NAMES_BYTES_MAX + 113 <= ACK_SUBJECT_BYTES_MAX);
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
/// How much later than ours the server's clock for a pull request may start (the
/// request's way there): the drain waits this past the last pull's expiry.
const PULL_GRACE: Duration = Duration::from_millis(20);
/// Longest wait for ring room between two looks at the acks while a delivery is held.
const HOLD_WAIT: Duration = Duration::from_millis(5);
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
    /// The consumer's filter (and the core subscription) when this appliance serves
    /// one subject partition (`<prefix>.<id>.*.*`, DESIGN §8); empty: the whole stream.
    /// The stream's other partitions then show as jumps in the delivered sequences,
    /// stepped over like gaps but neither logged nor counted as gaps (a message of its
    /// own partition deleted from the stream looks the same, and is stepped over
    /// unlogged too).
    pub filter_subject: String,
    /// The partition `filter_subject` selects, for metrics and logs.
    pub partition: Option<u32>,
    /// Durable consumer name.
    pub durable: String,
    /// Most messages per pull request.
    pub fetch_batch_max: u32,
    /// Redelivery delay of unacked messages.
    pub ack_wait: Duration,
    /// Most unacked messages in flight (AckNone: most messages between receive and
    /// durable, kept by the pull sizes alone).
    pub max_ack_pending: u32,
    /// AckNone: nothing is acknowledged; the resume point comes from the store above
    /// the local durable mark ([`StoreProbe::mark`]).
    pub ack_none: bool,
    /// Connect and JetStream API timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the last acks when draining.
    pub drain_timeout: Duration,
    /// TLS to NATS (`nats.tls*`, or a `tls://` URL); `None`: plaintext.
    pub tls: Option<crate::tls::Client>,
    /// `nats.stream_max_bytes`: the limit of a stream this receiver creates.
    pub stream_max_bytes: u64,
    /// Stop after routing this many messages, then drain (benchmarks, replays of a
    /// known range); `None` runs until a drain request.
    pub count: Option<u64>,
    /// Where the stream's messages are stored, read at start to find the resume point;
    /// `None` trusts the consumer's ack floor alone (benchmarks with no store).
    pub store: Option<StoreProbe>,
}

/// How to read what the store holds of one stream.
#[derive(Clone)]
pub struct StoreProbe {
    /// ClickHouse connection (with the database).
    pub options: crate::native::Options,
    /// A ClickHouse cluster's shards, each its replicas (empty: `options` alone). The
    /// stored set is the union of what every live replica of every shard holds: a
    /// message's rows are on one shard (the spill replays each block to the shard it
    /// was sealed for), and a replica may not have fetched its peers' newest parts
    /// yet. A shard none of whose replicas answers stops the start.
    pub cluster: Vec<Vec<crate::native::Options>>,
    /// The tables the stream's messages end in.
    pub tables: StreamTables,
    /// Read the store from the stream's start, not from the ack floor: the spill had
    /// damaged records whose blocks were acknowledged, so the ack floor no longer
    /// proves them stored. What JetStream still holds of them is delivered again;
    /// what it no longer holds is counted absent and logged.
    pub reread_all: bool,
    /// AckNone: the local durable mark, the floor the store is read above at start
    /// (as an ack floor is under AckAll) and kept current while delivery goes on.
    pub mark: Option<LocalMark>,
}

impl std::fmt::Debug for StoreProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreProbe")
            .field("host", &self.options.host)
            .field("database", &self.options.database)
            .field("tables", &self.tables)
            .finish()
    }
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
    /// The delivery's consumer sequence.
    consumer_seq: u64,
    /// Messages this session delivered for the first time, up to this one: what an
    /// ack of it leaves in flight is the session's count minus this.
    ordinal: u64,
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
    /// The newest ack point noted, by stream and by consumer sequence.
    top_seq: u64,
    top_consumer_seq: u64,
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
                consumer_seq: 0,
                ordinal: 0,
                len: 0,
                subject: [0; ACK_SUBJECT_BYTES_MAX],
            },
            top_seq: 0,
            top_consumer_seq: 0,
        }
    }

    /// A delivery that may serve as an ack point. nats-server (2.9 to current) applies
    /// an AckAll only when its consumer sequence and its stream sequence are both
    /// above the last one applied. A redelivery carries a new, higher consumer
    /// sequence for an older stream sequence: acked, it would make every first
    /// delivery above it (lower consumer sequences) unackable, and the server's ack
    /// floor would stop there while ours moved on. So only a delivery newest in both
    /// sequences becomes a point (the first delivery of each message is).
    fn note(&mut self, seq: u64, consumer_seq: u64, ordinal: u64, reply: &[u8]) {
        // The caller refused longer subjects with an error.
        assert!(reply.len() <= ACK_SUBJECT_BYTES_MAX, "ack subject too long");
        if seq <= self.top_seq || consumer_seq <= self.top_consumer_seq {
            return;
        }
        self.top_seq = seq;
        self.top_consumer_seq = consumer_seq;
        self.latest.seq = seq;
        self.latest.consumer_seq = consumer_seq;
        self.latest.ordinal = ordinal;
        self.latest.len = reply.len() as u8;
        self.latest.subject[..reply.len()].copy_from_slice(reply);
        if seq % ACK_MARK_EVERY == 0 {
            self.keep(self.latest);
        }
    }

    fn keep(&mut self, mark: AckMark) {
        if self
            .marks
            .back()
            .is_some_and(|m| m.seq >= mark.seq || m.consumer_seq >= mark.consumer_seq)
        {
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
        self.top_seq = 0;
        self.top_consumer_seq = 0;
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

/// The shard and frame kind of a message, from its subject alone.
fn destination(router: &Router, kind: Kind, subject: &[u8]) -> (usize, Kind) {
    match subject_token(subject) {
        Some(token) => (router.shard_of(token), kind),
        // Unroutable messages are still data: shard 0 stores them as rejected.
        None => (0, Kind::Unknown),
    }
}

/// Runs the receiver until a drain; then waits for the pipeline to make everything
/// routed durable and acks it. A lost connection after the first one succeeded is
/// re-established with capped, jittered backoff (JetStream state carries over, so
/// nothing is routed twice and acks resume); a server too busy to answer at start is
/// asked again a few times; a failure to connect at start, or an error that is not
/// about the connection, ends the run. So does a stream that comes
/// back shorter than what was routed (recreated meanwhile): its sequences are new.
pub fn run(router: &mut Router, config: &ReceiverConfig) -> Result<ReceiverReport, NatsError> {
    router.stats().nats_partition.store(
        config.partition.map_or(0, |id| u64::from(id) + 1),
        Ordering::Relaxed,
    );
    let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
    let mut jetstream = JsState::default();
    let mut core = CoreState::default();
    let mut start_attempts = 0u32;
    // The stage's reconnect loop: one pass per connection.
    let outcome = loop {
        let session =
            NatsConn::connect_with(&config.url, config.connect_timeout, config.tls.as_ref())
                .and_then(|mut conn| {
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
            Err(error) if !established && slow_at_start(&error) => {
                start_attempts += 1;
                if start_attempts >= START_ATTEMPTS_MAX {
                    break Err(error);
                }
                // Nothing was routed yet: the next attempt starts from scratch and
                // reads the resume point again.
                jetstream = JsState::default();
                error
            }
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
        if established {
            let stats = router.stats();
            stats.reconnects_total.fetch_add(1, Ordering::Relaxed);
            stats
                .nats_state
                .store(crate::pipeline::NATS_DOWN, Ordering::Relaxed);
            tracing::warn!(%error, attempt = backoff.attempts(), retry_in_ms = delay.as_millis() as u64,
                "NATS connection lost; reconnecting");
        } else {
            tracing::warn!(%error, attempt = start_attempts, of = START_ATTEMPTS_MAX,
                retry_in_ms = delay.as_millis() as u64, "NATS too slow to answer at start; trying again");
        }
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

/// Attempts at the first session when the server is slow to answer (see
/// [`slow_at_start`]): with the reconnect backoff, about 20 s of a busy nats-server.
const START_ATTEMPTS_MAX: u32 = 8;

/// Errors at the first session that mean a busy or restarting server, not a wrong
/// setup: a JetStream API request that got no answer in time, or a connection dropped
/// mid-setup. A server that cannot be reached at all, JetStream off, or a refusal end
/// the run at once with their own message.
fn slow_at_start(error: &NatsError) -> bool {
    matches!(
        error,
        NatsError::Timeout { .. } | NatsError::Io { .. } | NatsError::Closed
    )
}

/// Errors that a new connection can cure.
fn connection_lost(error: &NatsError) -> bool {
    matches!(
        error,
        NatsError::Connect { .. }
            | NatsError::Io { .. }
            | NatsError::Closed
            | NatsError::Timeout { .. }
            | NatsError::NoResponders { .. }
            | NatsError::OutOfOrder { .. }
    )
}

/// What the JetStream receiver knows across connections.
#[derive(Default)]
struct JsState {
    report: ReceiverReport,
    marks: AckMarks,
    /// Where the stream stands: routed, stored or absent up to its `contiguous()`;
    /// `None` until the first session read the store.
    position: Option<Position>,
    /// The stream's creation time at the first session: its identity.
    stream_created_ms: i64,
    drain_started: Option<Instant>,
    input_finished: bool,
    /// A session got as far as pulling once: later connection failures are worth
    /// retrying; before that they are configuration (no JetStream, wrong stream).
    established: bool,
    /// AckNone: the sequence last written to the local mark, and when; whether the
    /// last write failed (logged once until one succeeds).
    mark_written: u64,
    mark_at: Option<Instant>,
    mark_failing: bool,
}

/// Reads the resume point at the first session: the consumer's ack floor, then what
/// the store holds above it (see `durable::stored`).
fn read_resume(
    js: &JetStream,
    conn: &mut NatsConn,
    config: &ReceiverConfig,
    stream: &StreamInfo,
    floor: u64,
    floor_from: &'static str,
) -> Result<Resume, NatsError> {
    let unreadable = |reason: String| NatsError::StoreUnreadable {
        stream: config.stream.clone(),
        reason,
    };
    let mut read_from = floor;
    let stored = match &config.store {
        Some(store) => {
            // Said before the store is asked: a start that stalls here (a ClickHouse
            // busy behind a lock) shows where in its log.
            tracing::info!(stream = %config.stream, ack_floor = floor, "Reading the resume point from the store");
            if store.reread_all {
                tracing::warn!(stream = %config.stream, ack_floor = floor,
                    "The spill held damaged records of this stream; reading the whole store so that JetStream delivers again what they held");
                read_from = 0;
            }
            let mut stored = SeqSet::new();
            let single = [vec![store.options.clone()]];
            let shards = if store.cluster.is_empty() {
                &single[..]
            } else {
                &store.cluster[..]
            };
            for (shard, replicas) in shards.iter().enumerate() {
                let mut read_any = None;
                for options in replicas {
                    let server = |e: crate::native::Error| {
                        unreadable(format!("{}:{}: {e}", options.host, options.port))
                    };
                    let mut ch = match crate::native::Connection::connect(options) {
                        Ok(ch) => ch,
                        // Another replica of the shard may answer; one must.
                        Err(e) if replicas.len() > 1 => {
                            tracing::warn!(shard = shard + 1, server = %format!("{}:{}", options.host, options.port),
                            error = %e, "A ClickHouse replica does not answer; reading its shard's others");
                            read_any.get_or_insert(Err(server(e)));
                            continue;
                        }
                        Err(e) => return Err(server(e)),
                    };
                    let settled =
                        wait_for_killed_inserts(&mut ch, &options.database).map_err(server)?;
                    if !settled {
                        tracing::warn!(stream = %config.stream, waited_s = OTHER_INSERTS_WAIT.as_secs(),
                        "Another appliance keeps inserting into this database; reading the store anyway (two appliances on one durable are not supported)");
                    }
                    let held = read_stored(&mut ch, &store.tables, read_from, stream.created_ms)
                        .map_err(server)?;
                    stored.union(&held);
                    read_any = Some(Ok(()));
                }
                read_any.unwrap_or(Ok(()))?;
            }
            stored
        }
        None => SeqSet::new(),
    };
    let stored_count = stored.len();
    let resume = resume(read_from, stored, stream.first_seq, |seq| {
        js.message_exists(conn, &config.stream, seq)
    })?;
    tracing::info!(stream = %config.stream, ack_floor = floor, floor_from, stored_above_floor = stored_count,
        resume_after = resume.position, skip = resume.skip.len(), skip_ranges = resume.skip.ranges(),
        absent = resume.absent, probes = resume.probes, "Resume point read from the store");
    Ok(resume)
}

/// Everything at or below this stream sequence is acknowledged by the consumer, or was
/// below where it was created to start. nats-server 2.9 reports an ack floor of 0 for a
/// consumer created at a start sequence that has delivered nothing since; every
/// delivery acked (equal consumer sequences) means the delivered stream sequence is
/// settled too.
fn settled_floor(info: &ConsumerInfo) -> u64 {
    if info.delivered.consumer_seq == info.ack_floor.consumer_seq {
        info.delivered.stream_seq.max(info.ack_floor.stream_seq)
    } else {
        info.ack_floor.stream_seq
    }
}

/// Whether an existing consumer can be used as it is: our settings, and settled exactly
/// at the resume point with nothing delivered past it.
fn consumer_fits(info: &ConsumerInfo, spec: &ConsumerSpec<'_>, position: u64) -> bool {
    if spec.ack_none {
        // No ack state: delivered exactly up to the resume point and nothing past it.
        return info.filter_subject == spec.filter_subject
            && info.ack_policy == "none"
            && info.delivered.stream_seq == position;
    }
    info.filter_subject == spec.filter_subject
        && info.ack_policy == "all"
        && info.ack_wait == spec.ack_wait
        && info.max_ack_pending == i64::from(spec.max_ack_pending)
        && info.num_ack_pending == 0
        && settled_floor(info) == position
        && info.delivered.stream_seq == position
}

/// Sets up one session: the stream (its identity checked against the first session),
/// the resume point (read from the store at the first session), and the consumer
/// positioned there. Returns the consumer's state.
fn start_session(
    js: &JetStream,
    conn: &mut NatsConn,
    config: &ReceiverConfig,
    state: &mut JsState,
    durable: u64,
) -> Result<ConsumerInfo, NatsError> {
    let (stream, _) = js.ensure_stream(
        conn,
        &config.stream,
        &[config.subject.as_str()],
        config.stream_max_bytes,
    )?;
    let spec = ConsumerSpec {
        stream: &config.stream,
        durable: &config.durable,
        filter_subject: &config.filter_subject,
        ack_wait: config.ack_wait,
        max_ack_pending: config.max_ack_pending,
        ack_none: config.ack_none,
    };
    if config.ack_none && stream.retention != "limits" {
        return Err(NatsError::AckNoneNeedsLimits {
            stream: config.stream.clone(),
            retention: stream.retention.clone(),
        });
    }
    let mut existing = js.consumer_info(conn, &config.stream, &config.durable)?;
    let start_seq = match &mut state.position {
        None => {
            if existing.is_some() {
                existing = ensure_alone(js, conn, config)?;
            }
            // A consumer dies with its stream, so an existing one's ack floor belongs
            // to this stream, and what an AckAll consumer acked is durable. An AckNone
            // consumer's "floor" is only what was delivered: never a bound, whichever
            // policy this run has (trusting it after a switch to AckAll lost what was
            // delivered and not stored). Under AckNone the local mark stands in; a
            // consumer still AckAll (the policy switched since the last run, e.g. on
            // upgrade to the AckNone default) gives its floor when that is higher;
            // with neither the whole store is read.
            let acked = existing
                .as_ref()
                .filter(|info| info.ack_policy == "all")
                .map_or(0, settled_floor);
            let mark = config
                .store
                .as_ref()
                .and_then(|s| s.mark.as_ref())
                .filter(|_| config.ack_none)
                .map_or(0, |m| m.read(stream.created_ms));
            let (floor, floor_from) = if acked > 0 && acked >= mark {
                (acked, "consumer ack floor")
            } else if mark > 0 {
                (mark, "local mark")
            } else {
                (0, "none")
            };
            let resume = read_resume(js, conn, config, &stream, floor, floor_from)?;
            state.stream_created_ms = stream.created_ms;
            let start = resume.position + 1;
            state.position = Some(Position::new(resume));
            start
        }
        Some(position) => {
            // Identity first: a stream deleted and created again starts over.
            if stream.created_ms != state.stream_created_ms {
                return Err(NatsError::StreamRecreated {
                    stream: config.stream.clone(),
                    created_ms: stream.created_ms,
                    was_ms: state.stream_created_ms,
                });
            }
            // What this run acked is durable, and so is what became durable while
            // the connection was away (the writers went on): delivery restarts after
            // both, and above that what it routed is passed over.
            let start = state.report.acked.max(durable) + 1;
            position.restart_at(start);
            start
        }
    };
    let position = state.position.as_mut().expect("set above");
    let info = match existing {
        Some(info) if consumer_fits(&info, &spec, start_seq - 1) => info,
        existing => {
            if let Some(info) = &existing {
                if info.num_ack_pending > 0 || info.delivered.stream_seq > info.ack_floor.stream_seq
                {
                    tracing::warn!(
                        ack_floor = info.ack_floor.stream_seq,
                        unacked = info.num_ack_pending,
                        start_seq,
                        "Restarting delivery after an unclean stop"
                    );
                }
            }
            // Delete and create at the resume point: never `deliver_policy: all`, never
            // an update the server may refuse. The ack floor becomes `start_seq - 1`,
            // which is routed-and-durable or stored.
            js.restart_consumer_at(conn, &spec, start_seq)?
        }
    };
    // Created at `start_seq`, the consumer's floor is just below it.
    state.report.acked = state.report.acked.max(start_seq - 1);
    position.new_session(info.delivered.consumer_seq);
    tracing::info!(stream = %config.stream, durable = %config.durable, start_seq,
        max_ack_pending = config.max_ack_pending, "JetStream consumer ready");
    Ok(info)
}

/// Samples of the durable's waiting pull requests before the first session, and the
/// time between them. Measured on nats-server 2.9: a live appliance shows a waiting
/// request in every sample when idle and in about half when busy; a killed one's
/// requests are gone at once (their reply interest died with the connection). Ten
/// samples over half a second miss a busy one about once in a thousand starts, and
/// one stalled on back-pressure (not pulling) is not seen at all: a guard, not a lock.
const ALONE_SAMPLES: u32 = 10;
const ALONE_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Refuses to start beside another client pulling from the durable (see
/// [`NatsError::DurableInUse`]). Returns the consumer's last info.
fn ensure_alone(
    js: &JetStream,
    conn: &mut NatsConn,
    config: &ReceiverConfig,
) -> Result<Option<ConsumerInfo>, NatsError> {
    let mut info = None;
    for sample in 0..ALONE_SAMPLES {
        if sample > 0 {
            std::thread::sleep(ALONE_SAMPLE_EVERY);
        }
        info = js.consumer_info(conn, &config.stream, &config.durable)?;
        let Some(now) = &info else {
            return Ok(None);
        };
        if now.num_waiting > 0 {
            return Err(NatsError::DurableInUse {
                stream: config.stream.clone(),
                durable: config.durable.clone(),
                waiting: now.num_waiting,
            });
        }
    }
    Ok(info)
}

/// Logs a gap in the stream: every one of the first few, then one in a thousand.
fn log_gap(gap: Gap, position: &Position) {
    let count = position.gaps_total;
    if count <= 16 || count % 1000 == 0 {
        tracing::warn!(
            first = gap.first,
            last = gap.last,
            gaps_total = count,
            sequences_total = position.gap_seqs_total,
            "Gap in the stream (deleted, trimmed or purged messages); stepped over"
        );
    }
}

fn run_jetstream(
    router: &mut Router,
    config: &ReceiverConfig,
    conn: &mut NatsConn,
    state: &mut JsState,
) -> Result<(), NatsError> {
    let mut js = JetStream::new(config.connect_timeout);
    // Durable through here: everything routed up to it is stored or journaled.
    let durable = state
        .position
        .as_ref()
        .map_or(0, |position| router.watermark().min(position.contiguous()));
    let info = start_session(&js, conn, config, state, durable)?;
    let inbox = conn.new_inbox("pull");
    let sid = conn.subscribe(&inbox, None)?;
    state.established = true;
    router
        .stats()
        .nats_state
        .store(crate::pipeline::NATS_UP, Ordering::Relaxed);

    // Ack subjects of an earlier connection may name a consumer since recreated.
    state.marks.clear();
    if !config.ack_none {
        state.report.acked = state.report.acked.max(settled_floor(&info));
    }
    let JsState {
        report,
        marks,
        position,
        stream_created_ms,
        drain_started,
        input_finished,
        mark_written,
        mark_at,
        mark_failing,
        ..
    } = state;
    let local_mark = config.store.as_ref().and_then(|s| s.mark.as_ref());
    let mut keep_mark = |acked: u64, now: bool| {
        if let Some(mark) = local_mark {
            let due = mark_at.map_or(true, |at| at.elapsed() >= MARK_INTERVAL);
            if acked > *mark_written && (due || now) {
                match mark.write(*stream_created_ms, acked) {
                    Ok(()) => *mark_failing = false,
                    Err(error) if !*mark_failing => {
                        *mark_failing = true;
                        tracing::warn!(path = %mark.path().display(), %error,
                            "Cannot write the local durable mark; the next start reads more of the store");
                    }
                    Err(_) => {}
                }
                *mark_written = acked;
                *mark_at = Some(Instant::now());
            }
        }
    };
    let position = position.as_mut().expect("set by start_session");
    // A router whose watermark starts where delivery does: what is below is durable.
    router.pass(position.contiguous());
    // The highest stream sequence this session's consumer has delivered (or started
    // past). After a reconnect it trails what was routed: the deliveries in between
    // are passed over, and only they carry ack subjects for it.
    let mut delivered_top = report.acked;
    // The pull window under AckAll: messages this session delivered for the first
    // time, and how many of them the last ack covered. Counted in this consumer's
    // messages, not stream sequences: with a partition filter the other partitions'
    // sequences would shrink the window N-fold. Redeliveries are not new messages.
    let mut delivered_new: u64 = 0;
    let mut acked_new: u64 = 0;
    // Draining: the catch-up's last pull and what had been delivered when it went out
    // (a pull that brings nothing new ends the catch-up).
    let mut catch_up_pulled_at: Option<u64> = None;
    let mut catch_up_dry = false;
    // What the open pulls may still bring, given up on our clock or not.
    let mut pulls = Pulls::new(Instant::now());
    let mut last_ack = Instant::now();
    let mut failure: Option<NatsError> = None;
    let mut refused = false;
    // A delivery left in the read buffer for want of ring room (shard, sizes), and
    // whether the last poll ended on one.
    let mut held: Option<(usize, usize, usize)> = None;
    let mut holding = false;
    // Counters for the control plane (one relaxed store per delivery, no lock).
    let source_stats = router.stats();
    // The stage's main loop: ends when drained and acked, or at the drain deadline.
    loop {
        let remaining = config
            .count
            .map_or(u64::MAX, |count| count.saturating_sub(report.routed));
        if (router.stopping() || remaining == 0) && drain_started.is_none() {
            *drain_started = Some(Instant::now());
        }
        // A drain right after a reconnect: what was routed before it is durable (or
        // becomes so) but can only be acknowledged through its redelivery, so the drain
        // goes on pulling those (passed over, never routed) up to what was routed.
        // Room in the unacknowledged window. AckAll counts this consumer's deliveries
        // since the one acked (consumer sequences: with a partition filter, the
        // stream's sequences of the other partitions would shrink the window N-fold);
        // AckNone has no acked delivery and counts stream sequences above the watermark.
        let unacked = if config.ack_none {
            router.received_last().saturating_sub(report.acked)
        } else {
            delivered_new.saturating_sub(acked_new)
        };
        let room = u64::from(config.max_ack_pending)
            .saturating_sub(unacked)
            .saturating_sub(pulls.late());
        let catching_up = drain_started.is_some()
            && !config.ack_none
            && !catch_up_dry
            && delivered_top < router.received_last();
        if catching_up && !pulls.live() && !holding {
            if catch_up_pulled_at.is_some_and(|at| at == delivered_top) {
                catch_up_dry = true;
                tracing::info!(delivered = delivered_top, routed = router.received_last(),
                    "Drain: JetStream delivers no more of what was routed before the reconnect; the next start passes over the rest from the store");
            } else {
                let batch = (router.received_last() - delivered_top)
                    .min(u64::from(config.fetch_batch_max))
                    .min(room.max(1));
                let expires_at = pull(&mut js, conn, config, &inbox, batch)?;
                pulls.sent(batch, expires_at);
                catch_up_pulled_at = Some(delivered_top);
            }
        }
        // No pull while a delivery is held: what is buffered must go first.
        if drain_started.is_none() && !pulls.live() && !holding {
            // Never pull past `count`: what is delivered but not routed would wait
            // out ack_wait on the server.
            let batch = room.min(u64::from(config.fetch_batch_max)).min(remaining);
            if batch > 0 {
                let expires_at = pull(&mut js, conn, config, &inbox, batch)?;
                pulls.sent(batch, expires_at);
            }
        } else if pulls.live() {
            // Given up on our clock: 2.9 drops an expired request without a 408 when it
            // meets it while delivering, so waiting for the server could stall delivery
            // forever. Its remainder stays out of the window until the server is done.
            pulls.expire(Instant::now());
        }
        // One receive stamp per read (taken at its first routed delivery, so after
        // the read returned): a clock read per message cost ~1.5% of the appliance
        // (`perf record`), and what one read delivered arrived together. A delivery
        // routed later in the read is stamped early, so its latency counts its wait.
        let mut received_ns = None;
        let seen = conn.poll_held(POLL_TIMEOUT, |op| {
            let ServerOp::Msg(msg) = op else { return true };
            if msg.sid != sid || failure.is_some() {
                return true;
            }
            if refused {
                // A route was refused (draining, or the drain deadline passed): nothing
                // after it may be routed or passed, or the watermark could step over it.
                pulls.delivered();
                return true;
            }
            if let Some(status) = msg.status() {
                // 404 no messages, 408 request expired, 409 consumer limits: a pull is
                // over, with what it had left when the server says.
                if status != 100 {
                    pulls.ended(pending_messages(&msg));
                }
                return true;
            }
            // Back-pressure: a delivery whose ring is full stays in the read buffer
            // (judged and routed when offered again), so this loop goes on acking what
            // becomes durable meanwhile instead of waiting inside the route.
            let (shard, kind) = destination(router, config.kind, msg.subject);
            if !router.has_room(shard, msg.subject, msg.payload) {
                held = Some((shard, msg.subject.len(), msg.payload.len()));
                return false;
            }
            pulls.delivered();
            if config.count.is_some_and(|count| report.routed >= count) {
                // Past `count` (a late delivery of an expired pull): not routed, so not
                // acked; the next start restarts delivery at the ack floor.
                return true;
            }
            let reply = msg.reply.unwrap_or_default();
            let Some(ack_info) = parse_ack_subject(reply) else {
                tracing::warn!("JetStream delivery without an ack subject; ignored");
                return true;
            };
            if !config.ack_none && reply.len() > ACK_SUBJECT_BYTES_MAX {
                failure = Some(NatsError::AckSubjectTooLong {
                    bytes: reply.len(),
                    max: ACK_SUBJECT_BYTES_MAX,
                });
                return true;
            }
            source_stats
                .jetstream_pending
                .store(ack_info.pending, Ordering::Relaxed);
            if ack_info.delivered > 1 {
                source_stats
                    .redelivered_total
                    .fetch_add(1, Ordering::Relaxed);
            }
            let seq = ack_info.stream_seq;
            if seq > delivered_top {
                delivered_new += 1;
                delivered_top = seq;
            }
            let (verdict, gap) = position.judge(&ack_info);
            if let Some(gap) = gap {
                if config.filter_subject.is_empty() {
                    log_gap(gap, position);
                } else {
                    // Other partitions' messages, not a gap.
                    position.not_ours(gap);
                }
            }
            match verdict {
                Verdict::Pass => {
                    // Routed (a redelivery), stored before this run, or absent: routing
                    // it would store it twice. Its ack subject is current, so it may
                    // serve as an ack point (out-of-order points are ignored).
                    router.pass(seq);
                    if !config.ack_none {
                        marks.note(seq, ack_info.consumer_seq, delivered_new, reply);
                    }
                }
                Verdict::Reposition => {
                    failure = Some(NatsError::OutOfOrder {
                        expected: position.contiguous() + 1,
                        got: seq,
                        consumer_seq: ack_info.consumer_seq,
                    });
                }
                Verdict::Route => {
                    let received_ns = *received_ns.get_or_insert_with(now_ns);
                    if !router.route(shard, kind, seq, received_ns, msg.subject, msg.payload) {
                        refused = true;
                        return true;
                    }
                    position.routed(seq);
                    report.routed += 1;
                    if !config.ack_none {
                        marks.note(seq, ack_info.consumer_seq, delivered_new, reply);
                    }
                }
            }
            true
        })?;
        if let Some(error) = failure.take() {
            return Err(error);
        }
        pulls.polled(Instant::now(), seen > 0 || held.is_some());
        // A held delivery: wait a little for its ring (acks go on below between waits);
        // past the drain deadline it is refused like a route, and never routed.
        match held.take() {
            Some((shard, subject_len, payload_len)) => {
                if !holding {
                    router.note_ring_full();
                    holding = true;
                }
                if !router.wait_for_room(shard, subject_len, payload_len, HOLD_WAIT)
                    && router.alert().expired()
                {
                    refused = true;
                }
            }
            None => holding = false,
        }
        marks.end_of_poll();
        // Draining: every delivery of the last pull is routed (it ends within
        // PULL_EXPIRES; a held one is routed or refused first), then the shards may
        // seal for good.
        if drain_started.is_some() && !pulls.live() && !holding && !*input_finished && !catching_up
        {
            router.finish_input();
            *input_finished = true;
        }
        if last_ack.elapsed() >= ACK_INTERVAL || *input_finished {
            let watermark = router.watermark().min(position.contiguous());
            if config.ack_none {
                // Nothing to send: the watermark is kept as this run's durable point
                // (a reconnect resumes after it; the drain waits for it).
                if watermark > report.acked {
                    report.acked = watermark;
                    router.acked(watermark);
                }
                keep_mark(report.acked, false);
            } else if let Some(mark) = marks.take_through(watermark) {
                ack(conn, &mark.subject[..mark.len as usize])?;
                conn.flush()?;
                report.acked = mark.seq;
                acked_new = acked_new.max(mark.ordinal);
                router.acked(mark.seq);
            }
            last_ack = Instant::now();
        }
        if let Some(started) = *drain_started {
            // The last pull must be over on the server too (its clock starts when the
            // request arrives): a delivery still on its way would stay ack-pending
            // there after we leave. Redeliveries of stored messages that come in this
            // window are passed over and acknowledged like any other. A pull that
            // delivered its whole batch is over already: a `--count` run stops as soon
            // as its last message is durable, not ~120 ms later.
            let pull_over = pulls.none_open() || Instant::now() >= pulls.expires_at() + PULL_GRACE;
            // Everything routed, or, once a catch-up ran dry, everything delivered:
            // only deliveries carry ack subjects.
            let ack_target = if catch_up_dry {
                router.received_last().min(delivered_top)
            } else {
                router.received_last()
            };
            if *input_finished && report.acked >= ack_target && pull_over {
                keep_mark(report.acked, true);
                return Ok(());
            }
            if started.elapsed() >= config.drain_timeout {
                keep_mark(report.acked, true);
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

/// How many messages a status says its pull request had left undelivered
/// (`Nats-Pending-Messages` on 408 and 409); `None` when it does not say.
fn pending_messages(msg: &Msg<'_>) -> Option<u64> {
    super::nats::wire::parse_u64(msg.header(b"Nats-Pending-Messages")?)
}

/// Asks for up to `batch` messages, delivered to `inbox`; returns when the request
/// expires on our clock.
fn pull(
    js: &mut JetStream,
    conn: &mut NatsConn,
    config: &ReceiverConfig,
    inbox: &str,
    batch: u64,
) -> Result<Instant, NatsError> {
    js.pull(
        conn,
        &config.stream,
        &config.durable,
        batch as u32,
        PULL_EXPIRES,
        inbox,
    )?;
    Ok(Instant::now() + PULL_EXPIRES)
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

fn run_core(
    router: &mut Router,
    config: &ReceiverConfig,
    conn: &mut NatsConn,
    state: &mut CoreState,
) -> Result<(), NatsError> {
    let subject = if config.filter_subject.is_empty() {
        &config.subject
    } else {
        &config.filter_subject
    };
    let sid = conn.subscribe(subject, None)?;
    state.established = true;
    router
        .stats()
        .nats_state
        .store(crate::pipeline::NATS_UP, Ordering::Relaxed);
    let CoreState {
        report,
        seq,
        established: _,
    } = state;
    let count = config.count.unwrap_or(u64::MAX);
    // The stage's main loop: ends on a drain request or after `count` messages.
    while !router.stopping() && report.routed < count {
        // One receive stamp per read, as in the JetStream loop.
        let mut received_ns = None;
        conn.poll(POLL_TIMEOUT, |op| {
            let ServerOp::Msg(msg) = op else { return };
            if msg.sid != sid {
                return;
            }
            *seq += 1;
            let (shard, kind) = destination(router, config.kind, msg.subject);
            // Past `count` within the last read: not stored, so counted as dropped.
            if report.routed < count
                && router.try_route(
                    shard,
                    kind,
                    *seq,
                    *received_ns.get_or_insert_with(now_ns),
                    msg.subject,
                    msg.payload,
                )
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
            marks.note(
                seq,
                seq,
                seq,
                format!("$JS.ACK.S.C.1.{seq}.{seq}.0.0").as_bytes(),
            );
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
    fn a_redelivery_below_the_newest_message_is_never_an_ack_point() {
        // First deliveries 1..=300 (consumer sequence = stream sequence), then
        // redeliveries of 100..=300 at consumer sequences 301..=501, then new
        // messages 301..=400 at 502..=601.
        let subject = |s: u64, c: u64| format!("$JS.ACK.S.C.1.{s}.{c}.0.0");
        let mut marks = AckMarks::new();
        for seq in 1..=300u64 {
            marks.note(seq, seq, seq, subject(seq, seq).as_bytes());
        }
        for (i, seq) in (100..=299u64).enumerate() {
            let c = 301 + i as u64;
            marks.note(seq, c, 300, subject(seq, c).as_bytes());
        }
        marks.end_of_poll();
        // A redelivery of the newest message adds nothing: its first delivery is a point.
        marks.note(300, 501, 300, subject(300, 501).as_bytes());
        marks.end_of_poll();
        for (i, seq) in (301..=400u64).enumerate() {
            let c = 502 + i as u64;
            marks.note(seq, c, seq, subject(seq, c).as_bytes());
        }
        marks.end_of_poll();
        // Acks go out in order, each above the last in both sequences.
        let mut last = (0, 0);
        for watermark in [150, 256, 299, 300, 350, 400] {
            if let Some(m) = marks.take_through(watermark) {
                assert!(m.seq > last.0 && m.consumer_seq > last.1, "{watermark}");
                last = (m.seq, m.consumer_seq);
            }
        }
        assert_eq!(last, (400, 601));
        marks.clear();
        marks.note(5, 1, 1, subject(5, 1).as_bytes());
        marks.end_of_poll();
        assert_eq!(
            marks.take_through(5).map(|m| m.seq),
            Some(5),
            "a new consumer starts over"
        );
    }

    #[test]
    fn full_mark_ring_drops_oldest_points_only() {
        let mut marks = AckMarks::new();
        let total = (ACK_MARKS_MAX as u64 + 10) * ACK_MARK_EVERY;
        for seq in 1..=total {
            marks.note(seq, seq, seq, b"$JS.ACK.S.C.1.1.1.0.0");
        }
        assert_eq!(marks.marks.len(), ACK_MARKS_MAX);
        assert!(marks.take_through(5 * ACK_MARK_EVERY).is_none());
        assert_eq!(marks.take_through(total).unwrap().seq, total);
    }

    #[test]
    fn a_408_names_what_its_pull_had_left() {
        use super::super::nats::wire::parse;
        let with = b"HMSG _INBOX.p 3 83 83\r\nNATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 640\r\nNats-Pending-Bytes: 0\r\n\r\n\r\n";
        let without = b"HMSG _INBOX.p 3 28 28\r\nNATS/1.0 404 No Messages\r\n\r\n\r\n";
        let garbled = b"HMSG _INBOX.p 3 58 58\r\nNATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: x\r\n\r\n\r\n";
        for (bytes, want) in [
            (&with[..], Some(640)),
            (&without[..], None),
            (&garbled[..], None),
        ] {
            let Some((ServerOp::Msg(msg), _)) = parse(bytes, 1024).unwrap() else {
                panic!("not a message: {}", String::from_utf8_lossy(bytes))
            };
            assert_eq!(pending_messages(&msg), want);
        }
    }
}
