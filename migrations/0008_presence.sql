-- Presence and signals (docs/protocol.md section 8), the database side of data/presence.go.
--
-- Each node publishes the users it holds online: one row of presence_nodes (its seq, and its
-- beat, renewed every few seconds from the database's clock) and one row of presence_users per
-- user. A node whose beat is too old is reaped by another's beat, its users with it. Presence
-- is ephemeral (docs/design.md, "The ephemeral path"): both tables are UNLOGGED, never written to
-- the WAL, and emptied by a crash or a failover, after which every node finds its row gone and
-- writes its whole set again.
CREATE UNLOGGED TABLE presence_nodes (
    node text        PRIMARY KEY CHECK (octet_length(node) BETWEEN 1 AND 128),
    seq  bigint      NOT NULL,
    beat timestamptz NOT NULL
);

CREATE UNLOGGED TABLE presence_users (
    node    text   NOT NULL REFERENCES presence_nodes (node) ON DELETE CASCADE,
    user_id bigint NOT NULL,
    PRIMARY KEY (node, user_id)
);

-- The key that signs the notifications of the channels "presence" and "signals": any role that
-- may connect may NOTIFY any channel, so a node believes only what carries this key's
-- signature. The first node to start makes it; it is logged, so that it outlives a failover.
CREATE TABLE ephemeral_key (
    id  int   PRIMARY KEY CHECK (id = 1),
    key bytea NOT NULL CHECK (length(key) = 32)
);

-- Only the role that owns them (the one that migrates and serves tidings) may touch these
-- tables: nothing for PUBLIC, nothing for tidings_publisher (0007), even where default
-- privileges would have granted something.
REVOKE ALL ON TABLE presence_nodes, presence_users, ephemeral_key FROM PUBLIC;
DO $migration$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tidings_publisher') THEN
        REVOKE ALL ON TABLE presence_nodes, presence_users, ephemeral_key FROM tidings_publisher;
    END IF;
END;
$migration$;
