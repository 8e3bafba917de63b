//! Packets of the native protocol: what the client writes (Hello, Query, Data, Ping) and
//! how each server packet is read (protocol notes §3–§5, §11). Pure: byte buffers in,
//! byte buffers or values out; the connection does the I/O.

use std::io::Read;

use super::block::{Block, BlockFormat};
use super::compress::FrameReader;
use super::wire::{get_array, get_string, get_u8, get_varuint, put_str, put_varuint};
use super::Error;

/// The revision we announce (see the module notes of `native`).
pub const CLIENT_REVISION: u64 = 54429;
/// Name sent in Hello and ClientInfo; shows up in the server's `system.processes`.
pub const CLIENT_NAME: &str = "alphapt-storage";
/// Our version in Hello (free text for the server).
pub const CLIENT_VERSION: (u64, u64, u64) = (0, 1, 0);

/// Revision gates we implement (`DBMS_MIN_REVISION_WITH_*`).
pub mod gate {
    /// ClientInfo inside Query.
    pub const CLIENT_INFO: u64 = 54032;
    /// Server Hello carries its time zone.
    pub const SERVER_TIMEZONE: u64 = 54058;
    /// ClientInfo carries a quota key.
    pub const QUOTA_KEY_IN_CLIENT_INFO: u64 = 54060;
    /// Server Hello carries a display name.
    pub const SERVER_DISPLAY_NAME: u64 = 54372;
    /// Version patch in server Hello and ClientInfo.
    pub const VERSION_PATCH: u64 = 54401;
    /// Progress carries written rows and bytes.
    pub const CLIENT_WRITE_INFO: u64 = 54420;
    /// Settings travel as strings with flags.
    pub const SETTINGS_AS_STRINGS: u64 = 54429;
}

/// Client packet ids.
pub mod client_packet {
    /// Hello.
    pub const HELLO: u64 = 0;
    /// Query.
    pub const QUERY: u64 = 1;
    /// Data.
    pub const DATA: u64 = 2;
    /// Cancel: stop a running SELECT; the server still ends it with EndOfStream.
    pub const CANCEL: u64 = 3;
    /// Ping.
    pub const PING: u64 = 4;
}

/// Server packet ids.
pub mod server_packet {
    #![allow(missing_docs)]
    pub const HELLO: u64 = 0;
    pub const DATA: u64 = 1;
    pub const EXCEPTION: u64 = 2;
    pub const PROGRESS: u64 = 3;
    pub const PONG: u64 = 4;
    pub const END_OF_STREAM: u64 = 5;
    pub const PROFILE_INFO: u64 = 6;
    pub const TOTALS: u64 = 7;
    pub const EXTREMES: u64 = 8;
    pub const LOG: u64 = 10;
    pub const TABLE_COLUMNS: u64 = 11;
    pub const PROFILE_EVENTS: u64 = 14;
    pub const TIMEZONE_UPDATE: u64 = 17;
}

/// What the server told us about itself in Hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHello {
    /// "ClickHouse".
    pub name: String,
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch (0 when not sent).
    pub patch: u64,
    /// The server's revision `S`.
    pub revision: u64,
    /// Server time zone, e.g. "Etc/UTC".
    pub timezone: String,
    /// Display name (host name by default).
    pub display_name: String,
}

/// An exception the server sent: code, name, message, and the chain under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerException {
    /// ClickHouse error code, e.g. 60 UNKNOWN_TABLE.
    pub code: i32,
    /// Exception class, e.g. "DB::Exception".
    pub name: String,
    /// The server's message, shown to the user as is.
    pub message: String,
    /// Server stack trace (kept for logs at debug level).
    pub stack_trace: String,
    /// The exception this one wraps, if any.
    pub nested: Option<Box<ServerException>>,
}

impl std::fmt::Display for ServerException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClickHouse error {} ({}): {}",
            self.code,
            self.name,
            self.message.trim_end()
        )
    }
}

impl ServerException {
    /// Codes that describe a passing condition (load, limits, network), not a wrong
    /// request. From ClickHouse `src/Common/ErrorCodes.cpp`.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self.code,
            159 // TIMEOUT_EXCEEDED
                | 164 // READONLY (replica temporarily read-only)
                | 202 // TOO_MANY_SIMULTANEOUS_QUERIES
                | 209 // SOCKET_TIMEOUT
                | 210 // NETWORK_ERROR
                | 216 // QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING (an earlier cut one ending)
                | 241 // MEMORY_LIMIT_EXCEEDED
                | 242 // TABLE_IS_READ_ONLY
                | 252 // TOO_MANY_PARTS
                | 319 // UNKNOWN_STATUS_OF_INSERT
                | 425 // SYSTEM_ERROR
        )
    }
}

