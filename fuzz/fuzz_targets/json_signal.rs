//! `shard::signals::parse_json_signal`: the strategy-signal parser every
//! `strategy.signals.*` payload goes through, then the signal block builder with what
//! it accepted (its `metadata` bytes are stored verbatim).
//!
//! Asserts, from the module and function docs:
//! - no panic; the receiver's stamps survive;
//! - a refusal carries a JSON reason; `PayloadTooLarge` for payloads over the cap;
//! - whatever is accepted is JSON; `strategy_id` and `signal_type` are non-empty;
//!   `strength`/`confidence` are finite; the metadata range lies in the payload, is
//!   empty or one JSON object (`{`..`}`) of at most `METADATA_BYTES_MAX` bytes;
//! - every field is overwritten: a used signal gives the same result;
//! - spelling does not change the outcome (see `alphapt_storage_fuzz`), except where a
//!   re-spelling grows the payload or metadata past a size cap;
//! - the accepted signal, appended and sealed (modern schema, LZ4 or not), decodes
//!   with the generic Native codec to the same strings and metadata.
#![no_main]

use std::cell::RefCell;

use alphapt_storage::model::quality::RejectReason;
use alphapt_storage::model::{Price, SealedBlock, Symbol};
use alphapt_storage::native::block::{Block, BlockFormat};
use alphapt_storage::native::column::Value;
use alphapt_storage::native::compress::{FrameReader, Method};
use alphapt_storage::shard::parse::json::JSON_PAYLOAD_BYTES_MAX;
use alphapt_storage::shard::signals::{
    parse_json_signal, Signal, SignalColumns, SignalParse, SignalSchema, StrategyType,
    METADATA_BYTES_MAX,
};
use alphapt_storage_fuzz::{
    check, known_long_integer_with_fraction, respell, show, skip_known, Spelling,
};
use libfuzzer_sys::fuzz_target;

const RECEIVED_AT_MS: i64 = 1_764_000_000_777;
const STREAM_SEQ: u64 = 4242;

type Outcome = Result<(SignalParse, Signal), RejectReason>;

fn parse_into(payload: &[u8], mut signal: Signal) -> Outcome {
    let result = parse_json_signal(payload, &mut signal);
    assert_eq!(
        (signal.received_at_ms, signal.stream_seq),
        (RECEIVED_AT_MS, STREAM_SEQ),
        "the parser changed the receiver's stamps ({result:?}) on {}",
        show(payload)
    );
    result.map(|parse| (parse, signal))
}

fn fresh() -> Signal {
    Signal {
        received_at_ms: RECEIVED_AT_MS,
        stream_seq: STREAM_SEQ,
        ..Signal::default()
    }
}

fn used() -> Signal {
    Signal {
        timestamp_ms: 99,
        received_at_ms: RECEIVED_AT_MS,
        stream_seq: STREAM_SEQ,
        strategy_id: Symbol::new(b"old-strategy").unwrap(),
        strategy_type: StrategyType::Hybrid,
        instrument_token: 7,
        tradingsymbol: Symbol::new(b"OLD").unwrap(),
        signal_type: Symbol::new(b"SELL").unwrap(),
        strength: 0.5,
        confidence: 0.25,
        price: Price(123),
        quantity: 9,
    }
}

/// The signal's outcome without the metadata offsets, which move with spelling.
fn comparable(outcome: &Outcome) -> Result<(bool, Signal), RejectReason> {
    outcome
        .as_ref()
        .map(|(parse, signal)| (parse.metadata_start != parse.metadata_end, *signal))
        .map_err(|reason| *reason)
}

thread_local! {
    static BUILDER: RefCell<(SignalColumns, SignalSchema, SealedBlock)> = RefCell::new((
        SignalColumns::new(1),
        SignalSchema::modern(),
        SealedBlock::with_capacity(1),
    ));
}

