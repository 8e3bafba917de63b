-- Model features for ClickHouse < 20.1; see 006_ml_features.sql for how a reader
-- finishes each one. 18.16 exposes the Array(Tuple(price, quantity, orders)) depth
-- columns as the arrays `depth_buy.1`, `depth_buy.2`, `depth_buy.3`.
CREATE TABLE IF NOT EXISTS ml_features
(
    instrument_token UInt32,
    minute           DateTime('UTC'),
    price_first      AggregateFunction(argMin, Float64, Tuple(DateTime('UTC'), UInt16, UInt64)),
    price_last       AggregateFunction(argMax, Float64, Tuple(DateTime('UTC'), UInt16, UInt64)),
    price_high       AggregateFunction(max, Float64),
    price_low        AggregateFunction(min, Float64),
    volume           AggregateFunction(sum, UInt64),
    turnover         AggregateFunction(sum, Float64),
    tick_count       AggregateFunction(count),
    spread_sum       AggregateFunction(sum, Float64),
    spread_count     AggregateFunction(sum, UInt64),
    bid_quantity     AggregateFunction(sum, UInt64),
    ask_quantity     AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (instrument_token, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_ml_features TO ml_features AS
SELECT
    instrument_token,
    toStartOfMinute(timestamp)                                             AS minute,
    argMinState(last_price, (timestamp, timestamp_ms, stream_seq))         AS price_first,
    argMaxState(last_price, (timestamp, timestamp_ms, stream_seq))         AS price_last,
    maxState(last_price)                                                   AS price_high,
    minState(last_price)                                                   AS price_low,
    sumState(toUInt64(last_quantity))                                      AS volume,
    sumState(last_price * last_quantity)                                   AS turnover,
    countState()                                                           AS tick_count,
    sumState(if(notEmpty(`depth_buy.1`) AND notEmpty(`depth_sell.1`),
                `depth_sell.1`[1] - `depth_buy.1`[1], 0.))                 AS spread_sum,
    sumState(toUInt64(notEmpty(`depth_buy.1`) AND notEmpty(`depth_sell.1`))) AS spread_count,
    sumState(toUInt64(arraySum(`depth_buy.2`)))                            AS bid_quantity,
    sumState(toUInt64(arraySum(`depth_sell.2`)))                           AS ask_quantity
FROM market_ticks
GROUP BY instrument_token, minute;
