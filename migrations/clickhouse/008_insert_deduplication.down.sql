ALTER TABLE market_ticks MODIFY SETTING non_replicated_deduplication_window = 0;
ALTER TABLE strategy_signals MODIFY SETTING non_replicated_deduplication_window = 0;
ALTER TABLE rejected_messages MODIFY SETTING non_replicated_deduplication_window = 0;
