//! The JetStream API over a [`NatsConn`]: streams, durable pull consumers, pulls,
//! acks, and publishing with a window of outstanding PubAcks.
//!
//! ```text
//!   ensure_stream / ensure_consumer / consumer_info   (request/reply on $JS.API.>, at start)
//!   pull ──PUB $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable> reply=<inbox> {"batch":N,"expires":ns}──► server
//!   server ──MSG <inbox> reply=$JS.ACK.…──► poll callback ──parse_ack_subject──► stream seq
//!   ack ──PUB <$JS.ACK.… of the newest durable message> "+ACK"──► server (AckAll: acks all below)
//! ```
//!
//! Back-pressure: the server delivers at most `max_ack_pending` unacknowledged messages
//! and at most `batch` per pull, so the receiver sets its tempo by pulling.
//!
//! JetStream API subjects used (nats-server 2.9 `server/jetstream_api.go`):
//!
//! | request | subject | body |
//! | --- | --- | --- |
//! | stream info | `$JS.API.STREAM.INFO.<stream>` | empty |
//! | stream create | `$JS.API.STREAM.CREATE.<stream>` | stream config |
//! | stream delete | `$JS.API.STREAM.DELETE.<stream>` | empty |
//! | stream purge | `$JS.API.STREAM.PURGE.<stream>` | empty |
//! | message get | `$JS.API.STREAM.MSG.GET.<stream>` | `{"seq":N}` (10037: deleted or absent) |
//! | message delete | `$JS.API.STREAM.MSG.DELETE.<stream>` | `{"seq":N,"no_erase":true}` |
//! | durable create/update | `$JS.API.CONSUMER.DURABLE.CREATE.<stream>.<durable>` | `{"stream_name":..,"config":{..}}` |
//! | consumer info | `$JS.API.CONSUMER.INFO.<stream>.<consumer>` | empty |
//! | consumer delete | `$JS.API.CONSUMER.DELETE.<stream>.<consumer>` | empty |
//! | pull | `$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>` | `{"batch":N,"expires":ns}` |
//!
//! Errors come back as `{"error":{"code":404,"err_code":10059,"description":"stream not found"}}`;
//! 10059 is stream-not-found and 10014 consumer-not-found (`server/errors.json`).
//!
//! Ack reply subjects (nats.go `jsm.go` `parseAck`/`getMetadataFields`, ADR-15):
//!
//! | tokens | layout |
//! | --- | --- |
//! | 9 | `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts_ns>.<pending>` |
//! | 11 | `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts_ns>.<pending>` |
//! | 12 | the 11-token form plus a random token |
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::conn::NatsConn;
use super::error::NatsError;
use super::wire::{self, ServerOp};

/// JetStream's error code for "stream not found".
const ERR_STREAM_NOT_FOUND: u32 = 10059;
/// JetStream's error code for "consumer not found".
const ERR_CONSUMER_NOT_FOUND: u32 = 10014;
/// JetStream's error code for "no message found" (`STREAM.MSG.GET` of a deleted sequence).
const ERR_NO_MESSAGE_FOUND: u32 = 10037;

/// What a stream holds, from `STREAM.INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// `limits`, `interest` or `workqueue`: what removes a message.
    pub retention: String,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Sequence of the oldest stored message (0 when empty).
    pub first_seq: u64,
    /// Sequence of the newest stored message (0 when never written).
    pub last_seq: u64,
    /// Consumers on the stream.
    pub consumer_count: u64,
    /// When the server created the stream, Unix ms (0 when the answer had no time):
    /// the stream's identity, since a stream deleted and created again under the same
    /// name restarts its sequences.
    pub created_ms: i64,
}

/// A consumer sequence and the stream sequence of the same message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SequencePair {
    /// Position in the consumer's delivery order.
    pub consumer_seq: u64,
    /// Position in the stream.
    pub stream_seq: u64,
}

