-- The dashboard's presence note from a row trigger with a WHEN condition (owner:
-- smartlocker/cloud/dashboard).
--
-- 0006's statement trigger copied every updated `cabinets` row into two transition
-- tables and ran its query after every UPDATE of the table: ingest touches
-- `last_seen` with every batch of a cabinet's messages, and only a change of `online`
-- is news. A row trigger's WHEN is checked by the executor, row by row, with no
-- function call and no transition tables; the function runs only for a cabinet that
-- went online or offline, and sends the same note as before.
DROP TRIGGER cabinets_dashboard_presence ON cabinets;
DROP FUNCTION smartlocker_dash_presence();

CREATE FUNCTION smartlocker_dash_presence() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartlocker_dashboard', json_build_object(
                'kind', 'presence', 'site', NEW.site, 'cabinet', NEW.id,
                'online', NEW.online)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER cabinets_dashboard_presence
    AFTER UPDATE ON cabinets
    FOR EACH ROW WHEN (OLD.online IS DISTINCT FROM NEW.online)
    EXECUTE FUNCTION smartlocker_dash_presence();
