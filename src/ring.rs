//! The receiver → shard edge: an rtrb SPSC ring of bytes carrying variable-size
//! message frames, so a 300-byte tick costs 300 bytes of ring, not a worst-case slot.
//!
//! ```text
//!   receiver ──push(header, subject, payload)──► [ byte ring, capacity ring_bytes ] ──pop──► shard
//!            full: push returns false; the receiver stops pulling (back-pressure)
//! ```
//!
//! Frame layout (little-endian):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | payload bytes kept (≤ `payload_bytes_max`, or the truncation cap) |
//! | 4 | 1 | kind ([`Kind`]) |
//! | 5 | 1 | flags: bit 0 = payload truncated (it exceeded `payload_bytes_max`) |
//! | 6 | 2 | subject bytes |
//! | 8 | 8 | stream sequence (0 on core NATS) |
//! | 16 | 8 | receive time, Unix ns |
//! | 24 | 4 | original payload bytes (before truncation) |
//! | 28 | 4 | reserved, 0 |
//! | 32 | .. | subject, then payload |
//!
//! A frame is published with one `write_chunk` commit, so the shard never sees half of
//! one. No allocation on either side: the shard copies a frame that wraps around the
//! ring's end into its scratch buffer, sized once for the largest frame.

use std::mem::MaybeUninit;

/// Average frame bytes per ring slot: `ingest.ring_slots` counts messages of ~1 KiB
/// (a JSON tick with full depth is ~700 B).
pub const RING_SLOT_BYTES: usize = 1024;

/// Bytes before the subject.
pub const HEADER_BYTES: usize = 32;
/// Longest subject carried; NATS subjects of ours are ~30 bytes.
pub const SUBJECT_BYTES_MAX: usize = 256;
/// Payload bytes kept of an oversize message: enough for `rejected_messages.raw`.
pub const TRUNCATED_BYTES: usize = 4096;
/// Flag: the payload was longer than the limit and is cut to [`TRUNCATED_BYTES`].
pub const FLAG_TRUNCATED: u8 = 1;

/// What a frame holds, decided by the receiver from the subject alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A JSON tick (`market.ticks.<exchange>.<token>`).
    TickJson = 0,
    /// A Kite binary frame of tick packets.
    TickKite = 1,
    /// A JSON strategy signal.
    SignalJson = 2,
    /// A subject the appliance does not know; stored as rejected.
    Unknown = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> Kind {
        match byte {
            0 => Kind::TickJson,
            1 => Kind::TickKite,
            2 => Kind::SignalJson,
            _ => Kind::Unknown,
        }
    }
}

/// The fixed part of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the payload is.
    pub kind: Kind,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// JetStream stream sequence, 0 on core NATS.
    pub stream_seq: u64,
    /// Receive time, Unix ns.
    pub received_ns: i64,
    /// Payload size as received, before any truncation.
    pub payload_bytes_original: u32,
}

/// Bytes a frame with this subject and payload occupies in the ring.
pub fn frame_bytes(subject: usize, payload: usize) -> usize {
    HEADER_BYTES + subject + payload
}

/// Producer half, owned by the receiver.
pub struct FrameProducer {
    /// The ring.
    inner: rtrb::Producer<u8>,
    /// Payloads above this are cut to [`TRUNCATED_BYTES`] and flagged.
    payload_bytes_max: usize,
}

/// Consumer half, owned by a shard.
pub struct FrameConsumer {
    /// The ring.
    inner: rtrb::Consumer<u8>,
    /// Holds a frame that wraps around the ring's end.
    scratch: Vec<u8>,
}

/// A ring of `capacity_bytes` for payloads of up to `payload_bytes_max`.
///
/// # Panics
/// When the ring cannot hold two largest frames (config validation prevents it).
pub fn frame_ring(
    capacity_bytes: usize,
    payload_bytes_max: usize,
) -> (FrameProducer, FrameConsumer) {
    let frame_max = frame_bytes(SUBJECT_BYTES_MAX, payload_bytes_max.max(TRUNCATED_BYTES));
    assert!(
        capacity_bytes >= 2 * frame_max,
        "ring of {capacity_bytes} B cannot hold two {frame_max} B frames"
    );
    let (mut inner, consumer) = rtrb::RingBuffer::new(capacity_bytes);
    prefault(&mut inner);
    (
        FrameProducer {
            inner,
            payload_bytes_max,
        },
        FrameConsumer {
            inner: consumer,
            scratch: vec![0; frame_max],
        },
    )
}

impl FrameProducer {
    /// Free bytes.
    pub fn free_bytes(&self) -> usize {
        self.inner.slots()
    }

