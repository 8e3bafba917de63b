//! The native-protocol client against the real ClickHouse server `make test` starts
//! (Debian's 18.16): handshake, auth, typed exceptions, SELECT decoding, a million
//! ticks through the block builder read back two independent ways, and timeouts.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::SealedBlock;
use alphapt_storage::native::{
    Block, Client, Column, Connection, Error, Method, Options, Value, Values,
};
use alphapt_storage::runtime::Backoff;
use alphapt_storage::shard::{TickColumns, TickSchema};
use common::{clickhouse_client, options, TestDb};

#[test]
fn handshake_negotiates_the_servers_revision() {
    let mut conn = Connection::connect(&options("", None)).unwrap();
    let server = conn.server().clone();
    assert_eq!(server.hello.name, "ClickHouse");
    assert!(
        server.revision <= 54429 && server.revision >= 54405,
        "{server:?}"
    );
    assert_eq!(server.version(), clickhouse_client("SELECT version()"));
    conn.ping().unwrap();
    let result = conn.query("SELECT 1 AS one").unwrap();
    assert_eq!(result.scalar(), Some(Value::UInt(1)));
}

#[test]
fn password_auth_accepts_the_right_password_and_names_the_wrong_one() {
    let mut good = options("", Some(Method::Lz4));
    good.user = "alphapt".into();
    good.password = "secret-pw".into();
    let mut conn = Connection::connect(&good).unwrap();
    assert_eq!(
        conn.query("SELECT 3").unwrap().scalar(),
        Some(Value::UInt(3))
    );
    let bad = Options {
        password: "wrong".into(),
        ..good
    };
    match Connection::connect(&bad) {
        Err(Error::Server(e)) => assert!(e.message.contains("alphapt") || e.code == 193, "{e}"),
        Err(other) => panic!("expected a server exception, got {other}"),
        Ok(_) => panic!("wrong password accepted"),
    }
}

#[test]
fn server_exceptions_are_typed_and_the_connection_stays_usable() {
    let db = TestDb::new("exc");
    for compression in [None, Some(Method::Lz4)] {
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let mut client = Client::new(
            options(&db.name, compression),
            backoff,
            Duration::from_secs(60),
            3,
        );
        // (query, code, whether the same socket survives on 18.16). A syntax error is
        // thrown before 18.16 reads the query's trailing empty block, which it then
        // misreads as packets: that socket is closed and the client reconnects.
        let cases = [
            ("SELECT * FROM no_such_table", 60, true),
            ("SELECT toUInt8('not a number')", 6, true),
            ("SELEKT 1", 62, false),
        ];
        for (sql, code, survives) in cases {
            let conn = client.connection().unwrap();
            match conn.query(sql) {
                Err(Error::Server(e)) => {
                    assert_eq!(e.code, code, "{sql}: {e}");
                    assert!(!e.message.is_empty());
                    assert!(!e.is_retriable());
                }
                other => panic!("{sql}: expected exception {code}, got {other:?}"),
            }
            if survives || conn.server().is_modern() {
                assert!(!conn.is_broken(), "{sql}");
                conn.ping().unwrap();
            }
            let two = client.run(|c| c.query("SELECT 2")).unwrap();
            assert_eq!(two.scalar(), Some(Value::UInt(2)));
        }
        // INSERT into a table that does not exist: the exception replaces the header.
        let block =
            Block::new(vec![Column::new("a", "UInt8", Values::U8(vec![1])).unwrap()]).unwrap();
        let conn = client.connection().unwrap();
        match conn.insert_block("no_such_table", &block) {
            Err(Error::Server(e)) => assert_eq!(e.code, 60, "{e}"),
            other => panic!("expected UNKNOWN_TABLE, got {other:?}"),
        }
        assert!(!conn.is_broken());
        conn.ping().unwrap();
    }
}

