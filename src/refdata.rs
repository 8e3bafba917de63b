//! Reference data: PostgreSQL's `instruments` table into every shard's validator, so
//! the tick-size and circuit checks (DESIGN §4) have something to check against.
//!
//! ```text
//!   PostgreSQL ── SELECT * FROM instruments (at start and after every reconnect) ──┐
//!     │  trigger instruments_changed                                              │
//!     └─ NOTIFY {op, instrument_token} ──LISTEN──► refdata thread ◄───────────────┘
//!                                          │ numeric as text ──Price::from_decimal──► Reference
//!                                          │ route by shard_of(token), as the receiver routes ticks
//!                                          ▼
//!                 reference queue[s]: rtrb, REFERENCE_QUEUE_SLOTS (token, Reference) updates
//!                                          ▼
//!                 shard[s], between frame passes: ≤ REFERENCE_UPDATES_PER_PASS ──► Validator::set_reference
//! ```
//!
//! This is the slow path: a thread of its own (`refdata`, on `threads.slow_core`),
//! never on the hot path. Each edge's back-pressure, decided:
//!
//! - Queue full: the refdata thread waits (1 ms sleeps, watching the stop flag); the
//!   shard never waits for it, it only pops what is there, without allocating. A
//!   shard that has exited leaves its queue abandoned, and updates for it are dropped.
//! - PostgreSQL unreachable at start or lost later: ingestion runs on. Shards keep the
//!   reference data they have (none, before the first load: then the two checks stay
//!   off). The thread warns once per outage, counts every failure, reconnects with
//!   capped full-jitter backoff ([`Backoff`], `postgres.backoff_*_ms`) and on
//!   reconnect loads everything again, clearing instruments deleted meanwhile.
//! - Start and drain: nothing waits for this thread. It notices the stop flag within
//!   [`POLL_INTERVAL`] while listening or backing off; a connect or query in flight
//!   is bounded by `postgres.connect_timeout_ms`, TCP keepalives and a statement
//!   timeout, and `run` does not wait for it past its join deadline.
//!
//! A change is applied by re-reading its row (the notification carries only the
//! token), so a burst of changes to one instrument costs one read, and a DELETE is a
//! row that is gone: its reference is cleared and the checks go off for it. Only
//! changed references are sent; a reload after a reconnect sends the difference.
//!
//! With the Redis cache on, every row also goes to the Redis thread as
//! `instrument:{token}` (a whole load as one message, then one per change; that
//! channel is bounded and the thread drains it whether Redis is up or not).
//!
//! Must never: block or allocate on a shard's side, stop ingestion, log a password.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;

use std::sync::mpsc::SyncSender;

use crate::cache::redis::{send_instrument, InstrumentChange, InstrumentMeta};
use crate::config::{redact_url, Config};
use crate::model::reference::{Reference, ReferenceUpdate};
use crate::model::{DecimalError, Price};
use crate::runtime::sizes::Sharding;
use crate::runtime::Backoff;

/// Updates each shard's queue holds: 4,096 × 32 B = 128 KiB per shard. A full load
/// of ~100k instruments passes through in ~25 refills, each drained by the shard in a
/// few passes, so a whole load reaches the validators in well under a second.
pub const REFERENCE_QUEUE_SLOTS: usize = 4096;

/// Longest wait for a notification before the thread looks at its stop flag again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The channel the `instruments_changed` trigger (migration 001) notifies.
pub const CHANNEL: &str = "instruments_changed";

/// `application_name` of the connection, so `pg_stat_activity` says who it is.
pub const APPLICATION_NAME: &str = "alphapt-storage refdata";

/// Sleep between two tries to push into a full queue: the shard drains
/// [`REFERENCE_UPDATES_PER_PASS`](crate::runtime::sizes::REFERENCE_UPDATES_PER_PASS) per pass, so 1 ms frees a good part of it.
const QUEUE_FULL_SLEEP: Duration = Duration::from_millis(1);

