-- Instrument reference data the validators use (tick size, lot size, circuit
-- limits). Every change is announced on the `instruments_changed` channel so a
-- running appliance can reload it without a restart.
CREATE TABLE IF NOT EXISTS instruments
(
    instrument_token    bigint         PRIMARY KEY CHECK (instrument_token BETWEEN 0 AND 4294967295),
    tradingsymbol       text           NOT NULL,
    exchange            text           NOT NULL,
    segment             text           NOT NULL DEFAULT '',
    tick_size           numeric(18, 6) NOT NULL CHECK (tick_size > 0),
    lot_size            integer        NOT NULL DEFAULT 1 CHECK (lot_size > 0),
    upper_circuit_limit numeric(18, 6),
    lower_circuit_limit numeric(18, 6),
    updated_at          timestamptz    NOT NULL DEFAULT now(),
    CHECK (lower_circuit_limit IS NULL OR upper_circuit_limit IS NULL
           OR lower_circuit_limit <= upper_circuit_limit)
);

CREATE INDEX IF NOT EXISTS instruments_exchange_symbol ON instruments (exchange, tradingsymbol);

-- The payload names the operation and the token; listeners re-read the row.
-- Statement-level would be cheaper for bulk loads, but a per-row payload lets the
-- reader reload only what changed.
CREATE OR REPLACE FUNCTION instruments_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    token bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        token := OLD.instrument_token;
    ELSE
        token := NEW.instrument_token;
    END IF;
    PERFORM pg_notify('instruments_changed',
                      json_build_object('op', TG_OP, 'instrument_token', token)::text);
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS instruments_changed ON instruments;
CREATE TRIGGER instruments_changed
AFTER INSERT OR UPDATE OR DELETE ON instruments
FOR EACH ROW EXECUTE FUNCTION instruments_notify();