#[test]
fn insert_with_a_mismatched_header_is_refused_before_any_data() {
    let db = TestDb::new("mismatch");
    let mut conn = db.connect(Some(Method::Lz4));
    conn.execute("CREATE TABLE t (a UInt32, b String) ENGINE = Memory")
        .unwrap();
    let wrong_type = Block::new(vec![
        Column::new("a", "UInt64", Values::U64(vec![1])).unwrap(),
        Column::new("b", "String", Values::Bytes(vec![b"x".to_vec()])).unwrap(),
    ])
    .unwrap();
    let err = conn.insert_block("t", &wrong_type).unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch(_)), "{err}");
    assert!(err.to_string().contains("`a UInt32`"), "{err}");
    let mut conn = db.connect(Some(Method::Lz4));
    assert_eq!(
        conn.query("SELECT count() FROM t").unwrap().scalar(),
        Some(Value::UInt(0))
    );
    let right = Block::new(vec![
        Column::new("a", "UInt32", Values::U32(vec![7, 8])).unwrap(),
        Column::new(
            "b",
            "String",
            Values::Bytes(vec![b"x".to_vec(), b"y".to_vec()]),
        )
        .unwrap(),
    ])
    .unwrap();
    conn.insert_block("t", &right).unwrap();
    assert_eq!(
        conn.query("SELECT sum(a) FROM t").unwrap().scalar(),
        Some(Value::UInt(15))
    );
}

#[test]
fn select_decodes_every_type_the_project_uses() {
    let mut conn = Connection::connect(&options("", Some(Method::Lz4))).unwrap();
    let result = conn
        .query(
            "SELECT toUInt8(200) AS u8, toInt64(-5) AS i64, toFloat32(1.5) AS f32, 'tick' AS s, \
             toFixedString('ab', 3) AS fs, toDate('2026-11-25') AS d, \
             toDateTime('2026-11-25 01:02:03', 'UTC') AS dt, toDecimal64(12.34, 2) AS dec, \
             CAST('ml' AS Enum8('traditional' = 1, 'ml' = 2, 'hybrid' = 3)) AS e, \
             [1, 2, 3] AS arr, (toUInt8(1), 'x') AS tup, [(1.5, toUInt32(2), toUInt16(3))] AS depth, \
             toNullable(7) AS n1, CAST(NULL AS Nullable(UInt8)) AS n0, toLowCardinality('NSE') AS lc",
        )
        .unwrap();
    let get = |name: &str| result.column(name).remove(0);
    assert_eq!(get("u8"), Value::UInt(200));
    assert_eq!(get("i64"), Value::Int(-5));
    assert_eq!(get("f32"), Value::Float(1.5));
    assert_eq!(get("s").as_str(), Some("tick"));
    assert_eq!(get("fs"), Value::Bytes(b"ab\0".to_vec()));
    assert_eq!(get("d"), Value::UInt(20_782));
    assert_eq!(get("dt"), Value::UInt(1_795_568_523));
    assert_eq!(get("dec"), Value::Int(1234));
    assert_eq!(get("e"), Value::Int(2));
    assert_eq!(
        get("arr"),
        Value::Array(vec![Value::UInt(1), Value::UInt(2), Value::UInt(3)])
    );
    assert_eq!(
        get("tup"),
        Value::Tuple(vec![Value::UInt(1), Value::Bytes(b"x".to_vec())])
    );
    assert_eq!(
        get("depth"),
        Value::Array(vec![Value::Tuple(vec![
            Value::Float(1.5),
            Value::UInt(2),
            Value::UInt(3)
        ])])
    );
    assert_eq!(get("n1"), Value::UInt(7));
    assert_eq!(get("n0"), Value::Null);
    assert_eq!(get("lc").as_str(), Some("NSE"));
    // A multi-block result: 200,000 rows arrive in several blocks.
    let many = conn
        .query("SELECT number FROM system.numbers LIMIT 200000")
        .unwrap();
    assert_eq!(many.rows(), 200_000);
    assert!(many.blocks.len() > 1);
    let sum: u64 = many
        .column("number")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(sum, 199_999 * 200_000 / 2);
}

#[test]
fn cancel_stops_an_endless_select_and_the_connection_stays_usable() {
    for compression in [None, Some(Method::Lz4)] {
        let mut conn = Connection::connect(&options("", compression)).unwrap();
        let started = Instant::now();
        let result = conn
            .query_limited("SELECT number FROM system.numbers", 100_000)
            .unwrap();
        assert!(result.truncated);
        assert!(result.rows() >= 100_000);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!conn.is_broken());
        conn.ping().unwrap();
        assert_eq!(
            conn.query("SELECT 5").unwrap().scalar(),
            Some(Value::UInt(5))
        );
    }
}

