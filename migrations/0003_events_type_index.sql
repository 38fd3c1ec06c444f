-- The page reads the last messages by type, newest first; without this index it walks every
-- newer event of any type.
CREATE INDEX events_type_id_idx ON events (type, id);
