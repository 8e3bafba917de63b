//! One blocking TCP connection to ClickHouse: handshake, Ping, SELECT, INSERT.
//!
//! ```text
//!   writer thread ──payloads (encoded Data packets)──► Connection ──TCP──► ClickHouse
//!                 ◄── Ok(rows) | Error (typed)  ──────            ◄── header, EndOfStream | Exception
//! ```
//!
//! Every socket call has a timeout (connect, read, write), and TCP keepalive finds
//! half-open peers, so a dead server surfaces as an error, never a hang. After any
//! I/O or protocol error, or an Exception once data was flowing, the connection
//! marks itself broken: the caller drops it and reconnects (see [`super::Client`]).

use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};

use super::block::{Block, BlockFormat};
use super::column::Value;
use super::compress::{compress_frames, compress_table, Method};
use super::protocol::{self, ServerException, ServerHello, ServerPacket, CLIENT_REVISION};
use super::Error;
use crate::runtime::crash;
use crate::tls::Socket;

/// Socket read buffer: large enough for a SELECT frame burst, small enough per writer.
const READ_BUFFER_BYTES: usize = 256 << 10;
/// Socket write buffer for small packets (Query, markers); blocks are written whole.
const WRITE_BUFFER_BYTES: usize = 64 << 10;
/// Packets accepted while waiting for one answer (Progress, Log, ...). A server
/// that sends more without answering is misbehaving.
const PACKETS_PER_ANSWER_MAX: usize = 1 << 20;
/// Numbers query ids across every connection of the process: a reconnect must never
/// reuse the id of a query the server may still be running (it refuses the second
/// with "already running", and the settle step could not tell the two apart).
static QUERY_SERIAL: AtomicU64 = AtomicU64::new(0);

/// Where and how to connect.
#[derive(Clone)]
pub struct Options {
    /// Host name or address.
    pub host: String,
    /// Native TCP port (9000 by default).
    pub port: u16,
    /// Default database for the session; empty = the user's default.
    pub database: String,
    /// User name (modern servers refuse an empty one).
    pub user: String,
    /// Password, sent in Hello (plain text; use TLS across networks).
    pub password: String,
    /// Compression of Data blocks both ways; `None` sends raw blocks.
    pub compression: Option<Method>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read and write timeout for every socket call.
    pub io_timeout: Duration,
    /// Query ids become `<prefix><n>` when set (empty: the server assigns them), so
    /// `system.processes` tells whose queries are still running (see
    /// `durable::stored::wait_for_other_inserts`).
    pub query_id_prefix: String,
    /// TLS: `None` plaintext; `Some(Err)` a TLS setup that failed (the reason, given at
    /// every connect: never a fallback to plaintext).
    pub tls: Option<Result<crate::tls::Client, String>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("compression", &self.compression)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("query_id_prefix", &self.query_id_prefix)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: "127.0.0.1".into(),
            port: 9000,
            database: String::new(),
            user: "default".into(),
            password: String::new(),
            compression: Some(Method::Lz4),
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(30),
            query_id_prefix: String::new(),
            tls: None,
        }
    }
}

/// The server's identity after the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// Server Hello as received.
    pub hello: ServerHello,
    /// Negotiated revision `N = min(ours, server's)`.
    pub revision: u64,
}

impl ServerInfo {
    /// "18.16.1" style version.
    pub fn version(&self) -> String {
        format!(
            "{}.{}.{}",
            self.hello.major, self.hello.minor, self.hello.patch
        )
    }

    /// Whether the server has DateTime64 and column codecs (ClickHouse ≥ 20.1).
    pub fn is_modern(&self) -> bool {
        self.hello.major >= 20
    }
}

/// The outcome of a SELECT.
#[derive(Debug, Default)]
pub struct QueryResult {
    /// Column names and types of the result.
    pub header: Vec<(String, String)>,
    /// Non-empty result blocks in arrival order.
    pub blocks: Vec<Block>,
    /// True when the query was cancelled after `rows_max` rows (`query_limited`).
    pub truncated: bool,
}

impl QueryResult {
    /// Total rows over all blocks.
    pub fn rows(&self) -> u64 {
        self.blocks.iter().map(|b| b.rows).sum()
    }

    /// Every value of the named column, across blocks.
    pub fn column(&self, name: &str) -> Vec<Value> {
        self.blocks
            .iter()
            .filter_map(|b| b.column(name))
            .flat_map(|c| (0..c.values.len()).map(move |row| c.values.get(row)))
            .collect()
    }

