-- The event log. Ids come from a single counter row that every writer updates inside its own
-- transaction: the row lock serializes event writers from their first publish until commit, so
-- ids become visible in id order with no holes (a rolled-back writer returns its ids), and any
-- snapshot sees a gapless prefix of the log. The committed counter value is the safe watermark.
-- Retention deletes a prefix, so a reader that finds the id after its cursor missing knows that
-- events were pruned.

CREATE TABLE event_log_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_id    bigint  NOT NULL DEFAULT 0 CHECK (last_id >= 0)
);
INSERT INTO event_log_state DEFAULT VALUES;

CREATE TABLE events (
    id        bigint      PRIMARY KEY CHECK (id > 0),
    type      text        NOT NULL CHECK (type <> '' AND length(type) <= 200),
    data      jsonb       NOT NULL DEFAULT 'null',
    -- NULL means everyone; otherwise a validated, canonical audience object.
    audience  jsonb,
    time      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_time_idx ON events (time);

-- tidings_audience validates an audience and returns its canonical form: NULL for everyone,
-- else exactly one of {"kind":"signed-in"}, {"kind":"min-type","type":T}, {"kind":"user","userId":N}.
CREATE FUNCTION tidings_audience(audience jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    kind text;
BEGIN
    IF audience IS NULL OR jsonb_typeof(audience) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(audience) <> 'object' OR jsonb_typeof(audience -> 'kind') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'invalid audience %: want an object with a string "kind"', audience
            USING ERRCODE = '22023';
    END IF;
    kind := audience ->> 'kind';
    IF kind = 'everyone' AND audience = '{"kind":"everyone"}'::jsonb THEN
        RETURN NULL;
    ELSIF kind = 'signed-in' AND audience = '{"kind":"signed-in"}'::jsonb THEN
        RETURN audience;
    ELSIF kind = 'min-type' AND (SELECT count(*) FROM jsonb_object_keys(audience)) = 2
          AND audience ->> 'type' IN ('regular', 'crew', 'admin')
          AND jsonb_typeof(audience -> 'type') = 'string' THEN
        RETURN audience;
    ELSIF kind = 'user' AND (SELECT count(*) FROM jsonb_object_keys(audience)) = 2
          AND jsonb_typeof(audience -> 'userId') = 'number'
          AND (audience ->> 'userId') ~ '^[0-9]{1,19}$'
          AND (audience ->> 'userId')::numeric BETWEEN 1 AND 9223372036854775807 THEN
        RETURN audience;
    END IF;
    RAISE EXCEPTION 'invalid audience %', audience USING ERRCODE = '22023';
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

-- Event types under "tidings." are control events: session and user changes that every node's
-- hub acts on (closing streams) and that no client ever sees. Only the server writes them.
CREATE FUNCTION publish_events(types text[], datas jsonb[], audiences jsonb[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(types) AS t WHERE t LIKE 'tidings.%') THEN
        RAISE EXCEPTION 'event types under "tidings." are reserved' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY SELECT tidings_append_events(types, datas, audiences);
END;
$$;

-- publish_event appends one event in the caller's transaction and returns its id. Writers are
-- serialized from this call until they commit, so call it as late in the transaction as you can.
CREATE FUNCTION publish_event(type text, data jsonb, audience jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE sql AS $$
    SELECT publish_events(ARRAY[type], ARRAY[data], ARRAY[audience]);
$$;
