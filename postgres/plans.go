package postgres

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
)

// IndexedQuery is one of the statements the service runs on every request
// or batch, with the index it must be executed through however large its
// table grows, and example arguments to plan it with.
type IndexedQuery struct {
	Name  string
	SQL   string
	Args  []any
	Table string
	Index string
}

// IndexedQueries returns the hot statements whose plans must stay index
// scans: GetOrders' first and later pages for userID, the relay's claim
// with its look-up of parked keys (text and binary), and the inbox
// processor's claim, with the batch sizes the workers use.
func IndexedQueries(userID string) []IndexedQuery {
	cursor := time.Now().UTC().Truncate(time.Microsecond)
	const anyID = "00000000-0000-7000-8000-000000000000"
	return []IndexedQuery{
		{Name: "GetOrders first page", SQL: listOrdersSQL, Args: []any{userID, 51},
			Table: "orders", Index: "orders_user_created"},
		{Name: "GetOrders next page", SQL: listOrdersAfterSQL, Args: []any{userID, cursor, anyID, 51},
			Table: "orders", Index: "orders_user_created"},
		{Name: "outbox lane claim", SQL: claimOutboxLaneSQL, Args: []any{3, 1000, "{}", "{}", "{}", "{}", "{}"},
			Table: "outbox", Index: "outbox_unsent_lane"},
		{Name: "inbox processor claim", SQL: claimInboxSQL, Args: []any{50},
			Table: "inbox", Index: "inbox_pending"},
		{Name: "outbox lane claim's parked rows (text keys)", SQL: claimOutboxLaneSQL, Args: []any{3, 1000, "{}", "{}", "{}", "{}", "{}"},
			Table: "outbox", Index: "outbox_parked"},
		{Name: "outbox lane claim's parked rows (binary keys)", SQL: claimOutboxLaneSQL, Args: []any{3, 1000, "{}", "{}", "{}", "{}", "{}"},
			Table: "outbox", Index: "outbox_parked_bytes"},
	}
}

// planFixture fills the tables for LoadPlanFixture; each statement takes
// the row count as $1.
var planFixture = []string{
	// A heavy user with a tenth of the orders, everyone else with ~10.
	`INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
	SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, CASE WHEN i % 10 = 0 THEN 'heavy' ELSE 'user-' || (i % ($1 / 10)) END,
		1000, 'USD', 'order ' || i, 'new', now() - i * interval '1 second', now() - i * interval '1 second'
	FROM generate_series(1, $1) AS i`,
	// Sent rows kept for retention, and a backlog of 1000.
	`INSERT INTO outbox (event_id, event_type, topic, key, headers, payload, sent, sent_at)
	SELECT ('00000000-0000-7000-9000-' || lpad(to_hex(i), 12, '0'))::uuid, 'orders.v1.OrderCreated', 'orders.events', 'order-' || i,
		'[{"key":"ce_specversion","value":"1.0"}]', '\x7b7d', i <= $1 - 1000, CASE WHEN i <= $1 - 1000 THEN now() END
	FROM generate_series(1, $1) AS i`,
	// Parked rows, a twentieth of the table: order events a topic ACL
	// refused, and dead letters with binary keys.
	`INSERT INTO outbox (event_id, event_type, topic, key, key_bytes, headers, payload, parked_at, last_error)
	SELECT ('00000000-0000-7000-a000-' || lpad(to_hex(i), 12, '0'))::uuid, 'test',
		CASE WHEN i % 2 = 0 THEN 'orders.events' ELSE 'payments.events.dlq' END,
		CASE WHEN i % 2 = 0 THEN 'parked-' || i END,
		CASE WHEN i % 2 = 1 THEN decode('ff01' || lpad(to_hex(i), 8, '0'), 'hex') END,
		'[]', '\x7b7d', now(), 'TOPIC_AUTHORIZATION_FAILED'
	FROM generate_series(1, $1 / 20) AS i`,
	// Processed rows kept for retention, and 1000 pending.
	`INSERT INTO inbox (message_id, topic, kafka_partition, kafka_offset, headers, payload, event_type, processed, processed_at)
	SELECT 'message-' || lpad(i::text, 9, '0'), 'payments.events', i % 6, i, '[]', '\x7b7d', 'payments.v1.PaymentSucceeded',
		i <= $1 - 1000, CASE WHEN i <= $1 - 1000 THEN now() END
	FROM generate_series(1, $1) AS i`,
}

// LoadPlanFixture fills orders, outbox and inbox of an empty, migrated
// database with rows rows each (at least 10,000), shaped like a
// long-running service's tables: a heavy user with a tenth of the orders;
// mostly sent and processed rows with a backlog of 1000 each; parked outbox
// rows, a twentieth, half with binary keys. It then gathers statistics, so
// that the plans of IndexedQueries are those of a service at that size. It
// is for the plan checks of the tests and the benchmark, never for a
// service's database.
func LoadPlanFixture(ctx context.Context, db *DB, rows int) error {
	if rows < 10_000 {
		return fmt.Errorf("load plan fixture: %d rows, want at least 10000", rows)
	}
	var g errgroup.Group
	for _, q := range planFixture {
		g.Go(func() error {
			_, err := db.Pool.Exec(ctx, q, rows)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("load plan fixture: %w", err)
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE orders, outbox, inbox`); err != nil {
		return fmt.Errorf("analyze plan fixture: %w", err)
	}
	return nil
}
