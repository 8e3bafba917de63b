//! Writes the seed corpora under `fuzz/seeds/<target>/` from the crate's own encoders
//! and the tests' fixtures: `cd fuzz && cargo run --example seedgen`. Deterministic;
//! rerun after a wire format changes. Keep each corpus a few small files.
use std::path::{Path, PathBuf};

use alphapt_storage::model::json::write_tick_json;
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::SealedBlock;
use alphapt_storage::native::block::BlockFormat;
use alphapt_storage::native::compress::{compress_frames, compress_table, Method};
use alphapt_storage::native::wire::{put_str, put_varuint};
use alphapt_storage::shard::columns::{TickColumns, TickSchema};
use alphapt_storage::shard::parse::encode_kite_full;
use alphapt_storage::shard::parse::kite::KITE_FULL_BYTES;
use alphapt_storage::shard::signals::{parse_json_signal, Signal, SignalColumns, SignalSchema};
use alphapt_storage::spill::format::{
    encode_record, encode_segment_header, record_bytes, RecordHeader, RecordTable, SegmentHeader,
    SEGMENT_HEADER_BYTES, STATE_OFFSET, STATE_REPLAYED,
};

const PYTHON_TICK: &str = r#"{"instrument_token": 256265, "exchange": "NSE", "tradingsymbol": "SYM0", "last_price": 1012.34, "last_quantity": 42, "average_price": 1011.99, "volume_traded": 0, "oi": 12, "ohlc": {"open": 1007.34, "high": 1019.34, "low": 1003.34, "close": 1011.34}, "depth": {"buy": [{"price": 1012.29, "quantity": 1, "orders": 2}, {"price": 1012.24, "quantity": 3, "orders": 4}], "sell": [{"price": 1012.39, "quantity": 5, "orders": 6}]}, "timestamp": "2025-11-24T16:00:00.000+00:00"}"#;

const SIGNAL: &str = r#"{"strategy_id": "mom-1", "strategy_type": "ml", "instrument_token": 256265, "tradingsymbol": "NIFTY 50", "signal_type": "BUY", "strength": 0.8, "confidence": 0.9, "price": 1234.05, "quantity": 10, "metadata": {"window": [5, 20], "note": "a \"b\" \u00e9", "nested": {"x": null}}, "timestamp": "2025-11-24T16:00:00.500+00:00"}"#;

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A sealed `market_ticks` Data packet (client packet id 2) of `rows` synthetic ticks.
fn tick_block(rows: usize, schema: &TickSchema, compression: Option<Method>) -> Vec<u8> {
    let mut feed = SyntheticTicks::new(3, 11);
    let mut columns = TickColumns::new(rows);
    for i in 0..rows {
        let mut tick = feed.next_tick(
            1_764_000_000_000 + i as i64 * 250,
            1_764_000_000_400,
            100 + i as u64,
        );
        if i == 1 {
            tick.depth_sell.len = 2; // Ragged depth: arrays of different lengths.
            tick.depth_sell.levels[2..]
                .iter_mut()
                .for_each(|l| *l = Default::default());
        }
        assert!(columns.append(&tick));
    }
    let mut sealed = SealedBlock::with_capacity(rows);
    columns.seal(schema, compression, &mut sealed);
    sealed.bytes
}

fn tick_file(rows: usize) -> Vec<u8> {
    let mut feed = SyntheticTicks::new(2, 5);
    let mut columns = TickColumns::new(rows);
    for i in 0..rows {
        assert!(columns.append(&feed.next_tick(
            1_764_000_000_000 + i as i64,
            1_764_000_000_001,
            i as u64
        )));
    }
    let mut sealed = SealedBlock::with_capacity(rows);
    columns.seal_file(&TickSchema::modern(), &mut sealed);
    sealed.bytes
}

fn signal_block(compression: Option<Method>) -> Vec<u8> {
    let mut columns = SignalColumns::new(2);
    for (i, payload) in [SIGNAL, &SIGNAL.replace("\"ml\"", "\"hybrid\"")]
        .iter()
        .enumerate()
    {
        let mut signal = Signal {
            received_at_ms: 1_764_000_001_000,
            stream_seq: 7 + i as u64,
            ..Signal::default()
        };
        let parse = parse_json_signal(payload.as_bytes(), &mut signal).unwrap();
        assert!(columns.append(&signal, parse.metadata(payload.as_bytes())));
    }
    let mut sealed = SealedBlock::with_capacity(2);
    columns.seal(&SignalSchema::modern(), compression, &mut sealed);
    sealed.bytes
}