    /// The single value of a one-row, one-column result, e.g. `SELECT count()`.
    pub fn scalar(&self) -> Option<Value> {
        let block = self.blocks.iter().find(|b| b.rows > 0)?;
        Some(block.columns.first()?.values.get(0))
    }
}

/// A live, handshaken connection.
pub struct Connection {
    /// Buffered reader over the socket.
    reader: BufReader<Socket>,
    /// Buffered writer over a clone of the socket.
    writer: BufWriter<Socket>,
    /// Server identity and negotiated revision.
    server: ServerInfo,
    /// Compression of Data blocks for every query on this connection.
    compression: Option<Method>,
    /// Timeout in force, for error messages.
    io_timeout_ms: u64,
    /// Scratch buffer for encoding small packets and ad-hoc blocks.
    scratch: Vec<u8>,
    /// Scratch buffer for raw block bytes before compression.
    raw: Vec<u8>,
    /// Set after an error that leaves the stream in an unknown state.
    broken: bool,
    /// When the last request finished, to decide when to ping before reuse.
    last_used: Instant,
    /// `Options::query_id_prefix`.
    query_id_prefix: String,
    /// The id of the last query sent (empty when the server assigns ids).
    query_id: String,
    /// The id of an INSERT that was sent and has not ended (no EndOfStream or
    /// Exception read yet). When the connection breaks with one open, the server may
    /// still be writing its blocks: see [`Self::take_open_insert`].
    open_insert: Option<String>,
}

