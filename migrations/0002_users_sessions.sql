-- Users and login sessions.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    type          text NOT NULL DEFAULT 'regular' CHECK (type IN ('regular', 'crew', 'admin')),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Names are unique regardless of case.
CREATE UNIQUE INDEX users_name_key ON users (lower(name));

-- A session is one cookie. Rotation gives it a successor (a new row, a new token); the old row
-- stays, with successor_id set, until discard_at, so that a rotated cookie presented again can
-- be told apart from a lost response (theft detection, docs/protocol.md section 4.4).
CREATE TABLE sessions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash     bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    user_id        bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rotates_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    -- Set when the cookie was first presented in a request (the response that carried it arrived).
    presented_at   timestamptz,
    predecessor_id bigint REFERENCES sessions (id) ON DELETE SET NULL,
    successor_id   bigint REFERENCES sessions (id) ON DELETE SET NULL,
    rotated_at     timestamptz,
    -- Set when the session was ended: 'logout', 'taken' (theft), 'replaced' (its cookie was lost).
    revoked_at     timestamptz,
    revoked_reason text CHECK (revoked_reason IN ('logout', 'taken', 'replaced')),
    discard_at     timestamptz NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_discard_idx ON sessions (discard_at);

-- Failed logins, per lower-cased name, for the login rate limit shared by every node.
CREATE TABLE login_failures (
    name_key text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_idx ON login_failures (name_key, at);
