-- Users, login sessions, and the control events that carry session changes to every node.

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
-- be told apart from a lost response (theft detection, PROTOCOL.md section 4.4).
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

-- Event types under "tidings." are control events: session and user changes that every node's
-- hub acts on (closing streams) and that no client ever sees. Only the server writes them.
CREATE OR REPLACE FUNCTION publish_events(types text[], datas jsonb[], audiences jsonb[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(types) AS t WHERE t LIKE 'tidings.%') THEN
        RAISE EXCEPTION 'event types under "tidings." are reserved' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY SELECT tidings_append_events(types, datas, audiences);
END;
$$;

-- tidings_append_events is the append itself, for every event type; publish_events checks,
-- then calls it. The server calls it directly for control events.
CREATE FUNCTION tidings_append_events(types text[], datas jsonb[], audiences jsonb[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
DECLARE
    n    int := coalesce(array_length(types, 1), 0);
    last bigint;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    IF coalesce(array_length(datas, 1), 0) <> n OR coalesce(array_length(audiences, 1), 0) <> n THEN
        RAISE EXCEPTION 'publish_events: % types, % datas, % audiences',
            n, coalesce(array_length(datas, 1), 0), coalesce(array_length(audiences, 1), 0)
            USING ERRCODE = '22023';
    END IF;
    UPDATE event_log_state SET last_id = last_id + n RETURNING last_id INTO last;
    INSERT INTO events (id, type, data, audience)
    SELECT last - n + u.ord, u.t, coalesce(u.d, 'null'::jsonb), tidings_audience(u.a)
    FROM unnest(types, datas, audiences) WITH ORDINALITY AS u(t, d, a, ord);
    -- A wake-up for every node's listener; the payload is a hint, never the data.
    PERFORM pg_notify('events', last::text);
    RETURN QUERY SELECT generate_series(last - n + 1, last);
END;
$$;
