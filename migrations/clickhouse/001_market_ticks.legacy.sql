-- Market ticks for ClickHouse < 20.1 (no DateTime64, no codecs, no skipping indexes):
-- times are DateTime seconds plus a UInt16 millisecond part, strings are plain, and
-- the depth columns are exposed by the server as depth_buy.1/.2/.3 arrays.
CREATE TABLE IF NOT EXISTS market_ticks
(
    timestamp          DateTime('UTC'),
    timestamp_ms       UInt16,
    instrument_token   UInt32,
    exchange           String,
    tradingsymbol      String,
    last_price         Float64,
    last_quantity      UInt32,
    average_price      Float64,
    volume_traded      UInt64,
    open               Float64,
    high               Float64,
    low                Float64,
    close              Float64,
    oi                 UInt64,
    depth_buy          Array(Tuple(Float64, UInt32, UInt16)),
    depth_sell         Array(Tuple(Float64, UInt32, UInt16)),
    data_quality_score Float32,
    validation_flags   UInt32,
    received_at        DateTime('UTC'),
    received_at_ms     UInt16,
    stream_seq         UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (instrument_token, timestamp, timestamp_ms);
