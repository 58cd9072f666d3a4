-- +goose Up
-- When a row was dead-lettered, so that dead rows are deleted after
-- INBOX_DEAD_RETENTION as processed rows are after INBOX_RETENTION. Rows
-- already dead count from now.
ALTER TABLE inbox ADD COLUMN dead_at timestamptz;
UPDATE inbox SET dead_at = now() WHERE dead;
CREATE INDEX inbox_dead_at ON inbox (dead_at) WHERE dead;

-- +goose Down
DROP INDEX inbox_dead_at;
ALTER TABLE inbox DROP COLUMN dead_at;
