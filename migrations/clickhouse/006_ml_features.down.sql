DROP TABLE IF EXISTS mv_ml_features;
DROP TABLE IF EXISTS ml_features;
