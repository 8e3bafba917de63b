-- Top-of-book summary for ClickHouse < 20.1, from the `depth_buy.1/.2` and
-- `depth_sell.1/.2` arrays 18.16 exposes for the depth columns.
CREATE TABLE IF NOT EXISTS market_depth_snapshots
(
    timestamp          DateTime('UTC'),
    timestamp_ms       UInt16,
    instrument_token   UInt32,
    best_bid           Float64,
    best_ask           Float64,
    spread             Float64,
    total_bid_quantity UInt64,
    total_ask_quantity UInt64,
    imbalance          Float64,
    bid_levels         UInt8,
    ask_levels         UInt8,
    stream_seq         UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (instrument_token, timestamp, timestamp_ms);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_market_depth_snapshots TO market_depth_snapshots AS
SELECT
    timestamp,
    timestamp_ms,
    instrument_token,
    if(notEmpty(`depth_buy.1`), `depth_buy.1`[1], nan)                 AS best_bid,
    if(notEmpty(`depth_sell.1`), `depth_sell.1`[1], nan)               AS best_ask,
    best_ask - best_bid                                                AS spread,
    toUInt64(arraySum(`depth_buy.2`))                                  AS total_bid_quantity,
    toUInt64(arraySum(`depth_sell.2`))                                 AS total_ask_quantity,
    if(total_bid_quantity + total_ask_quantity > 0,
       (toFloat64(total_bid_quantity) - toFloat64(total_ask_quantity))
           / (total_bid_quantity + total_ask_quantity), 0.)            AS imbalance,
    toUInt8(length(`depth_buy.1`))                                     AS bid_levels,
    toUInt8(length(`depth_sell.1`))                                    AS ask_levels,
    stream_seq
FROM market_ticks
WHERE notEmpty(`depth_buy.1`) OR notEmpty(`depth_sell.1`);
