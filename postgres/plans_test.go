package postgres_test

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/acme/orders-service/internal/pgplan"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// planRows is the size of each table in TestHotQueriesUseIndexes. With
// statistics gathered, PostgreSQL chooses the same plans at this size as at
// 1M rows and beyond (the benchmark checks them at 1M); it keeps the test
// within a few seconds.
const planRows = 200_000

// TestHotQueriesUseIndexes fills orders, outbox and inbox the way a
// long-running service does (mostly sent and processed rows, a small
// backlog, some parked rows), gathers statistics, and asserts that
// GetOrders, both claims and the relay's look-up of parked keys are planned
// as index scans on their intended index, in the custom plans of the first
// executions and in the generic plans of cached statements.
func TestHotQueriesUseIndexes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := pgtest.NewDB(t)
	start := time.Now()
	var g errgroup.Group
	for _, q := range []string{
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
	} {
		g.Go(func() error {
			_, err := db.Pool.Exec(ctx, q, planRows)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE orders, outbox, inbox`); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %d rows into each table in %s", planRows, time.Since(start).Round(time.Millisecond))

	for _, user := range []string{"heavy", "user-7", "nobody"} {
		for _, q := range postgres.IndexedQueries(user) {
			if user != "heavy" && q.Table != "orders" {
				continue
			}
			for _, mode := range []pgplan.Mode{pgplan.Custom, pgplan.Generic} {
				plan, err := pgplan.Explain(ctx, db.Pool, mode, q.SQL, q.Args...)
				if err != nil {
					t.Fatalf("%s (%s): %v", q.Name, mode, err)
				}
				if err := plan.CheckIndexed(q.Table, q.Index); err != nil {
					t.Errorf("%s for %q (%s): %v", q.Name, user, mode, err)
				} else {
					t.Logf("%s for %q (%s): %s", q.Name, user, mode, plan)
				}
			}
		}
	}

	// The check can fail: a query without a usable index is caught.
	plan, err := pgplan.Explain(ctx, db.Pool, pgplan.Custom,
		`SELECT id FROM orders WHERE description = $1 ORDER BY created_at DESC LIMIT 50`, "order 7")
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.CheckIndexed("orders", "orders_user_created"); err == nil {
		t.Errorf("plan %s passed the check", plan)
	}
}
