//! Zero heap allocations per message after warm-up on the shard's path: a counting
//! global allocator watches parse → validate → `TickColumns::append` over 10,000 JSON
//! ticks and 10,000 Kite full packets, with a reference-data update popped from the
//! refdata queue and applied before each JSON tick, as the shard does between passes.
//! Runs alone in its own test binary, so no other test's allocations are counted.

use alphapt_storage::config::ValidationConfig;
use alphapt_storage::model::json::write_tick_json;
use alphapt_storage::model::reference::{Reference, ReferenceUpdate};
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::{Price, Tick};
use alphapt_storage::refdata::reference_queue;
use alphapt_storage::shard::parse::kite::KITE_FULL_BYTES;
use alphapt_storage::shard::parse::{encode_kite_full, parse_json_tick, parse_kite_packet};
use alphapt_storage::shard::validate::Validator;
use alphapt_storage::shard::TickColumns;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

const MESSAGES: usize = 10_000;
const NOW: i64 = 1_764_000_000_000;

#[test]
fn parse_validate_append_allocate_nothing_after_warm_up() {
    let mut feed = SyntheticTicks::new(300, 11);
    let ticks: Vec<Tick> = (0..MESSAGES as u64)
        .map(|i| feed.next_tick(NOW + i as i64 * 1000, NOW, i))
        .collect();
    let json: Vec<Vec<u8>> = ticks
        .iter()
        .map(|t| {
            let mut out = Vec::new();
            write_tick_json(&mut out, t);
            out
        })
        .collect();
    let kite: Vec<[u8; KITE_FULL_BYTES]> = ticks
        .iter()
        .map(|t| {
            let mut out = [0; KITE_FULL_BYTES];
            encode_kite_full(t, &mut out);
            out
        })
        .collect();
    let mut validator = Validator::new(ValidationConfig::default());
    let mut columns = TickColumns::new(2 * MESSAGES);
    let mut tick = Tick::default();
    let (mut references_in, mut references_out) = reference_queue();

    // Warm-up: one pass of each format fills the instrument table and the block's
    // symbol dictionaries; then the block is emptied, keeping its capacity.
    let mut run = |count_from: Option<u64>| {
        for (payload, t) in json.iter().zip(&ticks) {
            let reference = Reference {
                tick_size: Price(1),
                circuit_lower: Price(1),
                circuit_upper: t.last_price,
            };
            let update = ReferenceUpdate {
                token: t.instrument_token,
                reference,
            };
            references_in
                .push(update)
                .expect("the queue is drained each tick");
            let update = references_out.pop().expect("just pushed");
            assert!(validator.set_reference(update.token, update.reference));
            let info = parse_json_tick(payload, &mut tick).expect("synthetic JSON parses");
            validator.validate(&mut tick, info, NOW);
            assert!(columns.append(&tick));
        }
        for packet in &kite {
            let info = parse_kite_packet(packet, &mut tick).expect("synthetic packet parses");
            validator.validate(&mut tick, info, NOW);
            assert!(columns.append(&tick));
        }
        if let Some(before) = count_from {
            let after = counting_alloc::allocations();
            assert_eq!(
                after - before,
                0,
                "allocations over {} messages",
                2 * MESSAGES
            );
        }
        assert_eq!(columns.rows(), 2 * MESSAGES);
        columns.clear();
    };
    run(None);
    run(Some(counting_alloc::allocations()));
}
