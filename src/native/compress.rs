//! Compression frames: ClickHouse's checksummed envelope around LZ4 (or no) compression
//! (protocol notes §8).
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 16 | CityHash128 v1.0.2 of bytes 16..end, low half first, each half LE |
//! | 16 | 1 | method: `0x82` LZ4, `0x02` NONE (`0x90` ZSTD is refused) |
//! | 17 | 4 | `UInt32` LE frame size minus the checksum (header 9 bytes + payload) |
//! | 21 | 4 | `UInt32` LE uncompressed size |
//! | 25 | .. | payload: a raw LZ4 *block* (no frame header, no size prefix) |
//!
//! Writing never allocates when `out` already has the capacity
//! [`frames_bytes_max`] asks for; the sealer sizes its buffers with it once.
//! Sources: ClickHouse `src/Compression/CompressionInfo.h`,
//! `CompressedReadBufferBase.cpp`; lz4_flex `block` API; cityhash-rs `cityhash_102_128`.

use std::io::Read;

use super::wire::read_exact;
use super::Error;

/// Checksum bytes at the start of every frame.
pub const CHECKSUM_BYTES: usize = 16;
/// Method byte plus the two sizes.
pub const HEADER_BYTES: usize = 9;
/// Everything before the payload.
pub const FRAME_OVERHEAD_BYTES: usize = CHECKSUM_BYTES + HEADER_BYTES;
/// Uncompressed bytes per frame, as ClickHouse's own 1 MiB buffer cuts them.
pub const FRAME_RAW_BYTES_MAX: usize = 1 << 20;
/// Largest frame we read back: 64 MiB either side. ClickHouse's frames are about
/// 1 MiB; anything far larger is corruption, refused before allocating.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

/// Method byte for LZ4.
pub const METHOD_LZ4: u8 = 0x82;
/// Method byte for no compression.
pub const METHOD_NONE: u8 = 0x02;
/// Method byte for ZSTD (recognised only to name it in the error).
pub const METHOD_ZSTD: u8 = 0x90;

pub use crate::model::block::Method;

/// The frame's method byte.
fn method_byte(method: Method) -> u8 {
    match method {
        Method::Lz4 => METHOD_LZ4,
        Method::None => METHOD_NONE,
    }
}

/// The most bytes [`compress_frames`] can append for `raw_bytes` of input: the sealer
/// reserves this once per buffer so compression never reallocates.
pub fn frames_bytes_max(raw_bytes: usize) -> usize {
    let frames = raw_bytes.div_ceil(FRAME_RAW_BYTES_MAX).max(1);
    let payload_max =
        lz4_flex::block::get_maximum_output_size(FRAME_RAW_BYTES_MAX.min(raw_bytes.max(1)));
    frames * (FRAME_OVERHEAD_BYTES + payload_max.max(FRAME_RAW_BYTES_MAX.min(raw_bytes.max(1))))
}

/// The 16 checksum bytes as ClickHouse lays them out: the hash's first 64-bit half
/// (cityhash-rs returns it in the upper bits) then the second, each little-endian.
pub fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_BYTES] {
    cityhash_rs::cityhash_102_128(bytes)
        .rotate_left(64)
        .to_le_bytes()
}

/// The LZ4 match table, kept by whoever compresses repeatedly: lz4_flex would
/// otherwise allocate a fresh 16 KiB table per frame.
pub use lz4_flex::block::CompressTable;

/// A table for frames of up to [`FRAME_RAW_BYTES_MAX`] (32-bit entries).
pub fn compress_table() -> CompressTable {
    CompressTable::large()
}

/// Appends `raw` as one or more frames of at most 1 MiB of input each.
pub fn compress_frames(method: Method, raw: &[u8], out: &mut Vec<u8>, table: &mut CompressTable) {
    let mut chunks = raw.chunks(FRAME_RAW_BYTES_MAX).peekable();
    if chunks.peek().is_none() {
        write_frame(method, &[], out, table);
    }
    for chunk in chunks {
        write_frame(method, chunk, out, table);
    }
}

fn write_frame(method: Method, chunk: &[u8], out: &mut Vec<u8>, table: &mut CompressTable) {
    let start = out.len();
    let payload_max = match method {
        Method::Lz4 => lz4_flex::block::get_maximum_output_size(chunk.len()),
        Method::None => chunk.len(),
    };
    out.resize(start + FRAME_OVERHEAD_BYTES + payload_max, 0);
    let payload = &mut out[start + FRAME_OVERHEAD_BYTES..];
    let payload_bytes = match method {
        Method::Lz4 => lz4_flex::block::compress_into_with_table(chunk, payload, table)
            .expect("output sized by get_maximum_output_size"),
        Method::None => {
            payload.copy_from_slice(chunk);
            chunk.len()
        }
    };
    out.truncate(start + FRAME_OVERHEAD_BYTES + payload_bytes);
    let frame = &mut out[start..];
    frame[CHECKSUM_BYTES] = method_byte(method);
    let size_with_header = (HEADER_BYTES + payload_bytes) as u32;
    frame[17..21].copy_from_slice(&size_with_header.to_le_bytes());
    frame[21..25].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
    let sum = checksum(&frame[CHECKSUM_BYTES..]);
    frame[..CHECKSUM_BYTES].copy_from_slice(&sum);
}

