-- +goose Up
-- outbox and inbox are queues: every row is inserted, updated once (sent,
-- processed) and deleted by retention, so they make dead tuples at the rate
-- of the traffic, and each sent or processed row leaves a dead entry in the
-- partial index the relay's or the processor's claim reads (outbox_unsent,
-- inbox_pending). PostgreSQL's defaults vacuum a table once 20% of it is
-- dead: with a week of retention that is millions of dead rows before the
-- first vacuum. These tables are vacuumed and analyzed once 2% of them (and
-- at least 1,000 rows) changed, and after inserts alike, whatever their size.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000
);
ALTER TABLE inbox SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000
);

-- +goose Down
ALTER TABLE inbox RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold,
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold
);
ALTER TABLE outbox RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold,
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold
);
