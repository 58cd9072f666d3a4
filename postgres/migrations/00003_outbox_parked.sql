-- +goose Up
-- A row Kafka can never accept (too large, a topic the relay may not write,
-- ...) is parked: kept, with the error, and skipped by the relay's claim
-- until re-driven. Later rows of the same topic and key are parked behind it
-- so one order's events never overtake each other.
ALTER TABLE outbox ADD COLUMN parked_at timestamptz, ADD COLUMN last_error text;

-- The claim reads rows neither sent nor parked, in id order.
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (id) WHERE NOT sent AND parked_at IS NULL;
-- Parked rows by key: the relay parks a claimed row whose key has one, and
-- re-driving brings a key's parked rows back together.
CREATE INDEX outbox_parked ON outbox (topic, key, id) WHERE parked_at IS NOT NULL;

-- +goose Down
DROP INDEX outbox_parked;
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (id) WHERE NOT sent;
ALTER TABLE outbox DROP COLUMN last_error, DROP COLUMN parked_at;
