-- What retention has removed, for every node to see: retention deletes a prefix of the log, and
-- records here, in the same transaction, the last id it deleted. A stream that resumes after an
-- id below it gets reset, whatever a node's recent-events cache still holds. A row of its own,
-- not a column of event_log_state, so that pruning never waits for (or holds) the event writers'
-- counter row.
CREATE TABLE event_log_floor (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint  NOT NULL DEFAULT 0 CHECK (pruned_through >= 0)
);
-- A log pruned before this migration: everything below its oldest event is gone (an empty log
-- was pruned up to its counter).
INSERT INTO event_log_floor (pruned_through)
SELECT coalesce((SELECT min(id) - 1 FROM events), last_id) FROM event_log_state;