/// Changes gathered before they are applied, so a flood of notifications still lets
/// the thread look at its stop flag.
const CHANGES_PER_BATCH_MAX: usize = 4096;

/// Skipped rows logged one by one per load; the rest are summed in one line.
const SKIPS_LOGGED_MAX: u64 = 16;

/// Server-side bound of one query: a full load of 100k rows takes ~100 ms.
const STATEMENT_TIMEOUT_MS: u32 = 30_000;

/// Idle time before TCP keepalives probe, and how long unacknowledged writes may
/// wait: a peer that vanished without a FIN is noticed in about this long.
const TCP_DEAD_AFTER: Duration = Duration::from_secs(10);

/// Every instrument, its decimals as text so they convert exactly.
const SELECT_ALL: &str = "SELECT instrument_token, tick_size::text, \
     lower_circuit_limit::text, upper_circuit_limit::text, \
     tradingsymbol, exchange, segment, lot_size FROM instruments";

/// One instrument, after a notification.
const SELECT_ONE: &str = "SELECT instrument_token, tick_size::text, \
     lower_circuit_limit::text, upper_circuit_limit::text, \
     tradingsymbol, exchange, segment, lot_size FROM instruments \
     WHERE instrument_token = $1";

/// A queue from the refdata thread to one shard.
pub fn reference_queue() -> (
    rtrb::Producer<ReferenceUpdate>,
    rtrb::Consumer<ReferenceUpdate>,
) {
    rtrb::RingBuffer::new(REFERENCE_QUEUE_SLOTS)
}

/// The refdata thread's end of every shard's queue, routing by instrument.
pub struct ReferenceFeed {
    /// One producer per shard, in shard order.
    queues: Vec<rtrb::Producer<ReferenceUpdate>>,
    /// Which shard of a group owns which instrument: as the sources route their ticks.
    /// The queues are groups of `sharding.shards()`, one per source (subject
    /// partition): an instrument's partition is not known here, so each group's owner
    /// gets the row.
    sharding: Sharding,
}

impl ReferenceFeed {
    /// A feed over the shards' queues, in shard order.
    ///
    /// # Panics
    /// When `queues` is empty: there is always at least one shard.
    pub fn new(queues: Vec<rtrb::Producer<ReferenceUpdate>>) -> ReferenceFeed {
        assert!(!queues.is_empty(), "a reference feed needs a shard");
        let sharding = Sharding::new(queues.len(), 1);
        ReferenceFeed { queues, sharding }
    }

    /// [`ReferenceFeed::new`] for groups of shards each laid out by `sharding` (a
    /// ClickHouse cluster; several partitions).
    pub fn with_sharding(
        queues: Vec<rtrb::Producer<ReferenceUpdate>>,
        sharding: Sharding,
    ) -> ReferenceFeed {
        assert!(
            !queues.is_empty() && queues.len() % sharding.shards() == 0,
            "whole groups of shards"
        );
        ReferenceFeed { queues, sharding }
    }

    /// Number of shards fed.
    pub fn shards(&self) -> usize {
        self.queues.len()
    }

    /// Queues `update` for the shard that owns its instrument, waiting while that
    /// queue is full. `Err(Halt::Stop)` when the stop flag rose meanwhile.
    fn push(
        &mut self,
        update: ReferenceUpdate,
        stop: &AtomicBool,
        stats: &RefdataStats,
    ) -> Result<(), Halt> {
        let (local, per_group) = (self.sharding.shard_of(update.token), self.sharding.shards());
        for base in (0..self.queues.len()).step_by(per_group) {
            self.push_to(base + local, update, stop, stats)?;
        }
        Ok(())
    }

