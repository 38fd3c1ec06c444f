-- What a node must know to run on this schema (docs/operations.md, "Which releases may run side
-- by side"). Migrations expand, and only a later release contracts (drops or renames what an
-- earlier release uses); the migration that contracts also raises needs_migration to its own
-- version, so that a node too old for the schema refuses to start, naming the migration it
-- lacks, instead of failing at its first query that touches what is gone. data.Migrate checks it
-- after every run.
CREATE TABLE tidings_schema (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    needs_migration integer NOT NULL CHECK (needs_migration >= 0)
);
INSERT INTO tidings_schema (needs_migration) VALUES (0);