/// Appends, seals and decodes one signal; checks what comes back.
fn round_trip(signal: &Signal, metadata: &[u8], lz4: bool) {
    BUILDER.with(|builder| {
        let (columns, schema, sealed) = &mut *builder.borrow_mut();
        assert!(
            columns.append(signal, metadata),
            "one row fits an empty block"
        );
        let compression = lz4.then_some(Method::Lz4);
        columns.seal(schema, compression, sealed);
        assert!(columns.is_empty());
        // Skip the Data packet prefix: packet id and the empty table name.
        let mut input = &sealed.bytes[2..];
        let block = if lz4 {
            let mut frames = FrameReader::new(&mut input);
            let block =
                Block::decode(BlockFormat::Protocol, &mut frames).expect("our block decodes");
            frames.finish().expect("frames end with the block");
            block
        } else {
            Block::decode(BlockFormat::Protocol, &mut input).expect("our block decodes")
        };
        assert!(input.is_empty(), "bytes left after the sealed block");
        assert_eq!(block.rows, 1);
        let cell = |name: &str| block.column(name).expect(name).values.get(0);
        assert_eq!(cell("metadata"), Value::Bytes(metadata.to_vec()));
        assert_eq!(
            cell("strategy_id"),
            Value::Bytes(signal.strategy_id.as_bytes().to_vec())
        );
        assert_eq!(
            cell("signal_type"),
            Value::Bytes(signal.signal_type.as_bytes().to_vec())
        );
        assert_eq!(
            cell("tradingsymbol"),
            Value::Bytes(signal.tradingsymbol.as_bytes().to_vec())
        );
        assert_eq!(
            cell("instrument_token"),
            Value::UInt(u64::from(signal.instrument_token))
        );
        assert_eq!(cell("quantity"), Value::UInt(u64::from(signal.quantity)));
        assert_eq!(cell("stream_seq"), Value::UInt(STREAM_SEQ));
        assert_eq!(cell("timestamp"), Value::Int(signal.timestamp_ms));
    });
}

fuzz_target!(|data: &[u8]| {
    if skip_known() && known_long_integer_with_fraction(data) {
        return;
    }
    let outcome = parse_into(data, fresh());
    let json = check(data);
    match &outcome {
        Err(reason) => {
            assert!(
                !matches!(
                    reason,
                    RejectReason::BadKitePacket | RejectReason::UnknownSubject
                ),
                "signal parser gave a non-JSON reason {reason:?}"
            );
            if data.len() > JSON_PAYLOAD_BYTES_MAX {
                assert_eq!(*reason, RejectReason::PayloadTooLarge);
            }
        }
        Ok((parse, signal)) => {
            assert!(
                json.is_some(),
                "accepted bytes that are not JSON: {}",
                show(data)
            );
            assert!(!signal.strategy_id.as_bytes().is_empty());
            assert!(!signal.signal_type.as_bytes().is_empty());
            assert!(signal.strength.is_finite() && signal.confidence.is_finite());
            let (start, end) = (parse.metadata_start as usize, parse.metadata_end as usize);
            assert!(
                start <= end && end <= data.len(),
                "metadata {start}..{end} of {}",
                data.len()
            );
            let metadata = parse.metadata(data);
            assert_eq!(metadata.len(), end - start);
            if !metadata.is_empty() {
                assert!(metadata.len() <= METADATA_BYTES_MAX);
                let object = check(metadata);
                assert!(
                    object.as_ref().is_some_and(|o| o.is_object()),
                    "metadata is not one JSON object: {}",
                    show(metadata)
                );
            }
        }
    }

    assert_eq!(
        outcome,
        parse_into(data, used()),
        "used signal changed the outcome: {}",
        show(data)
    );

    if let Some(json) = &json {
        for spelling in [Spelling::Python, Spelling::Compact, Spelling::Escaped] {
            let again = respell(json, spelling);
            let other = parse_into(&again, fresh());
            let too_large = |o: &Outcome| o == &Err(RejectReason::PayloadTooLarge);
            if too_large(&outcome) || too_large(&other) {
                continue; // A size cap, met by one spelling only.
            }
            assert_eq!(
                comparable(&outcome),
                comparable(&other),
                "spelling changed the outcome\n  input:   {}\n  {spelling:?}: {}",
                show(data),
                show(&again)
            );
        }
    }

    if let Ok((parse, signal)) = &outcome {
        round_trip(signal, parse.metadata(data), data.len() % 2 == 1);
    }
});