    fn push_to(
        &mut self,
        shard: usize,
        update: ReferenceUpdate,
        stop: &AtomicBool,
        stats: &RefdataStats,
    ) -> Result<(), Halt> {
        let queue = &mut self.queues[shard];
        let mut waited = false;
        // Bounded by the stop flag, and by the shard draining or exiting.
        while queue.push(update).is_err() {
            if queue.is_abandoned() {
                return Ok(());
            }
            if !waited {
                stats.queue_full_total.fetch_add(1, Ordering::Relaxed);
                waited = true;
            }
            if stop.load(Ordering::Relaxed) {
                return Err(Halt::Stop);
            }
            std::thread::sleep(QUEUE_FULL_SLEEP);
        }
        stats.updates_sent_total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Counters of the refdata thread, for the status line and tests. All `Relaxed`:
/// each is a number on its own, read by the control side only.
#[derive(Debug, Default)]
pub struct RefdataStats {
    /// Sessions opened with PostgreSQL, the first included.
    pub connects_total: AtomicU64,
    /// Connected, LISTENing, and the last load complete.
    pub connected: AtomicBool,
    /// Instruments whose reference data the shards have been sent (a gauge).
    pub instruments: AtomicU64,
    /// Full loads of the table completed (1 after start, one more per reconnect).
    pub loads_total: AtomicU64,
    /// Changed rows re-read after a notification.
    pub changes_total: AtomicU64,
    /// Reference updates queued to shards (loads and changes; unchanged rows are not sent).
    pub updates_sent_total: AtomicU64,
    /// Rows skipped: a value not exactly a price, or a token out of range.
    pub rows_skipped_total: AtomicU64,
    /// Failed connects and queries, and connections lost.
    pub errors_total: AtomicU64,
    /// Times a full shard queue made the thread wait.
    pub queue_full_total: AtomicU64,
}

/// How the thread reaches PostgreSQL.
#[derive(Clone)]
pub struct RefdataConfig {
    /// `postgres.url`; may hold a password, so never logged unredacted.
    pub url: String,
    /// `postgres.connect_timeout_ms`.
    pub connect_timeout: Duration,
    /// `postgres.backoff_initial_ms`.
    pub backoff_initial: Duration,
    /// `postgres.backoff_max_ms`.
    pub backoff_max: Duration,
    /// Longest wait on the notification socket before looking at the stop flag.
    pub poll: Duration,
    /// `postgres.tls*`.
    pub tls: crate::tls::Settings,
}

impl RefdataConfig {
    /// The settings from the `[postgres]` section.
    pub fn from_config(config: &Config) -> RefdataConfig {
        let p = &config.postgres;
        RefdataConfig {
            url: p.url.clone(),
            connect_timeout: Duration::from_millis(p.connect_timeout_ms),
            backoff_initial: Duration::from_millis(p.backoff_initial_ms),
            backoff_max: Duration::from_millis(p.backoff_max_ms),
            poll: POLL_INTERVAL,
            tls: p.tls_settings(),
        }
    }
}

impl std::fmt::Debug for RefdataConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefdataConfig")
            .field("url", &redact_url(&self.url))
            .field("connect_timeout", &self.connect_timeout)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("poll", &self.poll)
            .finish()
    }
}

/// Why the thread lost PostgreSQL; it retries after each.
#[derive(Debug, thiserror::Error)]
pub enum RefdataError {
    /// `postgres.url` is not a connection string the driver takes.
    #[error(
        "cannot read `postgres.url` {url}: {message}; write it like postgres://user@host:5432/db"
    )]
    Url {
        /// The URL, redacted.
        url: String,
        /// The driver's reason.
        message: String,
    },
    /// The server did not accept a connection.
    #[error("cannot connect to PostgreSQL at {url}: {message}; check `postgres.url` (POSTGRES_URL) and that the server is up")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// The driver's reason.
        message: String,
    },
    /// A statement failed.
    #[error("PostgreSQL {op} failed: {message}{hint}")]
    Query {
        /// What was being done.
        op: &'static str,
        /// The server's message and SQLSTATE, or the driver's.
        message: String,
        /// What to do about it, when known.
        hint: &'static str,
    },
    /// The server closed the connection.
    #[error("the PostgreSQL connection closed")]
    Closed,
}

/// Why a session ended.
#[derive(Debug)]
enum Halt {
    /// The stop flag rose: end the thread.
    Stop,
    /// PostgreSQL failed: count, back off, reconnect.
    Failed(RefdataError),
}