    /// Ring capacity in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.inner.buffer().capacity()
    }

    /// Whether [`FrameProducer::push`] of a message this size would find room now.
    pub fn has_room(&self, subject_len: usize, payload_len: usize) -> bool {
        let (subject, kept) = self.kept_lens(subject_len, payload_len);
        self.inner.slots() >= frame_bytes(subject, kept)
    }

    /// The subject and payload lengths a frame keeps: overlong subjects cut, oversize
    /// payloads truncated (`push` flags those).
    fn kept_lens(&self, subject_len: usize, payload_len: usize) -> (usize, usize) {
        let kept = if payload_len > self.payload_bytes_max {
            TRUNCATED_BYTES.min(payload_len)
        } else {
            payload_len
        };
        (subject_len.min(SUBJECT_BYTES_MAX), kept)
    }

    /// Pushes one message; `false` (nothing written) when the ring lacks room: the
    /// caller keeps the message and waits. Oversize payloads are truncated and
    /// flagged; overlong subjects are cut (the shard rejects such a message anyway).
    pub fn push(&mut self, header: FrameHeader, subject: &[u8], payload: &[u8]) -> bool {
        let (subject_len, kept_len) = self.kept_lens(subject.len(), payload.len());
        let subject = &subject[..subject_len];
        let kept = &payload[..kept_len];
        let mut flags = header.flags;
        if payload.len() > self.payload_bytes_max {
            flags |= FLAG_TRUNCATED;
        }
        let total = frame_bytes(subject.len(), kept.len());
        // Uninitialised: `write_chunk` would first fill every byte with 0 and the frame
        // would be written twice.
        let Ok(mut chunk) = self.inner.write_chunk_uninit(total) else {
            return false;
        };
        let mut head = [0u8; HEADER_BYTES];
        head[0..4].copy_from_slice(&(kept.len() as u32).to_le_bytes());
        head[4] = header.kind as u8;
        head[5] = flags;
        head[6..8].copy_from_slice(&(subject.len() as u16).to_le_bytes());
        head[8..16].copy_from_slice(&header.stream_seq.to_le_bytes());
        head[16..24].copy_from_slice(&header.received_ns.to_le_bytes());
        head[24..28].copy_from_slice(&(payload.len().min(u32::MAX as usize) as u32).to_le_bytes());
        let (first, second) = chunk.as_mut_slices();
        let mut writer = SplitWriter {
            first,
            second,
            at: 0,
        };
        writer.put(&head);
        writer.put(subject);
        writer.put(kept);
        assert_eq!(writer.at, total, "a frame fills its chunk exactly");
        commit_written(chunk, total);
        true
    }
}

/// Refuses rings that would not fit in the memory the host has available now: they are
/// written whole at start ([`prefault`]), so a `ring_slots` too large for the host
/// would otherwise end in the kernel's OOM killer instead of an error. `available` is
/// `MemAvailable` in bytes ([`mem_available_bytes`]); `None` (no `/proc/meminfo`)
/// skips the check.
pub fn check_ring_memory(
    rings: usize,
    ring_bytes: usize,
    available: Option<u64>,
) -> Result<(), String> {
    let Some(available) = available else {
        return Ok(());
    };
    let total = (rings as u64).saturating_mul(ring_bytes as u64);
    if total <= available {
        return Ok(());
    }
    const MIB: u64 = 1 << 20;
    Err(format!(
        "{rings} receiver ring(s) of {} MiB (`ingest.ring_slots` x 1 KiB, one per shard) need {} MiB, \
         written at start, but the host has {} MiB available (MemAvailable in /proc/meminfo); \
         lower `ingest.ring_slots` or `ingest.shards`",
        ring_bytes as u64 / MIB,
        total / MIB,
        available / MIB
    ))
}

/// `MemAvailable` from `/proc/meminfo`, in bytes; `None` where there is no such line.
pub fn mem_available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&meminfo)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut fields = line["MemAvailable:".len()..].split_whitespace();
    let kib: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// Touches every byte of an empty ring once, in huge pages where the kernel has them,
/// so the receiver's first pass through it takes no page faults.
///
/// `RingBuffer::new` only reserves the memory: without this the receiver's first
/// 64 MiB of messages fault in 16,384 zeroed 4 KiB pages one by one, inside its loop
/// (with transparent huge pages at `madvise`, Debian's default, the ring never gets
/// 2 MiB pages otherwise), and each later pass walks 16,384 TLB entries' worth of
/// memory. The chunk is dropped uncommitted: nothing is published, the ring stays
/// empty.
fn prefault(producer: &mut rtrb::Producer<u8>) {
    let Ok(mut chunk) = producer.write_chunk_uninit(producer.slots()) else {
        return;
    };
    let (first, second) = chunk.as_mut_slices();
    for half in [first, second] {
        advise_huge_pages(half);
        half.fill(MaybeUninit::new(0));
    }
}

