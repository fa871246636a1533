-- The operator API's own tables: API keys, rate-limit windows, code-attempt lockouts.

CREATE TABLE IF NOT EXISTS api_keys (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'operator', 'courier', 'viewer')),
    sites         text[],            -- NULL: every site
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

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
