//! The shard's parse + validate stage, per tick, on 4,096 synthetic ticks (500
//! instruments, five depth levels a side; JSON in the exact shape of
//! `python_stack.py` `tick()`, ~600 B each; representative of a busy NSE feed):
//!
//! - `json/parse_validate`: `parse_json_tick` + `Validator::validate` (budget
//!   ≤ 300 ns/tick, DESIGN §7).
//! - `json/write`: the reverse, `write_tick_json` into a reused buffer, what the
//!   synthetic source and `feed` spend per tick.
//! - `json/serde_json_value`: baseline, `serde_json::from_slice::<Value>` on the same
//!   bytes (a tree, no conversion to a tick, no validation).
//! - `kite/parse_validate`: `parse_kite_packet` + `validate` on 184-byte full packets
//!   (budget ≤ 40 ns/tick).
//!
//! Each iteration handles one message, cycling through the set so branch predictors
//! and caches see different instruments. The answer is checked once outside the timed
//! loop: every parsed tick equals the tick it was rendered from.
//!
//! On a shared machine the repeatable figure is an instruction count:
//! `PARSE_JSON_COUNT=N` runs N JSON parse+validate iterations without criterion, so
//! `valgrind --tool=callgrind` at two N gives instructions per tick by difference;
//! `WRITE_JSON_COUNT=N` does the same for `json/write`. The JSON count also prints the
//! time a tick, and `PARSE_JSON_DISTINCT=K` cycles through K payloads instead of all
//! 4,096 (K = 16 keeps them in cache).

use std::hint::black_box;

use criterion::{criterion_group, Criterion, Throughput};

use alphapt_storage::config::ValidationConfig;
use alphapt_storage::model::json::write_tick_json;
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::model::{Symbol, Tick};
use alphapt_storage::shard::parse::kite::KITE_FULL_BYTES;
use alphapt_storage::shard::parse::{encode_kite_full, parse_json_tick, parse_kite_packet};
use alphapt_storage::shard::validate::Validator;

const MESSAGES: usize = 4_096;
const NOW: i64 = 1_764_000_000_000;

fn ticks() -> Vec<Tick> {
    let mut feed = SyntheticTicks::new(500, 5);
    (0..MESSAGES as i64)
        .map(|i| feed.next_tick(NOW + i * 1000, NOW, 0))
        .collect()
}

/// Every payload parses back to the tick it came from (Kite: less the symbols, which
/// its packets do not carry).
fn check(ticks: &[Tick], json: &[Vec<u8>], kite: &[[u8; KITE_FULL_BYTES]]) {
    let mut got = Tick::default();
    for ((tick, payload), packet) in ticks.iter().zip(json).zip(kite) {
        let mut expect = *tick;
        expect.data_quality_score = 0.0;
        got.received_at_ms = expect.received_at_ms;
        parse_json_tick(payload, &mut got).expect("JSON parses");
        assert_eq!(got, expect, "JSON");
        expect.exchange = Symbol::EMPTY;
        expect.tradingsymbol = Symbol::EMPTY;
        expect.instrument_token = nse_token(tick.instrument_token);
        parse_kite_packet(packet, &mut got).expect("Kite parses");
        assert_eq!(got, expect, "Kite");
    }
}

/// The token moved into segment 1 (NSE, prices in paise): synthetic tokens step by 7
/// and some land in the currency segments, whose units cannot hold equity prices.
fn nse_token(token: u32) -> u32 {
    token & !0xff | 1
}

/// Each tick as the JSON the feed publishes.
fn json_of(ticks: &[Tick]) -> Vec<Vec<u8>> {
    ticks
        .iter()
        .map(|t| {
            let mut out = Vec::new();
            write_tick_json(&mut out, t);
            out
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let ticks = ticks();
    let json = json_of(&ticks);
    let kite: Vec<[u8; KITE_FULL_BYTES]> = ticks
        .iter()
        .map(|t| {
            let mut out = [0; KITE_FULL_BYTES];
            let tick = Tick {
                instrument_token: nse_token(t.instrument_token),
                ..*t
            };
            encode_kite_full(&tick, &mut out);
            out
        })
        .collect();
    check(&ticks, &json, &kite);
    let mean_bytes = json.iter().map(Vec::len).sum::<usize>() / json.len();
    println!("JSON tick: {mean_bytes} B on average");

    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Elements(1));
    let mut validator = Validator::new(ValidationConfig::default());
    let mut tick = Tick::default();
    let mut i = 0;
    group.bench_function("parse_validate", |b| {
        b.iter(|| {
            i = (i + 1) % MESSAGES;
            let info = parse_json_tick(black_box(&json[i]), &mut tick).expect("parses");
            validator.validate(&mut tick, info, NOW);
            black_box(tick.validation_flags)
        })
    });
    // The other side: what the synthetic source and `feed` spend rendering a tick,
    // into a buffer reused as they reuse theirs.
    let mut out = Vec::with_capacity(2048);
    group.bench_function("write", |b| {
        b.iter(|| {
            i = (i + 1) % MESSAGES;
            out.clear();
            write_tick_json(&mut out, black_box(&ticks[i]));
            black_box(out.len())
        })
    });
    group.bench_function("serde_json_value", |b| {
        b.iter(|| {
            i = (i + 1) % MESSAGES;
            let value: serde_json::Value =
                serde_json::from_slice(black_box(&json[i])).expect("parses");
            black_box(value)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("kite");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_validate", |b| {
        b.iter(|| {
            i = (i + 1) % MESSAGES;
            let info = parse_kite_packet(black_box(&kite[i]), &mut tick).expect("parses");
            validator.validate(&mut tick, info, NOW);
            black_box(tick.validation_flags)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);

/// `PARSE_JSON_COUNT=N` runs N JSON parse+validate iterations and exits, without
/// criterion, for an instruction count (`valgrind --tool=callgrind`): on a shared VM
/// that is the repeatable figure. Run with two N and take the difference per tick.
fn main() {
    if let Some(count) = std::env::var("PARSE_JSON_COUNT")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        count_json(count);
        return;
    }
    if let Some(count) = std::env::var("WRITE_JSON_COUNT")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        count_write(count);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

fn count_json(count: usize) {
    let json = json_of(&ticks());
    let mut validator = Validator::new(ValidationConfig::default());
    let mut tick = Tick::default();
    let mut flags = 0u64;
    // Fewer distinct payloads keep them in cache: the difference to the default is
    // what streaming them from memory costs.
    let distinct = std::env::var("PARSE_JSON_DISTINCT")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(MESSAGES, |n| n.clamp(1, MESSAGES));
    let start = std::time::Instant::now();
    for i in 0..count {
        let info = parse_json_tick(black_box(&json[i % distinct]), &mut tick).expect("parses");
        validator.validate(&mut tick, info, NOW);
        flags = flags.wrapping_add(u64::from(black_box(tick.validation_flags)));
    }
    let ns = start.elapsed().as_nanos() as f64 / count as f64;
    println!("{count} ticks, flags sum {flags}, {ns:.1} ns a tick");
}

fn count_write(count: usize) {
    let ticks = ticks();
    let mut out = Vec::with_capacity(2048);
    let mut bytes = 0usize;
    for i in 0..count {
        out.clear();
        write_tick_json(&mut out, black_box(&ticks[i % MESSAGES]));
        bytes += black_box(out.len());
    }
    println!("{count} ticks written, {bytes} B");
}
