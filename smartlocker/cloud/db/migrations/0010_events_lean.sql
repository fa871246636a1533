-- Ingest: cheaper event rows (owner: smartlocker/cloud/ingest).
--
-- Each event row cost PostgreSQL ~13-15 us of CPU on TimescaleDB, most of it in
-- two indexes and in building jsonb. Now:
--
-- * one index instead of two: the de-duplication key becomes UNIQUE
--   (cabinet, ts, seq), which also serves "one cabinet over a time range" (the
--   audit trail), so events_cabinet_ts (cabinet, ts DESC) goes; a lookup by the
--   full key (cabinet, seq, ts), as ingest does, is served by it as well;
-- * body is json (the text as received, checked for valid JSON) instead of
--   jsonb (parsed into a binary tree on every insert); reads that want jsonb
--   operators cast it (nothing hot reads body).
--
-- Works on plain PostgreSQL and on TimescaleDB hypertables with chunks: each
-- statement propagates to the chunks. The type change rewrites the table (and
-- holds an ACCESS EXCLUSIVE lock while it does): ingest waits meanwhile.
-- Drop the indexes first, so the rewrite does not rebuild them.
DROP INDEX IF EXISTS events_cabinet_ts;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_dedup;
ALTER TABLE events ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE events ADD CONSTRAINT events_dedup UNIQUE (cabinet, ts, seq);