#[test]
fn a_million_ticks_round_trip_through_the_builder() {
    const TICKS: u64 = 1_000_000;
    const BLOCK_ROWS: usize = 65_536;
    let db = TestDb::new("million");
    let mut conn = db.connect(Some(Method::Lz4));
    db.create_market_ticks(&mut conn);
    let schema = TickSchema::from_header(&conn.insert_header("market_ticks").unwrap()).unwrap();
    let expected_schema = if conn.server().is_modern() {
        TickSchema::modern()
    } else {
        TickSchema::legacy()
    };
    assert_eq!(
        schema, expected_schema,
        "migration and built-in schema agree"
    );

    let mut feed = SyntheticTicks::new(500, 42);
    let mut columns = TickColumns::new(BLOCK_ROWS);
    let mut sealed = SealedBlock::with_capacity(BLOCK_ROWS);
    let insert_sql = schema.insert_sql("market_ticks");
    let (mut volume_sum, mut price_sum, mut depth_qty_sum) = (0u128, 0f64, 0u64);
    let mut sample = None;
    let start_ms = 1_764_000_000_000i64;
    let flush = |columns: &mut TickColumns, sealed: &mut SealedBlock, conn: &mut Connection| {
        columns.seal(&schema, Some(Method::Lz4), sealed);
        conn.insert_encoded(&insert_sql, &schema.header(), &[&sealed.bytes])
            .unwrap();
    };
    for seq in 1..=TICKS {
        let tick = feed.next_tick(start_ms + seq as i64, start_ms + seq as i64 + 3, seq);
        volume_sum += u128::from(tick.volume_traded);
        price_sum += tick.last_price.to_f64();
        depth_qty_sum += tick
            .depth_buy
            .as_slice()
            .iter()
            .map(|l| u64::from(l.quantity))
            .sum::<u64>();
        if seq == 777_777 {
            sample = Some(tick);
        }
        assert!(columns.append(&tick));
        if columns.is_full() {
            flush(&mut columns, &mut sealed, &mut conn);
        }
    }
    if !columns.is_empty() {
        flush(&mut columns, &mut sealed, &mut conn);
    }

    // Our own SELECT decoder.
    let q = conn
        .query("SELECT count() AS c, sum(volume_traded) AS v, sum(stream_seq) AS s, uniqExact(stream_seq) AS u FROM market_ticks")
        .unwrap();
    assert_eq!(q.column("c")[0], Value::UInt(TICKS));
    assert_eq!(q.column("v")[0].as_u64().map(u128::from), Some(volume_sum));
    assert_eq!(q.column("s")[0], Value::UInt(TICKS * (TICKS + 1) / 2));
    assert_eq!(q.column("u")[0], Value::UInt(TICKS));
    let sums = conn
        .query("SELECT sum(last_price) AS p FROM market_ticks")
        .unwrap();
    let ours = sums.column("p")[0].as_f64().unwrap();
    assert!(
        (ours - price_sum).abs() / price_sum < 1e-9,
        "{ours} vs {price_sum}"
    );

    let sample = sample.unwrap();
    // 18.16 exposes an Array(Tuple) column as one array per element; modern servers
    // keep the tuple.
    let (buy_prices, sell_quantities, buy_quantities) = if conn.server().is_modern() {
        (
            "depth_buy.price",
            "depth_sell.quantity",
            "depth_buy.quantity",
        )
    } else {
        ("`depth_buy.1`", "`depth_sell.2`", "`depth_buy.2`")
    };
    let row = conn
        .query(&format!(
            "SELECT instrument_token, tradingsymbol, exchange, last_price, volume_traded, {buy_prices} AS bp, \
             {sell_quantities} AS sq FROM market_ticks WHERE stream_seq = {}",
            sample.stream_seq
        ))
        .unwrap();
    assert_eq!(row.rows(), 1);
    assert_eq!(
        row.column("instrument_token")[0],
        Value::UInt(sample.instrument_token.into())
    );
    assert_eq!(
        row.column("tradingsymbol")[0].as_str().unwrap().as_bytes(),
        sample.tradingsymbol.as_bytes()
    );
    assert_eq!(row.column("exchange")[0].as_str(), Some("NSE"));
    assert_eq!(
        row.column("last_price")[0],
        Value::Float(sample.last_price.to_f64())
    );
    let bp: Vec<Value> = sample
        .depth_buy
        .as_slice()
        .iter()
        .map(|l| Value::Float(l.price.to_f64()))
        .collect();
    assert_eq!(row.column("bp")[0], Value::Array(bp));
    let sq: Vec<Value> = sample
        .depth_sell
        .as_slice()
        .iter()
        .map(|l| Value::UInt(l.quantity.into()))
        .collect();
    assert_eq!(row.column("sq")[0], Value::Array(sq));

    // The server's own client, independently.
    let table = format!("{}.market_ticks", db.name);
    assert_eq!(
        clickhouse_client(&format!("SELECT count() FROM {table}")),
        TICKS.to_string()
    );
    assert_eq!(
        clickhouse_client(&format!("SELECT sum(volume_traded) FROM {table}")),
        volume_sum.to_string()
    );
    assert_eq!(
        clickhouse_client(&format!(
            "SELECT sum(arraySum({buy_quantities})) FROM {table}"
        )),
        depth_qty_sum.to_string()
    );
    let line = clickhouse_client(&format!(
        "SELECT instrument_token, tradingsymbol, last_price FROM {table} WHERE stream_seq = {} FORMAT TSV",
        sample.stream_seq
    ));
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[0], sample.instrument_token.to_string());
    assert_eq!(fields[1].as_bytes(), sample.tradingsymbol.as_bytes());
    assert_eq!(
        fields[2].parse::<f64>().unwrap(),
        sample.last_price.to_f64()
    );
}

