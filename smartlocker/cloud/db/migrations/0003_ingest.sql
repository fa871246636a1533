-- Ingest: what arrives over MQTT, as rows (owner: smartlocker/cloud/ingest).
--
-- events and telemetry are hypertables on TimescaleDB, plain tables otherwise.
-- TimescaleDB requires the time column in every unique index, which is why the
-- de-duplication key of an event is (cabinet, seq, ts): a cabinet's outbox resends
-- an event with the same seq and ts, so redelivery is harmless.

CREATE TABLE events (
    cabinet     text        NOT NULL,
    seq         bigint      NOT NULL,
    ts          timestamptz NOT NULL,
    id          text        NOT NULL,
    type        text        NOT NULL,
    compartment text,
    body        jsonb       NOT NULL,   -- the message as received
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_dedup UNIQUE (cabinet, seq, ts)
);
-- The audit trail reads one cabinet over a time range.
CREATE INDEX events_cabinet_ts ON events (cabinet, ts DESC);

CREATE TABLE telemetry (
    cabinet           text        NOT NULL,
    ts                timestamptz NOT NULL,
    id                text        NOT NULL,
    uptime_s          double precision NOT NULL,
    outbox_depth      integer     NOT NULL,
    cpu_temp_c        double precision,
    compartment_temps jsonb       NOT NULL DEFAULT '{}',
    received_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT telemetry_dedup UNIQUE (cabinet, ts, id)
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        -- Our own indexes above serve the queries; no default ts index on top.
        PERFORM create_hypertable('events', 'ts',
            chunk_time_interval => interval '1 day', create_default_indexes => false);
        PERFORM create_hypertable('telemetry', 'ts',
            chunk_time_interval => interval '1 day', create_default_indexes => false);
    END IF;
END
$$;

-- Per cabinet: events committed contiguously up to committed_seq (what a receipt
-- says), the committed seqs above it that wait for a gap to fill, when the current
-- seq epoch began (a re-imaged cabinet starts again at seq 1 with a boot), and
-- since when receipts are held back (new events at or below committed_seq that are
-- not a boot: the cabinet restarted its seq and its boot has not arrived yet).
CREATE TABLE ingest_cursors (
    cabinet       text        PRIMARY KEY,
    committed_seq bigint      NOT NULL DEFAULT 0,
    ahead         bigint[]    NOT NULL DEFAULT '{}',
    epoch_ts      timestamptz,
    held_since    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Presence as ingest sees it: last message, and what the rules were told.
CREATE TABLE ingest_presence (
    cabinet         text        PRIMARY KEY,
    last_seen       timestamptz NOT NULL,
    online          boolean,              -- as last reported to the rules; NULL: never
    status_ts       timestamptz,          -- ts of the newest status message applied
    offline_pending timestamptz,          -- a last will waiting out the anti-flap grace
    changed_at      timestamptz
);

-- Everything ingest refused, with the reason; nothing is dropped silently.
CREATE TABLE dead_letters (
    id          bigserial   PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text        NOT NULL,
    payload     bytea       NOT NULL,
    reason      text        NOT NULL,
    detail      text
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
