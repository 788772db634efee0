-- The whole schema of the first release. Values appear only as sealed bytea (see
-- service/crypto/envelope.py); no column ever holds plaintext.

CREATE TABLE workspace_members (
    workspace_id text        NOT NULL,
    user_id      text        NOT NULL,
    -- Stored lower-cased: per-secret members are addressed by email, case-insensitively.
    email        text        NOT NULL,
    permission   smallint    NOT NULL CHECK (permission BETWEEN 1 AND 3),
    external     boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE UNIQUE INDEX workspace_members_email ON workspace_members (workspace_id, email);

-- One data key per tenant ('w' = a workspace's secrets, 'u' = a user's personal secrets),
-- wrapped by a master key; `generation` leaves room for rotating data keys themselves.
CREATE TABLE data_keys (
    tenant_kind   char(1)     NOT NULL CHECK (tenant_kind IN ('w', 'u')),
    tenant_id     text        NOT NULL,
    generation    integer     NOT NULL CHECK (generation > 0),
    master_key_id text        NOT NULL,
    wrapped       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    rewrapped_at  timestamptz,
    PRIMARY KEY (tenant_kind, tenant_id, generation)
);
CREATE INDEX data_keys_master_key ON data_keys (master_key_id);

-- The optimistic-concurrency counter of one scope: a workspace's secrets or a user's personal
-- secrets. Saves lock this row, so two saves of one scope serialize and the later one sees the
-- bumped revision.
CREATE TABLE scope_revisions (
    scope    smallint NOT NULL CHECK (scope IN (1, 2)),
    owner_id text     NOT NULL,
    revision bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, owner_id)
);

CREATE TABLE secrets (
    id           bigserial   PRIMARY KEY,
    scope        smallint    NOT NULL CHECK (scope IN (1, 2)),
    -- The workspace id for scope 1, the user id for scope 2.
    owner_id     text        NOT NULL,
    key          text        NOT NULL CHECK (key ~ '^[A-Za-z0-9_]+$' AND length(key) <= 256),
    version      bigint      NOT NULL CHECK (version > 0),
    sealed       bytea       NOT NULL,
    display_name text        NOT NULL DEFAULT '',
    description  text        NOT NULL DEFAULT '',
    restricted   boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text        NOT NULL,
    UNIQUE (scope, owner_id, key)
);

-- The last versions of each secret, the current one included, each sealed under its own version
-- number.
CREATE TABLE secret_versions (
    secret_id     bigint      NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version       bigint      NOT NULL,
    sealed        bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text        NOT NULL,
    restored_from bigint,
    PRIMARY KEY (secret_id, version)
);

CREATE TABLE secret_members (
    secret_id bigint      NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    user_id   text        NOT NULL,
    role      smallint    NOT NULL CHECK (role IN (1, 2)),
    added_at  timestamptz NOT NULL DEFAULT now(),
    added_by  text        NOT NULL,
    PRIMARY KEY (secret_id, user_id)
);
CREATE INDEX secret_members_user ON secret_members (user_id);

CREATE TABLE audit_events (
    id           bigserial   PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    principal    text        NOT NULL,
    user_id      text        NOT NULL DEFAULT '',
    workspace_id text        NOT NULL DEFAULT '',
    action       text        NOT NULL,
    -- [{"key": ..., "scope": 1|2, "version": n}]: names and versions, never values.
    keys         jsonb       NOT NULL DEFAULT '[]',
    execution_id text        NOT NULL DEFAULT '',
    outcome      text        NOT NULL,
    detail       text        NOT NULL DEFAULT ''
);
-- Listed newest first by when the event happened (resolve events are written in batches, so
-- their ids can be later than their times).
CREATE INDEX audit_events_time ON audit_events (at DESC, id DESC);
CREATE INDEX audit_events_workspace_time ON audit_events (workspace_id, at DESC, id DESC);
