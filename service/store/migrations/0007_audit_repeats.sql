-- Issue 15: identical resolve events, buffered together, are written as one row that counts them.
-- A workflow that runs the same block again and again (a loop, retries, a schedule every second)
-- resolves the same keys for the same run many times a second; a row each cost the database more
-- CPU than the resolve itself (the GIN index on `keys` above all). The row keeps the time of the
-- first (`at`) and of the last (`last_at`) of the events it stands for; every other column is the
-- same for all of them. Constant defaults: adding them rewrites nothing, and every row written
-- before stands for one event.
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS occurrences integer NOT NULL DEFAULT 1;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS last_at timestamptz;
