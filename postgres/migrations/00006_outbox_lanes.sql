-- +goose NO TRANSACTION
-- +goose Up
-- Lanes: the relay publishes the outbox in 16 lanes, each at most one
-- publisher at a time, so publishers in any replica work in parallel while a
-- key's rows, always in the same lane, keep their order. A row's lane is a
-- function of its key (a row with a null key is in no order with any other
-- and takes its id instead), computed here and in the relay's claim
-- (postgres.outboxLaneSQL, which must stay identical), so the writers do
-- not change and rows written before this migration have a lane too: no
-- backfill. "& 15", not "abs(...) % 16": abs of the smallest int4 overflows.
-- Changing the lane count is a migration that waits for the outbox to drain.
--
-- This index replaces outbox_unsent: partial, so its size follows the
-- backlog, and one index entry per written row as before. Built and dropped
-- CONCURRENTLY so writers are not blocked on a large table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_unsent_lane
    ON outbox ((hashtext(coalesce(key, encode(key_bytes, 'hex'), id::text)) & 15), id)
    WHERE NOT sent AND parked_at IS NULL;
DROP INDEX CONCURRENTLY IF EXISTS outbox_unsent;

-- +goose Down
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_unsent ON outbox (id) WHERE NOT sent AND parked_at IS NULL;
DROP INDEX CONCURRENTLY IF EXISTS outbox_unsent_lane;