/// `madvise(MADV_HUGEPAGE)` over the whole 2 MiB pages inside `memory`; a refusal (no
/// THP in the kernel, a region too small) only leaves it in 4 KiB pages.
#[allow(unsafe_code)] // one madvise over memory this ring owns.
fn advise_huge_pages(memory: &mut [MaybeUninit<u8>]) {
    const HUGE: usize = 2 << 20;
    let start = memory.as_mut_ptr() as usize;
    let first_huge = start.next_multiple_of(HUGE);
    let end = (start + memory.len()) & !(HUGE - 1);
    if end <= first_huge {
        return;
    }
    // SAFETY: [first_huge, end) lies inside `memory`, which the ring owns and nothing
    // else maps; MADV_HUGEPAGE changes how the kernel backs the pages, not their
    // contents or permissions.
    unsafe {
        libc::madvise(
            first_huge as *mut libc::c_void,
            end - first_huge,
            libc::MADV_HUGEPAGE,
        );
    }
}

/// Publishes a chunk whose `written` bytes were all written by [`SplitWriter`].
#[allow(unsafe_code)] // rtrb's uninitialised commit, the ring's one unsafe call per frame.
fn commit_written(chunk: rtrb::chunks::WriteChunkUninit<'_, u8>, written: usize) {
    // SAFETY: the chunk holds exactly `written` slots (asked for `total`, asserted equal
    // above), and SplitWriter wrote each of them in order, first half then second, so
    // every committed byte is initialised.
    unsafe { chunk.commit(written) };
}

/// Writes across the two (uninitialised) halves a wrapped chunk hands out.
struct SplitWriter<'a> {
    first: &'a mut [MaybeUninit<u8>],
    second: &'a mut [MaybeUninit<u8>],
    at: usize,
}

impl SplitWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let start = self.at.min(self.first.len());
        let in_first = bytes.len().min(self.first.len() - start);
        copy_into(&mut self.first[start..start + in_first], &bytes[..in_first]);
        let rest = &bytes[in_first..];
        let offset = (self.at + in_first).saturating_sub(self.first.len());
        copy_into(&mut self.second[offset..offset + rest.len()], rest);
        self.at += bytes.len();
    }
}

/// `<[MaybeUninit<u8>]>::write_copy_of_slice` for the crate's MSRV (1.80; that one is
/// 1.93): LLVM turns the loop into a memcpy.
fn copy_into(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    for (slot, &byte) in dst.iter_mut().zip(src) {
        slot.write(byte);
    }
}

impl FrameConsumer {
    /// Bytes waiting in the ring.
    pub fn queued_bytes(&self) -> usize {
        self.inner.slots()
    }

