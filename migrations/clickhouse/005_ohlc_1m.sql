-- One-minute bars per instrument. Every column is an aggregate state, so rows from
-- different insert blocks and parts merge into the same bar whatever order the ticks
-- arrived in: open/close are argMin/argMax of the price by (event time, stream_seq),
-- never any/anyLast, which follow insertion order. Read with the -Merge combinators
-- (`alphapt_storage::ohlc` does). Plain AggregateFunction columns (not
-- SimpleAggregateFunction) so the one reader works on 18.16 as well.
CREATE TABLE IF NOT EXISTS ohlc_1m
(
    instrument_token UInt32,
    minute           DateTime('UTC')  CODEC(DoubleDelta, ZSTD(1)),
    open             AggregateFunction(argMin, Float64, Tuple(DateTime64(3, 'UTC'), UInt64)),
    high             AggregateFunction(max, Float64),
    low              AggregateFunction(min, Float64),
    close            AggregateFunction(argMax, Float64, Tuple(DateTime64(3, 'UTC'), UInt64)),
    volume           AggregateFunction(sum, UInt64),
    turnover         AggregateFunction(sum, Float64),
    tick_count       AggregateFunction(count),
    INDEX idx_minute minute TYPE minmax GRANULARITY 4
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (instrument_token, minute)
TTL minute + INTERVAL {{retention_days}} DAY;

-- volume is the traded quantity in the minute (sum of last_quantity); turnover is
-- sum(price × quantity), so VWAP = turnover / volume at any roll-up level.
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
GROUP BY instrument_token, minute;