impl Connection {
    /// Connects, sets socket options, and performs the handshake.
    pub fn connect(options: &Options) -> Result<Connection, Error> {
        let address = resolve(&options.host, options.port)?;
        let stream =
            TcpStream::connect_timeout(&address, options.connect_timeout).map_err(|source| {
                with_timeout(Error::io("connect", source), options.connect_timeout)
            })?;
        configure(&stream, options.io_timeout)
            .map_err(|source| Error::io("configure socket", source))?;
        let tls = match &options.tls {
            None => None,
            Some(Ok(client)) => Some(client),
            Some(Err(reason)) => return Err(Error::Tls(reason.clone())),
        };
        let stream = Socket::open(stream, tls).map_err(|source| match source.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::ConnectionAborted => {
                Error::Tls(format!("{}:{}: {source}", options.host, options.port))
            }
            _ => with_timeout(Error::io("TLS handshake", source), options.io_timeout),
        })?;
        let read_half = stream
            .try_clone()
            .map_err(|source| Error::io("clone socket", source))?;
        let mut connection = Connection {
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, read_half),
            writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, stream),
            server: ServerInfo {
                hello: ServerHello {
                    name: String::new(),
                    major: 0,
                    minor: 0,
                    patch: 0,
                    revision: 0,
                    timezone: String::new(),
                    display_name: String::new(),
                },
                revision: 0,
            },
            compression: options.compression,
            io_timeout_ms: options.io_timeout.as_millis() as u64,
            scratch: Vec::with_capacity(4096),
            raw: Vec::new(),
            broken: false,
            last_used: Instant::now(),
            query_id_prefix: options.query_id_prefix.clone(),
            query_id: String::new(),
            open_insert: None,
        };
        connection.handshake(options)?;
        Ok(connection)
    }

    fn handshake(&mut self, options: &Options) -> Result<(), Error> {
        self.scratch.clear();
        protocol::write_hello(
            &mut self.scratch,
            &options.database,
            &options.user,
            &options.password,
        );
        self.send_scratch()?;
        let plaintext = options.tls.is_none();
        let hello = protocol::read_hello(&mut self.reader).map_err(|e| match e {
            // A TLS-only port drops a plaintext Hello without a word.
            Error::Io { source, .. } if plaintext => self.fail(Error::Io {
                op: "read the server's Hello (a TLS-only port? then set clickhouse.tls = true)",
                source,
            }),
            other => self.fail(other),
        })?;
        self.server = ServerInfo {
            revision: hello.revision.min(CLIENT_REVISION),
            hello,
        };
        Ok(())
    }

    /// Server identity.
    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    /// Whether an earlier failure left this connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The query id of an INSERT this broken connection left without an answer: the
    /// server may still be running it (reading what arrived, writing parts), so
    /// nothing may ask which blocks are stored until it has ended (`Client` settles
    /// it). `None` while the connection is usable or the INSERT's end was read, and
    /// when the server assigns ids (there is then no way to find the query).
    pub fn take_open_insert(&mut self) -> Option<String> {
        if !self.broken {
            return None;
        }
        self.open_insert.take().filter(|id| !id.is_empty())
    }

    /// Time since the last request finished.
    pub fn idle(&self) -> Duration {
        self.last_used.elapsed()
    }

    /// Compression used for Data blocks.
    pub fn compression(&self) -> Option<Method> {
        self.compression
    }

    /// Sets the compression of the queries that follow. The protocol carries it in each
    /// Query packet, so one connection can send one INSERT raw and the next LZ4 (the
    /// journal-first inserter's sorted INSERTs go raw on a connection opened for LZ4).
    pub fn set_compression(&mut self, compression: Option<Method>) {
        self.compression = compression;
    }

    /// Marks the connection broken when the error leaves the stream out of sync, and
    /// fills in the timeout value.
    fn fail(&mut self, error: Error) -> Error {
        let error = match error {
            Error::Timeout { op, .. } => Error::Timeout {
                op,
                timeout_ms: self.io_timeout_ms,
            },
            other => other,
        };
        if !matches!(
            error,
            Error::SchemaMismatch(_) | Error::UnsupportedType { .. }
        ) {
            self.broken = true;
        }
        error
    }

    fn check_usable(&self) -> Result<(), Error> {
        if self.broken {
            Err(Error::Broken)
        } else {
            Ok(())
        }
    }

    fn send_scratch(&mut self) -> Result<(), Error> {
        let result = self
            .writer
            .write_all(&self.scratch)
            .and_then(|()| self.writer.flush())
            .map_err(|source| Error::io("write", source));
        result.map_err(|e| self.fail(e))
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let result = self
            .writer
            .write_all(bytes)
            .map_err(|source| Error::io("write", source));
        result.map_err(|e| self.fail(e))
    }

    fn flush(&mut self) -> Result<(), Error> {
        let result = self
            .writer
            .flush()
            .map_err(|source| Error::io("write", source));
        result.map_err(|e| self.fail(e))
    }

    fn read_packet(&mut self) -> Result<ServerPacket, Error> {
        let compressed = self.compression.is_some();
        let result = protocol::read_packet(&mut self.reader, self.server.revision, compressed);
        result.map_err(|e| self.fail(e))
    }

    /// Sends Ping and waits for Pong, skipping a late Progress. Only while idle.
    pub fn ping(&mut self) -> Result<(), Error> {
        self.check_usable()?;
        self.scratch.clear();
        super::wire::put_varuint(&mut self.scratch, protocol::client_packet::PING);
        self.send_scratch()?;
        for _ in 0..PACKETS_PER_ANSWER_MAX {
            match self.read_packet()? {
                ServerPacket::Pong => {
                    self.last_used = Instant::now();
                    return Ok(());
                }
                ServerPacket::Progress(_)
                | ServerPacket::ProfileEvents(_)
                | ServerPacket::Log(_) => {}
                other => return Err(self.fail(unexpected("Pong", &other))),
            }
        }
        Err(self.fail(Error::Protocol("no Pong".into())))
    }

    /// Brings the stream back to a packet boundary after an Exception that ended a
    /// query before its data phase, and returns the exception as our error.
    ///
    /// Whether the server read our empty external-tables block before failing depends
    /// on where it failed: 18.16 throws a syntax error before reading it, then answers
    /// the stray block with "Unexpected packet Data" (code 101). A Ping settles it:
    /// everything up to the Pong belongs to the failed query. If the stream does not
    /// settle, the connection is marked broken and the caller reconnects.
    fn after_exception(&mut self, exception: ServerException) -> Error {
        const UNEXPECTED_PACKET_FROM_CLIENT: i32 = 101;
        self.last_used = Instant::now();
        self.scratch.clear();
        super::wire::put_varuint(&mut self.scratch, protocol::client_packet::PING);
        if self.send_scratch().is_err() {
            return Error::Server(exception);
        }
        // The stray block yields at most one exception; a few packets more is plenty.
        for _ in 0..8 {
            match self.read_packet() {
                Ok(ServerPacket::Pong) => return Error::Server(exception),
                Ok(ServerPacket::Exception(e)) if e.code == UNEXPECTED_PACKET_FROM_CLIENT => {}
                Ok(
                    ServerPacket::Progress(_)
                    | ServerPacket::Log(_)
                    | ServerPacket::ProfileEvents(_),
                ) => {}
                // 18.16 after a syntax error reads our stray block as packets of its
                // own and loses the stream ("Too large string size"): reconnect.
                Ok(_) | Err(_) => break,
            }
        }
        self.broken = true;
        Error::Server(exception)
    }

    /// Sends a Query packet followed by the empty external-tables block.
    fn start_query(&mut self, sql: &str) -> Result<(), Error> {
        self.start_query_with(sql, &[])
    }

    /// [`Self::start_query`] with settings (sent only to servers that take them as
    /// strings; see `protocol::write_query`).
    fn start_query_with(&mut self, sql: &str, settings: &[(&str, &str)]) -> Result<(), Error> {
        self.check_usable()?;
        self.scratch.clear();
        // One small string per query, never per row.
        self.query_id.clear();
        if !self.query_id_prefix.is_empty() {
            use std::fmt::Write as _;
            let serial = QUERY_SERIAL.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = write!(self.query_id, "{}{serial}", self.query_id_prefix);
        }
        protocol::write_query(
            &mut self.scratch,
            self.server.revision,
            &self.query_id,
            sql,
            self.compression.is_some(),
            settings,
        );
        let mut scratch = std::mem::take(&mut self.scratch);
        encode_data_packet(
            &Block::default(),
            self.compression,
            &mut self.raw,
            &mut scratch,
        )?;
        self.scratch = scratch;
        self.send_scratch()
    }

    /// Runs a query and collects its result blocks.
    pub fn query(&mut self, sql: &str) -> Result<QueryResult, Error> {
        self.query_limited(sql, u64::MAX)
    }

    /// Runs a query, keeping at most about `rows_max` rows: once that many arrived it
    /// sends Cancel and reads on until the server ends the query (EndOfStream, or an
    /// Exception saying it was cancelled), dropping later blocks. `truncated` tells.
    pub fn query_limited(&mut self, sql: &str, rows_max: u64) -> Result<QueryResult, Error> {
        const QUERY_WAS_CANCELLED: i32 = 394;
        self.start_query(sql)?;
        let mut result = QueryResult::default();
        for _ in 0..PACKETS_PER_ANSWER_MAX {
            match self.read_packet()? {
                ServerPacket::Data(block) => {
                    if result.header.is_empty() && !block.columns.is_empty() {
                        result.header = block.header();
                    }
                    if block.rows > 0 && !result.truncated {
                        result.blocks.push(block);
                        if result.rows() >= rows_max {
                            result.truncated = true;
                            self.scratch.clear();
                            super::wire::put_varuint(
                                &mut self.scratch,
                                protocol::client_packet::CANCEL,
                            );
                            self.send_scratch()?;
                        }
                    }
                }
                ServerPacket::Exception(e) if result.truncated && e.code == QUERY_WAS_CANCELLED => {
                    self.last_used = Instant::now();
                    return Ok(result);
                }
                ServerPacket::Exception(e) => return Err(self.after_exception(e)),
                ServerPacket::EndOfStream => {
                    self.last_used = Instant::now();
                    return Ok(result);
                }
                _ => {}
            }
        }
        Err(self.fail(Error::Protocol("query never ended".into())))
    }

    /// Runs a statement whose result is not needed (DDL).
    pub fn execute(&mut self, sql: &str) -> Result<(), Error> {
        self.query(sql).map(|_| ())
    }

    /// Starts an INSERT and returns the header the server sends: the columns and types
    /// it expects, in order.
    fn start_insert(
        &mut self,
        sql: &str,
        settings: &[(&str, &str)],
    ) -> Result<Vec<(String, String)>, Error> {
        self.check_usable()?;
        let started = self.start_query_with(sql, settings);
        // Open from the Query packet on: even a send that failed part-way may have
        // started the INSERT on the server.
        self.open_insert = Some(self.query_id.clone());
        started?;
        for _ in 0..PACKETS_PER_ANSWER_MAX {
            match self.read_packet()? {
                ServerPacket::Data(block) => return Ok(block.header()),
                ServerPacket::Exception(e) => {
                    self.open_insert = None;
                    return Err(self.after_exception(e));
                }
                ServerPacket::TableColumns
                | ServerPacket::Log(_)
                | ServerPacket::Progress(_)
                | ServerPacket::ProfileEvents(_)
                | ServerPacket::TimezoneUpdate(_) => {}
                other => return Err(self.fail(unexpected("INSERT header", &other))),
            }
        }
        Err(self.fail(Error::Protocol("no INSERT header".into())))
    }

    /// Ends the data phase and waits for the outcome.
    fn finish_insert(&mut self) -> Result<(), Error> {
        self.scratch.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        encode_data_packet(
            &Block::default(),
            self.compression,
            &mut self.raw,
            &mut scratch,
        )?;
        self.scratch = scratch;
        self.send_scratch()?;
        for _ in 0..PACKETS_PER_ANSWER_MAX {
            match self.read_packet()? {
                ServerPacket::EndOfStream => {
                    self.open_insert = None;
                    self.last_used = Instant::now();
                    return Ok(());
                }
                // After our end marker the stream is at a packet boundary on every
                // server, but one rule for all Exceptions mid-INSERT keeps this simple.
                ServerPacket::Exception(e) => {
                    self.open_insert = None;
                    return Err(self.fail(Error::Server(e)));
                }
                ServerPacket::Progress(_)
                | ServerPacket::ProfileEvents(_)
                | ServerPacket::Log(_)
                | ServerPacket::TimezoneUpdate(_) => {}
                other => return Err(self.fail(unexpected("EndOfStream", &other))),
            }
        }
        Err(self.fail(Error::Protocol("INSERT never ended".into())))
    }

    /// The columns and types the server expects for `INSERT INTO table`, found by an
    /// INSERT that sends no rows.
    pub fn insert_header(&mut self, table: &str) -> Result<Vec<(String, String)>, Error> {
        let header = self.start_insert(&format!("INSERT INTO {table} VALUES"), &[])?;
        self.finish_insert()?;
        Ok(header)
    }

    /// INSERTs pre-encoded Data packets (each a whole block, compressed or not as this
    /// connection's compression says) after checking the server's header against
    /// `expected`. A mismatch aborts before any data is sent: the connection is closed
    /// (the only clean way to abort an INSERT) and the error names the column.
    pub fn insert_encoded(
        &mut self,
        sql: &str,
        expected: &[(String, String)],
        packets: &[&[u8]],
    ) -> Result<(), Error> {
        self.insert_encoded_with(sql, expected, packets, &[])
    }

    /// [`Self::insert_encoded`] with query settings, e.g. `insert_deduplication_token`
    /// (left out on servers that cannot take settings as strings).
    pub fn insert_encoded_with(
        &mut self,
        sql: &str,
        expected: &[(String, String)],
        packets: &[&[u8]],
        settings: &[(&str, &str)],
    ) -> Result<(), Error> {
        let header = self.start_insert(sql, settings)?;
        if let Err(error) = compare_headers(&header, expected) {
            self.broken = true;
            return Err(error);
        }
        for (i, packet) in packets.iter().enumerate() {
            self.write_raw(packet)?;
            if i == 0 && crash::armed(crash::Point::MidInsert) {
                // The crash must leave the first block on the wire and no end marker.
                self.flush()?;
                crash::reached(crash::Point::MidInsert);
            }
        }
        self.flush()?;
        self.finish_insert()
    }

    /// [`Self::insert_encoded_with`] for one uncompressed Data packet handed over in
    /// pieces: `produce` gives each to its sink in order, and each goes to the socket
    /// at once, so the packet never sits whole in memory (the journal-first inserter's
    /// sorted block, a column at a time). Only on an uncompressed query
    /// ([`Self::set_compression`] `None`): LZ4 frames would need the whole packet.
    pub fn insert_streamed_with(
        &mut self,
        sql: &str,
        expected: &[(String, String)],
        settings: &[(&str, &str)],
        produce: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if self.compression.is_some() {
            return Err(Error::Protocol(
                "a streamed INSERT needs an uncompressed query".into(),
            ));
        }
        let header = self.start_insert(sql, settings)?;
        if let Err(error) = compare_headers(&header, expected) {
            self.broken = true;
            return Err(error);
        }
        let mut first = true;
        produce(&mut |piece: &[u8]| {
            self.write_raw(piece)?;
            if std::mem::take(&mut first) && crash::armed(crash::Point::MidInsert) {
                // The crash must leave part of the block on the wire and no end marker.
                self.flush()?;
                crash::reached(crash::Point::MidInsert);
            }
            Ok(())
        })
        .inspect_err(|_| {
            // A piece that could not be produced leaves the server mid-block: only
            // closing the connection aborts the INSERT.
            self.broken = true;
        })?;
        self.flush()?;
        self.finish_insert()
    }

    /// INSERTs one block built in memory (tests, small tables, the health probe).
    pub fn insert_block(&mut self, table: &str, block: &Block) -> Result<(), Error> {
        let names: Vec<&str> = block.columns.iter().map(|c| c.name.as_str()).collect();
        let sql = format!("INSERT INTO {table} ({}) VALUES", names.join(", "));
        let mut packet = Vec::new();
        let mut raw = std::mem::take(&mut self.raw);
        let encoded = encode_data_packet(block, self.compression, &mut raw, &mut packet);
        self.raw = raw;
        encoded?;
        self.insert_encoded(&sql, &block.header(), &[&packet])
    }
}

