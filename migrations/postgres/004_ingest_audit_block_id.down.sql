DROP INDEX IF EXISTS ingest_audit_block_id;
ALTER TABLE ingest_audit DROP COLUMN IF EXISTS block_id;
