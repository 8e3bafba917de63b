-- a; b
/* nested /* ; */ */
CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;
SELECT E'it\'s;', 'a''b;', "x;", `y;`, $$z;$$;
