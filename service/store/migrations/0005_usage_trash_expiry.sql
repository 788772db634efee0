-- Issue 13: usage per (secret, workflow), the trash of deleted secrets, and expiry.
-- Ids, names, times and counts only; values appear only as sealed bytea, as everywhere else.

-- Optional expiry of a secret: past it, a run that would use the secret fails its block
-- (SECRET_EXPIRED) instead of using it.
ALTER TABLE secrets ADD COLUMN expires_at timestamptz;
CREATE INDEX secrets_expires_at ON secrets (expires_at) WHERE expires_at IS NOT NULL;

-- Usage, written by the resolve audit buffer once per batch (service/app/usage.py): one row per
-- (secret, workflow) that used it, so the table grows with workflows, never with runs. A row
-- not used for 365 days is pruned, and so is every row of a secret purged from the trash.
-- `secret_id` has no foreign key: a deleted secret's usage stays while it is in the trash (the
-- in-use guard and a restore still see it) and goes with the purge.
CREATE TABLE secret_usage (
    secret_id         bigint      NOT NULL,
    -- '' for resolves that named no workflow.
    workflow_id       text        NOT NULL,
    last_used_at      timestamptz NOT NULL,
    last_execution_id text        NOT NULL DEFAULT '',
    PRIMARY KEY (secret_id, workflow_id)
);
CREATE INDEX secret_usage_last_used ON secret_usage (last_used_at);

-- Uses per UTC day, for "uses in the last 30 days": at most 31 rows per (secret, workflow);
-- older days are pruned.
CREATE TABLE secret_usage_days (
    secret_id   bigint NOT NULL,
    workflow_id text   NOT NULL,
    day         date   NOT NULL,
    uses        bigint NOT NULL CHECK (uses > 0),
    PRIMARY KEY (secret_id, workflow_id, day)
);
CREATE INDEX secret_usage_days_day ON secret_usage_days (day);

-- The trash: a deleted secret moves here whole, under its own id (its sealed values are bound
-- to that id, so they still open once restored), for SECRETS_TRASH_DAYS days; then, or on an
-- explicit purge, its rows are deleted for good. Nothing here is ever resolved. The current
-- value is the kept version numbered `version`.
CREATE TABLE deleted_secrets (
    id           bigint      PRIMARY KEY,
    scope        smallint    NOT NULL CHECK (scope IN (1, 2)),
    owner_id     text        NOT NULL,
    key          text        NOT NULL,
    version      bigint      NOT NULL,
    display_name text        NOT NULL,
    description  text        NOT NULL,
    restricted   boolean     NOT NULL,
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL,
    created_by   text        NOT NULL,
    updated_at   timestamptz NOT NULL,
    updated_by   text        NOT NULL,
    deleted_at   timestamptz NOT NULL DEFAULT now(),
    deleted_by   text        NOT NULL
);
CREATE INDEX deleted_secrets_owner ON deleted_secrets (scope, owner_id, deleted_at DESC);
CREATE INDEX deleted_secrets_deleted_at ON deleted_secrets (deleted_at);

CREATE TABLE deleted_secret_versions (
    secret_id     bigint      NOT NULL REFERENCES deleted_secrets (id) ON DELETE CASCADE,
    version       bigint      NOT NULL,
    sealed        bytea       NOT NULL,
    created_at    timestamptz NOT NULL,
    created_by    text        NOT NULL,
    restored_from bigint,
    PRIMARY KEY (secret_id, version)
);

CREATE TABLE deleted_secret_members (
    secret_id bigint      NOT NULL REFERENCES deleted_secrets (id) ON DELETE CASCADE,
    user_id   text        NOT NULL,
    role      smallint    NOT NULL CHECK (role IN (1, 2)),
    added_at  timestamptz NOT NULL,
    added_by  text        NOT NULL,
    PRIMARY KEY (secret_id, user_id)
);
