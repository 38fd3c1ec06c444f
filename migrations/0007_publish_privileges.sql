-- Least privilege for the services that publish: publish_event is the only door into the event
-- log. It runs with the rights of its owner (the role that migrates tidings, which owns the
-- tables), so a caller needs no right on any table; it still refuses the types under
-- "tidings." (the server's control events, which close streams) and any audience of another
-- shape. Everything behind it is closed to PUBLIC: tidings_append_events, tidings_audience,
-- publish_events and tidings_publish_keyed are for the server, which owns them.
--
-- A SECURITY DEFINER function runs in its caller's session: it must not resolve a name through
-- the caller's search_path, or a caller could put a table or function of its own (a temporary
-- "events", say) in its way. publish_event therefore has a fixed search_path (pg_catalog first,
-- then the schema tidings lives in, then pg_temp last, since a temporary schema left out of the
-- path is searched first), and every function it reaches names tidings' own tables and
-- functions with their schema. The schema is whatever schema this runs in (the database's
-- default, as for the earlier migrations): the functions are made from text with @schema@
-- replaced, in a DO block.
--
-- The role tidings_publisher (NOLOGIN) may call publish_event and nothing else; an operator
-- grants it to the login role of each service that publishes (docs/operations.md). Roles belong
-- to the whole cluster, not to a database: another database of the cluster (another tidings,
-- a test database next to this one) may have made it already, or be making it right now, so
-- its creation tolerates both. A migrating role that may not create roles (no CREATEROLE) gets
-- a warning instead, and the operator makes the role and grants it EXECUTE on publish_event.
-- Roles that could insert into events until now (services that called publish_event as an
-- invoker) are granted EXECUTE on publish_event, so that they keep publishing.
--
-- A function added by a later migration is executable by PUBLIC unless that migration revokes
-- it: revoke it, or make it SECURITY INVOKER behind publish_event.

DO $migration$
DECLARE
    s       text := quote_ident(current_schema());
    holder  regrole;
BEGIN
    IF current_schema() IS NULL THEN
        RAISE EXCEPTION 'no current schema: the search_path names no schema that exists';
    END IF;

    EXECUTE replace($f$
CREATE OR REPLACE FUNCTION @schema@.tidings_append_events(types text[], datas jsonb[], audiences jsonb[])
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
    UPDATE @schema@.event_log_state SET last_id = last_id + n RETURNING last_id INTO last;
    INSERT INTO @schema@.events (id, type, data, audience)
    SELECT last - n + u.ord, u.t, coalesce(u.d, 'null'::jsonb), @schema@.tidings_audience(u.a)
    FROM unnest(types, datas, audiences) WITH ORDINALITY AS u(t, d, a, ord);
    -- A wake-up for every node's listener; the payload is a hint, never the data.
    PERFORM pg_catalog.pg_notify('events', last::text);
    RETURN QUERY SELECT generate_series(last - n + 1, last);
END;
$$
$f$, '@schema@', s);

    EXECUTE replace($f$
CREATE OR REPLACE FUNCTION @schema@.publish_events(types text[], datas jsonb[], audiences jsonb[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(types) AS t WHERE t LIKE 'tidings.%') THEN
        RAISE EXCEPTION 'event types under "tidings." are reserved' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY SELECT @schema@.tidings_append_events(types, datas, audiences);
END;
$$
$f$, '@schema@', s);

    EXECUTE replace($f$
CREATE OR REPLACE FUNCTION @schema@.publish_event(type text, data jsonb, audience jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, @schema@, pg_temp
AS $$
    SELECT @schema@.publish_events(ARRAY[type], ARRAY[data], ARRAY[audience]);
$$
$f$, '@schema@', s);

    EXECUTE replace($f$
CREATE OR REPLACE FUNCTION @schema@.tidings_publish_keyed(types text[], datas jsonb[], audiences jsonb[], calls integer[],
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
    SELECT s.last_id INTO last FROM @schema@.event_log_state s FOR UPDATE;
    -- The calls already stored.
    SELECT coalesce(array_agg(u.c::integer), '{}') INTO known
    FROM unnest(scopes, keys) WITH ORDINALITY AS u(scope, key, c)
    JOIN @schema@.publish_keys k ON k.scope = u.scope AND k.key = u.key
    WHERE k.created > now() - max_age;
    SELECT count(*) INTO total FROM unnest(calls) AS e(c) WHERE NOT e.c = ANY(known);
    IF total > 0 THEN
        UPDATE @schema@.event_log_state SET last_id = last + total;
        INSERT INTO @schema@.events (id, type, data, audience)
        SELECT last + row_number() OVER (ORDER BY u.ord), u.t, coalesce(u.d, 'null'::jsonb), @schema@.tidings_audience(u.a)
        FROM unnest(types, datas, audiences, calls) WITH ORDINALITY AS u(t, d, a, c, ord)
        WHERE NOT u.c = ANY(known);
        -- A wake-up for every node's listener; the payload is a hint, never the data.
        PERFORM pg_catalog.pg_notify('events', (last + total)::text);
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
        INSERT INTO @schema@.publish_keys AS k (scope, key, request, first_id, n)
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
        JOIN @schema@.publish_keys k ON k.scope = u.scope AND k.key = u.key
        WHERE u.c = ANY(known)
    ) r ORDER BY r.c;
END;
$$
$f$, '@schema@', s);

    -- Closed to PUBLIC: the internals, and the door itself (it is open only to those granted
    -- it, since it runs with its owner's rights).
    EXECUTE replace($f$
REVOKE EXECUTE ON FUNCTION @schema@.tidings_audience(jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @schema@.tidings_append_events(text[], jsonb[], jsonb[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @schema@.publish_events(text[], jsonb[], jsonb[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @schema@.tidings_publish_keyed(text[], jsonb[], jsonb[], integer[], text[], text[], bytea[], interval) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @schema@.publish_event(text, jsonb, jsonb) FROM PUBLIC;
$f$, '@schema@', s);

    -- Those that could publish until now, by inserting into events as invokers, still may.
    FOR holder IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
        WHERE c.oid = (s || '.events')::regclass AND a.privilege_type = 'INSERT'
          AND a.grantee <> 0 AND a.grantee <> c.relowner
    LOOP
        EXECUTE replace($f$GRANT EXECUTE ON FUNCTION @schema@.publish_event(text, jsonb, jsonb) TO $f$, '@schema@', s)
            || holder::text;
    END LOOP;

    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tidings_publisher') THEN
        BEGIN
            CREATE ROLE tidings_publisher NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- another database of the cluster made it at the same moment
            WHEN insufficient_privilege THEN
                RAISE WARNING 'tidings may not create the role tidings_publisher: create it (CREATE ROLE tidings_publisher NOLOGIN) and grant it EXECUTE ON FUNCTION %.publish_event(text, jsonb, jsonb)', s;
                RETURN;
        END;
    END IF;
    EXECUTE replace($f$GRANT EXECUTE ON FUNCTION @schema@.publish_event(text, jsonb, jsonb) TO tidings_publisher$f$, '@schema@', s);
    IF NOT has_schema_privilege('tidings_publisher', current_schema(), 'USAGE') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA ' || s || ' TO tidings_publisher';
    END IF;
END;
$migration$;
