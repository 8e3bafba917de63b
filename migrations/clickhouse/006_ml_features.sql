-- Per instrument and minute, the mergeable pieces of the model features. A reader
-- finishes them with the -Merge combinators (grouped by instrument and minute):
--   return              = argMaxMerge(price_last) / argMinMerge(price_first) - 1
--   realised volatility = sqrt(log(maxMerge(price_high) / minMerge(price_low))^2 / (4 log 2))
--                         (Parkinson's range estimator: exact under merges, unlike a
--                         sum of squared tick-to-tick returns, which needs tick order
--                         across insert blocks)
--   VWAP                = sumMerge(turnover) / sumMerge(volume)
--   tick count          = countMerge(tick_count)
--   mean spread         = sumMerge(spread_sum) / sumMerge(spread_count)
--   depth imbalance     = (bid - ask) / (bid + ask) over sumMerge(bid_quantity), sumMerge(ask_quantity)
CREATE TABLE IF NOT EXISTS ml_features
(
    instrument_token UInt32,
    minute           DateTime('UTC')  CODEC(DoubleDelta, ZSTD(1)),
    price_first      AggregateFunction(argMin, Float64, Tuple(DateTime64(3, 'UTC'), UInt64)),
    price_last       AggregateFunction(argMax, Float64, Tuple(DateTime64(3, 'UTC'), UInt64)),
    price_high       AggregateFunction(max, Float64),
    price_low        AggregateFunction(min, Float64),
    volume           AggregateFunction(sum, UInt64),
    turnover         AggregateFunction(sum, Float64),
    tick_count       AggregateFunction(count),
    spread_sum       AggregateFunction(sum, Float64),
    spread_count     AggregateFunction(sum, UInt64),
    bid_quantity     AggregateFunction(sum, UInt64),
    ask_quantity     AggregateFunction(sum, UInt64),
    INDEX idx_minute minute TYPE minmax GRANULARITY 4
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (instrument_token, minute)
TTL minute + INTERVAL {{retention_days}} DAY;

-- A tick adds to the spread only when both sides of the book are present.
CREATE MATERIALIZED VIEW IF NOT EXISTS mv_ml_features TO ml_features AS
SELECT
    instrument_token,
    toStartOfMinute(toDateTime(timestamp, 'UTC'))                       AS minute,
    argMinState(last_price, (timestamp, stream_seq))                     AS price_first,
    argMaxState(last_price, (timestamp, stream_seq))                     AS price_last,
    maxState(last_price)                                                 AS price_high,
    minState(last_price)                                                 AS price_low,
    sumState(toUInt64(last_quantity))                                    AS volume,
    sumState(last_price * last_quantity)                                 AS turnover,
    countState()                                                         AS tick_count,
    sumState(if(notEmpty(depth_buy) AND notEmpty(depth_sell),
                depth_sell[1].1 - depth_buy[1].1, 0.))                   AS spread_sum,
    sumState(toUInt64(notEmpty(depth_buy) AND notEmpty(depth_sell)))     AS spread_count,
    sumState(toUInt64(arraySum(arrayMap(d -> d.2, depth_buy))))          AS bid_quantity,
    sumState(toUInt64(arraySum(arrayMap(d -> d.2, depth_sell))))         AS ask_quantity
FROM market_ticks
GROUP BY instrument_token, minute;
