-- Retention for raw ticks: rows older than {{retention_days}} days (from
-- `migrate up --retention-days`, default 90) are dropped by merges.
ALTER TABLE market_ticks MODIFY TTL toDateTime(timestamp) + INTERVAL {{retention_days}} DAY;
