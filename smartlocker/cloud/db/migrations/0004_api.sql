-- The operator API's own tables and one trigger (API keys themselves are in 0002_core.sql).

-- Fixed-window counters shared by every API worker (unlocks per key …).
CREATE TABLE api_rate_limits (
    bucket       text NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL,
    PRIMARY KEY (bucket, window_start)
);

-- Wrong pickup codes per subject (parcel, API key) and the lockout they earned.
CREATE TABLE api_code_lockouts (
    subject      text PRIMARY KEY,
    failures     integer NOT NULL,
    locked_until timestamptz,
    updated_at   timestamptz NOT NULL
);

-- Wake the API workers waiting for a command (`?wait=`): when a command reaches a
-- final state (ingest stores the cabinet's ack, or it times out), NOTIFY its id.
-- Delivered on commit, to whichever worker LISTENs (smartlocker/cloud/api/waiter.py).
CREATE FUNCTION smartlocker_notify_command() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartlocker_command', NEW.id);
    RETURN NEW;
END
$$;

CREATE TRIGGER commands_notify_final
    AFTER UPDATE OF status ON commands
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status
          AND NEW.status IN ('succeeded', 'failed', 'rejected', 'timed_out'))
    EXECUTE FUNCTION smartlocker_notify_command();