#[test]
fn uncompressed_inserts_store_the_same_rows() {
    let db = TestDb::new("plain");
    let mut conn = db.connect(None);
    db.create_market_ticks(&mut conn);
    let schema = TickSchema::from_header(&conn.insert_header("market_ticks").unwrap()).unwrap();
    let mut feed = SyntheticTicks::new(10, 1);
    let mut columns = TickColumns::new(5_000);
    for seq in 1..=5_000u64 {
        columns.append(&feed.next_tick(1_764_000_000_000, 1_764_000_000_001, seq));
    }
    let mut sealed = SealedBlock::with_capacity(5_000);
    columns.seal(&schema, None, &mut sealed);
    conn.insert_encoded(
        &schema.insert_sql("market_ticks"),
        &schema.header(),
        &[&sealed.bytes],
    )
    .unwrap();
    let q = conn
        .query("SELECT count(), sum(stream_seq) FROM market_ticks")
        .unwrap();
    assert_eq!(q.blocks[0].columns[0].values.get(0), Value::UInt(5_000));
    assert_eq!(
        q.blocks[0].columns[1].values.get(0),
        Value::UInt(5_000 * 5_001 / 2)
    );
}

/// The journal-first inserter's sorted INSERT: LZ4 blocks merged into one in key order
/// and streamed raw a column at a time on a connection opened for LZ4. Refused while
/// the connection's queries are compressed; a piece that fails aborts the INSERT with
/// nothing stored.
#[test]
fn a_merged_block_streams_raw_on_an_lz4_connection() {
    use alphapt_storage::native::merge::SortedMerge;
    use alphapt_storage::native::protocol::write_data_prefix;
    use alphapt_storage::native::BlockFormat;
    use alphapt_storage::write::inserter::TICKS_KEY;

    const ROWS: u64 = 3_000;
    let db = TestDb::new("streamed");
    let mut conn = db.connect(Some(Method::Lz4));
    db.create_market_ticks(&mut conn);
    let schema = TickSchema::from_header(&conn.insert_header("market_ticks").unwrap()).unwrap();
    let mut feed = SyntheticTicks::new(10, 4);
    let mut columns = TickColumns::new(1_000);
    let mut sealed = SealedBlock::with_capacity(1_000);
    let mut merge = SortedMerge::new(&schema.header(), &TICKS_KEY).unwrap();
    let mut prices = 0.0;
    for seq in 1..=ROWS {
        let tick = feed.next_tick(1_764_000_000_000 + seq as i64, 1_764_000_000_001, seq);
        prices += tick.last_price.to_f64();
        columns.append(&tick);
        if seq % 1_000 == 0 {
            columns.seal(&schema, Some(Method::Lz4), &mut sealed);
            merge.push_packet(&sealed.bytes, true).unwrap();
        }
    }
    let sql = schema.insert_sql("market_ticks");
    let header = schema.header();
    let mut piece = Vec::new();
    let mut send = |conn: &mut Connection, fail: bool| {
        conn.insert_streamed_with(&sql, &header, &[], |sink| {
            let mut prefix = Vec::new();
            write_data_prefix(&mut prefix);
            sink(&prefix)?;
            merge.write_pieces(BlockFormat::Protocol, &mut piece, &mut |bytes| {
                if fail {
                    return Err(Error::Protocol("a piece failed".into()));
                }
                sink(bytes)
            })
        })
    };
    let refused = send(&mut conn, false).unwrap_err();
    assert!(refused.to_string().contains("uncompressed"), "{refused}");
    conn.set_compression(None);
    assert!(send(&mut conn, true).is_err());
    let mut conn = db.connect(None);
    send(&mut conn, false).unwrap();
    let mut conn = db.connect(Some(Method::Lz4));
    let q = conn
        .query("SELECT count(), sum(stream_seq), sum(last_price) FROM market_ticks")
        .unwrap();
    let row: Vec<Value> = (0..3)
        .map(|c| q.blocks[0].columns[c].values.get(0))
        .collect();
    assert_eq!(
        row[0],
        Value::UInt(ROWS),
        "stored once, the failed attempt not at all"
    );
    assert_eq!(row[1], Value::UInt(ROWS * (ROWS + 1) / 2));
    let Value::Float(sum) = row[2] else {
        panic!("{:?}", row[2])
    };
    assert!(
        (sum - prices).abs() < 1e-6 * prices,
        "{sum} against {prices}"
    );
}