impl From<RefdataError> for Halt {
    fn from(error: RefdataError) -> Halt {
        Halt::Failed(error)
    }
}

/// A row that cannot become reference data: the column at fault and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skip {
    /// The column, e.g. `tick_size`.
    pub column: &'static str,
    /// Why its value was refused.
    pub reason: DecimalError,
}

/// The reference data of one row of `instruments`, from its decimals as text (NULL
/// circuit limits are unknown, zero). Every value must be an exact [`Price`]; a tick
/// size must be positive and a circuit limit not negative, else the row is refused
/// naming the column, and the instrument keeps no reference data at all: a half-read
/// row could pair a new limit with an old one.
pub fn reference_of(
    tick_size: &str,
    circuit_lower: Option<&str>,
    circuit_upper: Option<&str>,
) -> Result<Reference, Skip> {
    let read = |column, text: Option<&str>, least: i64| match text {
        None => Ok(Price::ZERO),
        Some(text) => match Price::from_decimal(text) {
            Ok(price) if price.0 >= least => Ok(price),
            Ok(_) => Err(Skip {
                column,
                reason: DecimalError::OutOfRange,
            }),
            Err(reason) => Err(Skip { column, reason }),
        },
    };
    Ok(Reference {
        tick_size: read("tick_size", Some(tick_size), 1)?,
        circuit_lower: read("lower_circuit_limit", circuit_lower, 0)?,
        circuit_upper: read("upper_circuit_limit", circuit_upper, 0)?,
    })
}

/// The token a notification payload names (`{"op": .., "instrument_token": N}`).
pub fn token_of(payload: &str) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Change {
        instrument_token: i64,
    }
    let change: Change = serde_json::from_str(payload).ok()?;
    u32::try_from(change.instrument_token).ok()
}

/// The refdata thread's state.
pub struct Refdata {
    /// Connection settings.
    config: RefdataConfig,
    /// The shards' queues.
    feed: ReferenceFeed,
    /// Counters, shared with the control side.
    stats: Arc<RefdataStats>,
    /// Raised when the appliance stops.
    stop: Arc<AtomicBool>,
    /// What each shard was last sent, per token: loads send only differences, and a
    /// reload clears tokens that are no longer in the table.
    sent: HashMap<u32, Reference>,
    /// Rows skipped in the current load or batch, for rate-limited warnings.
    skips_logged: u64,
    /// The Redis thread's `instrument:{token}` rows, when the cache is on.
    cache: Option<SyncSender<InstrumentChange>>,
    /// Rows of the load in progress, for the Redis thread.
    loaded: Vec<InstrumentMeta>,
}

impl Refdata {
    /// A thread state; nothing connects until [`Refdata::run`].
    pub fn new(
        config: RefdataConfig,
        feed: ReferenceFeed,
        stats: Arc<RefdataStats>,
        stop: Arc<AtomicBool>,
    ) -> Refdata {
        Refdata {
            config,
            feed,
            stats,
            stop,
            sent: HashMap::new(),
            skips_logged: 0,
            cache: None,
            loaded: Vec::new(),
        }
    }

    /// Also sends every instrument row to the Redis thread (`instrument:{token}`).
    pub fn with_cache(mut self, tx: SyncSender<InstrumentChange>) -> Refdata {
        self.cache = Some(tx);
        self
    }

    /// Hands a change to the Redis thread; a thread that is gone is forgotten.
    fn tell_cache(&mut self, change: InstrumentChange) {
        if let Some(tx) = &self.cache {
            if !send_instrument(tx, change, &self.stop) {
                self.cache = None;
            }
        }
    }

    /// Starts the thread, named `refdata`, on `core` when given.
    pub fn spawn(self, core: Option<usize>) -> std::io::Result<JoinHandle<()>> {
        crate::runtime::spawn("refdata", core, move || self.run())
    }

