//! The JSON tick parser: a hand-written, allocation-free scanner for the one object
//! shape the platform publishes (DESIGN §4; `../shared/bench/python_stack.py` `tick()`):
//!
//! ```text
//! {"instrument_token": 256265, "exchange": "NSE", "tradingsymbol": "INFY",
//!  "last_price": 1234.05, "last_quantity": 10, "average_price": 1233.7,
//!  "volume_traded": 1300,            (or "volume")
//!  "oi": 0, "ohlc": {"open": .., "high": .., "low": .., "close": ..},
//!  "depth": {"buy": [{"price": .., "quantity": .., "orders": ..}, ..≤5], "sell": [..≤5]},
//!  "timestamp": "2025-11-24T16:00:00.500+00:00"}   (or epoch milliseconds)
//! ```
//!
//! One forward pass, no tree: known keys are decoded straight into the [`Tick`];
//! unknown keys' values are skipped by an iterative walker (no recursion) whose
//! nesting is bounded by [`NESTING_MAX`]. Keys may come in any order; a repeated key
//! overwrites, as in `serde_json`.
//!
//! Numbers: prices go straight from decimal digits into fixed point at 10^-8 with
//! integer arithmetic (no `f64` round trip), exact for up to 19 significant digits and
//! any exponent, rounded half away from zero below 10^-8. Counts must be integers
//! (no fraction, exponent or minus sign) that fit their field.
//!
//! Fast paths. Nearly every tick comes in one spelling: `json.dumps` with its
//! default separators (`", "`, `": "`) and python_stack.py's key order, which our
//! writer copies. A general scanner spends most of its time on what that spelling
//! makes predictable (which key comes next, where whitespace is, how long a number
//! is), so the parser tries the predictable reading first, a word at a time:
//!
//! - a tick in exactly that spelling is read straight through (`plain_tick`): every
//!   field in order, each key with its separators one compare, no member loop and no
//!   dispatch on keys, the read position in a register;
//! - otherwise the next key is guessed with its separators (`Keys`): after
//!   `last_price`'s value, `, "last_quantity": ` is one 17-byte compare;
//! - a price `I.F` or a count of up to 7 digits is read from one or two 8-byte words
//!   (a SWAR digit test, then Lemire's multiply-shift conversion), no `Number`;
//! - a depth side, a depth level and `ohlc` in that spelling are read straight
//!   through, without the member loop's per-key dispatch (between two levels,
//!   `}, {"price": ` is one compare);
//! - `"YYYY-MM-DDTHH:MM:SS.mmmZ"` (or `±HH:MM`) is checked against a template and
//!   converted three words at a time; a symbol is cut from four words by a mask.
//!
//! Each fast path takes its input whole or gives it back (position unchanged, or
//! rewound by the caller) to the full readers, which alone decide anything they do
//! not take: a fast path can change the speed, never the outcome. Tests hold the
//! parser against itself with the fast paths switched off, reject reasons included.
//!
//! Where the time goes. The reads form one chain: each number's length decides where
//! the next read starts (load → digit test → length → position, ~13 cycles a number,
//! ~40 numbers a tick). Shortening that chain pays; cutting instructions off it
//! hardly does. On the bench's ticks (837 B, five levels a side; `benches/parse.rs`,
//! old and new builds alternating on one 2-core Xeon):
//!
//! - the straight-through tick took 15% of the instructions away (4,662 → 3,974 a
//!   tick, callgrind) and 2.6% of the time;
//! - a price moves the position on by its run of digits and dot (one digit test),
//!   its checks and conversion off the chain: 334 → 303 ns, for more instructions;
//! - one load per cache line of the payload up front, so that the chain's misses
//!   overlap: 364 → 334 ns streamed from memory (in cache it changes nothing);
//! - together: 366-369 → 302-303 ns (criterion `json/parse_validate`).
//!
//! Measured and not kept: each level's start found first (the next `{`), so the
//! levels' reads overlap (+2%: the added work outweighs the shorter chain); two-step
//! 32-bit conversion of short counts (+3%); the depth out of line, one copy for both
//! sides (+3%); touching every other cache line (no change).
//!
//! Must never: panic, allocate, or read past the input; every loop advances the read
//! position, so time is linear in the payload, which is capped at
//! [`JSON_PAYLOAD_BYTES_MAX`] before the first byte is read. Every word is read
//! through a bounds-checked `get`; no `unsafe`.

use super::{reset_tick, ParseInfo};
use super::{
    FIELD_AVERAGE_PRICE, FIELD_DEPTH_BUY, FIELD_DEPTH_SELL, FIELD_EXCHANGE, FIELD_EXCHANGE_TIME,
    FIELD_LAST_QUANTITY, FIELD_OHLC, FIELD_OI, FIELD_TRADINGSYMBOL, FIELD_VOLUME,
};
use crate::model::quality::RejectReason;
use crate::model::{Depth, DepthLevel, Ohlc, Price, Symbol, Tick, DEPTH_LEVELS, SYMBOL_BYTES_MAX};

/// Largest payload the parser reads. A full tick with five levels a side is ~700 B
/// (python_stack.py prints ~690 B); 16 KiB leaves 20x room for extra keys and
/// whitespace, and bounds the time a junk payload can cost to ~16 KiB of scanning.
pub const JSON_PAYLOAD_BYTES_MAX: usize = 16 * 1024;

/// Deepest nesting of arrays and objects inside a skipped value. The tick's own shape
/// is 4 deep (tick → depth → buy → level); nothing we read is deeper.
pub const NESTING_MAX: u32 = 32;

const _: () = assert!(
    NESTING_MAX <= 64,
    "the skip walker keeps its stack in a u64"
);

/// Optional fields a JSON tick can carry.
pub const JSON_FIELDS_EXPECTED: u16 = FIELD_EXCHANGE
    | FIELD_TRADINGSYMBOL
    | FIELD_LAST_QUANTITY
    | FIELD_AVERAGE_PRICE
    | FIELD_VOLUME
    | FIELD_OI
    | FIELD_OHLC
    | FIELD_DEPTH_BUY
    | FIELD_DEPTH_SELL
    | FIELD_EXCHANGE_TIME;

/// Largest epoch-milliseconds timestamp accepted: 9999-12-31T23:59:59.999Z.
pub const TIMESTAMP_MS_MAX: i64 = 253_402_300_799_999;

/// Bytes of a decoded key we compare; longer keys are unknown by construction.
const KEY_BYTES_MAX: usize = 24;

/// Bytes of an ISO-8601 timestamp; `2025-11-24T16:00:00.123456789+05:30` is 35.
const TIMESTAMP_BYTES_MAX: usize = 40;

use RejectReason::{
    BadNumber, BadTimestamp, InvalidUtf8, MalformedJson, MissingField, PayloadTooLarge,
    SymbolTooLong, TooManyDepthLevels, WrongType,
};

/// Walks the top-level JSON object of `payload`, handing each key to `field` (which
/// consumes the value and returns the bits of the required fields it saw) and refusing
/// anything but one object; returns the union of those bits. The signal parser uses
/// it; the tick parser walks the same way with its keys guessed ([`Keys`]).
pub(crate) fn walk_object<'p>(
    payload: &'p [u8],
    mut field: impl FnMut(&mut Scanner<'p>, &[u8]) -> Result<u8, RejectReason>,
) -> Result<u8, RejectReason> {
    let mut scan = Scanner {
        bytes: payload,
        pos: 0,
    };
    scan.open_top()?;
    let mut required = 0u8;
    let mut key = KeyBuf::default();
    let mut first = true;
    while let Some(name) = scan.next_key(&mut first, &mut key)? {
        required |= field(&mut scan, name)?;
    }
    scan.close_top()?;
    Ok(required)
}

/// Parses one JSON tick into `tick` (all fields but `received_at_ms` and
/// `stream_seq` are overwritten). `instrument_token`, `last_price` and `timestamp` are
/// required; a field holding `null` counts as absent. On error `tick` holds partial
/// data and must not be stored.
pub fn parse_json_tick(payload: &[u8], tick: &mut Tick) -> Result<ParseInfo, RejectReason> {
    if payload.len() > JSON_PAYLOAD_BYTES_MAX {
        return Err(PayloadTooLarge);
    }
    reset_tick(tick);
    if plain_tick(payload, tick).is_some() {
        return Ok(ParseInfo {
            present: JSON_FIELDS_EXPECTED,
            expected: JSON_FIELDS_EXPECTED,
        });
    }
    reset_tick(tick);
    parse_json_members(payload, tick)
}

/// [`parse_json_tick`] member by member, for a tick not in the canonical spelling
/// (see [`plain_tick`]); its members' values still go through the fast paths.
#[inline(never)]
fn parse_json_members(payload: &[u8], tick: &mut Tick) -> Result<ParseInfo, RejectReason> {
    let mut info = ParseInfo {
        present: 0,
        expected: JSON_FIELDS_EXPECTED,
    };
    let mut scan = Scanner {
        bytes: payload,
        pos: 0,
    };
    scan.open_top()?;
    let mut required = 0u8;
    let mut first = true;
    let mut guess = TickKey::FIRST;
    while let Some(key) = scan.member(&mut first, guess)? {
        guess = key.next();
        required |= parse_field(&mut scan, key, tick, &mut info)?;
    }
    scan.close_top()?;
    if required != REQUIRED_ALL {
        return Err(MissingField);
    }
    debug_assert!(info.present & FIELD_EXCHANGE_TIME != 0);
    Ok(info)
}

