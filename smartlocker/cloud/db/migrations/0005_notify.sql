-- Outbound messages: recipient notifications and operator webhook deliveries.
-- Rows are written in the same transaction as the state change that causes
-- them (a transactional outbox); workers claim them with a lease, send, and
-- mark them sent, retry them with backoff, or move them to 'dead'.
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id          bigserial PRIMARY KEY,
    site        text NOT NULL,
    url         text NOT NULL,
    secret      text NOT NULL,
    event_types text[] NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_subscriptions_site ON webhook_subscriptions (site) WHERE active;

CREATE TABLE IF NOT EXISTS outbound_messages (
    id              bigserial PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    channel         text NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'log', 'webhook')),
    topic           text NOT NULL,             -- notification kind or operator event type
    destination     text NOT NULL,             -- address, phone, push token or URL
    site            text,
    parcel          text,
    subscription_id bigint REFERENCES webhook_subscriptions (id) ON DELETE SET NULL,
    locale          text NOT NULL DEFAULT 'en',
    payload         jsonb NOT NULL DEFAULT '{}',
    secret_payload  jsonb,                     -- a clear code; erased once sent
    dedupe_key      text UNIQUE,               -- makes enqueueing idempotent
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    last_error      text,
    response_status integer,
    sent_at         timestamptz
);
CREATE INDEX IF NOT EXISTS outbound_messages_due
    ON outbound_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbound_messages_parcel ON outbound_messages (parcel);
CREATE INDEX IF NOT EXISTS outbound_messages_dead ON outbound_messages (id) WHERE status = 'dead';

-- How each parcel's recipient (and, for an expired parcel, its courier) is told.
ALTER TABLE parcels
    ADD COLUMN IF NOT EXISTS notify_channel text NOT NULL DEFAULT 'log'
        CHECK (notify_channel IN ('email', 'sms', 'push', 'log')),
    ADD COLUMN IF NOT EXISTS locale text NOT NULL DEFAULT 'en',
    ADD COLUMN IF NOT EXISTS courier_contact text,
    ADD COLUMN IF NOT EXISTS courier_channel text NOT NULL DEFAULT 'log'
        CHECK (courier_channel IN ('email', 'sms', 'push', 'log'));
