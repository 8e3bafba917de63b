DROP TABLE IF EXISTS market_ticks;
