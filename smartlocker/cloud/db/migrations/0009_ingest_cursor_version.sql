-- Ingest: a version on each receipt cursor, so a worker can keep the cursors in
-- memory and update them with a version check instead of locking and reading
-- every touched cursor before each batch (smartlocker/cloud/ingest/cursors.py).
ALTER TABLE ingest_cursors ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;