/// A client Data packet turned into the server's (packet id 1 instead of 2).
fn as_server_data(mut packet: Vec<u8>) -> Vec<u8> {
    assert_eq!(packet[0], 2);
    packet[0] = 1;
    packet
}

fn server_hello() -> Vec<u8> {
    let mut out = Vec::new();
    put_varuint(&mut out, 0);
    put_str(&mut out, b"ClickHouse");
    put_varuint(&mut out, 24);
    put_varuint(&mut out, 3);
    put_varuint(&mut out, 54_470);
    put_str(&mut out, b"Etc/UTC");
    put_str(&mut out, b"clickhouse-0");
    put_varuint(&mut out, 2);
    out
}

fn exception() -> Vec<u8> {
    let mut out = Vec::new();
    put_varuint(&mut out, 2);
    for (code, nested) in [(60i32, 1u8), (210, 0)] {
        out.extend(code.to_le_bytes());
        put_str(&mut out, b"DB::Exception");
        put_str(&mut out, b"Table default.market_ticks does not exist");
        put_str(&mut out, b"0. DB::Exception::Exception()");
        out.push(nested);
    }
    out
}

fn progress_profile_end() -> Vec<u8> {
    let mut out = Vec::new();
    put_varuint(&mut out, 3); // Progress
    for v in [10u64, 1000, 10, 3, 300] {
        put_varuint(&mut out, v);
    }
    put_varuint(&mut out, 6); // ProfileInfo
    for v in [10u64, 1, 1000] {
        put_varuint(&mut out, v);
    }
    out.push(0);
    put_varuint(&mut out, 0);
    out.push(0);
    put_varuint(&mut out, 11); // TableColumns
    put_str(&mut out, b"");
    put_str(&mut out, b"columns format version: 1\n");
    put_varuint(&mut out, 4); // Pong
    put_varuint(&mut out, 5); // EndOfStream
    out
}

fn with_prefix(mode: u8, revision: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![mode, revision];
    out.extend_from_slice(body);
    out
}

fn record_header(table: RecordTable, lz4: bool, seq: u64) -> RecordHeader {
    RecordHeader {
        table,
        lz4,
        shard: 1,
        rows: 3,
        seq_first: seq,
        seq_last: seq + 2,
        durable_through: seq + 2,
        schema_hash: 0x1234_5678_9abc_def0,
        received_min_ms: 1_764_000_000_400,
    }
}

fn record(header: &RecordHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; record_bytes(payload.len())];
    encode_record(header, payload, &mut out);
    out
}

/// A segment: header, the records, then `zeros` bytes of preallocated tail.
fn segment(records: &[Vec<u8>], zeros: usize) -> Vec<u8> {
    let mut out = vec![0u8; SEGMENT_HEADER_BYTES];
    for r in records {
        out.extend_from_slice(r);
    }
    out.resize(out.len() + zeros, 0);
    let header = SegmentHeader {
        segment_seq: 1,
        created_ms: 1_764_000_000_000,
        segment_bytes: out.len() as u64,
    };
    encode_segment_header(&header, &mut out);
    out
}

