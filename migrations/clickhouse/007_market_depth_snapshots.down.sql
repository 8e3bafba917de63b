DROP TABLE IF EXISTS mv_market_depth_snapshots;
DROP TABLE IF EXISTS market_depth_snapshots;