/// Appends a Data packet holding `block`, compressing it into frames when asked.
pub fn encode_data_packet(
    block: &Block,
    compression: Option<Method>,
    raw: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    protocol::write_data_prefix(out);
    match compression {
        None => block.encode(BlockFormat::Protocol, out),
        Some(method) => {
            raw.clear();
            block.encode(BlockFormat::Protocol, raw)?;
            compress_frames(method, raw, out, &mut compress_table());
            Ok(())
        }
    }
}

/// Checks the server's INSERT header against what we are about to send.
pub fn compare_headers(
    server: &[(String, String)],
    ours: &[(String, String)],
) -> Result<(), Error> {
    for (index, pair) in server.iter().zip(ours).enumerate() {
        let ((server_name, server_type), (our_name, our_type)) = pair;
        if server_name != our_name || server_type != our_type {
            return Err(Error::SchemaMismatch(format!(
                "column {} is `{server_name} {server_type}` on the server but `{our_name} {our_type}` in the block; \
                 run `alphapt-storage migrate up` or fix the column list",
                index + 1
            )));
        }
    }
    if server.len() != ours.len() {
        return Err(Error::SchemaMismatch(format!(
            "the server expects {} columns, the block has {}",
            server.len(),
            ours.len()
        )));
    }
    Ok(())
}