    /// The thread's main loop: sessions until the stop flag rises, backing off
    /// between them.
    pub fn run(mut self) {
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut outage = false;
        loop {
            let error = match self.session(&mut backoff, &mut outage) {
                Ok(()) | Err(Halt::Stop) => return,
                Err(Halt::Failed(error)) => error,
            };
            self.stats.connected.store(false, Ordering::Relaxed);
            self.stats.errors_total.fetch_add(1, Ordering::Relaxed);
            let attempt = backoff.attempts() + 1;
            if !outage {
                outage = true;
                let kept = self.sent.len();
                let effect = if kept == 0 {
                    "ticks are stored without tick-size and circuit checks until PostgreSQL answers"
                } else {
                    "the shards keep the reference data they have until PostgreSQL answers"
                };
                tracing::warn!(error = %error, instruments = kept, "Reference data unavailable: {effect}; retrying with backoff");
            } else {
                tracing::debug!(error = %error, attempt, "Reference data still unavailable");
            }
            if self.pause(backoff.next_delay()).is_err() {
                return;
            }
        }
    }

    /// One connection: LISTEN, load everything, then follow the changes.
    fn session(&mut self, backoff: &mut Backoff, outage: &mut bool) -> Result<(), Halt> {
        if self.stopped() {
            return Err(Halt::Stop);
        }
        let mut client = self.connect()?;
        self.stats.connects_total.fetch_add(1, Ordering::Relaxed);
        // LISTEN before loading: a change committed during the load is then
        // notified too, rather than falling between the two.
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(query("LISTEN", ""))?;
        let started = Instant::now();
        let skipped = self.load_all(&mut client)?;
        self.stats.connected.store(true, Ordering::Relaxed);
        backoff.reset();
        let instruments = self.sent.len();
        let load_ms = started.elapsed().as_millis() as u64;
        if std::mem::take(outage) {
            tracing::info!(
                instruments,
                skipped,
                load_ms,
                "PostgreSQL is back; reference data reloaded"
            );
        } else {
            tracing::info!(instruments, skipped, load_ms, "Reference data loaded");
        }
        self.follow(&mut client)
    }

    /// Connects with the timeouts that bound every later wait.
    fn connect(&self) -> Result<postgres::Client, RefdataError> {
        let url = || redact_url(&self.config.url);
        let mut pg: postgres::Config =
            self.config
                .url
                .parse()
                .map_err(|error: postgres::Error| RefdataError::Url {
                    url: url(),
                    message: error.to_string(),
                })?;
        slow_path_settings(&mut pg, self.config.connect_timeout, APPLICATION_NAME);
        let mut client =
            crate::tls::connect_postgres(&mut pg, &self.config.tls).map_err(|error| {
                RefdataError::Connect {
                    url: url(),
                    message: connect_message(&error),
                }
            })?;
        client
            .batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            .map_err(query("SET statement_timeout", ""))?;
        Ok(client)
    }

    /// Loads every row and sends what changed since the last load, clearing tokens
    /// that are gone. Returns the rows skipped.
    fn load_all(&mut self, client: &mut postgres::Client) -> Result<u64, Halt> {
        let rows = client.query(SELECT_ALL, &[]).map_err(query(
            "loading instruments",
            "; run `alphapt-storage migrate up` if the table is missing",
        ))?;
        self.skips_logged = 0;
        let mut present = HashSet::with_capacity(rows.len());
        self.loaded.clear();
        for row in &rows {
            if let Some(token) = self.apply_row(row)? {
                present.insert(token);
            }
        }
        let loaded = std::mem::take(&mut self.loaded);
        self.tell_cache(InstrumentChange::All(loaded));
        let gone: Vec<u32> = self
            .sent
            .keys()
            .copied()
            .filter(|token| !present.contains(token))
            .collect();
        for token in gone {
            self.send(token, Reference::default())?;
        }
        if self.skips_logged > SKIPS_LOGGED_MAX {
            tracing::warn!(
                skipped = self.skips_logged - SKIPS_LOGGED_MAX,
                "More instruments skipped than logged; see alphapt refdata rows_skipped"
            );
        }
        self.stats.loads_total.fetch_add(1, Ordering::Relaxed);
        Ok(self.skips_logged)
    }

