-- +goose Up
-- Every outbox row is updated once (sent) and every inbox row once
-- (processed), soon after it was inserted. Those updates cannot be HOT (the
-- partial indexes' predicates change), but when the row's new version fits
-- on the page of the old one, PostgreSQL writes only the changed bytes to
-- the WAL (prefix and suffix compression), about 100 bytes instead of the
-- whole row with headers and payload (700 bytes and more), and no separate
-- lock record. Filling pages only half with inserts keeps room for those
-- versions: a mark costs about a third of the WAL it did, and an order's
-- WAL in all comes close to its two bare INSERTs'. The price is a table
-- about twice the size of its live rows, which retention bounds.
-- Only pages filled from now on keep the room; no rewrite, and the lock
-- taken does not block reads or writes.
ALTER TABLE outbox SET (fillfactor = 50);
ALTER TABLE inbox SET (fillfactor = 50);

-- +goose Down
ALTER TABLE inbox RESET (fillfactor);
ALTER TABLE outbox RESET (fillfactor);