const REQUIRED_TOKEN: u8 = 1;
const REQUIRED_PRICE: u8 = 2;
const REQUIRED_TIME: u8 = 4;
const REQUIRED_ALL: u8 = REQUIRED_TOKEN | REQUIRED_PRICE | REQUIRED_TIME;

/// The keys of one kind of object, read by guessing. Publishers write every tick's
/// keys in one order and spacing (python_stack.py's dict order and `json.dumps`
/// separators `", "` and `": "`, which our writer copies), so after `last_price`'s
/// value the payload almost always goes on with `, "last_quantity": `. Checking that
/// guess is one fixed-size compare (two word loads), where reading the member is a
/// whitespace skip, a comma, a string scan, a lookup, a colon and another skip. A
/// wrong guess costs the compare and then the full read, so any order, spacing or
/// escaping parses as before.
trait Keys: Copy + PartialEq {
    /// The first key: the guess right after `{`.
    const FIRST: Self;
    /// The key a member whose name this is stands for.
    fn classify(name: &[u8]) -> Self;
    /// Consumes the member's canonical spelling up to its value if the payload
    /// continues with exactly it: `"<name>": ` for [`Keys::FIRST`] (just after `{`),
    /// `, "<name>": ` for the others (just after the previous value).
    fn eat(self, scan: &mut Scanner<'_>) -> bool;
    /// The key that usually follows this one; never [`Keys::FIRST`].
    fn next(self) -> Self;
}

/// The tick's top-level keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TickKey {
    Token,
    Exchange,
    Symbol,
    LastPrice,
    LastQuantity,
    AveragePrice,
    Volume,
    Oi,
    Ohlc,
    Depth,
    Timestamp,
    Other,
}

impl Keys for TickKey {
    const FIRST: TickKey = TickKey::Token;

    /// Length first: a key costs one length compare per candidate and one fixed-size
    /// compare (word loads, no `memcmp` call) for each candidate of its length.
    #[inline(always)]
    fn classify(key: &[u8]) -> TickKey {
        match key.len() {
            16 if key == b"instrument_token" => TickKey::Token,
            10 if key == b"last_price" => TickKey::LastPrice,
            9 if key == b"timestamp" => TickKey::Timestamp,
            8 if key == b"exchange" => TickKey::Exchange,
            13 if key == b"tradingsymbol" => TickKey::Symbol,
            13 if key == b"last_quantity" => TickKey::LastQuantity,
            13 if key == b"average_price" => TickKey::AveragePrice,
            13 if key == b"volume_traded" => TickKey::Volume,
            6 if key == b"volume" => TickKey::Volume,
            2 if key == b"oi" => TickKey::Oi,
            4 if key == b"ohlc" => TickKey::Ohlc,
            5 if key == b"depth" => TickKey::Depth,
            _ => TickKey::Other,
        }
    }

    #[inline(always)]
    fn eat(self, scan: &mut Scanner<'_>) -> bool {
        match self {
            TickKey::Token => scan.eat(b"\"instrument_token\": "),
            TickKey::Exchange => scan.eat(b", \"exchange\": "),
            TickKey::Symbol => scan.eat(b", \"tradingsymbol\": "),
            TickKey::LastPrice => scan.eat(b", \"last_price\": "),
            TickKey::LastQuantity => scan.eat(b", \"last_quantity\": "),
            TickKey::AveragePrice => scan.eat(b", \"average_price\": "),
            TickKey::Volume => scan.eat(b", \"volume_traded\": "),
            TickKey::Oi => scan.eat(b", \"oi\": "),
            TickKey::Ohlc => scan.eat(b", \"ohlc\": "),
            TickKey::Depth => scan.eat(b", \"depth\": "),
            TickKey::Timestamp => scan.eat(b", \"timestamp\": "),
            TickKey::Other => false,
        }
    }

    #[inline(always)]
    fn next(self) -> TickKey {
        match self {
            TickKey::Token => TickKey::Exchange,
            TickKey::Exchange => TickKey::Symbol,
            TickKey::Symbol => TickKey::LastPrice,
            TickKey::LastPrice => TickKey::LastQuantity,
            TickKey::LastQuantity => TickKey::AveragePrice,
            TickKey::AveragePrice => TickKey::Volume,
            TickKey::Volume => TickKey::Oi,
            TickKey::Oi => TickKey::Ohlc,
            TickKey::Ohlc => TickKey::Depth,
            TickKey::Depth => TickKey::Timestamp,
            TickKey::Timestamp | TickKey::Other => TickKey::Other,
        }
    }
}

/// The keys of `ohlc`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OhlcKey {
    Open,
    High,
    Low,
    Close,
    Other,
}

impl Keys for OhlcKey {
    const FIRST: OhlcKey = OhlcKey::Open;

    #[inline(always)]
    fn classify(key: &[u8]) -> OhlcKey {
        match key.len() {
            4 if key == b"open" => OhlcKey::Open,
            4 if key == b"high" => OhlcKey::High,
            3 if key == b"low" => OhlcKey::Low,
            5 if key == b"close" => OhlcKey::Close,
            _ => OhlcKey::Other,
        }
    }

    #[inline(always)]
    fn eat(self, scan: &mut Scanner<'_>) -> bool {
        match self {
            OhlcKey::Open => scan.eat(b"\"open\": "),
            OhlcKey::High => scan.eat(b", \"high\": "),
            OhlcKey::Low => scan.eat(b", \"low\": "),
            OhlcKey::Close => scan.eat(b", \"close\": "),
            OhlcKey::Other => false,
        }
    }

    #[inline(always)]
    fn next(self) -> OhlcKey {
        match self {
            OhlcKey::Open => OhlcKey::High,
            OhlcKey::High => OhlcKey::Low,
            OhlcKey::Low => OhlcKey::Close,
            OhlcKey::Close | OhlcKey::Other => OhlcKey::Other,
        }
    }
}

/// The keys of `depth`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SideKey {
    Buy,
    Sell,
    Other,
}

impl Keys for SideKey {
    const FIRST: SideKey = SideKey::Buy;

    #[inline(always)]
    fn classify(key: &[u8]) -> SideKey {
        match key.len() {
            3 if key == b"buy" => SideKey::Buy,
            4 if key == b"sell" => SideKey::Sell,
            _ => SideKey::Other,
        }
    }

    #[inline(always)]
    fn eat(self, scan: &mut Scanner<'_>) -> bool {
        match self {
            SideKey::Buy => scan.eat(b"\"buy\": "),
            SideKey::Sell => scan.eat(b", \"sell\": "),
            SideKey::Other => false,
        }
    }

    #[inline(always)]
    fn next(self) -> SideKey {
        match self {
            SideKey::Buy => SideKey::Sell,
            SideKey::Sell | SideKey::Other => SideKey::Other,
        }
    }
}

/// The keys of one depth level.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LevelKey {
    Price,
    Quantity,
    Orders,
    Other,
}

impl Keys for LevelKey {
    const FIRST: LevelKey = LevelKey::Price;

    #[inline(always)]
    fn classify(key: &[u8]) -> LevelKey {
        match key.len() {
            5 if key == b"price" => LevelKey::Price,
            8 if key == b"quantity" => LevelKey::Quantity,
            6 if key == b"orders" => LevelKey::Orders,
            _ => LevelKey::Other,
        }
    }

    #[inline(always)]
    fn eat(self, scan: &mut Scanner<'_>) -> bool {
        match self {
            LevelKey::Price => scan.eat(b"\"price\": "),
            LevelKey::Quantity => scan.eat(b", \"quantity\": "),
            LevelKey::Orders => scan.eat(b", \"orders\": "),
            LevelKey::Other => false,
        }
    }

    #[inline(always)]
    fn next(self) -> LevelKey {
        match self {
            LevelKey::Price => LevelKey::Quantity,
            LevelKey::Quantity => LevelKey::Orders,
            LevelKey::Orders | LevelKey::Other => LevelKey::Other,
        }
    }
}