    /// Hands the next whole frame to `f` and consumes it; `None` when none is waiting.
    pub fn pop<R>(&mut self, f: impl FnOnce(&FrameHeader, &[u8], &[u8]) -> R) -> Option<R> {
        let mut head = [0u8; HEADER_BYTES];
        {
            let chunk = self.inner.read_chunk(HEADER_BYTES).ok()?;
            let (a, b) = chunk.as_slices();
            head[..a.len()].copy_from_slice(a);
            head[a.len()..].copy_from_slice(b);
            // Not committed: the header is read again with the body below.
        }
        let payload_len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let subject_len = u16::from_le_bytes(head[6..8].try_into().expect("2 bytes")) as usize;
        let header = FrameHeader {
            kind: Kind::from_byte(head[4]),
            flags: head[5],
            stream_seq: u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")),
            received_ns: i64::from_le_bytes(head[16..24].try_into().expect("8 bytes")),
            payload_bytes_original: u32::from_le_bytes(head[24..28].try_into().expect("4 bytes")),
        };
        let total = frame_bytes(subject_len, payload_len);
        // The producer commits whole frames, so the rest is there once the header is.
        let chunk = self
            .inner
            .read_chunk(total)
            .expect("frames are committed whole");
        let (a, b) = chunk.as_slices();
        let result = if b.is_empty() {
            let body = &a[HEADER_BYTES..];
            f(&header, &body[..subject_len], &body[subject_len..])
        } else {
            assert!(
                total <= self.scratch.len(),
                "frame of {total} B above the scratch size"
            );
            self.scratch[..a.len()].copy_from_slice(a);
            self.scratch[a.len()..total].copy_from_slice(b);
            let body = &self.scratch[HEADER_BYTES..total];
            f(&header, &body[..subject_len], &body[subject_len..])
        };
        chunk.commit_all();
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    //! Frames come out as they went in, across the ring's wrap-around, and a full ring
    //! refuses rather than overwrites.
    use super::*;

    fn header(seq: u64) -> FrameHeader {
        FrameHeader {
            kind: Kind::TickJson,
            flags: 0,
            stream_seq: seq,
            received_ns: seq as i64 * 10,
            payload_bytes_original: 0,
        }
    }

    #[test]
    fn frames_round_trip_across_wrap_around() {
        let (mut producer, mut consumer) = frame_ring(20_000, 4096);
        for round in 0..1_000u64 {
            let payload = vec![(round % 251) as u8; (round as usize * 37) % 3000];
            assert!(producer.push(header(round), b"market.ticks.NSE.1", &payload));
            let seen = consumer
                .pop(|h, subject, body| {
                    assert_eq!(h.stream_seq, round);
                    assert_eq!(h.payload_bytes_original as usize, payload.len());
                    assert_eq!(subject, b"market.ticks.NSE.1");
                    assert_eq!(body, &payload[..]);
                })
                .is_some();
            assert!(seen);
        }
        assert!(consumer.pop(|_, _, _| ()).is_none());
    }

    #[test]
    fn full_ring_refuses_and_oversize_payloads_are_truncated() {
        let (mut producer, mut consumer) =
            frame_ring(frame_bytes(SUBJECT_BYTES_MAX, 8192) * 2, 8192);
        let big = vec![7u8; 100_000];
        assert!(producer.push(header(1), b"s", &big));
        consumer
            .pop(|h, _, body| {
                assert_eq!(h.flags & FLAG_TRUNCATED, FLAG_TRUNCATED);
                assert_eq!(h.payload_bytes_original, 100_000);
                assert_eq!(body.len(), TRUNCATED_BYTES);
            })
            .unwrap();
        let mut pushed = 0;
        while producer.push(header(2), b"s", &[1u8; 8000]) {
            pushed += 1;
        }
        assert!(pushed >= 1);
        assert!(producer.free_bytes() < frame_bytes(1, 8000));
    }

    #[test]
    fn rings_larger_than_the_available_memory_are_refused_by_name() {
        const GIB: u64 = 1 << 30;
        assert!(check_ring_memory(2, 64 << 20, Some(GIB)).is_ok());
        assert!(
            check_ring_memory(2, 512 << 20, Some(GIB)).is_ok(),
            "exactly what is available"
        );
        let error = check_ring_memory(4, 16 << 30, Some(24 * GIB)).unwrap_err();
        assert!(error.contains("need 65536 MiB"), "{error}");
        assert!(error.contains("24576 MiB available"), "{error}");
        assert!(error.contains("ingest.ring_slots"), "{error}");
        assert!(
            check_ring_memory(64, 16 << 30, None).is_ok(),
            "no /proc/meminfo: no check"
        );
    }

    #[test]
    fn mem_available_is_read_in_bytes_and_odd_lines_give_none() {
        let meminfo =
            "MemTotal:       24597176 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: lots kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: 5 MB\n"), None);
        assert_eq!(
            parse_mem_available("MemAvailable: 18446744073709551615 kB\n"),
            None
        );
        assert!(
            mem_available_bytes().is_some(),
            "this host has /proc/meminfo"
        );
    }

    /// Minor page faults of the calling thread so far.
    #[allow(unsafe_code)] // getrusage into a local.
    fn thread_minor_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: RUSAGE_THREAD fills the struct it is given; zeroed is a valid rusage.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD)");
        // SAFETY: initialised by the call above (zeroed before it in any case).
        unsafe { usage.assume_init() }.ru_minflt
    }

    #[test]
    fn a_new_ring_is_empty_and_filling_it_takes_no_page_faults() {
        // 8 MiB: 2,048 pages of 4 KiB to fault in if the ring were left untouched.
        let (mut producer, mut consumer) = frame_ring(8 << 20, 4096);
        assert_eq!(producer.free_bytes(), producer.capacity_bytes());
        assert_eq!(consumer.queued_bytes(), 0);
        assert!(
            consumer.pop(|_, _, _| ()).is_none(),
            "prefaulting publishes nothing"
        );
        let payload = [3u8; 1000];
        let before = thread_minor_faults();
        let mut frames = 0u64;
        while producer.push(header(frames), b"market.ticks.NSE.1", &payload) {
            frames += 1;
        }
        let faults = thread_minor_faults() - before;
        assert!(frames > 7_900, "{frames} frames of 1,050 B fill 8 MiB");
        assert!(
            faults < 64,
            "{faults} page faults while filling a prefaulted 8 MiB ring"
        );
        assert!(consumer
            .pop(|h, _, body| assert_eq!((h.stream_seq, body), (0, &payload[..])))
            .is_some());
    }
}