fn main() {
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");

    // json_tick
    let mut synthetic = Vec::new();
    write_tick_json(
        &mut synthetic,
        &SyntheticTicks::new(1, 3).next_tick(1_764_000_000_123, 0, 0),
    );
    write(
        &root,
        "json_tick",
        "python_tick.json",
        PYTHON_TICK.as_bytes(),
    );
    write(&root, "json_tick", "writer_tick.json", &synthetic);
    write(
        &root,
        "json_tick",
        "compact_epoch_unknown_keys.json",
        br#"{"instrument_token":1,"last_price":-0.05e1,"timestamp":1764000000000,"x":[{"y":null},true,"\u00e9\n"],"volume":7,"tradingsymbol":"A\"B","ohlc":null,"depth":{"buy":[],"sell":null}}"#,
    );
    write(&root, "json_tick", "iso_variants.json", br#"{"instrument_token": 2, "last_price": 1, "timestamp": "2025-11-24 16:00:00.123456789-0530"}"#);
    write(
        &root,
        "json_tick",
        "iso_only.txt",
        b"2025-11-24T16:00:00.500+05:30",
    );

    // json_signal
    write(&root, "json_signal", "full.json", SIGNAL.as_bytes());
    write(
        &root,
        "json_signal",
        "minimal.json",
        br#"{"strategy_id":"s","instrument_token":1,"signal_type":"SELL","metadata":null,"strength":1e-3,"timestamp":1764000000000}"#,
    );

    // kite
    let mut feed = SyntheticTicks::new(2, 9);
    let mut full = [0u8; KITE_FULL_BYTES];
    encode_kite_full(&feed.next_tick(1_764_000_000_000, 0, 0), &mut full);
    let mut index = Vec::new();
    for word in [
        256_265u32,
        2_400_005,
        2_410_000,
        2_390_000,
        2_395_000,
        2_398_000,
        7,
        1_764_000_000,
    ] {
        index.extend_from_slice(&word.to_be_bytes());
    }
    let frame = |packets: &[&[u8]]| {
        let mut out = (packets.len() as u16).to_be_bytes().to_vec();
        for p in packets {
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p);
        }
        out
    };
    write(&root, "kite", "frame_full.bin", &frame(&[&full]));
    write(
        &root,
        "kite",
        "frame_mixed.bin",
        &frame(&[&full[..44], &index, &index[..28], &index[..8]]),
    );
    write(&root, "kite", "packet_full.bin", &full);
    write(&root, "kite", "heartbeat.bin", &[0]);

    // nats_wire: 2 bytes payload limit (0 = client ceiling), 1 flag byte, the stream.
    let tick = PYTHON_TICK.as_bytes();
    let mut stream = b"INFO {\"server_id\":\"N1\",\"version\":\"2.10.7\",\"max_payload\":1048576,\"headers\":true,\"jetstream\":true,\"proto\":1}\r\n".to_vec();
    stream.extend_from_slice(
        format!(
            "MSG market.ticks.NSE.256265 7 $JS.ACK.TICKS.storage.1.100.42.1764000000000000000.5 {}\r\n",
            tick.len()
        )
        .as_bytes(),
    );
    stream.extend_from_slice(tick);
    stream.extend_from_slice(b"\r\nPING\r\n+OK\r\npong\r\n");
    let mut nats = vec![0, 0, 0x80];
    nats.extend_from_slice(&stream);
    write(&root, "nats_wire", "info_msg_ping.bin", &nats);
    let status = "NATS/1.0 408 Request Timeout\r\n\r\n";
    let headers = "NATS/1.0\r\nNats-Msg-Id: abc\r\nStatus: x\r\n\r\n";
    let hmsg = format!(
        "HMSG _INBOX.abc.1 3 {n} {n}\r\n{status}\r\n\
         HMSG strategy.signals.mom.256265\t9 $JS.ACK.SIGNALS.storage.2.7.7.1764000000000000000.0 {h} {t}\r\n{headers}{{}}\r\n\
         -ERR 'Stale Connection'\r\n",
        n = status.len(),
        h = headers.len(),
        t = headers.len() + 2,
    );
    let mut nats = vec![0x00, 0x04, 0x40];
    nats.extend_from_slice(hmsg.as_bytes());
    write(&root, "nats_wire", "hmsg_status_err.bin", &nats);
    let ack = r#"{"stream":"TICKS","seq":17,"duplicate":true}"#;
    let mut nats = vec![0x10, 0x00, 0x00];
    nats.extend_from_slice(format!("MSG _INBOX.p 1 {}\r\n{ack}\r\n", ack.len()).as_bytes());
    write(&root, "nats_wire", "pub_ack.bin", &nats);

    // native_block: mode byte, revision byte, then the server's bytes.
    let modern = TickSchema::modern();
    let legacy = TickSchema::legacy();
    let mut packets = as_server_data(tick_block(3, &modern, None));
    packets.extend(progress_profile_end());
    write(
        &root,
        "native_block",
        "hello.bin",
        &with_prefix(0, 0, &server_hello()),
    );
    write(
        &root,
        "native_block",
        "hello_exception.bin",
        &with_prefix(0, 0, &exception()),
    );
    write(
        &root,
        "native_block",
        "packets_modern.bin",
        &with_prefix(1, 0, &packets),
    );
    let mut packets = as_server_data(tick_block(2, &legacy, None));
    packets.extend(exception());
    write(
        &root,
        "native_block",
        "packets_legacy.bin",
        &with_prefix(1, 1, &packets),
    );
    write(
        &root,
        "native_block",
        "packet_signals_lz4.bin",
        &with_prefix(2, 0, &as_server_data(signal_block(Some(Method::Lz4)))),
    );
    write(
        &root,
        "native_block",
        "packet_ticks_lz4.bin",
        &with_prefix(
            2,
            0,
            &as_server_data(tick_block(2, &modern, Some(Method::Lz4))),
        ),
    );
    let raw = &signal_block(None)[2..];
    let mut frames = Vec::new();
    compress_frames(Method::Lz4, raw, &mut frames, &mut compress_table());
    write(
        &root,
        "native_block",
        "frames_signals.bin",
        &with_prefix(3, 0, &frames),
    );
    write(
        &root,
        "native_block",
        "file_ticks.bin",
        &with_prefix(4, 0, &tick_file(2)),
    );
    write(
        &root,
        "native_block",
        "protocol_block_signals.bin",
        &with_prefix(5, 0, raw),
    );
    write(
        &root,
        "native_block",
        "types.txt",
        &with_prefix(
            6,
            0,
            b"Tuple(a Array(Tuple(price Decimal(18, 8), quantity UInt32)), b LowCardinality(Nullable(String)), c Enum8('x\\'' = -1, 'y' = 2), d DateTime64(3, 'UTC'), e FixedString(4))",
        ),
    );
    let _ = BlockFormat::File;

    // spill_record: control byte = decoder << 1 | fixup, then the bytes.
    let ticks = tick_block(2, &modern, Some(Method::Lz4));
    let rec0 = record(&record_header(RecordTable::MarketTicks, true, 100), &ticks);
    let rec1 = record(
        &record_header(RecordTable::StrategySignals, false, 7),
        &signal_block(None),
    );
    let mut rec2 = record(
        &record_header(RecordTable::RejectedMessages, false, 200),
        b"rejected payload",
    );
    rec2[STATE_OFFSET] = STATE_REPLAYED;
    let mut both = vec![0u8];
    both.extend_from_slice(&rec2);
    write(&root, "spill_record", "record.bin", &both);
    let mut seg_head = vec![2u8];
    seg_head.extend_from_slice(&segment(&[], 0));
    write(&root, "spill_record", "segment_header.bin", &seg_head);
    // A segment: good record, damaged record, good record, a torn tail, zeros.
    let mut damaged = rec2.clone();
    damaged[30] ^= 1;
    let mut torn = rec2.clone();
    torn.truncate(40);
    let mut seg = vec![4u8];
    seg.extend_from_slice(&segment(&[rec2.clone(), damaged, rec2.clone(), torn], 64));
    write(&root, "spill_record", "segment_scan.bin", &seg);

    // spill_journal: control byte (bit 0: fix the segment up), then the segment file.
    let mut journal = vec![0u8];
    journal.extend_from_slice(&segment(&[rec0, rec2.clone(), rec1], 256));
    write(&root, "spill_journal", "segment_clean.bin", &journal);
    let mut journal = vec![1u8];
    let mut tail = rec2.clone();
    tail.truncate(50);
    journal.extend_from_slice(&segment(&[rec2.clone(), tail], 128));
    write(&root, "spill_journal", "segment_torn.bin", &journal);

    // migration_split
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for file in [
        "clickhouse/001_market_ticks.sql",
        "clickhouse/002_market_ticks_retention.sql",
        "postgres/001_instruments.sql",
    ] {
        let text = std::fs::read(migrations.join(file)).unwrap();
        write(&root, "migration_split", &file.replace('/', "_"), &text);
    }
    write(
        &root,
        "migration_split",
        "quotes_and_dollars.sql",
        b"-- a; b\n/* nested /* ; */ */\nCREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\nSELECT E'it\\'s;', 'a''b;', \"x;\", `y;`, $$z;$$;\n",
    );
    println!("seeds written under {}", root.display());
}
