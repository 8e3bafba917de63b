//! The ClickHouse Native protocol readers (`native::protocol`, `block`, `column`,
//! `types`, `compress`, `wire`): what the client decodes from a server's bytes.
//!
//! Input: byte 0 picks the reader, byte 1 the negotiated revision, the rest is the
//! server's byte stream:
//! - 0: `protocol::read_hello` (Hello, or the Exception sent instead);
//! - 1: `protocol::read_packet`, uncompressed, packet after packet until an error;
//! - 2: `protocol::read_packet` of one compressed packet, with the fuzzer's frame
//!   checksums fixed up (CityHash128 would otherwise stop every input at the checksum);
//! - 3: frames alone: `compress::read_frame`, and `FrameReader` + `Block::decode`
//!   (`Protocol`) + `finish`, checksums fixed up;
//! - 4: `Block::decode` of a Native file (`BlockFormat::File`);
//! - 5: `Block::decode` of a Protocol block (BlockInfo first);
//! - 6: `types::ColumnType::parse` of the bytes as text.
//!
//! Asserts: no panic; no huge allocation (run with `-malloc_limit_mb=256`: the
//! module doc says every length read off the wire is checked against a maximum
//! before anything is allocated); every decoded value readable with `Values::get`;
//! a decoded block that `Block::encode` accepts re-decodes, and encodes again to the
//! same bytes (idempotent after one round, so NaNs and LowCardinality's materialised
//! NULL placeholders compare equal); a type `ColumnType::parse` accepts has a
//! consistent `fixed_width`.
#![no_main]

use alphapt_storage::native::block::{Block, BlockFormat};
use alphapt_storage::native::compress::{
    checksum, read_frame, FrameReader, CHECKSUM_BYTES, FRAME_OVERHEAD_BYTES, HEADER_BYTES,
};
use alphapt_storage::native::protocol::{
    gate, read_hello, read_packet, ServerPacket, CLIENT_REVISION,
};
use alphapt_storage::native::types::ColumnType;
use alphapt_storage::native::wire::{get_string, get_varuint};
use libfuzzer_sys::fuzz_target;

/// Rows of each column read back with `Values::get` (bounds the time per input).
const ROWS_READ_MAX: u64 = 64;

fn revision(byte: u8) -> u64 {
    match byte % 4 {
        0 => CLIENT_REVISION,
        1 => gate::CLIENT_WRITE_INFO - 1,
        2 => gate::SERVER_TIMEZONE - 1,
        _ => u64::from(byte) * 256,
    }
}

/// Recomputes the checksum of every frame laid end to end in `buf`; the last frame's
/// size is cut to the bytes there are.
fn fix_frames(buf: &mut [u8]) {
    let mut pos = 0;
    while pos + FRAME_OVERHEAD_BYTES <= buf.len() {
        let at = pos + CHECKSUM_BYTES + 1;
        let size = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        let available = buf.len() - pos - CHECKSUM_BYTES;
        let size = if size < HEADER_BYTES || size > available {
            buf[at..at + 4].copy_from_slice(&(available as u32).to_le_bytes());
            available
        } else {
            size
        };
        let end = pos + CHECKSUM_BYTES + size;
        let sum = checksum(&buf[pos + CHECKSUM_BYTES..end]);
        buf[pos..pos + CHECKSUM_BYTES].copy_from_slice(&sum);
        pos = end;
    }
}

/// Reads every cell (up to `ROWS_READ_MAX` rows), then checks encode → decode → encode.
fn check_block(block: &Block, format: BlockFormat) {
    for column in &block.columns {
        assert_eq!(
            column.ty,
            ColumnType::parse(&column.type_name).expect("a decoded column's type parses"),
        );
        if block.rows > 0 {
            assert_eq!(
                column.values.len() as u64,
                block.rows,
                "column `{}` length",
                column.name
            );
        }
        for row in 0..block.rows.min(ROWS_READ_MAX) {
            let _ = column.values.get(row as usize);
        }
    }
    let mut first = Vec::new();
    if block.encode(format, &mut first).is_err() {
        return; // A type the encoder does not write (e.g. LowCardinality(UInt8)).
    }
    let again = Block::decode(format, &mut &first[..])
        .unwrap_or_else(|e| panic!("our own encoding of a decoded block does not decode: {e}"));
    let mut second = Vec::new();
    again
        .encode(format, &mut second)
        .unwrap_or_else(|e| panic!("a re-decoded block does not encode: {e}"));
    assert!(
        first == second,
        "encode(decode(encode(block))) differs from encode(block)"
    );
}

fn check_packet(packet: &ServerPacket) {
    match packet {
        ServerPacket::Data(block)
        | ServerPacket::Totals(block)
        | ServerPacket::Log(block)
        | ServerPacket::ProfileEvents(block) => check_block(block, BlockFormat::Protocol),
        ServerPacket::Exception(exception) => {
            let _ = exception.to_string();
            let _ = exception.is_retriable();
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rev, stream @ ..] = data else {
        return;
    };
    let n = revision(*rev);
    match mode % 7 {
        0 => {
            if let Ok(hello) = read_hello(&mut &stream[..]) {
                let _ = hello.revision.min(CLIENT_REVISION);
            }
        }
        1 => {
            let mut input = stream;
            for _ in 0..64 {
                match read_packet(&mut input, n, false) {
                    Ok(packet) => check_packet(&packet),
                    Err(_) => break,
                }
            }
        }
        2 => {
            let mut buf = stream.to_vec();
            let mut cursor = stream;
            if get_varuint(&mut cursor).is_ok() && get_string(&mut cursor).is_ok() {
                let start = stream.len() - cursor.len();
                fix_frames(&mut buf[start..]);
            }
            if let Ok(packet) = read_packet(&mut &buf[..], n, true) {
                check_packet(&packet);
            }
        }
        3 => {
            let mut buf = stream.to_vec();
            fix_frames(&mut buf);
            let mut out = Vec::new();
            let mut input = &buf[..];
            while read_frame(&mut input, &mut out).is_ok() {}
            let mut input = &buf[..];
            let mut frames = FrameReader::new(&mut input);
            if let Ok(block) = Block::decode(BlockFormat::Protocol, &mut frames) {
                let _ = frames.finish();
                check_block(&block, BlockFormat::Protocol);
            }
        }
        4 | 5 => {
            let format = if mode % 7 == 4 {
                BlockFormat::File
            } else {
                BlockFormat::Protocol
            };
            if let Ok(block) = Block::decode(format, &mut &stream[..]) {
                check_block(&block, format);
            }
        }
        _ => {
            let text = String::from_utf8_lossy(stream);
            if let Ok(ty) = ColumnType::parse(&text) {
                if let Some(width) = ty.fixed_width() {
                    assert!(width > 0, "{ty:?} has width 0");
                }
            }
        }
    }
});
