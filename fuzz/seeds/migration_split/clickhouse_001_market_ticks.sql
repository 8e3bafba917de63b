-- Market ticks, one row per tick. Times are the exchange's event time and our receive
-- time side by side; stream_seq is the JetStream sequence that makes redelivery
-- idempotent (rows above the ack floor are checked by it on start).
CREATE TABLE IF NOT EXISTS market_ticks
(
    timestamp          DateTime64(3, 'UTC')  CODEC(DoubleDelta, ZSTD(1)),
    instrument_token   UInt32                CODEC(ZSTD(1)),
    exchange           LowCardinality(String),
    tradingsymbol      LowCardinality(String),
    last_price         Float64               CODEC(Gorilla, ZSTD(1)),
    last_quantity      UInt32                CODEC(T64, ZSTD(1)),
    average_price      Float64               CODEC(Gorilla, ZSTD(1)),
    volume_traded      UInt64                CODEC(Delta, ZSTD(1)),
    open               Float64               CODEC(Gorilla, ZSTD(1)),
    high               Float64               CODEC(Gorilla, ZSTD(1)),
    low                Float64               CODEC(Gorilla, ZSTD(1)),
    close              Float64               CODEC(Gorilla, ZSTD(1)),
    oi                 UInt64                CODEC(T64, ZSTD(1)),
    depth_buy          Array(Tuple(price Float64, quantity UInt32, orders UInt16)) CODEC(ZSTD(1)),
    depth_sell         Array(Tuple(price Float64, quantity UInt32, orders UInt16)) CODEC(ZSTD(1)),
    data_quality_score Float32               CODEC(ZSTD(1)),
    validation_flags   UInt32                CODEC(T64, ZSTD(1)),
    received_at        DateTime64(3, 'UTC')  CODEC(DoubleDelta, ZSTD(1)),
    stream_seq         UInt64                CODEC(Delta, ZSTD(1)),
    INDEX idx_stream_seq stream_seq TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (instrument_token, timestamp);