/// A frame's method and sizes, read from its head and checked against the limits
/// before anything is allocated for it.
struct FrameHead {
    method: u8,
    payload_bytes: usize,
    raw_bytes: usize,
}

impl FrameHead {
    fn parse(head: &[u8; FRAME_OVERHEAD_BYTES]) -> Result<FrameHead, Error> {
        let word = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
        let (size_with_header, raw_bytes) = (word(17) as usize, word(21) as usize);
        if !(HEADER_BYTES..=FRAME_BYTES_MAX).contains(&size_with_header)
            || raw_bytes > FRAME_BYTES_MAX
        {
            return Err(Error::Frame(format!(
                "frame sizes out of range (compressed {size_with_header} B, raw {raw_bytes} B, limit {FRAME_BYTES_MAX} B)"
            )));
        }
        Ok(FrameHead {
            method: head[CHECKSUM_BYTES],
            payload_bytes: size_with_header - HEADER_BYTES,
            raw_bytes,
        })
    }

    /// Appends `payload`, this frame's, decompressed to `out`.
    fn decode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let raw_bytes = self.raw_bytes;
        match self.method {
            METHOD_LZ4 => {
                let start = out.len();
                out.resize(start + raw_bytes, 0);
                let written = lz4_flex::block::decompress_into(payload, &mut out[start..])
                    .map_err(|e| Error::Frame(format!("LZ4 payload does not decode: {e}")))?;
                if written != raw_bytes {
                    return Err(Error::Frame(format!(
                        "LZ4 payload decoded to {written} bytes, header says {raw_bytes}"
                    )));
                }
            }
            METHOD_NONE => {
                if payload.len() != raw_bytes {
                    return Err(Error::Frame("uncompressed frame sizes disagree".into()));
                }
                out.extend_from_slice(payload);
            }
            METHOD_ZSTD => {
                return Err(Error::Frame(
                    "a ZSTD frame; only LZ4 and NONE are read (from a server: set \
                     network_compression_method = 'lz4' for this user)"
                        .into(),
                ))
            }
            other => {
                return Err(Error::Frame(format!(
                    "unknown compression method 0x{other:02x}"
                )))
            }
        }
        Ok(())
    }
}

/// Reads one frame from `input`, checks its checksum and appends its decompressed
/// bytes to `out`.
pub fn read_frame<R: Read + ?Sized>(input: &mut R, out: &mut Vec<u8>) -> Result<(), Error> {
    let mut head = [0u8; FRAME_OVERHEAD_BYTES];
    read_exact(input, &mut head)?;
    let frame = FrameHead::parse(&head)?;
    let mut body = vec![0u8; frame.payload_bytes];
    read_exact(input, &mut body)?;
    let mut hashed = Vec::with_capacity(HEADER_BYTES + body.len());
    hashed.extend_from_slice(&head[CHECKSUM_BYTES..]);
    hashed.extend_from_slice(&body);
    if checksum(&hashed) != head[..CHECKSUM_BYTES] {
        return Err(Error::Frame(format!(
            "checksum mismatch in a {}-byte frame; the data was corrupted in transit",
            hashed.len()
        )));
    }
    frame.decode(&body, out)
}

/// Appends the decompressed bytes of the consecutive frames that make up `bytes` to
/// `out`, allocating nothing once `out` has grown. The frames' checksums are not
/// verified: this is for bytes a check of the caller's own covers (a journal record's
/// CRC), where a second hash would only cost time.
pub fn decompress_frames_unchecked(mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    while !bytes.is_empty() {
        let head: &[u8; FRAME_OVERHEAD_BYTES] = bytes
            .get(..FRAME_OVERHEAD_BYTES)
            .and_then(|head| head.try_into().ok())
            .ok_or_else(|| Error::Frame("a frame cut short in its header".into()))?;
        let frame = FrameHead::parse(head)?;
        let end = FRAME_OVERHEAD_BYTES + frame.payload_bytes;
        let payload = bytes
            .get(FRAME_OVERHEAD_BYTES..end)
            .ok_or_else(|| Error::Frame("a frame cut short in its payload".into()))?;
        frame.decode(payload, out)?;
        bytes = &bytes[end..];
    }
    Ok(())
}

/// A [`Read`] over the decompressed bytes of consecutive frames, for decoding one block
/// of a compressed Data packet. It pulls a frame only when the block needs more bytes,
/// so it never reads past the frame that ends the block.
pub struct FrameReader<'a, R: Read + ?Sized> {
    /// The raw stream the frames come from.
    input: &'a mut R,
    /// Decompressed bytes of the current frame.
    buffer: Vec<u8>,
    /// Bytes of `buffer` already handed out.
    position: usize,
    /// The first error, kept because `Read` can only carry `io::Error`.
    error: Option<Error>,
}

