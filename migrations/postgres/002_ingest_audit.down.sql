DROP TABLE IF EXISTS ingest_audit;
