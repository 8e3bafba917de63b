-- Messages that could not become a tick or a signal: the raw bytes (capped by the
-- receiver), why, and where they came from, so nothing published is ever lost.
CREATE TABLE IF NOT EXISTS rejected_messages
(
    received_at  DateTime64(3, 'UTC')  CODEC(DoubleDelta, ZSTD(1)),
    subject      LowCardinality(String),
    stream_seq   UInt64                CODEC(Delta, ZSTD(1)),
    reason       LowCardinality(String),
    detail       String                CODEC(ZSTD(3)),
    payload      String                CODEC(ZSTD(3)),
    payload_size UInt32                CODEC(T64, ZSTD(1)),
    INDEX idx_stream_seq stream_seq TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (reason, received_at)
TTL toDateTime(received_at) + INTERVAL {{retention_days}} DAY;
