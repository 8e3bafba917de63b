//! The shard thread: frames in, sealed blocks out.
//!
//! ```text
//!   receiver ──frame ring──► shard i: parse → validate → append ──seal──► sealed ring ──► writer
//!                                    └─ unparseable → reject rows ─┘       ◄── free ring (pool)
//! ```
//!
//! The loop drains up to [`FRAMES_PER_PASS`] frames, then does its periodic work: seal
//! on size (a builder is full) or age (the oldest row waited `flush_interval_ms`), and
//! publish stats. Sealing seals every open builder at once, so one seal group covers
//! every sequence the shard consumed (see `durable`). When the pool has no free block,
//! the shard waits: it stops consuming, its frame ring fills, the receiver stops
//! pulling. Must never: allocate per message, touch the network, read JSON twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::model::quality::RejectReason;
use crate::model::Tick;
use crate::native::Method;
use crate::ring::{FrameConsumer, FrameHeader, Kind, FLAG_TRUNCATED};
use crate::runtime::Waiter;
use crate::write::now_ms;

use super::columns::{SealedBlock, Table, TickColumns, TickSchema};
use super::parse::json::parse_json_tick;
use super::rejects::{RejectColumns, RejectSchema, Rejected};
use super::validate::Validator;

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
}

/// The per-message state, apart from the input ring so the pop closure can borrow it.
struct Builders {
    ticks: TickColumns,
    rejects: RejectColumns,
    validator: Validator,
    /// Scratch tick, overwritten by every parse.
    tick: Tick,
    /// Highest stream sequence consumed.
    last_seq: u64,
    /// Local counters, published per pass.
    frames: u64,
    ticks_appended: u64,
    flagged: u64,
    rejected: u64,
}

impl Builders {
    fn reject(
        &mut self,
        header: &FrameHeader,
        subject: &[u8],
        payload: &[u8],
        reason: RejectReason,
    ) {
        let appended = self.rejects.append(&Rejected {
            received_at_ms: header.received_ns / 1_000_000,
            subject,
            stream_seq: header.stream_seq,
            reason: reason.as_str(),
            detail: match header.kind {
                Kind::TickJson => "JSON tick",
                Kind::TickKite => "Kite binary frame",
                Kind::SignalJson => "JSON signal",
                Kind::Unknown => "subject not routed by the appliance",
            },
            payload,
            payload_size: header.payload_bytes_original,
        });
        debug_assert!(appended, "the loop seals before a builder is full");
        self.rejected += 1;
    }

    fn handle(&mut self, header: &FrameHeader, subject: &[u8], payload: &[u8], now_ms: i64) {
        self.frames += 1;
        self.last_seq = self.last_seq.max(header.stream_seq);
        if header.flags & FLAG_TRUNCATED != 0 {
            return self.reject(header, subject, payload, RejectReason::PayloadTooLarge);
        }
        match header.kind {
            Kind::TickJson => match parse_json_tick(payload, &mut self.tick) {
                Ok(info) => {
                    self.tick.stream_seq = header.stream_seq;
                    self.tick.received_at_ms = header.received_ns / 1_000_000;
                    self.validator.validate(&mut self.tick, info, now_ms);
                    if self.tick.validation_flags != 0 {
                        self.flagged += 1;
                    }
                    let appended = self.ticks.append(&self.tick);
                    debug_assert!(appended, "the loop seals before a builder is full");
                    self.ticks_appended += 1;
                }
                Err(reason) => self.reject(header, subject, payload, reason),
            },
            Kind::TickKite | Kind::SignalJson | Kind::Unknown => {
                self.reject(header, subject, payload, RejectReason::UnknownSubject)
            }
        }
    }

    fn any_full(&self) -> bool {
        self.ticks.is_full() || self.rejects.is_full()
    }