    /// Waits for notifications and applies them, until the stop flag or a failure.
    fn follow(&mut self, client: &mut postgres::Client) -> Result<(), Halt> {
        let mut tokens = BTreeSet::new();
        // Main loop of a session: bounded by the stop flag and the connection.
        loop {
            if self.stopped() {
                return Err(Halt::Stop);
            }
            let mut reload = false;
            {
                let mut notifications = client.notifications();
                let mut waiting = notifications.timeout_iter(self.config.poll);
                // The first wait takes up to `poll`; later ones return buffered changes.
                while tokens.len() < CHANGES_PER_BATCH_MAX {
                    let next = waiting
                        .next()
                        .map_err(query("waiting for notifications", ""))?;
                    let Some(note) = next else { break };
                    match token_of(note.payload()) {
                        Some(token) => {
                            tokens.insert(token);
                        }
                        None => {
                            tracing::warn!(
                                payload = note.payload(),
                                "Unreadable {CHANNEL} notification; reloading every instrument"
                            );
                            reload = true;
                        }
                    }
                }
            }
            if tokens.is_empty() && !reload && client.is_closed() {
                return Err(Halt::Failed(RefdataError::Closed));
            }
            self.skips_logged = 0;
            if reload {
                self.load_all(client)?;
                tokens.clear();
            }
            while let Some(token) = tokens.pop_first() {
                self.reread(client, token)?;
            }
        }
    }

    /// Re-reads one instrument after a change; a missing row clears its reference.
    fn reread(&mut self, client: &mut postgres::Client, token: u32) -> Result<(), Halt> {
        let row = client
            .query_opt(SELECT_ONE, &[&i64::from(token)])
            .map_err(query("re-reading an instrument", ""))?;
        self.stats.changes_total.fetch_add(1, Ordering::Relaxed);
        match row {
            Some(row) => {
                self.apply_row(&row)?;
                if let Some(meta) = self.loaded.pop() {
                    self.tell_cache(InstrumentChange::Upsert(meta));
                }
                Ok(())
            }
            None => {
                self.tell_cache(InstrumentChange::Delete(token));
                self.send(token, Reference::default())
            }
        }
    }

    /// Converts one row and sends it; a skipped row clears what its token had.
    /// Returns the row's token when it is a valid one.
    fn apply_row(&mut self, row: &postgres::Row) -> Result<Option<u32>, Halt> {
        let raw_token: i64 = row.get(0);
        let Ok(token) = u32::try_from(raw_token) else {
            self.skip(raw_token, "instrument_token", DecimalError::OutOfRange);
            return Ok(None);
        };
        let tick_size: String = row.get(1);
        let lower: Option<String> = row.get(2);
        let upper: Option<String> = row.get(3);
        if self.cache.is_some() {
            self.loaded.push(InstrumentMeta {
                token,
                tradingsymbol: row.get(4),
                exchange: row.get(5),
                segment: row.get(6),
                tick_size: tick_size.clone(),
                lot_size: row.get(7),
                upper_circuit_limit: upper.clone().unwrap_or_default(),
                lower_circuit_limit: lower.clone().unwrap_or_default(),
            });
        }
        match reference_of(&tick_size, lower.as_deref(), upper.as_deref()) {
            Ok(reference) => self.send(token, reference)?,
            Err(skip) => {
                self.skip(i64::from(token), skip.column, skip.reason);
                self.send(token, Reference::default())?;
            }
        }
        Ok(Some(token))
    }

    /// Counts a skipped row; warns for the first few of a load, naming token and column.
    fn skip(&mut self, token: i64, column: &'static str, reason: DecimalError) {
        self.stats
            .rows_skipped_total
            .fetch_add(1, Ordering::Relaxed);
        self.skips_logged += 1;
        if self.skips_logged <= SKIPS_LOGGED_MAX {
            tracing::warn!(token, column, reason = %reason, "Instrument skipped: its reference data is not an exact price; fix the row in `instruments`");
        }
    }

