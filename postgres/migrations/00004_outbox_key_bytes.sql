-- +goose Up
-- A record's key may be null or not text (a payment record dead-lettered
-- with its original key). key keeps text keys, readable as before (order
-- ids); key_bytes holds a key that is not valid UTF-8 or contains NUL;
-- both null is a null key. Old rows all have text keys: nothing is rewritten.
ALTER TABLE outbox ALTER COLUMN key DROP NOT NULL, ADD COLUMN key_bytes bytea;
-- NOT VALID: every existing row has key_bytes null, so no scan is needed.
ALTER TABLE outbox ADD CONSTRAINT outbox_one_key CHECK (key IS NULL OR key_bytes IS NULL) NOT VALID;

-- Parked rows by binary key, as outbox_parked is by text key. Rows with a
-- null key have no order among each other and are parked alone.
CREATE INDEX outbox_parked_bytes ON outbox (topic, key_bytes, id) WHERE parked_at IS NOT NULL AND key_bytes IS NOT NULL;

-- +goose Down
DROP INDEX outbox_parked_bytes;
ALTER TABLE outbox DROP CONSTRAINT outbox_one_key;
-- The old schema cannot hold null or binary keys: such rows keep their
-- place with an empty key, as the old relay published them.
UPDATE outbox SET key = '' WHERE key IS NULL;
ALTER TABLE outbox DROP COLUMN key_bytes, ALTER COLUMN key SET NOT NULL;
