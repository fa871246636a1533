-- The NOTIFY of a final command carries its outcome (JSON), so the API worker that
-- waits for it (`?wait=`) answers without reading the row again. The payload is
-- {"id", "status", "outcome", "outcome_reason"} (outcome_reason is at most 200
-- characters from the cabinet, far below NOTIFY's 8000-byte limit). Listeners that
-- only know the old form (the bare id) read the id from the JSON's "id".
-- Same trigger (0004_api.sql), new function body.
CREATE OR REPLACE FUNCTION smartlocker_notify_command() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'smartlocker_command',
        json_build_object(
            'id', NEW.id,
            'status', NEW.status,
            'outcome', NEW.outcome,
            'outcome_reason', NEW.outcome_reason
        )::text
    );
    RETURN NEW;
END
$$;
