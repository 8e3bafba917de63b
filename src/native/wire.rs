//! Wire primitives of the native protocol: `VarUInt`, length-prefixed strings and
//! fixed-width little-endian numbers.
//!
//! Writing goes into a caller-owned `Vec<u8>` (pre-sized on the hot path, so these
//! never reallocate there). Reading comes from any [`std::io::Read`]: the socket's
//! buffered reader, a frame decompressor, or a byte slice in tests. Every length read
//! off the wire is checked against a maximum before anything is allocated.
//!
//! | name | encoding |
//! | --- | --- |
//! | `VarUInt` | unsigned LEB128, 7 bits a byte, low group first, high bit = more |
//! | `String` | `VarUInt` byte length, then the bytes |
//! | numbers | fixed width, little-endian |
//!
//! Source: ClickHouse `src/IO/VarInt.h`, `src/IO/ReadHelpers.h`.

use std::io::Read;

use super::Error;

/// Longest `VarUInt` we accept: 10 bytes hold any `u64`.
pub const VARUINT_BYTES_MAX: usize = 10;

/// Largest string or byte field we accept from a server: 256 MiB. A longer length
/// means a corrupt stream (or a hostile peer), not data we could use.
pub const STRING_BYTES_MAX: u64 = 256 << 20;

/// Appends `value` as unsigned LEB128.
#[inline]
pub fn put_varuint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a length-prefixed string.
#[inline]
pub fn put_str(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varuint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads one `VarUInt`.
pub fn get_varuint<R: Read + ?Sized>(input: &mut R) -> Result<u64, Error> {
    let mut value: u64 = 0;
    for index in 0..VARUINT_BYTES_MAX {
        let byte = get_u8(input)?;
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Error::Protocol(format!(
        "VarUInt longer than {VARUINT_BYTES_MAX} bytes; the stream is corrupt"
    )))
}

/// Reads one byte.
pub fn get_u8<R: Read + ?Sized>(input: &mut R) -> Result<u8, Error> {
    let mut byte = [0u8; 1];
    read_exact(input, &mut byte)?;
    Ok(byte[0])
}

/// Reads a fixed-width little-endian number of `N` bytes.
pub fn get_array<const N: usize, R: Read + ?Sized>(input: &mut R) -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    read_exact(input, &mut bytes)?;
    Ok(bytes)
}

/// Bytes read (and so allocated) at a time by [`read_received`].
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Reads `len` bytes, allocating only as they arrive, a chunk at a time: a header that
/// claims more rows than the server sends costs what it sent, not what it claimed
/// (cargo-fuzz built 20 bytes that asked for 64 TiB at once).
pub fn read_received<R: Read + ?Sized>(input: &mut R, len: usize) -> Result<Vec<u8>, Error> {
    let mut raw = Vec::with_capacity(len.min(READ_CHUNK_BYTES));
    while raw.len() < len {
        let start = raw.len();
        raw.resize(start + (len - start).min(READ_CHUNK_BYTES), 0);
        read_exact(input, &mut raw[start..])?;
    }
    Ok(raw)
}

/// Reads a length-prefixed byte string, refusing lengths above `STRING_BYTES_MAX`.
pub fn get_bytes<R: Read + ?Sized>(input: &mut R) -> Result<Vec<u8>, Error> {
    let len = get_varuint(input)?;
    if len > STRING_BYTES_MAX {
        return Err(Error::Protocol(format!(
            "string of {len} bytes exceeds the {STRING_BYTES_MAX}-byte limit; the stream is corrupt"
        )));
    }
    read_received(input, len as usize)
}

/// Reads a length-prefixed string as UTF-8 (lossy: server text is for humans).
pub fn get_string<R: Read + ?Sized>(input: &mut R) -> Result<String, Error> {
    let bytes = get_bytes(input)?;
    Ok(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()))
}

/// `read_exact` with the I/O error mapped to ours, so a timeout or EOF mid-packet is
/// reported as what it is.
pub fn read_exact<R: Read + ?Sized>(input: &mut R, buf: &mut [u8]) -> Result<(), Error> {
    input
        .read_exact(buf)
        .map_err(|source| Error::io("read", source))
}

#[cfg(test)]
mod tests {
    //! Round trips and the worked examples of the protocol notes (§1).
    use super::*;

    #[test]
    fn varuint_known_answers() {
        for (value, bytes) in [
            (127u64, &[0x7f][..]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (54412, &[0x8c, 0xa9, 0x03]),
        ] {
            let mut out = Vec::new();
            put_varuint(&mut out, value);
            assert_eq!(out, bytes);
            assert_eq!(get_varuint(&mut &out[..]).unwrap(), value);
        }
    }

    #[test]
    fn varuint_round_trips_extremes() {
        for value in [0, 1, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varuint(&mut out, value);
            assert!(out.len() <= VARUINT_BYTES_MAX);
            assert_eq!(get_varuint(&mut &out[..]).unwrap(), value);
        }
    }

    #[test]
    fn overlong_varuint_and_short_input_are_errors() {
        let endless = [0xffu8; 11];
        assert!(matches!(
            get_varuint(&mut &endless[..]),
            Err(Error::Protocol(_))
        ));
        let truncated = [0x80u8];
        assert!(matches!(
            get_varuint(&mut &truncated[..]),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn huge_string_length_is_refused_before_allocating() {
        let mut out = Vec::new();
        put_varuint(&mut out, STRING_BYTES_MAX + 1);
        let err = get_bytes(&mut &out[..]).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
