-- Strategy signals for ClickHouse < 20.1: DateTime seconds + a millisecond part,
-- plain strings, no codecs, no index, no TTL.
CREATE TABLE IF NOT EXISTS strategy_signals
(
    timestamp        DateTime('UTC'),
    timestamp_ms     UInt16,
    strategy_id      String,
    strategy_type    Enum8('traditional' = 1, 'ml' = 2, 'hybrid' = 3) DEFAULT 'traditional',
    instrument_token UInt32,
    tradingsymbol    String,
    signal_type      String,
    strength         Float32,
    confidence       Float32,
    price            Float64,
    quantity         UInt32,
    metadata         String,
    received_at      DateTime('UTC'),
    received_at_ms   UInt16,
    stream_seq       UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (strategy_id, instrument_token, timestamp, timestamp_ms);
