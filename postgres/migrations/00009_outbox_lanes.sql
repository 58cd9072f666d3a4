-- +goose Up
-- A lane's generation names the Kafka transactional id its publishers use
-- (the lane's id, then ".g" and the generation when above 0). A publisher
-- moves its lane to the next generation only when the current id's last
-- transaction has ended but cannot finish (a partition it wrote has no
-- leader), after fencing it: so every producer of an older generation is
-- fenced, and a lane's new holder fences the current one by initialising
-- it. The move is written, and committed synchronously, before a record
-- is produced with the new id. A lane without a row is in generation 0.
CREATE TABLE outbox_lanes (
    lane       smallint PRIMARY KEY CHECK (lane >= 0),
    generation integer  NOT NULL CHECK (generation >= 0)
);

-- +goose Down
DROP TABLE outbox_lanes;
