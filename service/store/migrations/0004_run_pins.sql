-- One snapshot per run (issue 14, part 3): the version of each key the first resolve of an
-- execution used, so that its later resolves use the same one. Ids and versions only, never a
-- value or sealed bytes. EndRun deletes an execution's pins; a pin is ignored 24 h after it was
-- made, and such pins are deleted now and then by the resolves that pin (app/pins.py).
CREATE TABLE run_pins (
    workspace_id text        NOT NULL,
    execution_id text        NOT NULL,
    run_user_id  text        NOT NULL,
    key          text        NOT NULL,
    scope        smallint    NOT NULL CHECK (scope IN (1, 2)),
    secret_id    bigint      NOT NULL,
    version      bigint      NOT NULL,
    pinned_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, execution_id, run_user_id, key)
);
CREATE INDEX run_pins_pinned_at ON run_pins (pinned_at);