#[test]
fn a_silent_peer_times_out_instead_of_hanging() {
    // A socket that accepts and never speaks stands for a hung or half-open server.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = Options {
        port,
        io_timeout: Duration::from_millis(300),
        ..options("", None)
    };
    let started = Instant::now();
    let err = Connection::connect(&options)
        .err()
        .expect("no handshake from a silent peer");
    assert!(
        matches!(
            err,
            Error::Timeout {
                timeout_ms: 300,
                ..
            }
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(listener);
    // Nobody listening: connection refused, reported as I/O.
    let err = Connection::connect(&options).err().expect("refused");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.is_retriable());
}

/// An INSERT whose connection is lost mid-block while the server's side stays open
/// (a half-open peer): the server goes on running it. The client must not run its
/// next request, which after a cut is "which blocks are stored", until the server has
/// ended that INSERT; otherwise a block committed a moment later is sent twice.
#[test]
fn a_cut_insert_still_running_on_the_server_is_settled_before_the_next_request() {
    let db = TestDb::new("settle");
    let mut admin = db.connect(None);
    admin
        .execute("CREATE TABLE t (x UInt64) ENGINE = MergeTree ORDER BY x")
        .unwrap();
    let proxy = common::proxy::Proxy::start(options("", None).port);
    let prefix = format!("alphapt-{}-settle-", db.name);
    let mut through = options(&db.name, None);
    through.port = proxy.port;
    through.query_id_prefix = prefix.clone();
    through.io_timeout = Duration::from_secs(5);
    let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
    let mut client = Client::new(through, backoff, Duration::from_secs(60), 1);
    client.run(|c| c.query("SELECT 1")).unwrap();
    // 2 MB of one block: the stall lands inside it, the server waits for the rest.
    let rows: Vec<u64> = (0..250_000).collect();
    let block = Block::new(vec![Column::new("x", "UInt64", Values::U64(rows)).unwrap()]).unwrap();
    proxy.stall_after(200_000);
    let cut = client.run(|c| c.insert_block("t", &block)).unwrap_err();
    assert!(cut.is_retriable(), "{cut}");
    let running = |admin: &mut Connection| {
        admin
            .query(&format!(
                "SELECT count() FROM system.processes WHERE startsWith(query_id, '{prefix}')"
            ))
            .unwrap()
            .scalar()
    };
    // Either the server let the kill end it, or the client refuses to go on.
    match client.run(|c| c.query("SELECT 2")) {
        Ok(_) => assert_eq!(running(&mut admin), Some(Value::UInt(0))),
        Err(error) => {
            assert!(
                matches!(error, Error::Unsettled { .. }) && error.is_retriable(),
                "{error}"
            );
            assert_eq!(running(&mut admin), Some(Value::UInt(1)));
            proxy.release();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match client.run(|c| c.query("SELECT 2")) {
                    Ok(_) => break,
                    Err(error) if Instant::now() < deadline => {
                        assert!(matches!(error, Error::Unsettled { .. }), "{error}")
                    }
                    Err(error) => panic!("still unsettled after the release: {error}"),
                }
            }
            assert_eq!(running(&mut admin), Some(Value::UInt(0)));
        }
    }
    // The cut block is whole or absent (one block is one part), and the next INSERT
    // through the same client goes through.
    let stored = admin.query("SELECT count() FROM t").unwrap().scalar();
    assert!(
        matches!(stored, Some(Value::UInt(0 | 250_000))),
        "{stored:?}"
    );
    let one = Block::new(vec![
        Column::new("x", "UInt64", Values::U64(vec![7])).unwrap()
    ])
    .unwrap();
    client.run(|c| c.insert_block("t", &one)).unwrap();
}
