-- The quality report (`alphapt-storage quality --json`) of each window of received
-- ticks, written by the running appliance every postgres.quality_snapshot_interval_ms,
-- so the history outlives ClickHouse's TTLs. Windows follow each other without gaps:
-- after an outage of ClickHouse or PostgreSQL one row covers the whole gap.
CREATE TABLE IF NOT EXISTS quality_snapshots
(
    id                      bigserial        PRIMARY KEY,
    taken_at                timestamptz      NOT NULL DEFAULT now(),
    window_from             timestamptz      NOT NULL,
    window_until            timestamptz      NOT NULL,
    ticks_received          bigint           NOT NULL CHECK (ticks_received >= 0),
    ticks_stored            bigint           NOT NULL CHECK (ticks_stored >= 0),
    ticks_rejected          bigint           NOT NULL CHECK (ticks_rejected >= 0),
    overall_score           double precision CHECK (overall_score BETWEEN 0 AND 1),
    completeness_percentage double precision CHECK (completeness_percentage BETWEEN 0 AND 100),
    validation_failures     bigint           NOT NULL CHECK (validation_failures >= 0),
    report                  jsonb            NOT NULL,
    CHECK (window_from < window_until),
    CHECK (ticks_received = ticks_stored + ticks_rejected)
);

CREATE INDEX IF NOT EXISTS quality_snapshots_window_until ON quality_snapshots (window_until);
