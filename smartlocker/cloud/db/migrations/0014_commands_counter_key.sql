-- The uniqueness of a cabinet's command counters from an index that starts with the
-- counter (owner: smartlocker/cloud/rules).
--
-- Commands are looked up by id, with their cabinet as a second condition (an ack,
-- an `unlocked` event: rules/commands.py, reactions.py). Until autovacuum has analysed
-- `commands` (a new database's first minute, or longer), a generic plan costed the
-- index of UNIQUE (cabinet, counter) the same as the primary key for
-- `id = $1 AND cabinet = $2`, and took it: every lookup read all of its cabinet's
-- commands. Nothing searches commands by cabinet alone; with the counter first the
-- index offers no path for `cabinet = $2`, and the primary key serves every lookup
-- (tests/cloud/test_plans.py).
ALTER TABLE commands DROP CONSTRAINT commands_cabinet_counter_key;
ALTER TABLE commands ADD CONSTRAINT commands_counter_cabinet_key UNIQUE (counter, cabinet);
