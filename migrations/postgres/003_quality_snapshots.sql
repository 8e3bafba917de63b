-- Periodic data-quality snapshots per instrument (or for all, instrument_token NULL):
-- counts of good, flagged and rejected messages over the window, and the mean score.
CREATE TABLE IF NOT EXISTS quality_snapshots
(
    id               bigserial   PRIMARY KEY,
    taken_at         timestamptz NOT NULL DEFAULT now(),
    window_seconds   integer     NOT NULL CHECK (window_seconds > 0),
    instrument_token bigint,
    ticks_total      bigint      NOT NULL DEFAULT 0,
    flagged_total    bigint      NOT NULL DEFAULT 0,
    rejected_total   bigint      NOT NULL DEFAULT 0,
    score_mean       double precision,
    flags            jsonb       NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX IF NOT EXISTS quality_snapshots_taken_at ON quality_snapshots (taken_at);
CREATE INDEX IF NOT EXISTS quality_snapshots_instrument ON quality_snapshots (instrument_token, taken_at);
