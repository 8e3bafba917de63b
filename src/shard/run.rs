//! The shard thread: frames in, sealed blocks out.
//!
//! ```text
//!   receiver ──frame ring──► shard i: parse → validate → append ──seal──► sealed ring ──► writer
//!                                    └─ unparseable → reject rows ─┘       ◄── free ring (pool)
//!   refdata ──reference queue──► set_reference (top of each pass) ──► the validator's table
//!   append ──► cache slot (latest tick, bars, history; seqlock, never waits) ──► Redis thread
//! ```
//!
//! The loop drains up to [`FRAMES_PER_PASS`] frames, then does its periodic work: seal
//! on age (the oldest row waited `flush_interval_ms`) and publish stats; a builder that
//! fills seals at once, mid-frame if need be (a Kite frame carries many ticks).
//! Sealing seals every open builder together, and a seal group is durable through the
//! last *completed* frame's sequence, so a frame split across two groups is acked only
//! when both are stored (see `durable`). A frame's payload is JSON when its first
//! non-blank byte is `{`, else a Kite binary frame. When the pool has no free block,
//! the shard waits: it stops consuming, its frame ring fills, the receiver stops
//! pulling. Reference data arrives on its own queue from the refdata thread and is
//! applied at the top of each pass (at most `REFERENCE_UPDATES_PER_PASS`), popped
//! without waiting. Must never: allocate per message, touch the network, read JSON
//! twice, wait for reference data.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::cache::ShardCache;
use crate::model::quality::{RejectReason, FLAGS};
use crate::model::reference::ReferenceUpdate;
use crate::model::Tick;
use crate::native::Method;
use crate::ring::{FrameConsumer, FrameHeader, Kind, FLAG_TRUNCATED};
use crate::runtime::clock::now_ms;
use crate::runtime::sizes::REFERENCE_UPDATES_PER_PASS;
use crate::runtime::{Alert, Waiter};

use super::columns::{TickColumns, TickSchema};
use super::parse::json::parse_json_tick;
use super::parse::{parse_kite_message, parse_kite_packet, parse_tick_subject};
use super::rejects::{RejectColumns, RejectSchema, Rejected};
use super::signals::{parse_json_signal, Signal, SignalColumns, SignalSchema};
use super::validate::Validator;
use crate::model::{SealedBlock, Table};

/// Frames handled between two looks at the clock: at ~300 ns a frame, ~0.3 ms.
pub const FRAMES_PER_PASS: usize = 1024;

/// Shard settings.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Index, for names and the durable marks.
    pub index: usize,
    /// Seal when a block is this old, ms.
    pub flush_interval_ms: u64,
    /// Compression of sealed blocks.
    pub compression: Option<Method>,
    /// `market_ticks` as the server has it.
    pub tick_schema: TickSchema,
    /// `strategy_signals` as the server has it.
    pub signal_schema: SignalSchema,
    /// `rejected_messages` as the server has it.
    pub reject_schema: RejectSchema,
}

/// Counters the shard publishes once per pass.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Frames consumed.
    pub frames_total: AtomicU64,
    /// Ticks appended (flagged ones included).
    pub ticks_total: AtomicU64,
    /// Signals appended.
    pub signals_total: AtomicU64,
    /// Ticks appended with at least one validation flag.
    pub flagged_total: AtomicU64,
    /// Messages stored as rejected.
    pub rejected_total: AtomicU64,
    /// Blocks sealed.
    pub blocks_total: AtomicU64,
    /// Rows in the open blocks.
    pub rows_open: AtomicU64,
    /// Times the shard waited for a free block (writers behind).
    pub pool_waits_total: AtomicU64,
    /// Bytes waiting in the shard's input ring.
    pub input_queued_bytes: AtomicU64,
    /// Reference-data updates applied to the validator (set or cleared).
    pub references_applied_total: AtomicU64,
    /// Reference-data updates refused because the validator's table was full
    /// (`validation.instruments_max`): those instruments go unchecked.
    pub references_refused_total: AtomicU64,
    /// Ticks and signals not cached: the shard's cache table was full
    /// (`redis.instruments_max`, `redis.signals_max`).
    pub cache_untracked_total: AtomicU64,
    /// Good ticks for a cached bar older than the current one (ClickHouse has them).
    pub cache_bars_late_total: AtomicU64,
    /// Rejected messages per reason, in [`RejectReason::ALL`] order.
    pub rejected_by_reason: [AtomicU64; RejectReason::ALL.len()],
    /// Stored ticks carrying each flag, in [`FLAGS`] order.
    pub flagged_by_flag: [AtomicU64; FLAGS.len()],
}

