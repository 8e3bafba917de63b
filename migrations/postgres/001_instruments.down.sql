DROP TABLE IF EXISTS instruments;
DROP FUNCTION IF EXISTS instruments_notify();
