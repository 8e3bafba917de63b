-- One-minute bars for ClickHouse < 20.1. The event time is (DateTime, UInt16 ms), so
-- open/close are keyed by the tuple (second, millisecond, stream_seq): checked on
-- 18.16 to give the right open/close across out-of-order inserts. 18.16 has no
-- SimpleAggregateFunction, codecs, skipping indexes or TTL.
CREATE TABLE IF NOT EXISTS ohlc_1m
(
    instrument_token UInt32,
    minute           DateTime('UTC'),
    open             AggregateFunction(argMin, Float64, Tuple(DateTime('UTC'), UInt16, UInt64)),
    high             AggregateFunction(max, Float64),
    low              AggregateFunction(min, Float64),
    close            AggregateFunction(argMax, Float64, Tuple(DateTime('UTC'), UInt16, UInt64)),
    volume           AggregateFunction(sum, UInt64),
    turnover         AggregateFunction(sum, Float64),
    tick_count       AggregateFunction(count)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (instrument_token, minute);

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
