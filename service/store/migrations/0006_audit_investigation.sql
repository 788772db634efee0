-- Issue 10 item 5: audit events an investigator can use, and an operator can keep for a while.
-- Names, ids and codes only; never a value.

-- For resolves: how the run started (the Trigger enum's number; 0 when not a resolve), its
-- workflow, and the keys that failed ([{"key": ..., "code": BlockErrorCode}]) beside the keys
-- used (`keys`). Constant defaults: adding them rewrites nothing.
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS trigger smallint NOT NULL DEFAULT 0;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS workflow_id text NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS failed_keys jsonb NOT NULL DEFAULT '[]';

-- ListAuditEvents' filters, each in the listing's order (at DESC, id DESC), so that a filtered
-- page reads only its own rows. Workspace and time exist already (0001). Every index is paid by
-- every write, and resolve events are nearly all of them (python -m bench.audit_retention: these
-- four add about 60% to the database's CPU per event written, the five full indexes first tried
-- added 140%), so: no index on principal (a few services; a principal's events are found through
-- the time or workspace index), and the action and failed-keys indexes leave resolves out and
-- events with no failed key out. IF NOT EXISTS here and above: on a large log an operator may run
-- these statements first, the indexes with CREATE INDEX CONCURRENTLY (README, "Audit retention"),
-- and this migration then finds nothing left to do.
CREATE INDEX IF NOT EXISTS audit_events_user_time ON audit_events (user_id, at DESC, id DESC);
CREATE INDEX IF NOT EXISTS audit_events_action_time ON audit_events (action, at DESC, id DESC)
    WHERE action <> 'inputs.resolve';
-- "Which events used or failed on KEY": containment (@>) on the two key lists.
CREATE INDEX IF NOT EXISTS audit_events_keys ON audit_events USING gin (keys jsonb_path_ops);
CREATE INDEX IF NOT EXISTS audit_events_failed_keys ON audit_events USING gin (failed_keys jsonb_path_ops)
    WHERE failed_keys <> '[]';
