-- The dashboard's live feed (smartlocker/cloud/dashboard/listener.py): small JSON
-- notes on channel 'smartlocker_dashboard', delivered on commit to every API process
-- that LISTENs. A note names what changed ({kind, site, cabinet, ...}), never the
-- data itself: the page re-reads it through the REST API with its own key.
--
-- Every trigger is statement-level with transition tables, so a batch of ingest costs
-- one trigger call per statement, not one per row. New events are announced from
-- ingest_cursors (changed once per batch and cabinet), not from the events table:
-- that one is a hypertable on TimescaleDB (no transition tables there) and the
-- ingest hot path. PostgreSQL folds identical notes of one transaction into one.

-- Compartments: door, lock, occupancy, enabled, out of service (not temperature,
-- which moves with every reading). One note per cabinet and statement.
CREATE FUNCTION smartlocker_dash_compartments() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartlocker_dashboard', json_build_object(
                'kind', 'compartment', 'site', cab.site, 'cabinet', ch.cabinet,
                'compartments', ch.ids)::text)
    FROM (SELECT n.cabinet, array_agg(n.id ORDER BY n.id) AS ids
          FROM dash_new n JOIN dash_old o ON o.cabinet = n.cabinet AND o.id = n.id
          WHERE (n.door, n.lock, n.occupancy, n.enabled, n.out_of_service)
                IS DISTINCT FROM (o.door, o.lock, o.occupancy, o.enabled, o.out_of_service)
          GROUP BY n.cabinet) ch
    JOIN cabinets cab ON cab.id = ch.cabinet;
    RETURN NULL;
END
$$;

CREATE TRIGGER compartments_dashboard
    AFTER UPDATE ON compartments
    REFERENCING OLD TABLE AS dash_old NEW TABLE AS dash_new
    FOR EACH STATEMENT EXECUTE FUNCTION smartlocker_dash_compartments();

-- Cabinets: a new cabinet, and presence (online / offline); not last_seen.
CREATE FUNCTION smartlocker_dash_cabinets_new() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartlocker_dashboard', json_build_object(
                'kind', 'cabinet', 'site', n.site, 'cabinet', n.id)::text)
    FROM dash_new n;
    RETURN NULL;
END
$$;

CREATE TRIGGER cabinets_dashboard_new
    AFTER INSERT ON cabinets
    REFERENCING NEW TABLE AS dash_new
    FOR EACH STATEMENT EXECUTE FUNCTION smartlocker_dash_cabinets_new();

CREATE FUNCTION smartlocker_dash_presence() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartlocker_dashboard', json_build_object(
                'kind', 'presence', 'site', n.site, 'cabinet', n.id, 'online', n.online)::text)
    FROM dash_new n JOIN dash_old o ON o.id = n.id
    WHERE n.online IS DISTINCT FROM o.online;
    RETURN NULL;
END
$$;

CREATE TRIGGER cabinets_dashboard_presence
    AFTER UPDATE ON cabinets
    REFERENCING OLD TABLE AS dash_old NEW TABLE AS dash_new
    FOR EACH STATEMENT EXECUTE FUNCTION smartlocker_dash_presence();

-- Alerts: raised, acknowledged, cleared (not every repeat of an open one).
CREATE FUNCTION smartlocker_dash_alerts_new() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartlocker_dashboard', json_build_object(
                'kind', 'alert', 'site', cab.site, 'cabinet', n.cabinet,
                'compartment', n.compartment, 'id', n.id, 'alert', n.kind)::text)
    FROM dash_new n JOIN cabinets cab ON cab.id = n.cabinet;
    RETURN NULL;
END
$$;

CREATE TRIGGER alerts_dashboard_new
    AFTER INSERT ON alerts
    REFERENCING NEW TABLE AS dash_new
    FOR EACH STATEMENT EXECUTE FUNCTION smartlocker_dash_alerts_new();

CREATE FUNCTION smartlocker_dash_alerts_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartlocker_dashboard', json_build_object(
                'kind', 'alert', 'site', cab.site, 'cabinet', n.cabinet,
                'compartment', n.compartment, 'id', n.id, 'alert', n.kind)::text)
    FROM dash_new n JOIN dash_old o ON o.id = n.id JOIN cabinets cab ON cab.id = n.cabinet
    WHERE (n.acked_at, n.cleared_at) IS DISTINCT FROM (o.acked_at, o.cleared_at);
    RETURN NULL;
END
$$;

CREATE TRIGGER alerts_dashboard_changed
    AFTER UPDATE ON alerts
    REFERENCING OLD TABLE AS dash_old NEW TABLE AS dash_new
    FOR EACH STATEMENT EXECUTE FUNCTION smartlocker_dash_alerts_changed();

-- Parcels: reserved, and every change of state.
CREATE FUNCTION smartlocker_dash_parcels_new() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartlocker_dashboard', json_build_object(
                'kind', 'parcel', 'site', n.site, 'cabinet', n.cabinet, 'id', n.id,
                'state', n.state)::text)
    FROM dash_new n;
    RETURN NULL;
END
$$;

CREATE TRIGGER parcels_dashboard_new
    AFTER INSERT ON parcels
    REFERENCING NEW TABLE AS dash_new
    FOR EACH STATEMENT EXECUTE FUNCTION smartlocker_dash_parcels_new();

CREATE FUNCTION smartlocker_dash_parcels_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartlocker_dashboard', json_build_object(
                'kind', 'parcel', 'site', n.site, 'cabinet', n.cabinet, 'id', n.id,
                'state', n.state)::text)
    FROM dash_new n JOIN dash_old o ON o.id = n.id
    WHERE n.state IS DISTINCT FROM o.state;
    RETURN NULL;
END
$$;

CREATE TRIGGER parcels_dashboard_changed
    AFTER UPDATE ON parcels
    REFERENCING OLD TABLE AS dash_old NEW TABLE AS dash_new
    FOR EACH STATEMENT EXECUTE FUNCTION smartlocker_dash_parcels_changed();

-- New events of a cabinet: its ingest cursor moved (once per batch and cabinet).
CREATE FUNCTION smartlocker_dash_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartlocker_dashboard', json_build_object(
                'kind', 'events', 'site', cab.site, 'cabinet', n.cabinet)::text)
    FROM dash_new n JOIN cabinets cab ON cab.id = n.cabinet;
    RETURN NULL;
END
$$;

CREATE TRIGGER ingest_cursors_dashboard_new
    AFTER INSERT ON ingest_cursors
    REFERENCING NEW TABLE AS dash_new
    FOR EACH STATEMENT EXECUTE FUNCTION smartlocker_dash_events();

CREATE TRIGGER ingest_cursors_dashboard_changed
    AFTER UPDATE ON ingest_cursors
    REFERENCING NEW TABLE AS dash_new
    FOR EACH STATEMENT EXECUTE FUNCTION smartlocker_dash_events();
