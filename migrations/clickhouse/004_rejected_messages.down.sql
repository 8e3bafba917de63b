DROP TABLE IF EXISTS rejected_messages;