/// Everything but the input ring, so the pop closure can borrow it while the ring is
/// borrowed by `pop`.
struct State {
    config: ShardConfig,
    ticks: TickColumns,
    signals: SignalColumns,
    rejects: RejectColumns,
    validator: Validator,
    /// Scratch tick, overwritten by every parse.
    tick: Tick,
    /// Scratch signal, overwritten by every parse.
    signal: Signal,
    /// Sequence of the last frame handled completely.
    completed_seq: u64,
    sealed: rtrb::Producer<SealedBlock>,
    free: rtrb::Consumer<SealedBlock>,
    /// Reference-data updates from the refdata thread.
    references: rtrb::Consumer<ReferenceUpdate>,
    /// The hot cache's hand-off to the Redis thread, when Redis is on.
    cache: Option<ShardCache>,
    stats: Arc<ShardStats>,
    waiter: Waiter,
    /// The stop-and-deadline signal: past the deadline the shard stops waiting for
    /// free blocks and gives up what it holds (never acknowledged).
    alert: Arc<Alert>,
    /// Set when the drain deadline made the shard give up: nothing more is appended.
    abandoned: bool,
    /// Local counters, published per pass.
    rejected_reasons: [u64; RejectReason::ALL.len()],
    flag_counts: [u64; FLAGS.len()],
    frames: u64,
    ticks_appended: u64,
    signals_appended: u64,
    flagged: u64,
    rejected: u64,
    references_applied: u64,
    references_refused: u64,
}

impl State {
    /// Applies queued reference-data updates, at most [`REFERENCE_UPDATES_PER_PASS`]
    /// so frames behind them wait ~50 µs at worst. Pops only what is there: the
    /// refdata thread waits when the queue is full, never the shard.
    fn apply_references(&mut self) -> usize {
        let mut applied = 0;
        while applied < REFERENCE_UPDATES_PER_PASS {
            let Ok(update) = self.references.pop() else {
                break;
            };
            if self.validator.set_reference(update.token, update.reference) {
                self.references_applied += 1;
            } else {
                self.references_refused += 1;
            }
            applied += 1;
        }
        applied
    }

    fn reject(
        &mut self,
        header: &FrameHeader,
        subject: &[u8],
        payload: &[u8],
        reason: RejectReason,
    ) {
        if self.rejects.is_full() {
            self.seal_all(self.completed_seq);
        }
        let appended = self.rejects.append(&Rejected {
            received_at_ms: header.received_ns / 1_000_000,
            subject,
            stream_seq: header.stream_seq,
            reason: reason.as_str(),
            detail: match header.kind {
                Kind::TickJson | Kind::TickKite => "tick",
                Kind::SignalJson => "signal",
                Kind::Unknown => "subject not routed by the appliance",
            },
            payload,
            payload_size: header.payload_bytes_original,
        });
        debug_assert!(appended, "sealed above when full");
        self.rejected += 1;
        self.rejected_reasons[reason as usize] += 1;
    }

    /// Validates the parsed scratch tick and appends it, sealing first when full.
    fn append_tick(
        &mut self,
        header: &FrameHeader,
        info: crate::shard::parse::ParseInfo,
        now_ms: i64,
    ) {
        self.tick.stream_seq = header.stream_seq;
        self.validator.validate(&mut self.tick, info, now_ms);
        if self.tick.validation_flags != 0 {
            self.flagged += 1;
            // Flagged ticks are the few: a loop over the flags only for them.
            for (count, (bit, _, _)) in self.flag_counts.iter_mut().zip(FLAGS) {
                *count += u64::from(self.tick.validation_flags & bit != 0);
            }
        }
        if self.ticks.is_full() {
            self.seal_all(self.completed_seq);
        }
        let appended = self.ticks.append(&self.tick);
        debug_assert!(appended, "sealed above when full");
        self.ticks_appended += 1;
        if let Some(cache) = &mut self.cache {
            cache.ticks.update(&self.tick);
        }
    }

