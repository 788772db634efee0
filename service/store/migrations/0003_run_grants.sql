-- Run grants (issue 14, part 2): what a grant's token says is MAC'd in the token itself, so a
-- resolve checks it without reading here. Only the grant's id and metadata are kept, never the
-- token; this table says which grants were revoked or ended (every replica keeps that set in
-- memory, kept current by change notifications).
CREATE TABLE run_grants (
    id           text        PRIMARY KEY,
    workspace_id text        NOT NULL,
    workflow_id  text        NOT NULL,
    execution_id text        NOT NULL,
    run_user_id  text        NOT NULL,
    issued_by    text        NOT NULL,
    issued_at    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    ended_at     timestamptz
);
CREATE INDEX run_grants_execution ON run_grants (workspace_id, execution_id);
-- What a replica loads when it (re)connects: grants stopped before they expire.
CREATE INDEX run_grants_stopped ON run_grants (expires_at) WHERE revoked_at IS NOT NULL OR ended_at IS NOT NULL;

-- Executions that ended (EndRun): no grant is issued for them again.
CREATE TABLE run_ends (
    workspace_id text        NOT NULL,
    execution_id text        NOT NULL,
    ended_at     timestamptz NOT NULL DEFAULT now(),
    ended_by     text        NOT NULL,
    PRIMARY KEY (workspace_id, execution_id)
);
