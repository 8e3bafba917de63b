-- One row per block written (or spilled): what went where, which stream sequences
-- it covered, how big it was and how long it took to become durable.
CREATE TABLE IF NOT EXISTS ingest_audit
(
    id               bigserial   PRIMARY KEY,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    table_name       text        NOT NULL,
    destination      text        NOT NULL CHECK (destination IN ('clickhouse', 'spill', 'replay')),
    rows             integer     NOT NULL CHECK (rows >= 0),
    stream_seq_first bigint,
    stream_seq_last  bigint,
    timestamp_min    timestamptz,
    timestamp_max    timestamptz,
    raw_bytes        bigint      NOT NULL CHECK (raw_bytes >= 0),
    compressed_bytes bigint      NOT NULL CHECK (compressed_bytes >= 0),
    latency_ms       double precision,
    CHECK (stream_seq_first IS NULL OR stream_seq_last IS NULL OR stream_seq_first <= stream_seq_last)
);

CREATE INDEX IF NOT EXISTS ingest_audit_recorded_at ON ingest_audit (recorded_at);
CREATE INDEX IF NOT EXISTS ingest_audit_stream_seq ON ingest_audit (stream_seq_last);