/// Reads the value of top-level `key` into `tick`; returns the `REQUIRED_*` bit it
/// satisfied (0 for optional or unknown keys and for nulls).
#[inline(always)]
fn parse_field(
    scan: &mut Scanner<'_>,
    key: TickKey,
    tick: &mut Tick,
    info: &mut ParseInfo,
) -> Result<u8, RejectReason> {
    let mut satisfied = 0;
    match key {
        TickKey::Token => {
            if let Some(n) = scan.u32_or_null()? {
                tick.instrument_token = n;
                satisfied = REQUIRED_TOKEN;
            }
        }
        TickKey::LastPrice => {
            if let Some(price) = scan.price_or_null()? {
                tick.last_price = price;
                satisfied = REQUIRED_PRICE;
            }
        }
        TickKey::Timestamp => {
            if let Some(ms) = scan.timestamp()? {
                tick.timestamp_ms = ms;
                info.present |= FIELD_EXCHANGE_TIME;
                satisfied = REQUIRED_TIME;
            }
        }
        TickKey::Exchange => {
            if scan.symbol_into(&mut tick.exchange)? {
                info.present |= FIELD_EXCHANGE;
            }
        }
        TickKey::Symbol => {
            if scan.symbol_into(&mut tick.tradingsymbol)? {
                info.present |= FIELD_TRADINGSYMBOL;
            }
        }
        TickKey::LastQuantity => {
            if let Some(n) = scan.u32_or_null()? {
                tick.last_quantity = n;
                info.present |= FIELD_LAST_QUANTITY;
            }
        }
        TickKey::AveragePrice => {
            if let Some(price) = scan.price_or_null()? {
                tick.average_price = price;
                info.present |= FIELD_AVERAGE_PRICE;
            }
        }
        TickKey::Volume => {
            if let Some(n) = scan.u64_or_null()? {
                tick.volume_traded = n;
                info.present |= FIELD_VOLUME;
            }
        }
        TickKey::Oi => {
            if let Some(n) = scan.u64_or_null()? {
                tick.oi = n;
                info.present |= FIELD_OI;
            }
        }
        TickKey::Ohlc => parse_ohlc(scan, tick, info)?,
        TickKey::Depth => parse_depth(scan, tick, info)?,
        TickKey::Other => scan.skip_value()?,
    }
    Ok(satisfied)
}

/// The whole tick in its canonical spelling (the module doc's shape: every field
/// there, in that order, `json.dumps`'s separators, plain numbers and strings, one to
/// [`DEPTH_LEVELS`] levels a side, an ISO timestamp, nothing after the closing brace),
/// read straight through into `tick` (reset by the caller): no member loop, no
/// dispatch on keys, the position in a register. Every field is then present. `None`,
/// with `tick` partly written, for anything else: the caller resets `tick` and reads
/// the payload member by member, which alone decides what this does not take.
#[inline(always)]
fn plain_tick(payload: &[u8], tick: &mut Tick) -> Option<()> {
    // One load per cache line first. The reads below form a chain (each position waits
    // for the number before it), so a line missing from cache would stall it once per
    // line; loaded here, off the chain, the misses overlap. On the bench's payloads
    // streamed from memory: 364 -> 334 ns a tick (`PARSE_JSON_COUNT`).
    let mut fold = 0u8;
    let mut at = 64;
    while let Some(&b) = payload.get(at) {
        fold ^= b;
        at += 64;
    }
    std::hint::black_box(fold);
    let mut scan = Scanner {
        bytes: payload,
        pos: 0,
    };
    let scan = &mut scan;
    scan.take(b"{\"instrument_token\": ")?;
    tick.instrument_token = u32::try_from(scan.count_run::<false>()?).ok()?;
    scan.take(b", \"exchange\": \"")?;
    tick.exchange = scan.plain_symbol()?;
    scan.take(b", \"tradingsymbol\": \"")?;
    tick.tradingsymbol = scan.plain_symbol()?;
    scan.take(b", \"last_price\": ")?;
    tick.last_price = scan.price_run::<false>()?;
    scan.take(b", \"last_quantity\": ")?;
    tick.last_quantity = u32::try_from(scan.count_run::<false>()?).ok()?;
    scan.take(b", \"average_price\": ")?;
    tick.average_price = scan.price_run::<false>()?;
    scan.take(b", \"volume_traded\": ")?;
    tick.volume_traded = scan.count_run::<false>()?;
    scan.take(b", \"oi\": ")?;
    tick.oi = scan.count_run::<false>()?;
    scan.take(b", \"ohlc\": ")?;
    tick.ohlc = plain_ohlc(scan)?;
    scan.take(b", \"depth\": {\"buy\": ")?;
    plain_side(scan, &mut tick.depth_buy).then_some(())?;
    scan.take(b", \"sell\": ")?;
    plain_side(scan, &mut tick.depth_sell).then_some(())?;
    scan.take(b"}, \"timestamp\": ")?;
    tick.timestamp_ms = scan.plain_timestamp()?;
    scan.take(b"}")?;
    (scan.pos == payload.len()).then_some(())
}

/// Reads `{"open", "high", "low", "close"}`; [`FIELD_OHLC`] only when all four are there.
#[inline(always)]
fn parse_ohlc(
    scan: &mut Scanner<'_>,
    tick: &mut Tick,
    info: &mut ParseInfo,
) -> Result<(), RejectReason> {
    let start = scan.pos;
    if let Some(ohlc) = plain_ohlc(scan) {
        tick.ohlc = ohlc;
        info.present |= FIELD_OHLC;
        return Ok(());
    }
    scan.pos = start;
    parse_ohlc_members(scan, tick, info)
}

/// [`parse_ohlc`] member by member, out of line as [`parse_level_members`] is.
#[inline(never)]
fn parse_ohlc_members(
    scan: &mut Scanner<'_>,
    tick: &mut Tick,
    info: &mut ParseInfo,
) -> Result<(), RejectReason> {
    if !scan.open(b'{')? {
        return Ok(());
    }
    let mut seen = 0u8;
    let mut first = true;
    let mut guess = OhlcKey::FIRST;
    while let Some(key) = scan.member(&mut first, guess)? {
        guess = key.next();
        let (slot, bit) = match key {
            OhlcKey::Open => (&mut tick.ohlc.open, 1),
            OhlcKey::High => (&mut tick.ohlc.high, 2),
            OhlcKey::Low => (&mut tick.ohlc.low, 4),
            OhlcKey::Close => (&mut tick.ohlc.close, 8),
            OhlcKey::Other => {
                scan.skip_value()?;
                continue;
            }
        };
        if let Some(price) = scan.price_or_null()? {
            *slot = price;
            seen |= bit;
        }
    }
    if seen == 15 {
        info.present |= FIELD_OHLC;
    }
    Ok(())
}

/// Reads `{"buy": [levels], "sell": [levels]}`.
#[inline(always)]
fn parse_depth(
    scan: &mut Scanner<'_>,
    tick: &mut Tick,
    info: &mut ParseInfo,
) -> Result<(), RejectReason> {
    if !scan.open(b'{')? {
        return Ok(());
    }
    let mut first = true;
    let mut guess = SideKey::FIRST;
    while let Some(key) = scan.member(&mut first, guess)? {
        guess = key.next();
        let (side, bit) = match key {
            SideKey::Buy => (&mut tick.depth_buy, FIELD_DEPTH_BUY),
            SideKey::Sell => (&mut tick.depth_sell, FIELD_DEPTH_SELL),
            SideKey::Other => {
                scan.skip_value()?;
                continue;
            }
        };
        if parse_side(scan, side)? {
            info.present |= bit;
        }
    }
    Ok(())
}

/// Reads one side's array of up to [`DEPTH_LEVELS`] levels; `false` for `null`.
#[inline(always)]
fn parse_side(scan: &mut Scanner<'_>, side: &mut Depth) -> Result<bool, RejectReason> {
    *side = Depth::default();
    let start = scan.pos;
    if plain_side(scan, side) {
        return Ok(true);
    }
    scan.pos = start;
    *side = Depth::default();
    if !scan.open(b'[')? {
        return Ok(false);
    }
    let mut first = true;
    loop {
        // Between levels, the canonical `, {"price": ..}` straight through, without
        // the element loop's whitespace and comma handling.
        if !first {
            if let Some(level) = side.levels.get_mut(side.len as usize) {
                let start = scan.pos;
                if scan.eat(b", ") {
                    if let Some(plain) = plain_level(scan) {
                        *level = plain;
                        side.len += 1;
                        continue;
                    }
                }
                scan.pos = start;
            }
        }
        if !scan.next_element(&mut first)? {
            break;
        }
        let index = side.len as usize;
        let Some(level) = side.levels.get_mut(index) else {
            return Err(TooManyDepthLevels);
        };
        parse_level(scan, level)?;
        side.len += 1;
        debug_assert!(side.len as usize <= DEPTH_LEVELS);
    }
    Ok(true)
}

/// A side in its canonical spelling, `[{"price": P, "quantity": Q, "orders": O}, ..]`
/// with one to [`DEPTH_LEVELS`] levels of plain numbers, read straight through into
/// `side` (zeroed by the caller): the separator between levels, `}, {"price": `, is
/// one compare where the level-by-level path spends three. `false`, with the position
/// and `side` somewhere inside, for anything else: the caller rewinds, zeroes `side`
/// and reads it element by element (which also refuses a sixth level).
#[inline(always)]
fn plain_side(scan: &mut Scanner<'_>, side: &mut Depth) -> bool {
    if !scan.eat(b"[{\"price\": ") {
        return false;
    }
    while let Some(level) = side.levels.get_mut(side.len as usize) {
        let Some(price) = scan.price_run::<false>() else {
            return false;
        };
        if !scan.eat(b", \"quantity\": ") {
            return false;
        }
        let Some(quantity) = scan
            .count_run::<false>()
            .and_then(|n| u32::try_from(n).ok())
        else {
            return false;
        };
        if !scan.eat(b", \"orders\": ") {
            return false;
        }
        let Some(orders) = scan
            .count_run::<false>()
            .and_then(|n| u16::try_from(n).ok())
        else {
            return false;
        };
        *level = DepthLevel {
            price,
            quantity,
            orders,
        };
        side.len += 1;
        if scan.eat(b"}, {\"price\": ") {
            continue;
        }
        return scan.eat(b"}]");
    }
    false
}

