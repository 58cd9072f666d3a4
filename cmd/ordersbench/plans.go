package main

import (
	"context"
	"time"

	"github.com/acme/orders-service/internal/pgplan"
	"github.com/acme/orders-service/postgres"
)

// plansPhase fills orders, outbox and inbox of a database of its own with
// PlanRows rows each, shaped like a long-running service's (see
// postgres.LoadPlanFixture), and checks that GetOrders, both claims and the
// relay's look-up of parked keys are planned as index scans, in the custom
// and the generic plans.
func (b *bench) plansPhase(ctx context.Context) error {
	db, _, err := b.openDatabase(ctx, "plans")
	if err != nil {
		return err
	}
	defer db.Close()
	n := b.sizes.PlanRows
	b.say("loading %s rows into orders, outbox and inbox", human(n))
	start := time.Now()
	if err := postgres.LoadPlanFixture(ctx, db, n); err != nil {
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