/// The state of a consumer, from `CONSUMER.INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Stream name.
    pub stream: String,
    /// Consumer (durable) name.
    pub name: String,
    /// Filter subject, empty for all of the stream.
    pub filter_subject: String,
    /// `none`, `all` or `explicit`.
    pub ack_policy: String,
    /// Time before an unacknowledged delivery is redelivered.
    pub ack_wait: Duration,
    /// Most unacknowledged deliveries outstanding.
    pub max_ack_pending: i64,
    /// Messages in the stream not yet delivered.
    pub num_pending: u64,
    /// Delivered and not yet acknowledged.
    pub num_ack_pending: u64,
    /// Messages redelivered at least once.
    pub num_redelivered: u64,
    /// Pull requests waiting.
    pub num_waiting: u64,
    /// Newest delivery.
    pub delivered: SequencePair,
    /// Everything at or below is acknowledged.
    pub ack_floor: SequencePair,
}

/// What we want of a durable pull consumer.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerSpec<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Durable name.
    pub durable: &'a str,
    /// Subjects of the stream it delivers; empty for all.
    pub filter_subject: &'a str,
    /// Redelivery delay; must exceed the worst time to durable (DESIGN §2).
    pub ack_wait: Duration,
    /// Most unacknowledged messages in flight; must cover rings, open blocks and writer queues.
    pub max_ack_pending: u32,
    /// `ack_policy: none` (no ack window: `ack_wait` and `max_ack_pending` are not sent,
    /// the server refuses a max_ack_pending without acks) instead of `all`.
    pub ack_none: bool,
}

impl ConsumerSpec<'_> {
    /// The ack policy as JetStream names it.
    pub fn ack_policy(&self) -> &'static str {
        if self.ack_none {
            "none"
        } else {
            "all"
        }
    }
}

/// What `ensure_consumer` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerOutcome {
    /// It did not exist and was created.
    Created,
    /// It existed with the wanted settings.
    Unchanged,
    /// It existed with another `ack_wait` or `max_ack_pending` and was updated in place;
    /// its ack floor is kept.
    Updated,
    /// It existed with settings that cannot be updated (filter, ack policy), or the
    /// update was refused, and was deleted and created again: delivery restarts at the
    /// first stream message, and the appliance skips sequences already stored.
    Recreated,
}

/// Metadata of one JetStream delivery, from its ack reply subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckInfo {
    /// Position in the stream.
    pub stream_seq: u64,
    /// Position in the consumer's delivery order.
    pub consumer_seq: u64,
    /// How many times it has been delivered (1 the first time).
    pub delivered: u64,
    /// Messages left for the consumer after this one.
    pub pending: u64,
    /// When the stream stored it, Unix nanoseconds.
    pub timestamp_ns: i64,
}

/// Parses `$JS.ACK...` in its 9-, 11- or 12-token forms; `None` for anything else.
///
/// The five numbers are the last five tokens (9 and 11 tokens) or the five before a
/// random last token (12). The receiver reads them for every delivery, so the subject
/// is not split into tokens: its dots are counted, and only the numbers are walked,
/// from the end (`benches/nats.rs` `ack_subject`: 61 ns against 66-68 ns split first).
pub fn parse_ack_subject(reply: &[u8]) -> Option<AckInfo> {
    let rest = reply.strip_prefix(b"$JS.ACK.")?;
    // Dots after the prefix: stream.consumer.5 numbers (6); domain.account.stream.
    // consumer.5 numbers (8); the same and a random token (9).
    let mut numbers = match rest.iter().filter(|&&b| b == b'.').count() {
        6 | 8 => rest,
        9 => &rest[..rest.iter().rposition(|&b| b == b'.')?],
        _ => return None,
    };
    // delivered, stream seq, consumer seq, timestamp, pending; filled from the end.
    let mut values = [0u64; 5];
    for value in values.iter_mut().rev() {
        // At least two tokens (stream, consumer) precede the numbers, so a dot is there.
        let dot = numbers.iter().rposition(|&b| b == b'.')?;
        *value = wire::parse_u64(&numbers[dot + 1..])?;
        numbers = &numbers[..dot];
    }
    let [delivered, stream_seq, consumer_seq, timestamp_ns, pending] = values;
    Some(AckInfo {
        delivered,
        stream_seq,
        consumer_seq,
        timestamp_ns: i64::try_from(timestamp_ns).ok()?,
        pending,
    })
}

/// The payload of an acknowledgement: `+ACK` (an empty payload acks too).
pub const ACK: &[u8] = b"+ACK";