/// Reads `{"price", "quantity", "orders"}` into `level` (zeroed by the caller);
/// `orders` may be absent (0).
#[inline(always)]
fn parse_level(scan: &mut Scanner<'_>, level: &mut DepthLevel) -> Result<(), RejectReason> {
    scan.peek();
    let start = scan.pos;
    if let Some(plain) = plain_level(scan) {
        *level = plain;
        return Ok(());
    }
    scan.pos = start;
    parse_level_members(scan, level)
}

/// [`parse_level`] member by member, for levels not in the canonical spelling. Kept
/// out of line: inlined, its registers crowd the straight-through path.
#[inline(never)]
fn parse_level_members(scan: &mut Scanner<'_>, level: &mut DepthLevel) -> Result<(), RejectReason> {
    if !scan.open(b'{')? {
        return Err(MissingField);
    }
    let mut seen = 0u8;
    let mut first = true;
    let mut guess = LevelKey::FIRST;
    while let Some(key) = scan.member(&mut first, guess)? {
        guess = key.next();
        match key {
            LevelKey::Price => {
                if let Some(price) = scan.price_or_null()? {
                    level.price = price;
                    seen |= 1;
                }
            }
            LevelKey::Quantity => {
                if let Some(n) = scan.u32_or_null()? {
                    level.quantity = n;
                    seen |= 2;
                }
            }
            LevelKey::Orders => {
                if let Some(n) = scan.u64_or_null()? {
                    level.orders = u16::try_from(n).map_err(|_| BadNumber)?;
                }
            }
            LevelKey::Other => scan.skip_value()?,
        }
    }
    if seen != 3 {
        return Err(MissingField);
    }
    Ok(())
}

/// A level in its canonical spelling, `{"price": P, "quantity": Q, "orders": O}`
/// with plain numbers (see [`Scanner::plain_price`]), read straight through: ten of
/// these make up most of a tick, and this skips the member loop's per-key dispatch.
/// `None` for anything else, with the position somewhere inside the level: the
/// caller rewinds and reads the level member by member.
#[inline(always)]
fn plain_level(scan: &mut Scanner<'_>) -> Option<DepthLevel> {
    if !scan.eat(b"{\"price\": ") {
        return None;
    }
    let price = scan.price_run::<false>()?;
    if !scan.eat(b", \"quantity\": ") {
        return None;
    }
    let quantity = u32::try_from(scan.count_run::<false>()?).ok()?;
    if !scan.eat(b", \"orders\": ") {
        return None;
    }
    let orders = u16::try_from(scan.count_run::<false>()?).ok()?;
    if !scan.eat(b"}") {
        return None;
    }
    Some(DepthLevel {
        price,
        quantity,
        orders,
    })
}

/// `ohlc` in its canonical spelling, `{"open": P, "high": P, "low": P, "close": P}`
/// with plain prices, read straight through as [`plain_level`] reads a level; `None`
/// (the caller rewinds) for anything else.
#[inline(always)]
fn plain_ohlc(scan: &mut Scanner<'_>) -> Option<Ohlc> {
    if !scan.eat(b"{\"open\": ") {
        return None;
    }
    let open = scan.price_run::<false>()?;
    if !scan.eat(b", \"high\": ") {
        return None;
    }
    let high = scan.price_run::<false>()?;
    if !scan.eat(b", \"low\": ") {
        return None;
    }
    let low = scan.price_run::<false>()?;
    if !scan.eat(b", \"close\": ") {
        return None;
    }
    let close = scan.price_run::<false>()?;
    if !scan.eat(b"}") {
        return None;
    }
    Some(Ohlc {
        open,
        high,
        low,
        close,
    })
}

/// A decoded key, or "too long to be one we know".
#[derive(Default)]
pub(crate) struct KeyBuf {
    /// Decoded bytes.
    bytes: [u8; KEY_BYTES_MAX],
    /// Used bytes, or `None` when the key did not fit.
    len: Option<usize>,
}

impl KeyBuf {
    fn as_bytes(&self) -> &[u8] {
        match self.len {
            Some(len) => &self.bytes[..len],
            None => b"",
        }
    }
}

/// A JSON number as read: sign, up to 19 significant digits (20 for an integer up to
/// `u64::MAX`), a power of ten, and the
/// first digit dropped beyond those 19 (for rounding).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Number {
    /// A leading minus sign was present.
    negative: bool,
    /// The significant digits (at most 19, or 20 below `u64::MAX`).
    mantissa: u64,
    /// Value = mantissa × 10^exp10 (plus the dropped digits).
    exp10: i32,
    /// No fraction and no exponent were written.
    integer: bool,
    /// More than 19 significant digits were written.
    dropped: bool,
    /// The first dropped digit (0 when none).
    round_digit: u8,
}