impl<'a, R: Read + ?Sized> FrameReader<'a, R> {
    /// Starts reading frames from `input`.
    pub fn new(input: &'a mut R) -> Self {
        FrameReader {
            input,
            buffer: Vec::new(),
            position: 0,
            error: None,
        }
    }

    /// Ends the block: every decompressed byte must have been consumed, since a
    /// frame never spans two packets.
    pub fn finish(self) -> Result<(), Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let left = self.buffer.len() - self.position;
        if left != 0 {
            return Err(Error::Frame(format!(
                "{left} decompressed bytes left after the block"
            )));
        }
        Ok(())
    }

    /// Maps an error surfaced through `Read` back to the one recorded.
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }
}

impl<R: Read + ?Sized> Read for FrameReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.position == self.buffer.len() {
            self.buffer.clear();
            self.position = 0;
            if let Err(error) = read_frame(self.input, &mut self.buffer) {
                let text = error.to_string();
                self.error = Some(error);
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, text));
            }
        }
        let n = buf.len().min(self.buffer.len() - self.position);
        buf[..n].copy_from_slice(&self.buffer[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    //! The known-answer frame from 18.16, round trips across frame boundaries, and
    //! refusal of corrupted frames.
    use super::*;

    const END_MARKER: [u8; 10] = [0x01, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00];

    #[test]
    fn reproduces_the_frame_clickhouse_18_16_sent() {
        let mut out = Vec::new();
        compress_frames(Method::Lz4, &END_MARKER, &mut out, &mut compress_table());
        let expected: [u8; 36] = [
            0xa7, 0x83, 0xac, 0x6c, 0xd5, 0x5c, 0x7a, 0x7c, 0xb5, 0xac, 0x46, 0xbd, 0xdb, 0x86,
            0xe2, 0x14, 0x82, 0x14, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0xa0, 0x01, 0x00,
            0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn round_trips_across_several_frames() {
        let raw: Vec<u8> = (0..(FRAME_RAW_BYTES_MAX * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        for method in [Method::Lz4, Method::None] {
            let mut out = Vec::with_capacity(frames_bytes_max(raw.len()));
            let capacity = out.capacity();
            compress_frames(method, &raw, &mut out, &mut compress_table());
            assert_eq!(out.capacity(), capacity, "compression reallocated");
            let mut input = &out[..];
            let mut back = Vec::new();
            let mut reader = FrameReader::new(&mut input);
            reader.read_to_end(&mut back).unwrap_or_default();
            assert_eq!(back, raw);
        }
    }

    #[test]
    fn corrupted_and_truncated_frames_are_refused() {
        let mut frame = Vec::new();
        compress_frames(Method::Lz4, &END_MARKER, &mut frame, &mut compress_table());
        let mut flipped = frame.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        let err = read_frame(&mut &flipped[..], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let truncated = &frame[..frame.len() - 3];
        let err = read_frame(&mut &truncated[..], &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let mut huge = frame.clone();
        huge[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = read_frame(&mut &huge[..], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn frames_in_a_slice_decompress_and_bad_ones_are_named() {
        let raw: Vec<u8> = (0..(FRAME_RAW_BYTES_MAX + 999))
            .map(|i| (i % 13) as u8)
            .collect();
        let mut frames = Vec::new();
        compress_frames(Method::Lz4, &raw, &mut frames, &mut compress_table());
        compress_frames(
            Method::None,
            &END_MARKER,
            &mut frames,
            &mut compress_table(),
        );
        let mut back = vec![0xee; 5];
        decompress_frames_unchecked(&frames, &mut back).unwrap();
        assert_eq!(back[..5], [0xee; 5], "appends, never clears");
        assert_eq!(back[5..raw.len() + 5], raw[..]);
        assert_eq!(back[raw.len() + 5..], END_MARKER);

        let error = |bytes: &[u8]| {
            decompress_frames_unchecked(bytes, &mut Vec::new())
                .unwrap_err()
                .to_string()
        };
        assert!(error(&frames[..10]).contains("cut short in its header"));
        assert!(error(&frames[..frames.len() - 1]).contains("cut short in its payload"));
        let mut zstd = frames.clone();
        zstd[CHECKSUM_BYTES] = METHOD_ZSTD;
        assert!(error(&zstd).contains("ZSTD"));
        let mut unknown = frames.clone();
        unknown[CHECKSUM_BYTES] = 0x77;
        assert!(error(&unknown).contains("0x77"));
        let mut lying = frames.clone();
        lying[21..25].copy_from_slice(&(FRAME_RAW_BYTES_MAX as u32 - 1).to_le_bytes());
        assert!(error(&lying).contains("LZ4 payload"));
        let mut huge = frames;
        huge[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(error(&huge).contains("out of range"));
    }
}