    /// Sends `reference` for `token` unless the shard has it already.
    fn send(&mut self, token: u32, reference: Reference) -> Result<(), Halt> {
        let cleared = reference == Reference::default();
        let unchanged = match self.sent.get(&token) {
            Some(sent) => *sent == reference,
            None => cleared,
        };
        if unchanged {
            return Ok(());
        }
        let update = ReferenceUpdate { token, reference };
        self.feed.push(update, &self.stop, &self.stats)?;
        if cleared {
            self.sent.remove(&token);
        } else {
            self.sent.insert(token, reference);
        }
        self.stats
            .instruments
            .store(self.sent.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sleeps `delay` in slices of `poll`, so a stop is seen promptly.
    fn pause(&self, delay: Duration) -> Result<(), Halt> {
        let until = Instant::now() + delay;
        // Bounded by `delay` (at most `postgres.backoff_max_ms`).
        loop {
            if self.stopped() {
                return Err(Halt::Stop);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            // Parked, not asleep: a stop unparks the thread at once.
            std::thread::park_timeout(left.min(self.config.poll));
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The settings every slow-path PostgreSQL connection uses: a connect timeout, a
/// name in `pg_stat_activity`, and TCP keepalives so a vanished peer is noticed in
/// [`TCP_DEAD_AFTER`] (a statement timeout is set after connecting).
pub(crate) fn slow_path_settings(
    pg: &mut postgres::Config,
    connect_timeout: Duration,
    application_name: &str,
) {
    pg.connect_timeout(connect_timeout)
        .application_name(application_name)
        .keepalives(true)
        .keepalives_idle(TCP_DEAD_AFTER)
        .tcp_user_timeout(TCP_DEAD_AFTER);
}

/// A PostgreSQL client for a slow-path thread other than refdata (audit, quality
/// snapshots): [`slow_path_settings`] and the statement timeout; errors as one line
/// with the URL redacted.
pub(crate) fn slow_path_client(
    url: &str,
    tls: &crate::tls::Settings,
    connect_timeout: Duration,
    application_name: &str,
) -> Result<postgres::Client, String> {
    let shown = redact_url(url);
    let mut pg: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| format!("PostgreSQL URL {shown}: {e}"))?;
    slow_path_settings(&mut pg, connect_timeout, application_name);
    let mut client = crate::tls::connect_postgres(&mut pg, tls)
        .map_err(|e| format!("PostgreSQL at {shown}: {}", connect_message(&e)))?;
    client
        .batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        .map_err(|e| format!("PostgreSQL at {shown}: {}", with_causes(&e)))?;
    Ok(client)
}

/// A connect error as one line: the TLS setup's, or the driver's with its causes.
pub(crate) fn connect_message(error: &crate::tls::ConnectError) -> String {
    error.to_string()
}

/// The driver's error with its causes: "error connecting to server" alone does not
/// say that the connection was refused or timed out.
pub(crate) fn with_causes(error: &postgres::Error) -> String {
    let mut message = crate::migrate::postgres::message(error);
    let mut cause = std::error::Error::source(error);
    // Error chains are a few links long; four is plenty.
    for _ in 0..4 {
        let Some(next) = cause else { break };
        message.push_str(": ");
        message.push_str(&next.to_string());
        cause = next.source();
    }
    message
}

/// Maps a driver error to [`RefdataError::Query`] naming `op`.
fn query(op: &'static str, hint: &'static str) -> impl FnOnce(postgres::Error) -> RefdataError {
    move |error| {
        let missing_table = error.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE);
        RefdataError::Query {
            op,
            message: crate::migrate::postgres::message(&error),
            hint: if missing_table { hint } else { "" },
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pure halves: a row's decimals into a `Reference` (exact, or refused naming
    //! the column), notification payloads, and routing. PostgreSQL itself is
    //! exercised in `tests/refdata.rs`.
    use super::*;
    use crate::runtime::sizes::shard_of;

    #[test]
    fn rows_convert_exactly() {
        let reference = reference_of("0.050000", Some("1400.000000"), Some("1700.050000"));
        assert_eq!(
            reference,
            Ok(Reference {
                tick_size: Price(5_000_000),
                circuit_lower: Price(140_000_000_000),
                circuit_upper: Price(170_005_000_000),
            })
        );
        let unknown = reference_of("0.01", None, None).unwrap();
        assert_eq!(unknown.circuit_upper, Price::ZERO);
    }

    #[test]
    fn bad_values_name_their_column() {
        let cases = [
            (
                ("0.000000001", None, None),
                "tick_size",
                DecimalError::TooManyDecimals,
            ),
            (("0", None, None), "tick_size", DecimalError::OutOfRange),
            (("NaN", None, None), "tick_size", DecimalError::Syntax),
            (
                ("0.05", Some("-1"), None),
                "lower_circuit_limit",
                DecimalError::OutOfRange,
            ),
            (
                ("0.05", Some("1"), Some("100000000000.000000")),
                "upper_circuit_limit",
                DecimalError::OutOfRange,
            ),
        ];
        for ((tick, lower, upper), column, reason) in cases {
            assert_eq!(
                reference_of(tick, lower, upper),
                Err(Skip { column, reason }),
                "{tick} {lower:?} {upper:?}"
            );
        }
    }

    #[test]
    fn notification_payloads_name_a_token() {
        // The trigger's json_build_object output, spaces included.
        let payload = r#"{"op" : "UPDATE", "instrument_token" : 408065}"#;
        assert_eq!(token_of(payload), Some(408_065));
        assert_eq!(token_of(r#"{"op":"DELETE","instrument_token":-1}"#), None);
        assert_eq!(token_of("not json"), None);
    }

    #[test]
    fn feed_routes_like_the_receiver_and_stops_when_full() {
        // Each update lands in the queue of shard_of(token); a full queue with the stop
        // flag up returns instead of waiting.
        let (producers, mut consumers): (Vec<_>, Vec<_>) =
            (0..3).map(|_| reference_queue()).unzip();
        let mut feed = ReferenceFeed::new(producers);
        let stats = RefdataStats::default();
        let stop = AtomicBool::new(false);
        for token in 0..30 {
            let update = ReferenceUpdate {
                token,
                reference: Reference::default(),
            };
            feed.push(update, &stop, &stats).unwrap();
        }
        for (shard, consumer) in consumers.iter_mut().enumerate() {
            while let Ok(update) = consumer.pop() {
                assert_eq!(shard_of(update.token, 3), shard);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let update = ReferenceUpdate::default();
        for _ in 0..REFERENCE_QUEUE_SLOTS {
            feed.push(update, &stop, &stats).unwrap();
        }
        assert!(matches!(feed.push(update, &stop, &stats), Err(Halt::Stop)));
        assert_eq!(stats.queue_full_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn grouped_feed_gives_each_partition_group_its_owner_a_copy() {
        // Two groups (partitions) of two shards: a row goes to the owner in each group,
        // the shard a group's receiver routes the instrument's ticks to.
        let (producers, mut consumers): (Vec<_>, Vec<_>) =
            (0..4).map(|_| reference_queue()).unzip();
        let mut feed = ReferenceFeed::with_sharding(producers, Sharding::new(2, 1));
        let (stats, stop) = (RefdataStats::default(), AtomicBool::new(false));
        for token in 0..20 {
            let update = ReferenceUpdate {
                token,
                reference: Reference::default(),
            };
            feed.push(update, &stop, &stats).unwrap();
        }
        let mut per_group = [0, 0];
        for (shard, consumer) in consumers.iter_mut().enumerate() {
            while let Ok(update) = consumer.pop() {
                assert_eq!(shard_of(update.token, 2), shard % 2);
                per_group[shard / 2] += 1;
            }
        }
        assert_eq!(per_group, [20, 20]);
    }
}