/// `STREAM.INFO` / `STREAM.CREATE` answers as the API returns them; only the fields we read.
#[derive(Deserialize)]
struct StreamInfoWire {
    /// The stream's configuration.
    config: StreamConfigWire,
    /// Creation time, RFC 3339 with nanoseconds.
    #[serde(default)]
    created: String,
    /// Its counters.
    state: StreamStateWire,
}

/// The `config` object of a stream answer.
#[derive(Deserialize)]
struct StreamConfigWire {
    /// Stream name.
    name: String,
    /// Subjects captured.
    #[serde(default)]
    subjects: Vec<String>,
    /// `limits`, `interest` or `workqueue`.
    #[serde(default)]
    retention: String,
}

/// The `state` object of a stream answer.
#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamStateWire {
    /// Messages stored.
    messages: u64,
    /// Bytes stored.
    bytes: u64,
    /// Oldest sequence stored.
    first_seq: u64,
    /// Newest sequence stored.
    last_seq: u64,
    /// Consumers attached.
    consumer_count: u64,
}

/// `CONSUMER.INFO` / `DURABLE.CREATE` answers; only the fields we read.
#[derive(Deserialize)]
struct ConsumerInfoWire {
    /// Stream name.
    stream_name: String,
    /// Consumer name.
    name: String,
    /// The consumer's configuration.
    config: ConsumerConfigWire,
    /// Newest delivery.
    #[serde(default)]
    delivered: SequencePair,
    /// Acknowledged up to here.
    #[serde(default)]
    ack_floor: SequencePair,
    /// Delivered, not acknowledged.
    #[serde(default)]
    num_ack_pending: u64,
    /// Redelivered, not acknowledged.
    #[serde(default)]
    num_redelivered: u64,
    /// Pull requests waiting.
    #[serde(default)]
    num_waiting: u64,
    /// Not yet delivered.
    #[serde(default)]
    num_pending: u64,
}

/// The `config` object of a consumer answer.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ConsumerConfigWire {
    /// Filter subject, empty for the whole stream.
    filter_subject: String,
    /// `none`, `all` or `explicit`.
    ack_policy: String,
    /// Redelivery delay in nanoseconds.
    ack_wait: u64,
    /// Most unacknowledged deliveries.
    max_ack_pending: i64,
}

/// The JetStream API on one connection. Holds no connection itself, so the caller can
/// keep using the connection between calls.
#[derive(Debug)]
pub struct JetStream {
    /// Longest wait for an API answer.
    api_timeout: Duration,
    /// Reused buffer for pull subjects and bodies: no allocation per pull.
    scratch: Vec<u8>,
    /// Reused buffer for the pull body.
    body: Vec<u8>,
}

impl JetStream {
    /// An API handle waiting at most `api_timeout` for each answer.
    pub fn new(api_timeout: Duration) -> JetStream {
        JetStream {
            api_timeout,
            scratch: Vec::with_capacity(256),
            body: Vec::with_capacity(64),
        }
    }

