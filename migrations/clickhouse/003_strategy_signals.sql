-- Strategy signals, one row per signal message off `strategy.signals.<strategy>.<token>`.
CREATE TABLE IF NOT EXISTS strategy_signals
(
    timestamp        DateTime64(3, 'UTC')  CODEC(DoubleDelta, ZSTD(1)),
    strategy_id      LowCardinality(String),
    strategy_type    Enum8('traditional' = 1, 'ml' = 2, 'hybrid' = 3) DEFAULT 'traditional',
    instrument_token UInt32                CODEC(ZSTD(1)),
    tradingsymbol    LowCardinality(String),
    signal_type      LowCardinality(String),
    strength         Float32               CODEC(ZSTD(1)),
    confidence       Float32               CODEC(ZSTD(1)),
    price            Float64               CODEC(Gorilla, ZSTD(1)),
    quantity         UInt32                CODEC(T64, ZSTD(1)),
    metadata         String                CODEC(ZSTD(3)),
    received_at      DateTime64(3, 'UTC')  CODEC(DoubleDelta, ZSTD(1)),
    stream_seq       UInt64                CODEC(Delta, ZSTD(1)),
    INDEX idx_stream_seq stream_seq TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (strategy_id, instrument_token, timestamp)
TTL toDateTime(timestamp) + INTERVAL {{retention_days}} DAY;
