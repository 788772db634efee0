-- A key check value per master key id this database has seen (SPEC 4.2): HMAC-SHA256 under the
-- key of a fixed label, so it tells whether a keyring holds the same key under an id, never the
-- key itself. A server refuses a keyring whose material under a recorded id differs.
CREATE TABLE master_key_checks (
    key_id      text        PRIMARY KEY,
    check_value bytea       NOT NULL CHECK (octet_length(check_value) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
