-- The core schema of the business rules (docs/cloud.md): sites, cabinets,
-- compartments, parcels and their history, codes (keyed hashes only),
-- commands, desired-state versions, alerts, API keys and the operator audit
-- (the outbound-message outbox is 0005_notify.sql). Ordinary tables on every
-- edition: only events and telemetry (0003_ingest.sql) are time series.

-- Sizes in the order allocation tries them: the smallest that fits first.
CREATE TABLE compartment_sizes (
    size text PRIMARY KEY,
    rank smallint NOT NULL UNIQUE
);
INSERT INTO compartment_sizes (size, rank) VALUES
    ('xs', 10), ('s', 20), ('m', 30), ('l', 40), ('xl', 50);

CREATE TABLE sites (
    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC',
    -- How long a deposited parcel waits for pickup when the reservation gave no deadline.
    hold_hours integer NOT NULL DEFAULT 72 CHECK (hold_hours > 0),
    -- How long a reservation's deposit code stays valid.
    reservation_hours integer NOT NULL DEFAULT 48 CHECK (reservation_hours > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Storage-fee policy per site (rules/fees.py): free hours after the deposit,
-- then a fee per started unit (hour or day), optionally capped.
CREATE TABLE fee_policies (
    site text PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    free_hours integer NOT NULL DEFAULT 24 CHECK (free_hours >= 0),
    unit text NOT NULL DEFAULT 'day' CHECK (unit IN ('hour', 'day')),
    fee_per_unit numeric(12, 2) NOT NULL DEFAULT 0 CHECK (fee_per_unit >= 0),
    cap numeric(12, 2) CHECK (cap IS NULL OR cap >= 0),
    currency text NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$')
);

CREATE TABLE cabinets (
    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    site text NOT NULL REFERENCES sites (id),
    name text,
    -- Presence (rules/presence.py).
    online boolean NOT NULL DEFAULT false,
    online_changed_at timestamptz,
    last_seen timestamptz,
    agent_version text,
    -- Desired state: latest version built; what the cabinet reported applying.
    desired_version bigint NOT NULL DEFAULT 0,
    reported_version bigint NOT NULL DEFAULT 0,
    reported_at timestamptz,
    -- The replay high-water mark of commands: rises with every command.
    command_counter bigint NOT NULL DEFAULT 0,
    -- Hash of the device's MQTT password (set when provisioned by the API).
    credentials_hash text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cabinets_site ON cabinets (site);

CREATE TABLE compartments (
    cabinet text NOT NULL REFERENCES cabinets (id) ON DELETE CASCADE,
    id text NOT NULL CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9-]{0,31}$'),
    size text NOT NULL REFERENCES compartment_sizes (size),
    temperature_controlled boolean NOT NULL DEFAULT false,
    temp_min_c double precision,
    temp_max_c double precision,
    enabled boolean NOT NULL DEFAULT true,
    out_of_service boolean NOT NULL DEFAULT false,
    -- Hardware state, as last reported by events.
    door text NOT NULL DEFAULT 'unknown' CHECK (door IN ('open', 'closed', 'unknown')),
    door_changed_at timestamptz,
    lock text NOT NULL DEFAULT 'unknown' CHECK (lock IN ('locked', 'unlocked', 'unknown')),
    temperature_c double precision,
    temperature_at timestamptz,
    -- Occupancy, kept by rules/lifecycle.py in the same transaction as the parcel.
    -- It lives on this row (not only in parcels) so that allocation's
    -- SELECT … FOR UPDATE SKIP LOCKED re-checks it when a concurrent reservation
    -- committed first.
    occupancy text NOT NULL DEFAULT 'free'
        CHECK (occupancy IN ('free', 'reserved', 'occupied')),
    -- The grant that opened the door (unlocked / code_accepted), until it closes:
    -- which parcel and what for (deposit, pickup, return, operator).
    grant_parcel text,
    grant_kind text CHECK (grant_kind IN ('deposit', 'pickup', 'return', 'operator')),
    grant_at timestamptz,
    grant_opened boolean NOT NULL DEFAULT false,
    PRIMARY KEY (cabinet, id),
    CHECK (temp_min_c IS NULL OR temp_max_c IS NULL OR temp_min_c <= temp_max_c)
);

CREATE TABLE parcels (
    id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    site text NOT NULL REFERENCES sites (id),
    cabinet text NOT NULL,
    compartment text NOT NULL,
    -- inbound: a courier deposits, the recipient picks up;
    -- outbound ("sending from a locker"): a customer deposits, a courier picks up.
    direction text NOT NULL DEFAULT 'inbound' CHECK (direction IN ('inbound', 'outbound')),
    size text NOT NULL REFERENCES compartment_sizes (size),
    needs_temperature boolean NOT NULL DEFAULT false,
    state text NOT NULL DEFAULT 'reserved' CHECK (
        state IN ('reserved', 'deposited', 'picked_up', 'expired', 'returned', 'cancelled')
    ),
    reference text,
    recipient text,
    -- Pickup deadline: given at reservation, or set at deposit from the site's hold_hours.
    deadline timestamptz,
    reserved_at timestamptz NOT NULL,
    deposited_at timestamptz,
    picked_up_at timestamptz,
    expired_at timestamptz,
    closed_at timestamptz,
    fee numeric(12, 2),
    fee_currency text,
    created_by text NOT NULL,
    FOREIGN KEY (cabinet, compartment) REFERENCES compartments (cabinet, id)
);
-- The database's own guarantee: one active parcel per compartment.
CREATE UNIQUE INDEX parcels_one_active_per_compartment
    ON parcels (cabinet, compartment) WHERE state IN ('reserved', 'deposited', 'expired');
CREATE INDEX parcels_deadline ON parcels (deadline) WHERE state = 'deposited';
CREATE INDEX parcels_site_state ON parcels (site, state);
CREATE INDEX parcels_reference ON parcels (reference);

-- Every transition, with who or what caused it (rules/lifecycle.py writes it).
CREATE TABLE parcel_history (
    id bigserial PRIMARY KEY,
    parcel text NOT NULL REFERENCES parcels (id) ON DELETE CASCADE,
    at timestamptz NOT NULL,
    from_state text,
    to_state text NOT NULL,
    actor text NOT NULL,
    cause text,
    detail jsonb
);
CREATE INDEX parcel_history_parcel ON parcel_history (parcel, id);

-- Codes as keyed hashes only (protocol/codes.py); the clear code is never stored here.
CREATE TABLE codes (
    id bigserial PRIMARY KEY,
    parcel text NOT NULL REFERENCES parcels (id) ON DELETE CASCADE,
    cabinet text NOT NULL,
    compartment text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('pickup', 'deposit')),
    hash text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    issued_at timestamptz NOT NULL,
    valid_until timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz,
    revoked_reason text
);
-- A code is unique among the cabinet's active codes, and a parcel has at most
-- one active code of each kind.
CREATE UNIQUE INDEX codes_active_hash
    ON codes (cabinet, hash) WHERE used_at IS NULL AND revoked_at IS NULL;
CREATE UNIQUE INDEX codes_active_per_parcel
    ON codes (parcel, kind) WHERE used_at IS NULL AND revoked_at IS NULL;

-- Imperative commands (downlink.py) and their lifecycle.
CREATE TABLE commands (
    id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    cabinet text NOT NULL REFERENCES cabinets (id) ON DELETE CASCADE,
    compartment text NOT NULL,
    action text NOT NULL DEFAULT 'unlock' CHECK (action IN ('unlock')),
    counter bigint NOT NULL CHECK (counter > 0),
    reason text,
    actor text NOT NULL,
    -- What the opening is for, so the events that follow move the right parcel.
    parcel text REFERENCES parcels (id) ON DELETE SET NULL,
    purpose text NOT NULL DEFAULT 'operator'
        CHECK (purpose IN ('deposit', 'pickup', 'return', 'operator')),
    status text NOT NULL DEFAULT 'created' CHECK (
        status IN ('created', 'sent', 'succeeded', 'failed', 'rejected', 'timed_out')
    ),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    sent_at timestamptz,
    finished_at timestamptz,
    outcome text,
    outcome_reason text,
    UNIQUE (cabinet, counter),
    FOREIGN KEY (cabinet, compartment) REFERENCES compartments (cabinet, id)
);
CREATE INDEX commands_open ON commands (expires_at) WHERE status IN ('created', 'sent');

-- Every desired-state version of a cabinet (the unsigned document; the
-- signature is made when publishing, from this row, so a re-publication is
-- byte-identical).
CREATE TABLE desired_states (
    cabinet text NOT NULL REFERENCES cabinets (id) ON DELETE CASCADE,
    version bigint NOT NULL CHECK (version > 0),
    created_at timestamptz NOT NULL,
    message_id text NOT NULL,
    document jsonb NOT NULL,
    PRIMARY KEY (cabinet, version)
);

CREATE TABLE alerts (
    id bigserial PRIMARY KEY,
    cabinet text NOT NULL REFERENCES cabinets (id) ON DELETE CASCADE,
    compartment text,
    kind text NOT NULL CHECK (kind IN (
        'forced_open', 'held_open', 'unlock_failed', 'lock_fault', 'temperature',
        'offline', 'command_failed'
    )),
    detail text,
    raised_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    occurrences integer NOT NULL DEFAULT 1,
    cleared_at timestamptz,
    acked_at timestamptz,
    acked_by text
);
-- One open alert per (cabinet, compartment, kind).
CREATE UNIQUE INDEX alerts_one_open
    ON alerts (cabinet, (coalesce(compartment, '')), kind) WHERE cleared_at IS NULL;
CREATE INDEX alerts_raised ON alerts (raised_at DESC);

CREATE TABLE api_keys (
    id text PRIMARY KEY,
    name text NOT NULL,
    -- SHA-256 (hex) of the secret part; the key itself is shown once.
    secret_hash text NOT NULL CHECK (secret_hash ~ '^[0-9a-f]{64}$'),
    role text NOT NULL CHECK (role IN ('admin', 'operator', 'courier', 'viewer')),
    -- NULL: every site; otherwise only these.
    sites text[],
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);

-- Operator actions (who did what to which thing).
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    target_kind text NOT NULL,
    target text NOT NULL,
    detail jsonb
);
CREATE INDEX audit_log_at ON audit_log (at DESC);
CREATE INDEX audit_log_target ON audit_log (target_kind, target);