    fn oldest_ms(&self) -> Option<i64> {
        match (self.ticks.received_min_ms(), self.rejects.received_min_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A shard thread's state.
pub struct Shard {
    config: ShardConfig,
    input: FrameConsumer,
    sealed: rtrb::Producer<SealedBlock>,
    free: rtrb::Consumer<SealedBlock>,
    builders: Builders,
    stats: Arc<ShardStats>,
    waiter: Waiter,
    /// Set by the receiver when no more frames will come.
    input_done: Arc<AtomicBool>,
    /// Set here after the last seal group is handed to the writer.
    finished: Arc<AtomicBool>,
    /// Sequence of the last seal group handed over.
    sealed_through: u64,
}

/// The rings and flags that connect a shard to its neighbours.
pub struct ShardEdges {
    /// Frames from the receiver.
    pub input: FrameConsumer,
    /// Sealed blocks to the writer.
    pub sealed: rtrb::Producer<SealedBlock>,
    /// Emptied blocks back from the writer.
    pub free: rtrb::Consumer<SealedBlock>,
    /// The receiver is done.
    pub input_done: Arc<AtomicBool>,
    /// This shard is done.
    pub finished: Arc<AtomicBool>,
}

impl Shard {
    /// A shard with its builders sized once.
    pub fn new(
        config: ShardConfig,
        edges: ShardEdges,
        ticks: TickColumns,
        rejects: RejectColumns,
        validator: Validator,
        stats: Arc<ShardStats>,
        waiter: Waiter,
    ) -> Shard {
        Shard {
            config,
            input: edges.input,
            sealed: edges.sealed,
            free: edges.free,
            builders: Builders {
                ticks,
                rejects,
                validator,
                tick: Tick::default(),
                last_seq: 0,
                frames: 0,
                ticks_appended: 0,
                flagged: 0,
                rejected: 0,
            },
            stats,
            waiter,
            input_done: edges.input_done,
            finished: edges.finished,
            sealed_through: 0,
        }
    }

    /// The shard's main loop, until the receiver is done and the ring is drained.
    pub fn run(mut self) {
        loop {
            let now = now_ms();
            let mut handled = 0;
            while handled < FRAMES_PER_PASS {
                if self.builders.any_full() {
                    self.seal_all();
                }
                let builders = &mut self.builders;
                if self
                    .input
                    .pop(|h, subject, payload| builders.handle(h, subject, payload, now))
                    .is_none()
                {
                    break;
                }
                handled += 1;
            }
            let now = now_ms();
            if let Some(oldest) = self.builders.oldest_ms() {
                if now - oldest >= self.config.flush_interval_ms as i64 {
                    self.seal_all();
                }
            }
            self.publish_stats();
            if handled > 0 {
                self.waiter.reset();
                continue;
            }
            if self.input_done.load(Ordering::Acquire) && self.input.queued_bytes() == 0 {
                self.seal_all();
                self.publish_stats();
                self.finished.store(true, Ordering::Release);
                return;
            }
            self.waiter.idle();
        }
    }

    /// A free block from the pool, waiting for the writer when none is.
    fn take_free(&mut self) -> SealedBlock {
        loop {
            if let Ok(block) = self.free.pop() {
                self.waiter.reset();
                return block;
            }
            self.stats.pool_waits_total.fetch_add(1, Ordering::Relaxed);
            self.waiter.idle();
        }
    }

    /// Seals every non-empty builder; the last block carries the group's durable
    /// sequence.
    fn seal_all(&mut self) {
        // Every consumed frame lands in a builder, so empty builders mean nothing new.
        if self.builders.oldest_ms().is_none() {
            return;
        }
        let compression = self.config.compression;
        let mut group: [Option<SealedBlock>; 2] = [None, None];
        if !self.builders.ticks.is_empty() {
            let mut block = self.take_free();
            self.builders
                .ticks
                .seal(&self.config.tick_schema, compression, &mut block);
            block.table = Table::Ticks;
            group[0] = Some(block);
        }
        if !self.builders.rejects.is_empty() {
            let mut block = self.take_free();
            self.builders
                .rejects
                .seal(&self.config.reject_schema, compression, &mut block);
            block.table = Table::Rejects;
            group[1] = Some(block);
        }
        let last = group.iter().rposition(Option::is_some);
        for (position, slot) in group.iter_mut().enumerate() {
            if let Some(mut block) = slot.take() {
                block.shard = self.config.index as u16;
                block.durable_through = (Some(position) == last).then_some(self.builders.last_seq);
                assert!(block.rows > 0, "sealed an empty block");
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
        self.sealed_through = self.builders.last_seq;
    }

    fn publish_stats(&mut self) {
        let b = &mut self.builders;
        let s = &self.stats;
        s.frames_total
            .fetch_add(std::mem::take(&mut b.frames), Ordering::Relaxed);
        s.ticks_total
            .fetch_add(std::mem::take(&mut b.ticks_appended), Ordering::Relaxed);
        s.flagged_total
            .fetch_add(std::mem::take(&mut b.flagged), Ordering::Relaxed);
        s.rejected_total
            .fetch_add(std::mem::take(&mut b.rejected), Ordering::Relaxed);
        s.rows_open.store(
            (b.ticks.rows() + b.rejects.rows()) as u64,
            Ordering::Relaxed,
        );
    }
}
