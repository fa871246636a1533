-- A cabinet whose clock is wrong (rules/clock.py): the `fault` alert of
-- CONTRACT.md, and what the cloud last measured of the cabinet's clock.
ALTER TABLE alerts DROP CONSTRAINT IF EXISTS alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check CHECK (kind IN (
    'forced_open', 'held_open', 'unlock_failed', 'lock_fault', 'temperature',
    'offline', 'command_failed', 'fault'
));

ALTER TABLE cabinets
    -- The cabinet's clock minus ours (seconds), as last measured from a fresh message.
    ADD COLUMN IF NOT EXISTS clock_skew_s double precision,
    ADD COLUMN IF NOT EXISTS clock_checked_at timestamptz,
    -- Since when the skew looked too large on messages that may have been queued
    -- (telemetry): the fault is raised once a later one, received apart, agrees.
    ADD COLUMN IF NOT EXISTS clock_suspect_since timestamptz;