fn unexpected(waiting_for: &str, packet: &ServerPacket) -> Error {
    let name = match packet {
        ServerPacket::Data(_) => "Data",
        ServerPacket::Exception(_) => "Exception",
        ServerPacket::Progress(_) => "Progress",
        ServerPacket::Pong => "Pong",
        ServerPacket::EndOfStream => "EndOfStream",
        ServerPacket::ProfileInfo => "ProfileInfo",
        ServerPacket::Totals(_) => "Totals",
        ServerPacket::Log(_) => "Log",
        ServerPacket::TableColumns => "TableColumns",
        ServerPacket::ProfileEvents(_) => "ProfileEvents",
        ServerPacket::TimezoneUpdate(_) => "TimezoneUpdate",
    };
    Error::Protocol(format!("waiting for {waiting_for}, got {name}"))
}

fn with_timeout(error: Error, timeout: Duration) -> Error {
    match error {
        Error::Timeout { op, .. } => Error::Timeout {
            op,
            timeout_ms: timeout.as_millis() as u64,
        },
        other => other,
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, Error> {
    let mut addresses = (host, port)
        .to_socket_addrs()
        .map_err(|source| Error::io("resolve host", source))?;
    addresses.next().ok_or_else(|| Error::Io {
        op: "resolve host",
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{host}` has no address"),
        ),
    })
}

/// Socket options, spelled out rather than left to defaults: no Nagle delay (we write
/// whole packets), keepalive to find half-open peers within ~25 s of idleness, and
/// timeouts on every read and write.
fn configure(stream: &TcpStream, io_timeout: Duration) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

#[cfg(test)]
mod tests {
    //! Header comparison, the one pure piece of this file; the rest runs against a
    //! real server in tests/clickhouse_native.rs.
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn header_mismatch_names_the_column() {
        let server = pairs(&[("a", "UInt32"), ("b", "LowCardinality(String)")]);
        assert!(compare_headers(&server, &server).is_ok());
        let ours = pairs(&[("a", "UInt32"), ("b", "String")]);
        let err = compare_headers(&server, &ours).unwrap_err().to_string();
        assert!(
            err.contains("column 2") && err.contains("LowCardinality(String)"),
            "{err}"
        );
        let short = pairs(&[("a", "UInt32")]);
        assert!(compare_headers(&server, &short)
            .unwrap_err()
            .to_string()
            .contains("expects 2"));
    }

    #[test]
    fn options_debug_hides_the_password() {
        let options = Options {
            password: "hunter2".into(),
            ..Options::default()
        };
        assert!(!format!("{options:?}").contains("hunter2"));
    }
}