/// Progress counters (increments since the last Progress).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Rows read.
    pub read_rows: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Rows expected in total.
    pub total_rows: u64,
    /// Rows written (revision ≥ 54420).
    pub written_rows: u64,
    /// Bytes written (revision ≥ 54420).
    pub written_bytes: u64,
}

/// One packet from the server.
#[derive(Debug)]
pub enum ServerPacket {
    /// A data block (header, rows, or the empty block before EndOfStream).
    Data(Block),
    /// The request failed.
    Exception(ServerException),
    /// Counters.
    Progress(Progress),
    /// Answer to Ping.
    Pong,
    /// The query is finished.
    EndOfStream,
    /// Summary of a SELECT.
    ProfileInfo,
    /// Totals or extremes block (WITH TOTALS, extremes=1).
    Totals(Block),
    /// Server log lines (only with `send_logs_level`).
    Log(Block),
    /// Column descriptions before an INSERT header (modern servers).
    TableColumns,
    /// Per-query counters (modern servers).
    ProfileEvents(Block),
    /// The session time zone changed.
    TimezoneUpdate(String),
}

/// Appends the client Hello.
pub fn write_hello(out: &mut Vec<u8>, database: &str, user: &str, password: &str) {
    put_varuint(out, client_packet::HELLO);
    put_str(out, CLIENT_NAME.as_bytes());
    put_varuint(out, CLIENT_VERSION.0);
    put_varuint(out, CLIENT_VERSION.1);
    put_varuint(out, CLIENT_REVISION);
    put_str(out, database.as_bytes());
    put_str(out, user.as_bytes());
    put_str(out, password.as_bytes());
}

/// Reads the server Hello (or the Exception sent instead, e.g. on a wrong password).
pub fn read_hello<R: Read + ?Sized>(input: &mut R) -> Result<ServerHello, Error> {
    match get_varuint(input)? {
        server_packet::HELLO => {}
        server_packet::EXCEPTION => return Err(Error::Server(read_exception(input)?)),
        other => {
            return Err(Error::Protocol(format!(
                "expected Hello, got packet {other}"
            )))
        }
    }
    let name = get_string(input)?;
    let major = get_varuint(input)?;
    let minor = get_varuint(input)?;
    let revision = get_varuint(input)?;
    let n = revision.min(CLIENT_REVISION);
    let timezone = if n >= gate::SERVER_TIMEZONE {
        get_string(input)?
    } else {
        String::new()
    };
    let display_name = if n >= gate::SERVER_DISPLAY_NAME {
        get_string(input)?
    } else {
        String::new()
    };
    let patch = if n >= gate::VERSION_PATCH {
        get_varuint(input)?
    } else {
        0
    };
    Ok(ServerHello {
        name,
        major,
        minor,
        patch,
        revision,
        timezone,
        display_name,
    })
}

/// Appends a Query packet for negotiated revision `n`, with `settings` as
/// name/flags/string entries. Settings travel only when `n ≥`
/// [`gate::SETTINGS_AS_STRINGS`]: below it (18.16 always) they would have to be typed
/// binary and an unknown name fails the query, so they are left out there; callers
/// send them only to servers that know them.
pub fn write_query(
    out: &mut Vec<u8>,
    n: u64,
    query_id: &str,
    sql: &str,
    compression: bool,
    settings: &[(&str, &str)],
) {
    put_varuint(out, client_packet::QUERY);
    put_str(out, query_id.as_bytes());
    if n >= gate::CLIENT_INFO {
        out.push(1); // Initial query.
        put_str(out, b""); // Initial user.
        put_str(out, query_id.as_bytes()); // Initial query id.
        put_str(out, b"0.0.0.0:0"); // Initial address: newest servers insist on ip:port.
        out.push(1); // Interface: TCP.
        put_str(out, b""); // OS user.
        put_str(out, b""); // Client host name.
        put_str(out, CLIENT_NAME.as_bytes());
        put_varuint(out, CLIENT_VERSION.0);
        put_varuint(out, CLIENT_VERSION.1);
        put_varuint(out, CLIENT_REVISION);
        if n >= gate::QUOTA_KEY_IN_CLIENT_INFO {
            put_str(out, b"");
        }
        if n >= gate::VERSION_PATCH {
            put_varuint(out, CLIENT_VERSION.2);
        }
    }
    if n >= gate::SETTINGS_AS_STRINGS {
        for (name, value) in settings {
            put_str(out, name.as_bytes());
            put_varuint(out, 0); // Flags: not important (an old server skips it).
            put_str(out, value.as_bytes());
        }
    }
    put_str(out, b""); // End of settings.
    put_varuint(out, 2); // Stage: complete.
    put_varuint(out, u64::from(compression));
    put_str(out, sql.as_bytes());
}

