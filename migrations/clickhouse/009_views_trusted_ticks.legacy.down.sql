-- Back to views over every stored tick (as 005-007 created them).

DROP TABLE IF EXISTS mv_ohlc_1m;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_ohlc_1m TO ohlc_1m AS
SELECT
    instrument_token,
    toStartOfMinute(timestamp)                                     AS minute,
    argMinState(last_price, (timestamp, timestamp_ms, stream_seq)) AS open,
    maxState(last_price)                                           AS high,
    minState(last_price)                                           AS low,
    argMaxState(last_price, (timestamp, timestamp_ms, stream_seq)) AS close,
    sumState(toUInt64(last_quantity))                              AS volume,
    sumState(last_price * last_quantity)                           AS turnover,
    countState()                                                   AS tick_count
FROM market_ticks
GROUP BY instrument_token, minute;

DROP TABLE IF EXISTS mv_ml_features;

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

DROP TABLE IF EXISTS mv_market_depth_snapshots;

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
