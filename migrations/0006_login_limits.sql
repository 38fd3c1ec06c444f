-- Login limits that hold under parallel attempts, and device cookies (docs/protocol.md section
-- 4.1).

-- The attempts counted against one limit: 'name:<lower-cased name>' for the per-name limit,
-- 'device:<device id>' for the failures of one device cookie. An attempt is reserved here in
-- one statement before its password is hashed (the row is locked by the upsert, and its
-- condition is checked again on the newest version of the row), so parallel attempts never
-- pass the limit; a successful attempt is given back. The array holds only attempts within
-- the window, at most the limit.
CREATE TABLE login_limits (
    key      text          PRIMARY KEY CHECK (octet_length(key) BETWEEN 1 AND 128),
    attempts timestamptz[] NOT NULL
);

-- Device cookies: a user agent that signed in as a user holds one, whose token is stored here
-- only as its SHA-256 hash. It exempts that user agent from the name's limit for that user.
CREATE TABLE devices (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX devices_user_idx ON devices (user_id, id);
CREATE INDEX devices_expires_idx ON devices (expires_at);

-- login_failures (0002) is no longer written or read. It stays for nodes of the previous
-- release that still serve during a rolling upgrade, and goes in a later migration.
COMMENT ON TABLE login_failures IS 'unused since 0006_login_limits; dropped in a later release';
