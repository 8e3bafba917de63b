-- Rejected messages for ClickHouse < 20.1.
CREATE TABLE IF NOT EXISTS rejected_messages
(
    received_at    DateTime('UTC'),
    received_at_ms UInt16,
    subject        String,
    stream_seq     UInt64,
    reason         String,
    detail         String,
    payload        String,
    payload_size   UInt32
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (reason, received_at, received_at_ms);
