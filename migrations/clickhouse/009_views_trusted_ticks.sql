-- The bars take trusted ticks only: the views behind ohlc_1m, ml_features and
-- market_depth_snapshots skip a tick with a hard validation flag (1086 =
-- nonpositive_price | crossed_book | depth_unsorted | quantity_insane |
-- future_timestamp | outside_circuit; model::quality::FLAGS_HARD, README "Data
-- quality"), so a print at 0 never becomes a minute's low. The target tables and the
-- rows already in them are untouched; each view is dropped and created again with
-- the filter (its SELECT otherwise as in 005-007). Run with ingest stopped (`make run`
-- and `run` migrate before they consume): a tick inserted between a DROP and its
-- CREATE would not reach that view.

DROP TABLE IF EXISTS mv_ohlc_1m;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_ohlc_1m TO ohlc_1m AS
SELECT
    instrument_token,
    toStartOfMinute(toDateTime(timestamp, 'UTC'))                 AS minute,
    argMinState(last_price, (timestamp, stream_seq))               AS open,
    maxState(last_price)                                           AS high,
    minState(last_price)                                           AS low,
    argMaxState(last_price, (timestamp, stream_seq))               AS close,
    sumState(toUInt64(last_quantity))                              AS volume,
    sumState(last_price * last_quantity)                           AS turnover,
    countState()                                                   AS tick_count
FROM market_ticks
WHERE bitAnd(validation_flags, 1086) = 0
GROUP BY instrument_token, minute;

DROP TABLE IF EXISTS mv_ml_features;

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
WHERE bitAnd(validation_flags, 1086) = 0
GROUP BY instrument_token, minute;

DROP TABLE IF EXISTS mv_market_depth_snapshots;

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
WHERE bitAnd(validation_flags, 1086) = 0
  AND (notEmpty(depth_buy) OR notEmpty(depth_sell));