/// Appends the Data packet prefix (type and empty table name); the block follows.
pub fn write_data_prefix(out: &mut Vec<u8>) {
    put_varuint(out, client_packet::DATA);
    put_str(out, b"");
}

/// Reads an Exception body, including its nested chain (bounded).
pub fn read_exception<R: Read + ?Sized>(input: &mut R) -> Result<ServerException, Error> {
    // Chains are short in practice; 32 bounds a hostile or corrupt one.
    let mut chain = Vec::new();
    for _ in 0..32 {
        let code = i32::from_le_bytes(get_array(input)?);
        let name = get_string(input)?;
        let message = get_string(input)?;
        let stack_trace = get_string(input)?;
        let has_nested = get_u8(input)? != 0;
        chain.push(ServerException {
            code,
            name,
            message,
            stack_trace,
            nested: None,
        });
        if !has_nested {
            let mut exception = chain.pop().expect("pushed above");
            while let Some(mut outer) = chain.pop() {
                outer.nested = Some(Box::new(exception));
                exception = outer;
            }
            return Ok(exception);
        }
    }
    Err(Error::Protocol("exception chain longer than 32".into()))
}

fn read_progress<R: Read + ?Sized>(input: &mut R, n: u64) -> Result<Progress, Error> {
    let mut progress = Progress {
        read_rows: get_varuint(input)?,
        read_bytes: get_varuint(input)?,
        total_rows: get_varuint(input)?,
        ..Progress::default()
    };
    if n >= gate::CLIENT_WRITE_INFO {
        progress.written_rows = get_varuint(input)?;
        progress.written_bytes = get_varuint(input)?;
    }
    Ok(progress)
}

fn read_profile_info<R: Read + ?Sized>(input: &mut R) -> Result<(), Error> {
    get_varuint(input)?; // rows
    get_varuint(input)?; // blocks
    get_varuint(input)?; // bytes
    get_u8(input)?; // applied_limit
    get_varuint(input)?; // rows_before_limit
    get_u8(input)?; // calculated_rows_before_limit
    Ok(())
}

/// Reads the table name and a block, through the frame decompressor when the query
/// asked for compression.
fn read_data<R: Read + ?Sized>(input: &mut R, compressed: bool) -> Result<Block, Error> {
    let _table = get_string(input)?;
    if !compressed {
        return Block::decode(BlockFormat::Protocol, input);
    }
    let mut frames = FrameReader::new(input);
    match Block::decode(BlockFormat::Protocol, &mut frames) {
        Ok(block) => {
            frames.finish()?;
            Ok(block)
        }
        Err(error) => Err(frames.take_error().unwrap_or(error)),
    }
}

/// Reads the next server packet at negotiated revision `n`.
pub fn read_packet<R: Read + ?Sized>(
    input: &mut R,
    n: u64,
    compressed: bool,
) -> Result<ServerPacket, Error> {
    let packet = get_varuint(input)?;
    Ok(match packet {
        server_packet::DATA => ServerPacket::Data(read_data(input, compressed)?),
        server_packet::EXCEPTION => ServerPacket::Exception(read_exception(input)?),
        server_packet::PROGRESS => ServerPacket::Progress(read_progress(input, n)?),
        server_packet::PONG => ServerPacket::Pong,
        server_packet::END_OF_STREAM => ServerPacket::EndOfStream,
        server_packet::PROFILE_INFO => {
            read_profile_info(input)?;
            ServerPacket::ProfileInfo
        }
        server_packet::TOTALS | server_packet::EXTREMES => {
            ServerPacket::Totals(read_data(input, compressed)?)
        }
        // Log and ProfileEvents blocks are uncompressed below revision 54481.
        server_packet::LOG => ServerPacket::Log(read_data(input, false)?),
        server_packet::PROFILE_EVENTS => ServerPacket::ProfileEvents(read_data(input, false)?),
        server_packet::TABLE_COLUMNS => {
            get_string(input)?;
            get_string(input)?;
            ServerPacket::TableColumns
        }
        server_packet::TIMEZONE_UPDATE => ServerPacket::TimezoneUpdate(get_string(input)?),
        other => return Err(Error::Protocol(format!("unexpected server packet {other}"))),
    })
}

