-- Server-side deduplication of the appliance's INSERTs (ClickHouse 22.2 and later):
-- every INSERT carries an `insert_deduplication_token` made of table and sequence
-- range, and each table remembers the tokens of its last 1,000 inserted blocks, so an
-- INSERT retried after its first attempt did commit is dropped by the server. The
-- writer's own check (it asks which blocks are stored before a resend) stays the
-- guard on servers without this; 1,000 blocks cover minutes of ticks.
ALTER TABLE market_ticks MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE strategy_signals MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE rejected_messages MODIFY SETTING non_replicated_deduplication_window = 1000;
