DROP TABLE IF EXISTS quality_snapshots;
