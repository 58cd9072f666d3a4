package main

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/acme/orders-service/internal/pgplan"
	"github.com/acme/orders-service/postgres"
)

// plansPhase fills orders, outbox and inbox of a database of its own with
// PlanRows rows each, shaped like a long-running service's (a heavy user;
// mostly sent and processed rows with a backlog of 1000), and checks that
// GetOrders and both claims are planned as index scans, in the custom and
// the generic plans.
func (b *bench) plansPhase(ctx context.Context) error {
	db, _, err := b.openDatabase(ctx, "plans")
	if err != nil {
		return err
	}
	defer db.Close()
	n := b.sizes.PlanRows
	b.say("loading %s rows into orders, outbox and inbox", human(n))
	start := time.Now()
	var g errgroup.Group
	for _, q := range []string{
		`INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
		SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
			CASE WHEN i % 10 = 0 THEN 'heavy' ELSE 'user-' || (i % ($1 / 10)) END,
			1000, 'USD', 'order ' || i, 'new', now() - i * interval '1 second', now() - i * interval '1 second'
		FROM generate_series(1, $1) AS i`,
		`INSERT INTO outbox (event_id, event_type, topic, key, headers, payload, sent, sent_at)
		SELECT ('00000000-0000-7000-9000-' || lpad(to_hex(i), 12, '0'))::uuid, 'orders.v1.OrderCreated', 'orders.events',
			'order-' || i, '[{"key":"ce_specversion","value":"1.0"}]', '\x7b7d',
			i <= $1 - 1000, CASE WHEN i <= $1 - 1000 THEN now() END
		FROM generate_series(1, $1) AS i`,
		`INSERT INTO inbox (message_id, topic, kafka_partition, kafka_offset, headers, payload, event_type, processed, processed_at)
		SELECT 'message-' || lpad(i::text, 9, '0'), 'payments.events', i % 6, i, '[]', '\x7b7d', 'payments.v1.PaymentSucceeded',
			i <= $1 - 1000, CASE WHEN i <= $1 - 1000 THEN now() END
		FROM generate_series(1, $1) AS i`,
	} {
		g.Go(func() error {
			_, err := db.Pool.Exec(ctx, q, n)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE orders, outbox, inbox`); err != nil {
		return err
	}
	b.say("loaded in %s", time.Since(start).Round(time.Second))
	for _, user := range []string{"heavy", "user-7"} {
		for _, q := range postgres.IndexedQueries(user) {
			if user != "heavy" && q.Table != "orders" {
				continue
			}
			name := q.Name
			if q.Table == "orders" {
				name += " (" + map[string]string{"heavy": "heavy user", "user-7": "user with 10 orders"}[user] + ")"
			}
			for _, mode := range []pgplan.Mode{pgplan.Custom, pgplan.Generic} {
				plan, err := pgplan.Explain(ctx, db.Pool, mode, q.SQL, q.Args...)
				if err != nil {
					return err
				}
				c := PlanCheck{Query: name, Mode: string(mode), Rows: n, Plan: plan.String(), OK: true}
				if err := plan.CheckIndexed(q.Table, q.Index); err != nil {
					c.OK, c.Error = false, err.Error()
				}
				b.res.Plans = append(b.res.Plans, c)
			}
		}
	}
	return nil
}
