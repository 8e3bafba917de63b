-- The block id every log line about a block carries (`<table>/<first seq>-<last seq>`,
-- see `model::BlockId`), so one block can be followed from its seal through the logs to
-- its audit rows: `SELECT * FROM ingest_audit WHERE block_id = 'market_ticks/1-2048'`.
-- Generated from the columns the appliance already writes: nothing to keep in step.
ALTER TABLE ingest_audit
    ADD COLUMN IF NOT EXISTS block_id text
    GENERATED ALWAYS AS (table_name || '/' || coalesce(stream_seq_first::text, '') || '-' || coalesce(stream_seq_last::text, '')) STORED;

CREATE INDEX IF NOT EXISTS ingest_audit_block_id ON ingest_audit (block_id);