    /// One API request; the JSON answer, or the API's error as [`NatsError::Api`].
    fn api(
        &self,
        conn: &mut NatsConn,
        subject: &str,
        body: &[u8],
    ) -> Result<serde_json::Value, NatsError> {
        let reply = conn.request(subject, body, self.api_timeout)?;
        let bad = |reason: String| NatsError::BadResponse {
            request: subject.to_owned(),
            reason,
        };
        if let Some(status) = reply.status {
            return Err(bad(format!("status {status} {}", reply.description)));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&reply.payload).map_err(|e| bad(format!("not JSON: {e}")))?;
        if let Some(error) = value.get("error") {
            return Err(NatsError::Api {
                request: subject.to_owned(),
                code: error["code"].as_u64().unwrap_or(0) as u16,
                err_code: error["err_code"].as_u64().unwrap_or(0) as u32,
                description: error["description"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(value)
    }

    /// Like `api`, decoding the answer into `T`.
    fn api_as<T: serde::de::DeserializeOwned>(
        &self,
        conn: &mut NatsConn,
        subject: &str,
        body: &[u8],
    ) -> Result<T, NatsError> {
        let value = self.api(conn, subject, body)?;
        serde_json::from_value(value).map_err(|e| NatsError::BadResponse {
            request: subject.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The stream's state, or `None` when it does not exist.
    pub fn stream_info(
        &self,
        conn: &mut NatsConn,
        stream: &str,
    ) -> Result<Option<StreamInfo>, NatsError> {
        let subject = format!("$JS.API.STREAM.INFO.{stream}");
        match self.api_as::<StreamInfoWire>(conn, &subject, b"") {
            Ok(info) => Ok(Some(stream_info(info))),
            Err(NatsError::Api {
                err_code: ERR_STREAM_NOT_FOUND,
                ..
            }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The stream, created on file storage with limits retention when absent (at most
    /// `max_bytes`, oldest discarded; 0 = unlimited). An existing stream with other
    /// subjects is an error, not silently changed; its limits are left as they are.
    /// Returns its state and whether it was created.
    pub fn ensure_stream(
        &self,
        conn: &mut NatsConn,
        stream: &str,
        subjects: &[&str],
        max_bytes: u64,
    ) -> Result<(StreamInfo, bool), NatsError> {
        if let Some(info) = self.stream_info(conn, stream)? {
            let mut found = info.subjects.clone();
            let mut wanted: Vec<String> = subjects.iter().map(|s| (*s).to_owned()).collect();
            found.sort();
            wanted.sort();
            if found != wanted {
                return Err(NatsError::StreamMismatch {
                    stream: stream.to_owned(),
                    found,
                    wanted,
                });
            }
            return Ok((info, false));
        }
        let config = serde_json::json!({
            "name": stream,
            "subjects": subjects,
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "num_replicas": 1,
            "max_msgs": -1,
            "max_bytes": if max_bytes == 0 { -1 } else { max_bytes.min(i64::MAX as u64) as i64 },
            "max_age": 0,
        });
        let subject = format!("$JS.API.STREAM.CREATE.{stream}");
        let info: StreamInfoWire = self.api_as(conn, &subject, config.to_string().as_bytes())?;
        Ok((stream_info(info), true))
    }

    /// Whether the stream still holds sequence `seq` (false: deleted, trimmed or never
    /// written). One `STREAM.MSG.GET` request; used at start only.
    pub fn message_exists(
        &self,
        conn: &mut NatsConn,
        stream: &str,
        seq: u64,
    ) -> Result<bool, NatsError> {
        let subject = format!("$JS.API.STREAM.MSG.GET.{stream}");
        self.message_request(conn, &subject, &format!("{{\"seq\":{seq}}}"))
    }

    /// Deletes one message; `false` when it was not there (tests and operators).
    pub fn delete_message(
        &self,
        conn: &mut NatsConn,
        stream: &str,
        seq: u64,
    ) -> Result<bool, NatsError> {
        let subject = format!("$JS.API.STREAM.MSG.DELETE.{stream}");
        let body = format!("{{\"seq\":{seq},\"no_erase\":true}}");
        self.message_request(conn, &subject, &body)
    }

    /// A request about one message: `false` when the stream has no such message.
    fn message_request(
        &self,
        conn: &mut NatsConn,
        subject: &str,
        body: &str,
    ) -> Result<bool, NatsError> {
        match self.api(conn, subject, body.as_bytes()) {
            Ok(_) => Ok(true),
            Err(NatsError::Api {
                err_code: ERR_NO_MESSAGE_FOUND,
                ..
            }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Purges the stream: every message gone, sequences go on from where they were.
    pub fn purge_stream(&self, conn: &mut NatsConn, stream: &str) -> Result<(), NatsError> {
        let subject = format!("$JS.API.STREAM.PURGE.{stream}");
        self.api(conn, &subject, b"").map(|_| ())
    }

    /// Deletes the stream; `false` when it did not exist.
    pub fn delete_stream(&self, conn: &mut NatsConn, stream: &str) -> Result<bool, NatsError> {
        let subject = format!("$JS.API.STREAM.DELETE.{stream}");
        match self.api(conn, &subject, b"") {
            Ok(_) => Ok(true),
            Err(NatsError::Api {
                err_code: ERR_STREAM_NOT_FOUND,
                ..
            }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// The consumer's state, or `None` when it does not exist.
    pub fn consumer_info(
        &self,
        conn: &mut NatsConn,
        stream: &str,
        consumer: &str,
    ) -> Result<Option<ConsumerInfo>, NatsError> {
        let subject = format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}");
        match self.api_as::<ConsumerInfoWire>(conn, &subject, b"") {
            Ok(info) => Ok(Some(consumer_info(info))),
            Err(NatsError::Api {
                err_code: ERR_CONSUMER_NOT_FOUND,
                ..
            }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Deletes the consumer; `false` when it did not exist.
    pub fn delete_consumer(
        &self,
        conn: &mut NatsConn,
        stream: &str,
        consumer: &str,
    ) -> Result<bool, NatsError> {
        let subject = format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}");
        match self.api(conn, &subject, b"") {
            Ok(_) => Ok(true),
            Err(NatsError::Api {
                err_code: ERR_CONSUMER_NOT_FOUND,
                ..
            }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// A durable pull consumer with the spec's ack policy, `deliver_policy: all` and the
    /// spec's ack window. An existing one with another ack window is updated in place; one
    /// with another filter or ack policy (or whose update is refused) is recreated.
    pub fn ensure_consumer(
        &self,
        conn: &mut NatsConn,
        spec: &ConsumerSpec<'_>,
    ) -> Result<(ConsumerInfo, ConsumerOutcome), NatsError> {
        let existing = self.consumer_info(conn, spec.stream, spec.durable)?;
        let outcome = match &existing {
            None => ConsumerOutcome::Created,
            Some(info)
                if info.filter_subject != spec.filter_subject
                    || info.ack_policy != spec.ack_policy() =>
            {
                ConsumerOutcome::Recreated
            }
            Some(info)
                if !spec.ack_none
                    && (info.ack_wait != spec.ack_wait
                        || info.max_ack_pending != i64::from(spec.max_ack_pending)) =>
            {
                ConsumerOutcome::Updated
            }
            Some(info) => return Ok((info.clone(), ConsumerOutcome::Unchanged)),
        };
        if outcome == ConsumerOutcome::Recreated {
            self.delete_consumer(conn, spec.stream, spec.durable)?;
        }
        match self.create_consumer(conn, spec) {
            Ok(info) => Ok((info, outcome)),
            Err(NatsError::Api { .. }) if outcome == ConsumerOutcome::Updated => {
                tracing::warn!(
                    stream = spec.stream,
                    durable = spec.durable,
                    "Consumer update refused; recreating it"
                );
                self.delete_consumer(conn, spec.stream, spec.durable)?;
                Ok((
                    self.create_consumer(conn, spec)?,
                    ConsumerOutcome::Recreated,
                ))
            }
            Err(other) => Err(other),
        }
    }

    /// Deletes the durable and creates it again delivering from `start_seq`, so the
    /// messages a crashed session left delivered-but-unacked come first and in order,
    /// instead of being redelivered after `ack_wait` behind newer ones (where an AckAll
    /// on a newer message would acknowledge them unseen).
    pub fn restart_consumer_at(
        &self,
        conn: &mut NatsConn,
        spec: &ConsumerSpec<'_>,
        start_seq: u64,
    ) -> Result<ConsumerInfo, NatsError> {
        self.delete_consumer(conn, spec.stream, spec.durable)?;
        self.create_consumer_at(conn, spec, Some(start_seq))
    }

    /// `CONSUMER.DURABLE.CREATE`, which also updates an existing durable in 2.9.
    fn create_consumer(
        &self,
        conn: &mut NatsConn,
        spec: &ConsumerSpec<'_>,
    ) -> Result<ConsumerInfo, NatsError> {
        self.create_consumer_at(conn, spec, None)
    }

    /// Creates (or updates) the durable, delivering from `start_seq` when given.
    fn create_consumer_at(
        &self,
        conn: &mut NatsConn,
        spec: &ConsumerSpec<'_>,
        start_seq: Option<u64>,
    ) -> Result<ConsumerInfo, NatsError> {
        let mut config = serde_json::json!({
            "durable_name": spec.durable,
            "deliver_policy": "all",
            "ack_policy": spec.ack_policy(),
            "max_deliver": -1,
            "replay_policy": "instant",
        });
        if !spec.ack_none {
            config["ack_wait"] = (spec.ack_wait.as_nanos() as u64).into();
            config["max_ack_pending"] = spec.max_ack_pending.into();
        }
        if !spec.filter_subject.is_empty() {
            config["filter_subject"] = spec.filter_subject.into();
        }
        if let Some(start) = start_seq {
            config["deliver_policy"] = "by_start_sequence".into();
            config["opt_start_seq"] = start.into();
        }
        let body = serde_json::json!({ "stream_name": spec.stream, "config": config });
        let subject = format!(
            "$JS.API.CONSUMER.DURABLE.CREATE.{}.{}",
            spec.stream, spec.durable
        );
        let info: ConsumerInfoWire = self.api_as(conn, &subject, body.to_string().as_bytes())?;
        Ok(consumer_info(info))
    }

    /// Queues a pull request for up to `batch` messages, delivered to `reply_inbox`
    /// (which the caller has subscribed to); the server ends it with a 408 status after
    /// `expires` if fewer arrived. No allocation after the first call.
    pub fn pull(
        &mut self,
        conn: &mut NatsConn,
        stream: &str,
        durable: &str,
        batch: u32,
        expires: Duration,
        reply_inbox: &str,
    ) -> Result<(), NatsError> {
        self.scratch.clear();
        self.scratch
            .extend_from_slice(b"$JS.API.CONSUMER.MSG.NEXT.");
        self.scratch.extend_from_slice(stream.as_bytes());
        self.scratch.push(b'.');
        self.scratch.extend_from_slice(durable.as_bytes());
        self.body.clear();
        self.body.extend_from_slice(b"{\"batch\":");
        wire::push_u64(&mut self.body, u64::from(batch));
        self.body.extend_from_slice(b",\"expires\":");
        wire::push_u64(&mut self.body, expires.as_nanos() as u64);
        self.body.push(b'}');
        conn.publish(&self.scratch, Some(reply_inbox.as_bytes()), &self.body)
    }
}

/// Acknowledges the delivery whose reply subject is `ack_reply`; under AckAll this acks
/// every lower consumer sequence too. Queued: call `flush` to send.
pub fn ack(conn: &mut NatsConn, ack_reply: &[u8]) -> Result<(), NatsError> {
    conn.publish(ack_reply, None, ACK)
}

/// Acknowledges and waits for the server to confirm it processed the ack.
pub fn ack_sync(conn: &mut NatsConn, ack_reply: &str, timeout: Duration) -> Result<(), NatsError> {
    conn.request(ack_reply, ACK, timeout).map(|_| ())
}

fn stream_info(info: StreamInfoWire) -> StreamInfo {
    StreamInfo {
        name: info.config.name,
        subjects: info.config.subjects,
        retention: info.config.retention,
        messages: info.state.messages,
        bytes: info.state.bytes,
        first_seq: info.state.first_seq,
        last_seq: info.state.last_seq,
        consumer_count: info.state.consumer_count,
        created_ms: crate::shard::parse::json::parse_iso8601_ms(info.created.as_bytes())
            .unwrap_or(0),
    }
}

fn consumer_info(info: ConsumerInfoWire) -> ConsumerInfo {
    ConsumerInfo {
        stream: info.stream_name,
        name: info.name,
        filter_subject: info.config.filter_subject,
        ack_policy: info.config.ack_policy,
        ack_wait: Duration::from_nanos(info.config.ack_wait),
        max_ack_pending: info.config.max_ack_pending,
        num_pending: info.num_pending,
        num_ack_pending: info.num_ack_pending,
        num_redelivered: info.num_redelivered,
        num_waiting: info.num_waiting,
        delivered: info.delivered,
        ack_floor: info.ack_floor,
    }
}

/// Counts of PubAcks, owned by [`PublishWindow`] and updated from the poll callback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PubAckCounts {
    /// Publishes acknowledged as stored.
    pub acked: u64,
    /// Of those, reported as duplicates (same `Nats-Msg-Id` within the window).
    pub duplicates: u64,
    /// Publishes answered with an error or a 503 (no stream captures the subject).
    pub errors: u64,
    /// Highest stream sequence acknowledged.
    pub seq_last: u64,
    /// The first error's text, for the report.
    pub first_error: Option<String>,
}

impl PubAckCounts {
    /// Accounts one PubAck payload or status message.
    fn account(&mut self, status: Option<u16>, payload: &[u8]) {
        let seq = if status.is_none() {
            pub_ack_seq(payload)
        } else {
            None
        };
        match seq {
            Some(seq) => {
                self.acked += 1;
                self.seq_last = self.seq_last.max(seq);
                if memchr::memmem::find(payload, b"\"duplicate\":true").is_some() {
                    self.duplicates += 1;
                }
            }
            None => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(match status {
                        Some(503) => {
                            "no stream captures the subject (503 no responders)".to_owned()
                        }
                        Some(code) => format!("status {code}"),
                        None => {
                            String::from_utf8_lossy(&payload[..payload.len().min(200)]).into_owned()
                        }
                    });
                }
            }
        }
    }
}

/// The stream sequence in a PubAck `{"stream":"S","seq":N[,"duplicate":true]}`, or
/// `None` for an error answer. A byte scan, not a JSON parse: it runs once per publish.
pub fn pub_ack_seq(payload: &[u8]) -> Option<u64> {
    if memchr::memmem::find(payload, b"\"error\"").is_some() {
        return None;
    }
    let at = memchr::memmem::find(payload, b"\"seq\":")? + 6;
    let digits = &payload[at..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    wire::parse_u64(&digits[..end])
}

/// JetStream publishing with up to `window` publishes awaiting their PubAck: each
/// message is a `PUB` with one shared reply inbox; the server answers every one in
/// order. Matching answers to publishes is not needed to count them, so the inbox is
/// shared and nothing is allocated per message.
#[derive(Debug)]
pub struct PublishWindow {
    /// The reply inbox all PubAcks come to.
    reply: Vec<u8>,
    /// Subscription id of `reply`.
    sid: u64,
    /// Most publishes awaiting an answer.
    window: usize,
    /// Publishes sent and not yet answered.
    outstanding: u64,
    /// What the answers said.
    counts: PubAckCounts,
}

impl PublishWindow {
    /// Subscribes a reply inbox on `conn` and allows `window` (≥ 1) outstanding publishes.
    pub fn new(conn: &mut NatsConn, window: usize) -> Result<PublishWindow, NatsError> {
        let reply = conn.new_inbox("puback");
        let sid = conn.subscribe(&reply, None)?;
        conn.round_trip(conn.io_timeout())?;
        Ok(PublishWindow {
            reply: reply.into_bytes(),
            sid,
            window: window.max(1),
            outstanding: 0,
            counts: PubAckCounts::default(),
        })
    }

    /// Publishes `payload` to `subject`, first waiting (at most `timeout` without any
    /// answer) while the window is full.
    #[inline]
    pub fn publish(
        &mut self,
        conn: &mut NatsConn,
        subject: &[u8],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), NatsError> {
        if self.outstanding >= self.window as u64 {
            conn.flush()?;
            // Loop bound: each pass takes at least one answer or returns a timeout.
            while self.outstanding >= self.window as u64 {
                self.take_answers(conn, timeout)?;
            }
        }
        conn.publish(subject, Some(&self.reply), payload)?;
        self.outstanding += 1;
        Ok(())
    }

    /// Waits for at least one answer; a timeout error when none came within `timeout`.
    /// (A poll can return early with nothing when only part of an answer has arrived,
    /// hence the deadline rather than a single poll.)
    fn take_answers(&mut self, conn: &mut NatsConn, timeout: Duration) -> Result<(), NatsError> {
        let deadline = Instant::now() + timeout;
        let (sid, counts) = (self.sid, &mut self.counts);
        let mut answers = 0u64;
        let mut server_error: Option<String> = None;
        // Loop bound: the deadline.
        while answers == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NatsError::Timeout {
                    what: format!("PubAcks ({} outstanding)", self.outstanding),
                    waited_ms: timeout.as_millis() as u64,
                });
            }
            conn.poll(left, |op| match op {
                ServerOp::Msg(msg) if msg.sid == sid => {
                    answers += 1;
                    counts.account(msg.status(), msg.payload);
                }
                ServerOp::Err(text) => {
                    server_error = Some(String::from_utf8_lossy(text).into_owned())
                }
                _ => {}
            })?;
            if let Some(message) = server_error.take() {
                return Err(NatsError::Server { message });
            }
        }
        self.outstanding = self.outstanding.saturating_sub(answers);
        Ok(())
    }

    /// Flushes and waits until every publish is answered, at most `timeout` without progress.
    pub fn finish(
        &mut self,
        conn: &mut NatsConn,
        timeout: Duration,
    ) -> Result<&PubAckCounts, NatsError> {
        conn.flush()?;
        // Loop bound: each pass takes at least one answer or returns a timeout.
        while self.outstanding > 0 {
            self.take_answers(conn, timeout)?;
        }
        Ok(&self.counts)
    }

    /// Publishes awaiting an answer.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// The answers so far.
    pub fn counts(&self) -> &PubAckCounts {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    //! Ack subjects and PubAcks as nats-server 2.9 writes them.
    use super::*;

    #[test]
    fn parses_both_ack_subject_forms() {
        let v1 =
            parse_ack_subject(b"$JS.ACK.MARKET_TICKS.alphapt.2.1042.17.1764000000123456789.58")
                .unwrap();
        assert_eq!(
            v1,
            AckInfo {
                stream_seq: 1042,
                consumer_seq: 17,
                delivered: 2,
                pending: 58,
                timestamp_ns: 1_764_000_000_123_456_789,
            }
        );
        let v2 = parse_ack_subject(b"$JS.ACK.hub.ACCHASH.S.c.1.5.4.1764000000000000000.0").unwrap();
        assert_eq!(
            (v2.stream_seq, v2.consumer_seq, v2.delivered, v2.pending),
            (5, 4, 1, 0)
        );
        let v2r =
            parse_ack_subject(b"$JS.ACK._.ACCHASH.S.c.1.5.4.1764000000000000000.0.xyz").unwrap();
        assert_eq!(v2r, v2);
        // The largest sequence a u64 holds, and a numeric random token.
        let max = parse_ack_subject(b"$JS.ACK.S.c.1.18446744073709551615.4.1.0").unwrap();
        assert_eq!(max.stream_seq, u64::MAX);
        let numeric_random =
            parse_ack_subject(b"$JS.ACK._.ACCHASH.S.c.1.5.4.1764000000000000000.0.42").unwrap();
        assert_eq!(numeric_random, v2);
        for bad in [
            &b"$JS.ACK.S.c.1.5.4.17"[..],
            b"$JS.NAK.S.c.1.5.4.1.0",
            b"$JS.ACK.S.c.x.5.4.1.0",
            b"",
            b"a.b.c.d.e.f.g.h.i.j.k.l.m",
            // An empty number, a number past u64, a timestamp past i64, one token too
            // many, and the prefix without its dot.
            b"$JS.ACK.S.c..5.4.1.0",
            b"$JS.ACK.S.c.1.18446744073709551616.4.1.0",
            b"$JS.ACK.S.c.1.5.4.9223372036854775808.0",
            b"$JS.ACK.d.a.S.c.1.5.4.1.0.r.x",
            b"$JS.ACKS.c.1.5.4.1.0",
        ] {
            assert_eq!(
                parse_ack_subject(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn reads_pub_acks() {
        assert_eq!(pub_ack_seq(b"{\"stream\":\"T\",\"seq\":42}"), Some(42));
        assert_eq!(
            pub_ack_seq(b"{\"stream\":\"T\", \"seq\":7,\"duplicate\":true}"),
            Some(7)
        );
        assert_eq!(
            pub_ack_seq(b"{\"error\":{\"code\":503,\"description\":\"x\"},\"seq\":1}"),
            None
        );
        let mut counts = PubAckCounts::default();
        counts.account(None, b"{\"stream\":\"T\",\"seq\":9,\"duplicate\":true}");
        counts.account(Some(503), b"");
        counts.account(None, b"{\"stream\":\"T\",\"seq\":3}");
        assert_eq!(
            (
                counts.acked,
                counts.duplicates,
                counts.errors,
                counts.seq_last
            ),
            (2, 1, 1, 9)
        );
        assert!(counts.first_error.unwrap().contains("503"));
    }
}
