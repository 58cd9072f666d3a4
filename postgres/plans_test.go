package postgres_test

import (
	"context"
	"testing"
	"time"

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
	if err := postgres.LoadPlanFixture(ctx, db, planRows); err != nil {
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