/// Powers of ten up to 10^38, the most a `u128` holds.
const POW10: [u128; 39] = {
    let mut table = [1u128; 39];
    let mut i = 1;
    while i < table.len() {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// Powers of ten up to 10^19, the most a `u64` holds.
const POW10_U64: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < table.len() {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

impl Number {
    /// A non-negative integer, as written (no fraction, no exponent).
    #[inline]
    pub(crate) fn to_u64(self) -> Result<u64, RejectReason> {
        if !self.integer || self.dropped || (self.negative && self.mantissa != 0) {
            return Err(BadNumber);
        }
        debug_assert_eq!(self.exp10, 0);
        Ok(self.mantissa)
    }

    #[inline]
    pub(crate) fn to_u32(self) -> Result<u32, RejectReason> {
        u32::try_from(self.to_u64()?).map_err(|_| BadNumber)
    }

    /// The exact fixed-point value at 10^-8, rounded half away from zero.
    #[inline]
    pub(crate) fn to_price(self) -> Result<Price, RejectReason> {
        if self.mantissa == 0 {
            return Ok(Price::ZERO);
        }
        let scale = self.exp10.saturating_add(8);
        // Every price with at most 8 decimals and no dropped digit: one multiply.
        if !self.dropped && (0..POW10_U64.len() as i32).contains(&scale) {
            let value = self
                .mantissa
                .checked_mul(POW10_U64[scale as usize])
                .and_then(|m| i64::try_from(m).ok())
                .ok_or(BadNumber)?;
            return Ok(Price(if self.negative { -value } else { value }));
        }
        let magnitude: u128 = if scale > 0 {
            // Beyond 10^19 the product overflows i64 whatever the mantissa (≥ 1).
            if scale > 19 {
                return Err(BadNumber);
            }
            // 10^19 < 2^64; a product beyond u64 is beyond i64 too.
            let product = self.mantissa.checked_mul(POW10[scale as usize] as u64);
            u128::from(product.ok_or(BadNumber)?)
        } else if scale == 0 {
            u128::from(self.mantissa) + u128::from(self.dropped && self.round_digit >= 5)
        } else {
            let k = scale.unsigned_abs() as usize;
            if k >= POW10.len() {
                return Ok(Price::ZERO);
            }
            let p = POW10[k];
            let m = u128::from(self.mantissa);
            // r ≥ p/2 is "half or more"; dropped digits can only add to r, and when
            // r < p/2 they add less than one unit, so they never change the outcome.
            (m / p) + u128::from(m % p >= p / 2)
        };
        let value = i64::try_from(magnitude).map_err(|_| BadNumber)?;
        Ok(Price(if self.negative { -value } else { value }))
    }
}

/// The read position over one payload.
pub(crate) struct Scanner<'a> {
    /// The payload.
    pub(crate) bytes: &'a [u8],
    /// Index of the next unread byte; only ever grows.
    pub(crate) pos: usize,
}

impl<'a> Scanner<'a> {
    /// The next non-whitespace byte, not consumed.
    #[inline(always)]
    pub(crate) fn peek(&mut self) -> Option<u8> {
        let mut pos = self.pos;
        while let Some(&b) = self.bytes.get(pos) {
            // Every byte above the space is a token byte: one compare decides the
            // common case; the four whitespace bytes and the (invalid) control
            // bytes share the rest.
            if b > b' ' || !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos = pos;
                return Some(b);
            }
            pos += 1;
        }
        self.pos = pos;
        None
    }

    /// Consumes the `{` that opens the top-level object; [`WrongType`] for any other
    /// value.
    fn open_top(&mut self) -> Result<(), RejectReason> {
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                Ok(())
            }
            None => Err(MalformedJson),
            Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => Err(WrongType),
            Some(_) => Err(MalformedJson),
        }
    }

    /// After the top-level object only whitespace may follow.
    fn close_top(&mut self) -> Result<(), RejectReason> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(MalformedJson),
        }
    }

    /// Consumes `literal` if the payload continues with exactly it.
    #[inline(always)]
    fn eat<const N: usize>(&mut self, literal: &[u8; N]) -> bool {
        if !fast_paths() {
            return false;
        }
        // `pos + N` cannot overflow: `pos` is at most the payload length.
        match self.bytes.get(self.pos..self.pos + N) {
            Some(next) if next == literal => {
                self.pos += N;
                true
            }
            _ => false,
        }
    }

    /// [`Scanner::eat`] for `?`: `Some` when `literal` was consumed.
    #[inline(always)]
    fn take<const N: usize>(&mut self, literal: &[u8; N]) -> Option<()> {
        self.eat(literal).then_some(())
    }

    /// The fast path of a symbol's string (opening quote consumed): printable ASCII
    /// without escapes, at most [`SYMBOL_BYTES_MAX`] bytes, with its closing quote
    /// among the 32 bytes from the position. The 32 bytes are read as four words, and
    /// the symbol is made of them masked (no copy of a variable length).
    /// `None`, position unchanged, for anything else.
    #[inline(always)]
    fn plain_symbol(&mut self) -> Option<Symbol> {
        if !fast_paths() {
            return None;
        }
        let window: &[u8; 32] = self.bytes.get(self.pos..)?.first_chunk()?;
        let word = |i: usize| u64::from_le_bytes(*window[8 * i..].first_chunk().expect("8 bytes"));
        let words = [word(0), word(1), word(2), word(3)];
        // The lowest flagged byte of the lowest flagged word is exact.
        let flags = [
            swar_special(words[0]),
            swar_special(words[1]),
            swar_special(words[2]),
            swar_special(words[3]),
        ];
        let index = flags.iter().position(|&f| f != 0)?;
        let len = 8 * index + (flags[index].trailing_zeros() / 8) as usize;
        if window.get(len) != Some(&b'"') {
            return None;
        }
        let symbol = Symbol::from_text_words(words, len)?;
        self.pos += len + 1;
        Some(symbol)
    }

    /// Advances to the next member of an open object and reads its key and colon as
    /// a `K`; `None` once the closing brace is consumed. `guess` must be
    /// [`Keys::FIRST`] exactly while `first` is set (see [`Keys::eat`]).
    #[inline(always)]
    fn member<K: Keys>(&mut self, first: &mut bool, guess: K) -> Result<Option<K>, RejectReason> {
        debug_assert_eq!(*first, guess == K::FIRST);
        if guess.eat(self) {
            *first = false;
            return Ok(Some(guess));
        }
        if !self.next_element_of(first, b'}')? {
            return Ok(None);
        }
        self.member_key_read().map(Some)
    }

    /// [`Scanner::member`] when the guess was wrong.
    #[inline(never)]
    fn member_key_read<K: Keys>(&mut self) -> Result<K, RejectReason> {
        self.expect(b'"')?;
        let key = match self.plain_string() {
            Some(raw) => K::classify(raw),
            None => {
                let mut buf = KeyBuf::default();
                buf.len = self.string(&mut buf.bytes)?;
                K::classify(buf.as_bytes())
            }
        };
        self.expect(b':')?;
        Ok(key)
    }

    /// Consumes `byte` (after whitespace) or fails.
    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Result<(), RejectReason> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(MalformedJson)
        }
    }

    /// Opens a container (`{` or `[`): `true` if opened, `false` for `null`, and
    /// [`WrongType`] for any other value.
    #[inline(always)]
    pub(crate) fn open(&mut self, bracket: u8) -> Result<bool, RejectReason> {
        match self.peek() {
            Some(b) if b == bracket => {
                self.pos += 1;
                Ok(true)
            }
            Some(b'n') => self.literal(b"null").map(|()| false),
            Some(b'{' | b'[' | b'"' | b't' | b'f' | b'-' | b'0'..=b'9') => Err(WrongType),
            _ => Err(MalformedJson),
        }
    }

    /// Advances to the next key of an open object and reads it and its colon; `None`
    /// once the closing brace is consumed. A plain key is borrowed from the payload;
    /// one with escapes or non-ASCII bytes is decoded into `buf`.
    #[inline(always)]
    pub(crate) fn next_key<'k>(
        &mut self,
        first: &mut bool,
        buf: &'k mut KeyBuf,
    ) -> Result<Option<&'k [u8]>, RejectReason>
    where
        'a: 'k,
    {
        if !self.next_element_of(first, b'}')? {
            return Ok(None);
        }
        self.expect(b'"')?;
        let name = match self.plain_string() {
            Some(raw) => raw,
            None => {
                buf.len = self.string(&mut buf.bytes)?;
                buf.as_bytes()
            }
        };
        self.expect(b':')?;
        Ok(Some(name))
    }

    /// The fast path of [`Scanner::string`]: a string of printable ASCII without
    /// escapes (every key and symbol the platform sends) is returned in place and its
    /// closing quote consumed; anything else returns `None` and leaves the position.
    #[inline(always)]
    pub(crate) fn plain_string(&mut self) -> Option<&'a [u8]> {
        let bytes: &'a [u8] = self.bytes;
        let start = self.pos;
        let mut pos = start;
        // Eight bytes at a time while they last (SWAR, "determine if a word has a
        // byte less than n" from Sean Anderson's Bit Twiddling Hacks): the lowest
        // flagged byte is exact, which is all we use.
        while let Some(chunk) = bytes.get(pos..pos + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let special = swar_special(word);
            if special != 0 {
                let at = pos + (special.trailing_zeros() / 8) as usize;
                if bytes[at] != b'"' {
                    return None;
                }
                self.pos = at + 1;
                return Some(&bytes[start..at]);
            }
            pos += 8;
        }
        while let Some(&b) = bytes.get(pos) {
            if b == b'"' {
                self.pos = pos + 1;
                return Some(&bytes[start..pos]);
            }
            if b == b'\\' || !(0x20..0x80).contains(&b) {
                return None;
            }
            pos += 1;
        }
        None
    }

    /// Advances to the next element of an open array; `false` once `]` is consumed.
    fn next_element(&mut self, first: &mut bool) -> Result<bool, RejectReason> {
        self.next_element_of(first, b']')
    }

    #[inline(always)]
    fn next_element_of(&mut self, first: &mut bool, close: u8) -> Result<bool, RejectReason> {
        let b = self.peek();
        if b == Some(close) {
            self.pos += 1;
            return Ok(false);
        }
        if !*first {
            if b != Some(b',') {
                return Err(MalformedJson);
            }
            self.pos += 1;
        }
        *first = false;
        Ok(true)
    }

    /// Consumes an exact literal (`true`, `false`, `null`).
    pub(crate) fn literal(&mut self, text: &[u8]) -> Result<(), RejectReason> {
        if self.bytes[self.pos..].starts_with(text) {
            self.pos += text.len();
            Ok(())
        } else {
            Err(MalformedJson)
        }
    }

    /// A number, `None` for `null`, [`WrongType`] for any other value.
    #[inline(always)]
    pub(crate) fn number_or_null(&mut self) -> Result<Option<Number>, RejectReason> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number().map(Some),
            Some(b'n') => self.literal(b"null").map(|()| None),
            Some(b'"' | b'{' | b'[' | b't' | b'f') => Err(WrongType),
            _ => Err(MalformedJson),
        }
    }

    /// A price, `None` for `null`, [`WrongType`] for any other value.
    #[inline(always)]
    fn price_or_null(&mut self) -> Result<Option<Price>, RejectReason> {
        match self.plain_price() {
            Some(price) => Ok(Some(price)),
            None => self.price_or_null_read(),
        }
    }

    /// [`Scanner::price_or_null`] for what [`Scanner::plain_price`] does not take.
    #[inline(never)]
    fn price_or_null_read(&mut self) -> Result<Option<Price>, RejectReason> {
        self.number_or_null()?.map(Number::to_price).transpose()
    }

    /// A count (a non-negative integer) up to `u64::MAX`, `None` for `null`,
    /// [`WrongType`] for any other value.
    #[inline(always)]
    fn u64_or_null(&mut self) -> Result<Option<u64>, RejectReason> {
        match self.plain_count() {
            Some(count) => Ok(Some(count)),
            None => self.u64_or_null_read(),
        }
    }

    /// [`Scanner::u64_or_null`] for what [`Scanner::plain_count`] does not take.
    #[inline(never)]
    fn u64_or_null_read(&mut self) -> Result<Option<u64>, RejectReason> {
        self.number_or_null()?.map(Number::to_u64).transpose()
    }

    /// [`Scanner::u64_or_null`] up to `u32::MAX`.
    #[inline(always)]
    fn u32_or_null(&mut self) -> Result<Option<u32>, RejectReason> {
        match self.u64_or_null()? {
            Some(count) => u32::try_from(count).map(Some).map_err(|_| BadNumber),
            None => Ok(None),
        }
    }

    /// The eight bytes from `pos`, if there are eight.
    #[inline(always)]
    fn word_at(&self, pos: usize) -> Option<u64> {
        // Two plain compares (`pos` in the payload, 8 bytes after it) where
        // `get(pos..pos + 8)` also checks the addition for overflow.
        let chunk = self.bytes.get(pos..)?.first_chunk::<8>()?;
        Some(u64::from_le_bytes(*chunk))
    }

    /// The fast path of [`Scanner::u64_or_null`]: 1 to 7 digits right at the position
    /// (no whitespace, sign, fraction or exponent; every quantity, order count and
    /// token the platform sends) read from one word; `None`, position unchanged, for
    /// anything else, which the full reader then takes (and refuses if it must).
    #[inline(always)]
    fn plain_count(&mut self) -> Option<u64> {
        self.count_run::<true>()
    }

    /// [`Scanner::plain_count`], checking that the run ends the number only when
    /// `ENDS`. A canonical reader (level, side, `ohlc`, tick) passes `false`: its next
    /// step consumes a literal that starts with `,` or `}`, which a fraction or an
    /// exponent fails, and it then rewinds to the full readers as for any mismatch.
    #[inline(always)]
    fn count_run<const ENDS: bool>(&mut self) -> Option<u64> {
        if !fast_paths() {
            return None;
        }
        let word = self.word_at(self.pos)?;
        let values = word.wrapping_sub(0x3030_3030_3030_3030);
        let count = (swar_non_digit(values).trailing_zeros() / 8) as usize;
        // `count` is 0..=8; the byte after the run is in the word when below 8.
        if !(1..8).contains(&count)
            || (ENDS && continues_number(word, count))
            || leading_zero(word, count)
        {
            return None;
        }
        self.pos += count;
        Some(eight_digits(values << (64 - 8 * count)))
    }

    /// The fast path of [`Scanner::price_or_null`]: `I.F` right at the position, with
    /// 1 to 7 digits in `I` and in `F` (every price the platform sends: `1779.64`,
    /// `0.05`, `1011.0`) and no rounding: the value is I.F's digits as one integer
    /// × 10^(8 − digits of F). `None`, position unchanged, otherwise.
    #[inline(always)]
    fn plain_price(&mut self) -> Option<Price> {
        self.price_run::<true>()
    }

    /// [`Scanner::plain_price`], checking that the fraction ends the number only when
    /// `ENDS` (see [`Scanner::count_run`]).
    #[inline(always)]
    fn price_run<const ENDS: bool>(&mut self) -> Option<Price> {
        if !fast_paths() {
            return None;
        }
        let word = self.word_at(self.pos)?;
        // The run of digits and dots (and `/`, which the checks below refuse) from the
        // position. Its length alone moves the position on, so the next read need not
        // wait for the checks and the conversion: they are off the chain of reads.
        let run = (swar_above_eleven(word.wrapping_sub(0x2e2e_2e2e_2e2e_2e2e)).trailing_zeros() / 8)
            as usize;
        let values = word.wrapping_sub(0x3030_3030_3030_3030);
        let count = (swar_non_digit(values).trailing_zeros() / 8) as usize;
        if !(1..8).contains(&count)
            || (word >> (8 * count)) as u8 != b'.'
            || leading_zero(word, count)
        {
            return None;
        }
        // A price of up to 7 characters (`1779.64,`): both runs are in this word and
        // close up into one run of digits without a second load. The bytes after the
        // dot are taken afresh (the dot's borrow spoils `values` above it).
        if run <= 7 && count <= 5 {
            let decimals = run.wrapping_sub(count + 1);
            let tail = word >> (8 * (count + 1));
            let tail_values = tail.wrapping_sub(0x3030_3030_3030_3030);
            let tail_digits = (swar_non_digit(tail_values).trailing_zeros() / 8) as usize;
            // `run` is digits, the dot, digits: nothing else, and at least one decimal.
            if (1..7).contains(&decimals)
                && tail_digits == decimals
                && !(ENDS && continues_number(word, run))
            {
                let units = values & ((1 << (8 * count)) - 1);
                let digits = count + decimals;
                let run_value =
                    eight_digits((units | tail_values << (8 * count)) << (64 - 8 * digits));
                self.pos += run;
                // Below 10^6 × 10^8: far inside i64.
                return Some(Price((run_value * POW10_U64[8 - decimals]) as i64));
            }
        }
        self.price_run_long::<ENDS>(values, count)
    }

    /// [`Scanner::price_run`] when the fraction runs past the first word: one word
    /// for each run.
    #[inline(always)]
    fn price_run_long<const ENDS: bool>(&mut self, values: u64, count: usize) -> Option<Price> {
        let fraction_at = self.pos + count + 1;
        let fraction = self.word_at(fraction_at)?;
        let fraction_values = fraction.wrapping_sub(0x3030_3030_3030_3030);
        let decimals = (swar_non_digit(fraction_values).trailing_zeros() / 8) as usize;
        if !(1..8).contains(&decimals) || (ENDS && continues_number(fraction, decimals)) {
            return None;
        }
        let units = eight_digits(values << (64 - 8 * count));
        let fraction = eight_digits(fraction_values << (64 - 8 * decimals));
        self.pos = fraction_at + decimals;
        // Below 10^7 × 10^8 + 10^8: far inside i64.
        let value = units * POW10_U64[8] + fraction * POW10_U64[8 - decimals];
        Some(Price(value as i64))
    }

    /// [`Scanner::symbol_or_null`] written straight into `slot` (a plain string is
    /// copied once, not returned through two `Option`s); `false` for `null`.
    #[inline(always)]
    fn symbol_into(&mut self, slot: &mut Symbol) -> Result<bool, RejectReason> {
        if self.bytes.get(self.pos) == Some(&b'"') {
            self.pos += 1;
            if let Some(raw) = self.plain_string() {
                *slot = Symbol::new(raw).ok_or(SymbolTooLong)?;
                return Ok(true);
            }
            self.pos -= 1;
        }
        match self.symbol_or_null()? {
            Some(symbol) => {
                *slot = symbol;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// A string decoded into a symbol, `None` for `null`.
    pub(crate) fn symbol_or_null(&mut self) -> Result<Option<Symbol>, RejectReason> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                if let Some(raw) = self.plain_string() {
                    return Symbol::new(raw).map(Some).ok_or(SymbolTooLong);
                }
                let mut buf = [0u8; SYMBOL_BYTES_MAX];
                let len = self.string(&mut buf)?.ok_or(SymbolTooLong)?;
                Ok(Symbol::new(&buf[..len]))
            }
            Some(b'n') => self.literal(b"null").map(|()| None),
            Some(b'{' | b'[' | b't' | b'f' | b'-' | b'0'..=b'9') => Err(WrongType),
            _ => Err(MalformedJson),
        }
    }

    /// A timestamp: ISO-8601 string or integer epoch milliseconds; `None` for `null`.
    pub(crate) fn timestamp(&mut self) -> Result<Option<i64>, RejectReason> {
        match self.peek() {
            Some(b'"') => {
                if let Some(ms) = self.plain_timestamp() {
                    return Ok(Some(ms));
                }
                self.pos += 1;
                if let Some(raw) = self.plain_string() {
                    return parse_iso8601_ms(raw).map(Some).ok_or(BadTimestamp);
                }
                let mut buf = [0u8; TIMESTAMP_BYTES_MAX];
                let len = self.string(&mut buf)?.ok_or(BadTimestamp)?;
                parse_iso8601_ms(&buf[..len]).map(Some).ok_or(BadTimestamp)
            }
            Some(b'-' | b'0'..=b'9') => {
                let n = self.number()?;
                let ms = n.to_u64().map_err(|_| BadTimestamp)?;
                match i64::try_from(ms) {
                    Ok(ms) if ms <= TIMESTAMP_MS_MAX => Ok(Some(ms)),
                    _ => Err(BadTimestamp),
                }
            }
            Some(b'n') => self.literal(b"null").map(|()| None),
            Some(b'{' | b'[' | b't' | b'f') => Err(WrongType),
            _ => Err(MalformedJson),
        }
    }

    /// The fast path of [`Scanner::timestamp`]: `"YYYY-MM-DDTHH:MM:SS.mmmZ"` or the
    /// same with `±HH:MM` for `Z` (our writer's and Python's `isoformat()` shapes),
    /// quotes included, checked and converted a word at a time. `None`, position
    /// unchanged, for any other spelling and for values [`parse_iso8601_ms`] refuses,
    /// which the full reader then takes.
    #[inline(always)]
    fn plain_timestamp(&mut self) -> Option<i64> {
        if !fast_paths() {
            return None;
        }
        let text: &[u8; 26] = self.bytes.get(self.pos..)?.first_chunk()?;
        let word = |at: usize| u64::from_le_bytes(text[at..at + 8].try_into().expect("8 bytes"));
        // XOR with a template leaves digits as their values 0..=9 and separators as 0;
        // the zone byte (the last of `clock`) is masked off and checked apart.
        let date = word(1) ^ u64::from_le_bytes(*b"0000-00-");
        let time = word(9) ^ u64::from_le_bytes(*b"00T00:00");
        let clock = (word(17) ^ u64::from_le_bytes(*b":00.000\0")) & 0x00ff_ffff_ffff_ffff;
        const DATE_SEPARATORS: u64 = 0xff00_00ff_0000_0000;
        const TIME_SEPARATORS: u64 = 0x0000_ff00_00ff_0000;
        const CLOCK_SEPARATORS: u64 = 0x0000_0000_ff00_00ff;
        let separators = date & DATE_SEPARATORS | time & TIME_SEPARATORS | clock & CLOCK_SEPARATORS;
        // Above 9 or at 0x80 and up: the add cannot carry, every byte is at most 0x7f.
        let beyond_nine =
            |x: u64| (x | x.wrapping_add(0x7676_7676_7676_7676)) & 0x8080_8080_8080_8080;
        if text[0] != b'"'
            || separators != 0
            || (beyond_nine(date) | beyond_nine(time) | beyond_nine(clock)) != 0
        {
            return None;
        }
        // Byte i of `pairs(x)` is 10 × digit i + digit i+1 (at most 99: no carries).
        let pairs = |x: u64| x.wrapping_mul(10).wrapping_add(x >> 8);
        let byte = |x: u64, i: u32| (x >> (8 * i)) as u32 & 0xff;
        let (date, time, clock_pairs) = (pairs(date), pairs(time), pairs(clock));
        let year = i64::from(byte(date, 0) * 100 + byte(date, 2));
        let (month, day) = (byte(date, 5), byte(time, 0));
        let (hour, minute, second) = (byte(time, 3), byte(time, 6), byte(clock_pairs, 1));
        let millis = i64::from(byte(clock_pairs, 4) * 10 + byte(clock, 6));
        let (offset_s, len) = match (text[24], text[25]) {
            (b'Z', b'"') => (0, 26),
            (sign @ (b'+' | b'-'), _) => {
                let zone: &[u8; 31] = self.bytes.get(self.pos..)?.first_chunk()?;
                let [h1, h0, b':', m1, m0, b'"'] = zone[25..] else {
                    return None;
                };
                let (h, m) = (two_digits(h1, h0)?, two_digits(m1, m0)?);
                if h > 23 || m > 59 {
                    return None;
                }
                let s = i64::from(h * 3600 + m * 60);
                (if sign == b'-' { -s } else { s }, 31)
            }
            _ => return None,
        };
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_s;
        let ms = seconds * 1000 + millis;
        if !(0..=TIMESTAMP_MS_MAX).contains(&ms) {
            return None;
        }
        self.pos += len;
        Some(ms)
    }

    /// Reads a number per RFC 8259 §6 (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
    /// Only syntax fails here; range is the converter's business.
    #[inline(always)]
    pub(crate) fn number(&mut self) -> Result<Number, RejectReason> {
        let bytes = self.bytes;
        let start = self.pos;
        let mut pos = start;
        let negative = bytes.get(pos) == Some(&b'-');
        pos += usize::from(negative);
        let mut mantissa = 0u64;
        // Integer part: `0` alone, or a run not starting with `0` (RFC 8259).
        match bytes.get(pos) {
            Some(b'0') => pos += 1,
            Some(b'1'..=b'9') => pos = digit_run(bytes, pos, &mut mantissa),
            _ => return Err(MalformedJson),
        }
        let mut digits = pos - start - usize::from(negative);
        let mut exp10 = 0i32;
        let mut integer = true;
        if bytes.get(pos) == Some(&b'.') {
            let fraction = pos + 1;
            pos = digit_run(bytes, fraction, &mut mantissa);
            if pos == fraction {
                return Err(MalformedJson);
            }
            integer = false;
            digits += pos - fraction;
            // At most 16 KiB of digits: the cast cannot wrap.
            exp10 = -((pos - fraction) as i32);
        }
        // Up to 19 digits (leading zeros included) the accumulation above was exact:
        // 10^19 - 1 < 2^64. Longer numbers need the rounding reader.
        if digits > 19 || !fast_paths() {
            return self.number_long();
        }
        self.pos = pos;
        if let Some(b'e' | b'E') = bytes.get(pos) {
            self.pos += 1;
            integer = false;
            exp10 = exp10.saturating_add(self.exponent()?);
        }
        Ok(Number {
            negative,
            mantissa,
            exp10,
            integer,
            dropped: false,
            round_digit: 0,
        })
    }

    /// [`Scanner::number`] for numbers of more than 19 digits, from the same start:
    /// counts significant digits only and keeps the first one dropped for rounding.
    #[cold]
    #[inline(never)]
    fn number_long(&mut self) -> Result<Number, RejectReason> {
        let mut n = Number {
            integer: true,
            ..Number::default()
        };
        let mut significant = 0u32;
        if self.bytes.get(self.pos) == Some(&b'-') {
            n.negative = true;
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(&mut n, &mut significant, false),
            _ => return Err(MalformedJson),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            n.integer = false;
            if !self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                return Err(MalformedJson);
            }
            self.digits(&mut n, &mut significant, true);
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            n.integer = false;
            n.exp10 = n.exp10.saturating_add(self.exponent()?);
        }
        Ok(n)
    }

    /// Accumulates a run of digits (integer part, or fraction when `fraction`).
    #[inline(always)]
    fn digits(&mut self, n: &mut Number, significant: &mut u32, fraction: bool) {
        let step = i32::from(fraction);
        let (mut pos, mut mantissa, mut count, mut exp10) =
            (self.pos, n.mantissa, *significant, n.exp10);
        // Fast loop: digits while 19 significant ones fit (every real price).
        while let Some(&b) = self.bytes.get(pos) {
            let d = b.wrapping_sub(b'0');
            // `>=`: an integer part may have taken a 20th digit (slow loop below),
            // and its fraction must then go straight to the slow loop too.
            if d > 9 || count >= 19 {
                break;
            }
            pos += 1;
            exp10 -= step;
            // A leading zero (only in a fraction, `0.05`) counts just by position.
            if mantissa != 0 || d != 0 {
                mantissa = mantissa * 10 + u64::from(d);
                count += 1;
            }
        }
        (self.pos, n.mantissa, *significant, n.exp10) = (pos, mantissa, count, exp10);
        debug_assert!(*significant <= 20);
        // Slow loop: a 20th integer digit while it fits in u64, then dropped digits.
        while let Some(&b) = self.bytes.get(self.pos) {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            self.pos += 1;
            let twentieth = (!fraction && !n.dropped)
                .then(|| n.mantissa.checked_mul(10)?.checked_add(u64::from(d)))
                .flatten();
            if let Some(m) = twentieth {
                n.mantissa = m;
                *significant += 1;
            } else {
                if !n.dropped {
                    n.dropped = true;
                    n.round_digit = d;
                }
                // A dropped integer digit still scales the value.
                n.exp10 = n.exp10.saturating_add(i32::from(!fraction));
            }
        }
    }

    /// Reads `[+-]?[0-9]+` after an `e`, saturating at ±100,000 (far past any range).
    fn exponent(&mut self) -> Result<i32, RejectReason> {
        let negative = match self.bytes.get(self.pos) {
            Some(b'-') => {
                self.pos += 1;
                true
            }
            Some(b'+') => {
                self.pos += 1;
                false
            }
            _ => false,
        };
        if !self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            return Err(MalformedJson);
        }
        let mut value: i32 = 0;
        while let Some(&b) = self.bytes.get(self.pos) {
            if !b.is_ascii_digit() {
                break;
            }
            self.pos += 1;
            value = (value * 10 + i32::from(b - b'0')).min(100_000);
        }
        Ok(if negative { -value } else { value })
    }

    /// Decodes the rest of a string (opening quote consumed) into `out`: `Some(len)`,
    /// or `None` when it did not fit (the string is still read and checked to its end).
    pub(crate) fn string(&mut self, out: &mut [u8]) -> Result<Option<usize>, RejectReason> {
        let mut len = 0usize;
        let mut fits = true;
        loop {
            let start = self.pos;
            let mut ascii = true;
            while let Some(&b) = self.bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                ascii &= b < 0x80;
                self.pos += 1;
            }
            let run = &self.bytes[start..self.pos];
            // A run ends at an ASCII byte, which never splits a UTF-8 sequence.
            if !ascii && std::str::from_utf8(run).is_err() {
                return Err(InvalidUtf8);
            }
            fits = fits && push(out, &mut len, run);
            match self.bytes.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(fits.then_some(len));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let mut utf8 = [0u8; 4];
                    let n = self.escape(&mut utf8)?;
                    fits = fits && push(out, &mut len, &utf8[..n]);
                }
                _ => return Err(MalformedJson),
            }
        }
    }

    /// Decodes one escape (backslash consumed) into UTF-8; returns its byte count.
    fn escape(&mut self, utf8: &mut [u8; 4]) -> Result<usize, RejectReason> {
        let b = *self.bytes.get(self.pos).ok_or(MalformedJson)?;
        self.pos += 1;
        let simple = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut code = u32::from(self.hex4()?);
                if (0xd800..0xdc00).contains(&code) {
                    // A high surrogate must be followed by `\u` and a low surrogate.
                    if !self.bytes[self.pos..].starts_with(b"\\u") {
                        return Err(MalformedJson);
                    }
                    self.pos += 2;
                    let low = u32::from(self.hex4()?);
                    if !(0xdc00..0xe000).contains(&low) {
                        return Err(MalformedJson);
                    }
                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                }
                let c = char::from_u32(code).ok_or(MalformedJson)?;
                return Ok(c.encode_utf8(utf8).len());
            }
            _ => return Err(MalformedJson),
        };
        utf8[0] = simple;
        Ok(1)
    }

    fn hex4(&mut self) -> Result<u16, RejectReason> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or(MalformedJson)?;
        let mut value = 0u16;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or(MalformedJson)?;
            value = value << 4 | v as u16;
        }
        self.pos += 4;
        Ok(value)
    }

    /// Skips one value of any type, checking its syntax. Iterative: the open
    /// containers live in a bit stack (1 = array), at most [`NESTING_MAX`] deep.
    pub(crate) fn skip_value(&mut self) -> Result<(), RejectReason> {
        let mut stack = 0u64;
        let mut depth = 0u32;
        let mut scratch: [u8; 0] = [];
        loop {
            // Here a value must start.
            let mut opened = false;
            match self.peek().ok_or(MalformedJson)? {
                b @ (b'{' | b'[') => {
                    if depth == NESTING_MAX {
                        return Err(MalformedJson);
                    }
                    self.pos += 1;
                    stack = stack << 1 | u64::from(b == b'[');
                    depth += 1;
                    opened = true;
                }
                b'"' => {
                    self.pos += 1;
                    self.string(&mut scratch)?;
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return Err(MalformedJson),
            }
            // After a value (or just inside a new container): find where the next
            // value starts, closing containers on the way.
            let mut first = opened;
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let array = stack & 1 == 1;
                let close = if array { b']' } else { b'}' };
                if self.next_element_of(&mut first, close)? {
                    if !array {
                        self.expect(b'"')?;
                        self.string(&mut scratch)?;
                        self.expect(b':')?;
                    }
                    break;
                }
                stack >>= 1;
                depth -= 1;
                first = false;
            }
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Whether this test thread takes the fast paths (guessed keys, canonical levels
    /// and `ohlc`, one-word numbers, word-at-a-time timestamps, short digit runs).
    /// Turned off, the parser takes only the full readers, which the differential
    /// tests hold the fast paths against.
    pub(super) static FAST_PATHS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether to try the fast paths: always, but in tests per thread ([`FAST_PATHS`]).
#[inline(always)]
fn fast_paths() -> bool {
    #[cfg(test)]
    return FAST_PATHS.with(std::cell::Cell::get);
    #[cfg(not(test))]
    true
}

/// Accumulates the ASCII digits from `pos` into `mantissa` (wrapping: the caller
/// counts digits and discards the value past 19) and returns the end of the run.
/// Eight bytes at a time while eight remain: a price's integer and fraction runs
/// (`1779`, `64`) each take one word, where a byte loop pays a bounds check, a
/// compare, a branch and a multiply-add per digit.
#[inline(always)]
fn digit_run(bytes: &[u8], mut pos: usize, mantissa: &mut u64) -> usize {
    let mut m = *mantissa;
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let values = word.wrapping_sub(0x3030_3030_3030_3030);
        let count = (swar_non_digit(values).trailing_zeros() / 8) as usize;
        if count == 0 {
            *mantissa = m;
            return pos;
        }
        // The run's digit values moved to the top bytes, zeros (leading zeros of the
        // same number) below; `count` is 1..=8, so the shift is 0..=56.
        let run = eight_digits(values << (64 - 8 * count));
        m = m.wrapping_mul(POW10_U64[count]).wrapping_add(run);
        pos += count;
        if count < 8 {
            *mantissa = m;
            return pos;
        }
    }
    while let Some(&b) = bytes.get(pos) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        m = m.wrapping_mul(10).wrapping_add(u64::from(d));
        pos += 1;
    }
    *mantissa = m;
    pos
}

/// Whether the byte after a run of `count` (< 8) digits at the start of `word` goes
/// on with a fraction or an exponent.
#[inline(always)]
fn continues_number(word: u64, count: usize) -> bool {
    matches!((word >> (8 * count)) as u8, b'.' | b'e' | b'E')
}

/// Whether a run of `count` digits at the start of `word` has a leading zero, which
/// JSON forbids (the full reader refuses it).
#[inline(always)]
fn leading_zero(word: u64, count: usize) -> bool {
    count > 1 && word as u8 == b'0'
}

/// High bit set in each byte of `values` (a word of bytes minus `'0'`) that was not an
/// ASCII digit; as in [`swar_special`], only the lowest flagged byte is exact (a
/// borrow or carry out of a flagged byte may flag the one above).
#[inline(always)]
fn swar_non_digit(values: u64) -> u64 {
    // A digit leaves 0..=9, and 0..=9 + 0x76 stays below 0x80; anything else has its
    // high bit set already (it was below '0' or above 0x7f) or gets it from the add.
    (values | values.wrapping_add(0x7676_7676_7676_7676)) & 0x8080_8080_8080_8080
}

/// High bit set in each byte of `values` (a word of bytes minus `'.'`) above 11, i.e.
/// not `.`, `/` or an ASCII digit; only the lowest flagged byte is exact, as in
/// [`swar_non_digit`].
#[inline(always)]
fn swar_above_eleven(values: u64) -> u64 {
    // 0..=11 + 0x74 stays below 0x80; anything else has or gets its high bit.
    (values | values.wrapping_add(0x7474_7474_7474_7474)) & 0x8080_8080_8080_8080
}

/// The number whose eight decimal digits are the bytes of `values` (values 0..=9),
/// most significant in the lowest byte: three multiply-shift steps pairing digits,
/// then pairs, then quads (Lemire, "Faster parsing of integers", as in simdjson's
/// `parse_eight_digits_unrolled`).
#[inline(always)]
fn eight_digits(values: u64) -> u64 {
    let pairs = (values & 0x0f0f_0f0f_0f0f_0f0f).wrapping_mul(2561) >> 8;
    let quads = (pairs & 0x00ff_00ff_00ff_00ff).wrapping_mul(6_553_601) >> 16;
    (quads & 0x0000_ffff_0000_ffff).wrapping_mul(42_949_672_960_001) >> 32
}

/// High bit set in each byte of `word` that is `"`, `\\`, a control byte (< 0x20)
/// or non-ASCII (≥ 0x80); bytes above the lowest flagged one may be flagged falsely.
#[inline(always)]
fn swar_special(word: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let quote = zero(word ^ (LO * u64::from(b'"')));
    let backslash = zero(word ^ (LO * u64::from(b'\\')));
    let control = word.wrapping_sub(LO * 0x20) & !word & HI;
    quote | backslash | control | (word & HI)
}

/// Appends `bytes` to `out[..*len]`; `false` (and nothing written) when they do not fit.
#[inline]
fn push(out: &mut [u8], len: &mut usize, bytes: &[u8]) -> bool {
    match out.get_mut(*len..*len + bytes.len()) {
        Some(slot) => {
            slot.copy_from_slice(bytes);
            *len += bytes.len();
            true
        }
        None => false,
    }
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian), after Howard
/// Hinnant's `days_from_civil` (<http://howardhinnant.github.io/date_algorithms.html>).
#[inline]
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// The value of two ASCII digits, tens first.
#[inline(always)]
fn two_digits(tens: u8, ones: u8) -> Option<u32> {
    let (tens, ones) = (tens.wrapping_sub(b'0'), ones.wrapping_sub(b'0'));
    (tens <= 9 && ones <= 9).then(|| u32::from(tens) * 10 + u32::from(ones))
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}][Z | ±HH:MM | ±HHMM | ±HH]` into Unix
/// milliseconds (fraction truncated to ms). No offset means UTC. `None` for anything
/// else, an impossible date, or a time before 1970.
pub fn parse_iso8601_ms(text: &[u8]) -> Option<i64> {
    // One length check for the fixed-width head `YYYY-MM-DDTHH:MM:SS`; every index
    // below is then a constant inside it, and the fourteen digit checks are one
    // branch-free fold rather than a loop with an exit per digit.
    let head: &[u8; 19] = text.first_chunk()?;
    let digit = |i: usize| u32::from(head[i].wrapping_sub(b'0'));
    const DIGIT_AT: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let not_digit = DIGIT_AT.iter().fold(false, |bad, &i| bad | (digit(i) > 9));
    let separators_ok = head[4] == b'-'
        && head[7] == b'-'
        && matches!(head[10], b'T' | b't' | b' ')
        && head[13] == b':'
        && head[16] == b':';
    if not_digit || !separators_ok {
        return None;
    }
    let two = |i: usize| digit(i) * 10 + digit(i + 1);
    let year = i64::from(two(0) * 100 + two(2));
    let (month, day) = (two(5), two(8));
    let (hour, minute, second) = (two(11), two(14), two(17));
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut pos = 19;
    let mut millis = 0i64;
    if text.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while text.get(pos).is_some_and(u8::is_ascii_digit) {
            if pos - start < 3 {
                millis = millis * 10 + i64::from(text[pos] - b'0');
            }
            pos += 1;
        }
        let digits = pos - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_s = match text.get(pos) {
        None => 0,
        Some(b'Z' | b'z') if pos + 1 == text.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let (h, m) = match text[pos + 1..] {
                [h1, h0] => (two_digits(h1, h0)?, 0),
                [h1, h0, m1, m0] | [h1, h0, b':', m1, m0] => {
                    (two_digits(h1, h0)?, two_digits(m1, m0)?)
                }
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let s = i64::from(h * 3600 + m * 60);
            if sign == b'-' {
                -s
            } else {
                s
            }
        }
        Some(_) => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_s;
    let ms = seconds * 1000 + millis;
    (0..=TIMESTAMP_MS_MAX).contains(&ms).then_some(ms)
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
