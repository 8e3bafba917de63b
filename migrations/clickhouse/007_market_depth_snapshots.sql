-- Top-of-book summary of every tick that carries depth: best bid and ask (NaN when a
-- side is empty), spread, total quantity per side and imbalance
-- (bid - ask) / (bid + ask), 0 when the book is empty.
CREATE TABLE IF NOT EXISTS market_depth_snapshots
(
    timestamp          DateTime64(3, 'UTC')  CODEC(DoubleDelta, ZSTD(1)),
    instrument_token   UInt32                CODEC(ZSTD(1)),
    best_bid           Float64               CODEC(Gorilla, ZSTD(1)),
    best_ask           Float64               CODEC(Gorilla, ZSTD(1)),
    spread             Float64               CODEC(Gorilla, ZSTD(1)),
    total_bid_quantity UInt64                CODEC(T64, ZSTD(1)),
    total_ask_quantity UInt64                CODEC(T64, ZSTD(1)),
    imbalance          Float64               CODEC(Gorilla, ZSTD(1)),
    bid_levels         UInt8,
    ask_levels         UInt8,
    stream_seq         UInt64                CODEC(Delta, ZSTD(1)),
    INDEX idx_stream_seq stream_seq TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (instrument_token, timestamp)
TTL toDateTime(timestamp) + INTERVAL {{retention_days}} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_market_depth_snapshots TO market_depth_snapshots AS
SELECT
    timestamp,
    instrument_token,
    if(notEmpty(depth_buy), depth_buy[1].1, nan)                       AS best_bid,
    if(notEmpty(depth_sell), depth_sell[1].1, nan)                     AS best_ask,
    best_ask - best_bid                                                AS spread,
    toUInt64(arraySum(arrayMap(d -> d.2, depth_buy)))                  AS total_bid_quantity,
    toUInt64(arraySum(arrayMap(d -> d.2, depth_sell)))                 AS total_ask_quantity,
    if(total_bid_quantity + total_ask_quantity > 0,
       (toFloat64(total_bid_quantity) - toFloat64(total_ask_quantity))
           / (total_bid_quantity + total_ask_quantity), 0.)            AS imbalance,
    toUInt8(length(depth_buy))                                         AS bid_levels,
    toUInt8(length(depth_sell))                                        AS ask_levels,
    stream_seq
FROM market_ticks
WHERE notEmpty(depth_buy) OR notEmpty(depth_sell);