#[cfg(test)]
mod tests {
    //! Client packets against the worked examples of the protocol notes (§3.5, §5.4),
    //! and server packets parsed from bytes captured from 18.16.
    use super::*;

    #[test]
    fn query_bytes_match_the_worked_example_apart_from_the_client_name() {
        let mut out = Vec::new();
        write_query(&mut out, 54412, "", "SELECT 1", false, &[]);
        let mut expected = vec![0x01, 0x00, 0x01, 0x00, 0x00, 0x09];
        expected.extend(b"0.0.0.0:0");
        expected.extend([0x01, 0x00, 0x00, CLIENT_NAME.len() as u8]);
        expected.extend(CLIENT_NAME.as_bytes());
        expected.extend([
            0x00, 0x01, 0x9d, 0xa9, 0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x08,
        ]);
        expected.extend(b"SELECT 1");
        assert_eq!(out, expected);
    }

    #[test]
    fn settings_travel_as_strings_from_54429_and_never_to_18_16() {
        let token = [("insert_deduplication_token", "alphapt:market_ticks:1-9:1")];
        let mut plain = Vec::new();
        write_query(&mut plain, 54429, "", "INSERT", false, &[]);
        let mut with = Vec::new();
        write_query(&mut with, 54429, "", "INSERT", false, &token);
        // The entry sits just before the list's end marker: name, flags 0, value.
        let mut entry = vec![26];
        entry.extend(b"insert_deduplication_token");
        entry.push(0);
        entry.push(26);
        entry.extend(b"alphapt:market_ticks:1-9:1");
        let tail = 1 + 1 + 1 + 1 + "INSERT".len(); // end, stage, compression, sql
        let at = plain.len() - tail;
        assert_eq!(&with[..at], &plain[..at]);
        assert_eq!(&with[at..at + entry.len()], &entry[..]);
        assert_eq!(&with[at + entry.len()..], &plain[at..]);
        // 18.16 negotiates 54412: the same packet as without settings.
        let (mut old_plain, mut old_with) = (Vec::new(), Vec::new());
        write_query(&mut old_plain, 54412, "", "INSERT", false, &[]);
        write_query(&mut old_with, 54412, "", "INSERT", false, &token);
        assert_eq!(old_plain, old_with);
    }

    #[test]
    fn reads_the_18_16_hello() {
        let mut bytes = vec![0x00, 0x0a];
        bytes.extend(b"ClickHouse");
        bytes.extend([0x12, 0x10, 0x8c, 0xa9, 0x03, 0x07]);
        bytes.extend(b"Etc/UTC");
        bytes.extend([0x02]);
        bytes.extend(b"vm");
        bytes.push(0x01);
        let hello = read_hello(&mut &bytes[..]).unwrap();
        assert_eq!(
            (hello.major, hello.minor, hello.patch, hello.revision),
            (18, 16, 1, 54412)
        );
        assert_eq!(hello.timezone, "Etc/UTC");
        assert_eq!(hello.display_name, "vm");
    }

    #[test]
    fn reads_a_nested_exception() {
        let mut bytes = Vec::new();
        for (code, nested) in [(60i32, 1u8), (999, 0)] {
            bytes.extend(code.to_le_bytes());
            put_str(&mut bytes, b"DB::Exception");
            put_str(&mut bytes, format!("message {code}").as_bytes());
            put_str(&mut bytes, b"");
            bytes.push(nested);
        }
        let e = read_exception(&mut &bytes[..]).unwrap();
        assert_eq!(e.code, 60);
        assert_eq!(e.nested.as_ref().unwrap().code, 999);
        assert_eq!(
            e.to_string(),
            "ClickHouse error 60 (DB::Exception): message 60"
        );
    }

    #[test]
    fn unknown_server_packet_is_a_protocol_error() {
        let bytes = [0x63u8];
        assert!(matches!(
            read_packet(&mut &bytes[..], 54412, false),
            Err(Error::Protocol(_))
        ));
    }
}
