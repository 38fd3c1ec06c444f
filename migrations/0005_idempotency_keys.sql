-- Idempotency keys of publishes (POST /api/publish with an Idempotency-Key header, socket
-- publishes with a "key"). A key is stored in the transaction of the events it names, so it
-- exists if and only if they do: a retry that finds it returns the first call's ids instead of
-- appending again. Keys live for a window (data.PublisherConfig.KeyWindow) and are then deleted.

CREATE TABLE publish_keys (
    -- Whose key it is: keys of different scopes never meet ("api", "user:7").
    scope    text        NOT NULL CHECK (octet_length(scope) BETWEEN 1 AND 64),
    key      text        NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 255),
    -- A SHA-256 digest of what the first call asked, so that a key reused for another
    -- request is refused instead of answered with the ids of something else.
    request  bytea       NOT NULL CHECK (octet_length(request) = 32),
    -- The call's events have the ids first_id .. first_id + n - 1.
    first_id bigint      NOT NULL CHECK (first_id > 0),
    n        integer     NOT NULL CHECK (n > 0),
    created  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX publish_keys_created_idx ON publish_keys (created);

-- tidings_publish_keyed appends the events of several calls in one transaction, as
-- tidings_append_events does, except for keyed calls whose key is already stored (younger than
-- max_age): those append nothing and are answered with the stored ids. types, datas, audiences
-- and calls have one entry per event (calls: the 1-based index of the event's call, events of
-- a call together and in order); scopes, keys and requests one per call (NULL key: unkeyed).
-- No two calls may share a scope and key. It returns one row per call, in call order.
CREATE FUNCTION tidings_publish_keyed(types text[], datas jsonb[], audiences jsonb[], calls integer[],
                                      scopes text[], keys text[], requests bytea[], max_age interval)
RETURNS TABLE (call_first_id bigint, call_n integer, call_request bytea, call_replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    last  bigint;
    known integer[];
    total integer;
BEGIN
    IF coalesce(array_length(types, 1), 0) <> coalesce(array_length(calls, 1), 0)
       OR coalesce(array_length(scopes, 1), 0) <> coalesce(array_length(keys, 1), 0)
       OR coalesce(array_length(scopes, 1), 0) <> coalesce(array_length(requests, 1), 0) THEN
        RAISE EXCEPTION 'tidings_publish_keyed: arrays of different lengths' USING ERRCODE = '22023';
    END IF;
    -- The counter row before any key: every event writer waits here first, so two writers of
    -- one key never meet in the key's index, and locks are always taken in the same order.
    SELECT s.last_id INTO last FROM event_log_state s FOR UPDATE;
    -- The calls already stored.
    SELECT coalesce(array_agg(u.c::integer), '{}') INTO known
    FROM unnest(scopes, keys) WITH ORDINALITY AS u(scope, key, c)
    JOIN publish_keys k ON k.scope = u.scope AND k.key = u.key
    WHERE k.created > now() - max_age;
    SELECT count(*) INTO total FROM unnest(calls) AS e(c) WHERE NOT e.c = ANY(known);
    IF total > 0 THEN
        UPDATE event_log_state SET last_id = last + total;
        INSERT INTO events (id, type, data, audience)
        SELECT last + row_number() OVER (ORDER BY u.ord), u.t, coalesce(u.d, 'null'::jsonb), tidings_audience(u.a)
        FROM unnest(types, datas, audiences, calls) WITH ORDINALITY AS u(t, d, a, c, ord)
        WHERE NOT u.c = ANY(known);
        -- A wake-up for every node's listener; the payload is a hint, never the data.
        PERFORM pg_notify('events', (last + total)::text);
    END IF;
    RETURN QUERY
    WITH fresh AS (
        SELECT e.c, last + row_number() OVER (ORDER BY e.ord) AS id
        FROM unnest(calls) WITH ORDINALITY AS e(c, ord)
        WHERE NOT e.c = ANY(known)
    ), firsts AS (
        SELECT f.c, min(f.id) AS first_id, count(*)::integer AS n FROM fresh f GROUP BY f.c
    ), stored AS (
        -- A key found above is never written here; one that conflicts is older than max_age.
        INSERT INTO publish_keys AS k (scope, key, request, first_id, n)
        SELECT scopes[f.c], keys[f.c], requests[f.c], f.first_id, f.n FROM firsts f
        WHERE keys[f.c] IS NOT NULL
        ON CONFLICT (scope, key) DO UPDATE
            SET request = excluded.request, first_id = excluded.first_id, n = excluded.n, created = now()
    )
    SELECT r.first_id, r.n, r.request, r.replayed FROM (
        SELECT f.c, f.first_id, f.n, NULL::bytea AS request, false AS replayed FROM firsts f
        UNION ALL
        SELECT u.c::integer, k.first_id, k.n, k.request, true
        FROM unnest(scopes, keys) WITH ORDINALITY AS u(scope, key, c)
        JOIN publish_keys k ON k.scope = u.scope AND k.key = u.key
        WHERE u.c = ANY(known)
    ) r ORDER BY r.c;
END;
$$;
