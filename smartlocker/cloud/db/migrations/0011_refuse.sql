-- A statement that finds it must not go on raises an error with a SQLSTATE of our own
-- (owner: smartlocker/cloud/rules, smartlocker/cloud/api).
--
-- The API sends a remote unlock's whole transaction, from BEGIN to COMMIT, in one
-- pipeline with one round trip to the server. Its checks cannot wait for Python to
-- read a result in between, so the statements carry them: the rate-limit count
-- refuses past the limit, and a command with no compartment (or none the caller may
-- see) refuses to exist. The error aborts the transaction; the COMMIT queued behind
-- it then does nothing, and nothing of the request stays.
--
--   smartlocker_refuse(refused, code, message): raises `code` (five characters, e.g.
--   'SL429') with `message` when `refused` is true; otherwise returns false.
CREATE OR REPLACE FUNCTION smartlocker_refuse(refused boolean, code text, message text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF refused THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
    END IF;
    RETURN false;
END
$$;
