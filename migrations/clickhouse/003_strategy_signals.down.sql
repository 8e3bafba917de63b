DROP TABLE IF EXISTS strategy_signals;
