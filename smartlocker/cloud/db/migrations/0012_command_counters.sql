-- Each cabinet's command counter in a table of its own (owner: smartlocker/cloud/rules).
--
-- The counter (the replay high-water mark a cabinet checks every command against)
-- was a column of `cabinets`, whose row ingest updates with every batch of a
-- cabinet's messages (`last_seen`) and keeps locked until that transaction commits.
-- Creating a command then waited for ingest's commit, half a millisecond on
-- average under a steady flow of events. Here only command creation writes the
-- row (rules/commands.py: an upsert; a cabinet without a row starts at 1).
CREATE TABLE command_counters (
    cabinet text PRIMARY KEY REFERENCES cabinets (id) ON DELETE CASCADE,
    counter bigint NOT NULL CHECK (counter > 0)
);
INSERT INTO command_counters (cabinet, counter)
    SELECT id, command_counter FROM cabinets WHERE command_counter > 0;
ALTER TABLE cabinets DROP COLUMN command_counter;
