-- +goose Up
CREATE TABLE orders (
    id          uuid        PRIMARY KEY,
    user_id     text        NOT NULL,
    amount      bigint      NOT NULL CHECK (amount > 0),
    currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('new', 'finished', 'cancelled')),
    request_id  text,
    -- request_hash fingerprints the creating request so a reused request_id
    -- with different fields is told apart from a retry.
    request_hash bytea,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Idempotency: one order per (user, request_id).
CREATE UNIQUE INDEX orders_user_request_id ON orders (user_id, request_id) WHERE request_id IS NOT NULL;
-- Newest-first keyset paging per user.
CREATE INDEX orders_user_created ON orders (user_id, created_at DESC, id DESC);

CREATE TABLE outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   uuid        NOT NULL UNIQUE,
    event_type text        NOT NULL,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    headers    jsonb       NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent       boolean     NOT NULL DEFAULT false,
    sent_at    timestamptz
);

-- The relay's claim reads unsent rows in id order; this index holds only them.
CREATE INDEX outbox_unsent ON outbox (id) WHERE NOT sent;
-- Retention deletes sent rows by age.
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent;

CREATE TABLE inbox (
    message_id      text        PRIMARY KEY,
    seq             bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    key             bytea,
    headers         jsonb       NOT NULL,
    payload         bytea       NOT NULL,
    event_type      text        NOT NULL DEFAULT '',
    processed       boolean     NOT NULL DEFAULT false,
    dead            boolean     NOT NULL DEFAULT false,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);

-- The processor claims pending rows whose retry time has come, in arrival order.
CREATE INDEX inbox_pending ON inbox (next_attempt_at, seq) WHERE NOT processed AND NOT dead;
-- Retention deletes processed rows by age.
CREATE INDEX inbox_processed_at ON inbox (processed_at) WHERE processed;

-- +goose Down
DROP TABLE inbox;
DROP TABLE outbox;
DROP TABLE orders;