    fn handle(&mut self, header: &FrameHeader, subject: &[u8], payload: &[u8], now_ms: i64) {
        if self.abandoned {
            return;
        }
        self.frames += 1;
        let received_at_ms = header.received_ns / 1_000_000;
        if header.flags & FLAG_TRUNCATED != 0 {
            self.reject(header, subject, payload, RejectReason::PayloadTooLarge);
        } else if header.kind == Kind::SignalJson {
            self.handle_signal(header, subject, payload);
        } else if header.kind != Kind::TickJson {
            self.reject(header, subject, payload, RejectReason::UnknownSubject);
        } else if payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            self.tick.received_at_ms = received_at_ms;
            match parse_json_tick(payload, &mut self.tick) {
                Ok(info) => {
                    self.tick.received_at_ms = received_at_ms;
                    self.append_tick(header, info, now_ms);
                }
                Err(reason) => self.reject(header, subject, payload, reason),
            }
        } else {
            self.handle_kite(header, subject, payload, now_ms);
        }
        self.completed_seq = self.completed_seq.max(header.stream_seq);
    }

    /// A JSON strategy signal into `strategy_signals`, its metadata copied raw.
    fn handle_signal(&mut self, header: &FrameHeader, subject: &[u8], payload: &[u8]) {
        match parse_json_signal(payload, &mut self.signal) {
            Ok(parsed) => {
                self.signal.stream_seq = header.stream_seq;
                self.signal.received_at_ms = header.received_ns / 1_000_000;
                if self.signals.is_full() {
                    self.seal_all(self.completed_seq);
                }
                let appended = self.signals.append(&self.signal, parsed.metadata(payload));
                debug_assert!(appended, "sealed above when full");
                self.signals_appended += 1;
                if let Some(cache) = &mut self.cache {
                    cache.signals.update(&self.signal);
                }
            }
            Err(reason) => self.reject(header, subject, payload, reason),
        }
    }

    /// A Kite binary frame: every packet becomes a tick with the frame's sequence; the
    /// exchange (absent from the packets) comes from the subject. A malformed frame is
    /// rejected whole before any of its packets is stored.
    fn handle_kite(&mut self, header: &FrameHeader, subject: &[u8], payload: &[u8], now_ms: i64) {
        let exchange = parse_tick_subject(subject)
            .map(|s| s.exchange)
            .unwrap_or_default();
        match parse_kite_message(payload, |_| ()) {
            Err(reason) => return self.reject(header, subject, payload, reason),
            // An empty frame (Kite's heartbeat, or a blank message) holds no tick; it
            // is still a message, so it is kept as rejected.
            Ok(0) => return self.reject(header, subject, payload, RejectReason::BadKitePacket),
            // A frame's ticks go into one block whenever they fit in one: a block then
            // holds whole messages, which the writer's "is this block stored" check
            // (a row with the block's last sequence) and the resume point rely on.
            Ok(packets) if packets > self.ticks.rows_free() && packets <= self.ticks.rows_max() => {
                self.seal_all(self.completed_seq);
            }
            Ok(_) => {}
        }
        let received_at_ms = header.received_ns / 1_000_000;
        let mut failure = None;
        // Validated above, so this pass sees the same packets.
        let _ = parse_kite_message(payload, |packet| {
            self.tick.received_at_ms = received_at_ms;
            match parse_kite_packet(packet, &mut self.tick) {
                Ok(info) => {
                    self.tick.exchange = exchange;
                    self.append_tick(header, info, now_ms);
                }
                Err(reason) => failure = failure.or(Some(reason)),
            }
        });
        if let Some(reason) = failure {
            // The good packets are stored; the frame is also kept, raw, with the reason.
            self.reject(header, subject, payload, reason);
        }
    }

    fn oldest_ms(&self) -> Option<i64> {
        [
            self.ticks.received_min_ms(),
            self.signals.received_min_ms(),
            self.rejects.received_min_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A free block from the pool, waiting for the writer when none is; `None` once
    /// the drain deadline has passed (the writer may be gone: waiting would hang).
    fn take_free(&mut self) -> Option<SealedBlock> {
        // Bound: the writer returns a block, or the deadline passes.
        loop {
            if let Ok(block) = self.free.pop() {
                self.waiter.reset();
                return Some(block);
            }
            if self.alert.expired() {
                return None;
            }
            self.stats.pool_waits_total.fetch_add(1, Ordering::Relaxed);
            self.waiter.idle();
        }
    }

    /// Blocks for every non-empty builder, all or none.
    fn take_group(&mut self) -> Option<[Option<SealedBlock>; 3]> {
        let wanted = [
            !self.ticks.is_empty(),
            !self.signals.is_empty(),
            !self.rejects.is_empty(),
        ];
        let mut group: [Option<SealedBlock>; 3] = [None, None, None];
        for (slot, wanted) in group.iter_mut().zip(wanted) {
            if wanted {
                // Blocks taken before a refusal are dropped with the group: the shard
                // is giving up, and the pool is not used again.
                *slot = Some(self.take_free()?);
            }
        }
        Some(group)
    }

    /// Seals every non-empty builder; the last block carries `durable_through`. Past
    /// the drain deadline with no free block, gives up instead: the open rows are
    /// dropped (never acknowledged, so JetStream redelivers them) and the shard stops.
    fn seal_all(&mut self, durable_through: u64) {
        // Every consumed frame lands in a builder, so empty builders mean nothing new.
        if self.oldest_ms().is_none() || self.abandoned {
            return;
        }
        let Some(mut taken) = self.take_group() else {
            self.abandon();
            return;
        };
        let compression = self.config.compression;
        let started = std::time::Instant::now();
        let rows = self.ticks.rows() + self.signals.rows() + self.rejects.rows();
        let mut group: [Option<SealedBlock>; 3] = [None, None, None];
        if let Some(mut block) = taken[0].take() {
            self.ticks
                .seal(&self.config.tick_schema, compression, &mut block);
            block.table = Table::Ticks;
            group[0] = Some(block);
        }
        if let Some(mut block) = taken[1].take() {
            self.signals
                .seal(&self.config.signal_schema, compression, &mut block);
            block.table = Table::Signals;
            group[1] = Some(block);
        }
        if let Some(mut block) = taken[2].take() {
            self.rejects
                .seal(&self.config.reject_schema, compression, &mut block);
            block.table = Table::Rejects;
            group[2] = Some(block);
        }
        let last = group.iter().rposition(Option::is_some);
        for (position, slot) in group.iter_mut().enumerate() {
            if let Some(mut block) = slot.take() {
                block.shard = self.config.index as u16;
                block.durable_through = (Some(position) == last).then_some(durable_through);
                assert!(block.rows > 0, "sealed an empty block");
                tracing::debug!(shard = self.config.index, block = %block.id(), rows = block.rows,
                    raw_bytes = block.raw_bytes, bytes = block.bytes.len(), "Block sealed");
                // The sealed ring holds the whole pool, so it always has room.
                if self.sealed.push(block).is_err() {
                    panic!(
                        "sealed ring of shard {} overflowed: pool accounting is broken",
                        self.config.index
                    );
                }
                self.stats.blocks_total.fetch_add(1, Ordering::Relaxed);
            }
        }
        tracing::debug!(
            shard = self.config.index,
            rows,
            durable_through,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "Sealed"
        );
    }

    /// Gives up at the drain deadline: the open rows are dropped unsealed. Their
    /// sequences were never made durable, so the watermark stays below them.
    fn abandon(&mut self) {
        let rows = self.ticks.rows() + self.signals.rows() + self.rejects.rows();
        tracing::error!(shard = self.config.index, rows, "Drain deadline passed with no free block (ClickHouse behind); open rows left unacknowledged for redelivery");
        self.ticks.clear();
        self.signals.clear();
        self.rejects.clear();
        self.abandoned = true;
    }

    fn publish_stats(&mut self, queued_bytes: usize) {
        let s = &self.stats;
        s.frames_total
            .fetch_add(std::mem::take(&mut self.frames), Ordering::Relaxed);
        s.ticks_total
            .fetch_add(std::mem::take(&mut self.ticks_appended), Ordering::Relaxed);
        s.signals_total.fetch_add(
            std::mem::take(&mut self.signals_appended),
            Ordering::Relaxed,
        );
        s.flagged_total
            .fetch_add(std::mem::take(&mut self.flagged), Ordering::Relaxed);
        s.rejected_total
            .fetch_add(std::mem::take(&mut self.rejected), Ordering::Relaxed);
        s.references_applied_total.fetch_add(
            std::mem::take(&mut self.references_applied),
            Ordering::Relaxed,
        );
        s.references_refused_total.fetch_add(
            std::mem::take(&mut self.references_refused),
            Ordering::Relaxed,
        );
        for (total, local) in s.rejected_by_reason.iter().zip(&mut self.rejected_reasons) {
            if *local > 0 {
                total.fetch_add(std::mem::take(local), Ordering::Relaxed);
            }
        }
        for (total, local) in s.flagged_by_flag.iter().zip(&mut self.flag_counts) {
            if *local > 0 {
                total.fetch_add(std::mem::take(local), Ordering::Relaxed);
            }
        }
        s.rows_open.store(
            (self.ticks.rows() + self.signals.rows() + self.rejects.rows()) as u64,
            Ordering::Relaxed,
        );
        s.input_queued_bytes
            .store(queued_bytes as u64, Ordering::Relaxed);
        if let Some(cache) = &mut self.cache {
            let take = std::mem::take;
            let untracked = take(&mut cache.ticks.untracked) + take(&mut cache.signals.untracked);
            s.cache_untracked_total
                .fetch_add(untracked, Ordering::Relaxed);
            s.cache_bars_late_total
                .fetch_add(take(&mut cache.ticks.bars_late), Ordering::Relaxed);
        }
    }
}

/// The column builders a shard fills, one per table, each sized once.
pub struct Builders {
    /// `market_ticks`.
    pub ticks: TickColumns,
    /// `strategy_signals`.
    pub signals: SignalColumns,
    /// `rejected_messages`.
    pub rejects: RejectColumns,
}

/// A shard thread's state.
pub struct Shard {
    input: FrameConsumer,
    state: State,
    /// Set by the receiver when no more frames will come.
    input_done: Arc<AtomicBool>,
    /// Set here after the last seal group is handed to the writer.
    finished: Arc<AtomicBool>,
}

/// The rings and flags that connect a shard to its neighbours.
pub struct ShardEdges {
    /// Frames from the receiver.
    pub input: FrameConsumer,
    /// Sealed blocks to the writer.
    pub sealed: rtrb::Producer<SealedBlock>,
    /// Emptied blocks back from the writer.
    pub free: rtrb::Consumer<SealedBlock>,
    /// Reference-data updates from the refdata thread (see `refdata`).
    pub references: rtrb::Consumer<ReferenceUpdate>,
    /// The hand-off to the Redis thread (see `cache`); `None` with Redis off.
    pub cache: Option<ShardCache>,
    /// The receiver is done.
    pub input_done: Arc<AtomicBool>,
    /// This shard is done.
    pub finished: Arc<AtomicBool>,
    /// The stop-and-deadline signal.
    pub alert: Arc<Alert>,
}

impl Shard {
    /// A shard with its builders sized once.
    pub fn new(
        config: ShardConfig,
        edges: ShardEdges,
        builders: Builders,
        validator: Validator,
        stats: Arc<ShardStats>,
        waiter: Waiter,
    ) -> Shard {
        Shard {
            input: edges.input,
            state: State {
                config,
                ticks: builders.ticks,
                signals: builders.signals,
                rejects: builders.rejects,
                validator,
                tick: Tick::default(),
                signal: Signal::default(),
                completed_seq: 0,
                sealed: edges.sealed,
                free: edges.free,
                references: edges.references,
                cache: edges.cache,
                stats,
                waiter,
                alert: edges.alert,
                abandoned: false,
                rejected_reasons: [0; RejectReason::ALL.len()],
                flag_counts: [0; FLAGS.len()],
                frames: 0,
                ticks_appended: 0,
                signals_appended: 0,
                flagged: 0,
                rejected: 0,
                references_applied: 0,
                references_refused: 0,
            },
            input_done: edges.input_done,
            finished: edges.finished,
        }
    }

    /// The shard's main loop, until the receiver is done and the ring is drained.
    pub fn run(mut self) {
        loop {
            let now = now_ms();
            // Before the frames, so a tick in this pass already meets its reference.
            let applied = self.state.apply_references();
            let mut handled = 0;
            while handled < FRAMES_PER_PASS {
                let state = &mut self.state;
                if self
                    .input
                    .pop(|h, subject, payload| state.handle(h, subject, payload, now))
                    .is_none()
                {
                    break;
                }
                handled += 1;
            }
            let state = &mut self.state;
            if let Some(oldest) = state.oldest_ms() {
                if now_ms() - oldest >= state.config.flush_interval_ms as i64 {
                    state.seal_all(state.completed_seq);
                }
            }
            state.publish_stats(self.input.queued_bytes());
            if state.abandoned {
                self.finished.store(true, Ordering::Release);
                return;
            }
            if handled > 0 || applied > 0 {
                state.waiter.reset();
                continue;
            }
            if state.alert.expired() {
                // The receiver has stopped routing: seal what is open if a block is
                // free, else give up; frames left in the ring are never acknowledged.
                state.seal_all(state.completed_seq);
                self.finished.store(true, Ordering::Release);
                return;
            }
            if self.input_done.load(Ordering::Acquire) && self.input.queued_bytes() == 0 {
                state.seal_all(state.completed_seq);
                state.publish_stats(0);
                self.finished.store(true, Ordering::Release);
                return;
            }
            state.waiter.idle();
        }
    }
}
