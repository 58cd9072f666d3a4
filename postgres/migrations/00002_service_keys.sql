-- +goose Up
-- Keys shared by all replicas, generated once when the schema is created.
CREATE TABLE service_keys (
    name text  PRIMARY KEY,
    key  bytea NOT NULL
);

-- page_token signs GetOrders page tokens so they cannot be forged.
INSERT INTO service_keys (name, key)
VALUES ('page_token', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

-- +goose Down
DROP TABLE service_keys;
