//! Strategy signals end to end against the real ClickHouse: 1,000 JSON signals are
//! parsed, built into one block for the table the server reports (`strategy_signals`
//! from migration 003, modern or 18.16 form) and inserted over the native protocol;
//! the count, the strategy types by name and a sample row's metadata text read back
//! as sent. Parsing and appending allocate nothing (a counting global allocator
//! watches); this binary holds one test so no other thread's allocations are counted.

mod common;

use alphapt_storage::model::SealedBlock;
use alphapt_storage::native::{Method, Value};
use alphapt_storage::shard::signals::{
    parse_json_signal, Signal, SignalColumns, SignalParse, SignalSchema, StrategyType,
};
use common::TestDb;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

const SIGNALS: usize = 1_000;

/// The JSON signal for row `i`: strategy types cycle, metadata names the row.
fn payload(i: usize) -> String {
    let strategy_type = StrategyType::ALL[i % 3].as_str();
    format!(
        r#"{{"strategy_id": "strat-{}", "strategy_type": "{strategy_type}", "instrument_token": {}, "tradingsymbol": "SYM{}", "signal_type": "{}", "strength": 0.5, "confidence": 0.75, "price": {}.25, "quantity": {i}, "metadata": {{"row": {i}, "tags": ["a", "b\u00e9"], "params": {{"fast": 5}}}}, "timestamp": {}}}"#,
        i % 7,
        256_265 + i % 11,
        i % 11,
        ["BUY", "SELL", "HOLD"][i % 3],
        1_000 + i,
        1_764_000_000_000 + i as i64,
    )
}

/// Parses every payload into `columns`, returning nothing but what the columns hold.
fn build(payloads: &[String], columns: &mut SignalColumns) {
    let mut signal = Signal::default();
    for (i, payload) in payloads.iter().enumerate() {
        signal.received_at_ms = 1_764_000_005_000 + i as i64;
        signal.stream_seq = 1 + i as u64;
        let parse: SignalParse = parse_json_signal(payload.as_bytes(), &mut signal).unwrap();
        assert!(columns.append(&signal, parse.metadata(payload.as_bytes())));
    }
}

#[test]
fn signals_are_stored_as_sent() {
    let payloads: Vec<String> = (0..SIGNALS).map(payload).collect();
    let mut columns = SignalColumns::new(SIGNALS);
    let mut sealed = SealedBlock::with_capacity(SIGNALS);
    sealed.bytes = Vec::with_capacity(SignalColumns::sealed_bytes_max(SIGNALS));

    // Per message: parse and append allocate nothing; sealing a legacy (plain
    // strings) block allocates nothing either.
    let legacy = SignalSchema::legacy();
    let before = counting_alloc::allocations();
    build(&payloads, &mut columns);
    columns.seal(&legacy, Some(Method::Lz4), &mut sealed);
    let after = counting_alloc::allocations();
    assert_eq!(after - before, 0, "allocations for {SIGNALS} signals");

    let db = TestDb::new("signals");
    let mut conn = db.connect(Some(Method::Lz4));
    db.create_from_migration(&mut conn, "003_strategy_signals");
    let header = conn.insert_header("strategy_signals").unwrap();
    let schema = SignalSchema::from_header(&header).unwrap();
    build(&payloads, &mut columns);
    columns.seal(&schema, Some(Method::Lz4), &mut sealed);
    assert_eq!(sealed.rows as usize, SIGNALS);
    assert_eq!((sealed.seq_min, sealed.seq_max), (1, SIGNALS as u64));
    conn.insert_encoded(
        &schema.insert_sql("strategy_signals"),
        &schema.header(),
        &[&sealed.bytes],
    )
    .unwrap();

    let count = conn.query("SELECT count() FROM strategy_signals").unwrap();
    assert_eq!(count.scalar(), Some(Value::UInt(SIGNALS as u64)));
    let per_type = conn
        .query(
            "SELECT toString(strategy_type) AS t, count() AS n FROM strategy_signals \
             GROUP BY t ORDER BY t",
        )
        .unwrap();
    let names: Vec<Value> = ["hybrid", "ml", "traditional"]
        .iter()
        .map(|n| Value::Bytes(n.as_bytes().to_vec()))
        .collect();
    assert_eq!(per_type.column("t"), names);
    assert_eq!(
        per_type.column("n"),
        vec![Value::UInt(333), Value::UInt(333), Value::UInt(334)]
    );

    let row = 418;
    let sample = conn
        .query(&format!(
            "SELECT toString(strategy_type) AS t, strategy_id, instrument_token, \
             tradingsymbol, signal_type, strength, confidence, price, quantity, metadata, \
             toUnixTimestamp(timestamp) AS seconds, stream_seq \
             FROM strategy_signals WHERE stream_seq = {}",
            row + 1
        ))
        .unwrap();
    let sent = payloads[row].as_bytes();
    let mut signal = Signal::default();
    let parse = parse_json_signal(sent, &mut signal).unwrap();
    let bytes = |text: &[u8]| vec![Value::Bytes(text.to_vec())];
    assert_eq!(sample.column("t"), bytes(b"ml"));
    assert_eq!(sample.column("strategy_id"), bytes(b"strat-5"));
    assert_eq!(sample.column("tradingsymbol"), bytes(b"SYM0"));
    assert_eq!(sample.column("signal_type"), bytes(b"SELL"));
    assert_eq!(sample.column("metadata"), bytes(parse.metadata(sent)));
    assert_eq!(
        sample.column("metadata"),
        bytes(br#"{"row": 418, "tags": ["a", "b\u00e9"], "params": {"fast": 5}}"#)
    );
    assert_eq!(
        sample.column("instrument_token"),
        vec![Value::UInt(256_265)]
    );
    assert_eq!(sample.column("strength"), vec![Value::Float(0.5)]);
    assert_eq!(sample.column("confidence"), vec![Value::Float(0.75)]);
    assert_eq!(sample.column("price"), vec![Value::Float(1_418.25)]);
    assert_eq!(sample.column("quantity"), vec![Value::UInt(418)]);
    assert_eq!(sample.column("seconds"), vec![Value::UInt(1_764_000_000)]);
    assert_eq!(sample.column("stream_seq"), vec![Value::UInt(419)]);
}
