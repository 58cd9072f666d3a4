package main

import (
	"context"
	"fmt"
	"time"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/postgres"
)

const (
	lightUser = "light-user"
	heavyUser = "heavy-user"
)

// loadOrders bulk-inserts orders with sequence numbers from..to (inclusive)
// in one statement: heavy of them, spread evenly, belong to the heavy user,
// the others to users with about ten orders each; creation times are one
// second apart. Then it vacuums and analyzes the table, as autovacuum would
// after such growth.
func loadOrders(ctx context.Context, db *postgres.DB, from, to, heavy int) error {
	n := to - from + 1
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
		SELECT gen_random_uuid(),
			CASE WHEN (j * $3) / $4 <> ((j - 1) * $3) / $4 THEN $5 ELSE 'bulk-user-' || (i % ($4 / 10 + 1)) END,
			100 + i % 10000, 'USD', 'bench order #' || i, 'new', t, t
		FROM generate_series($1::bigint, $2::bigint) AS i,
			LATERAL (SELECT i - $1 + 1 AS j, now() - (i % 31536000) * interval '1 second' AS t) x`,
		from, to, heavy, n, heavyUser)
	if err != nil {
		return fmt.Errorf("load orders: %w", err)
	}
	_, err = db.Pool.Exec(ctx, `VACUUM ANALYZE orders`)
	return err
}

// getOrdersPhase measures GetOrders' first page of 50 for a user with a few
// orders and a user with very many, in a table of the small size and then
// of the large one.
func (b *bench) getOrdersPhase(ctx context.Context) error {
	s := b.sizes
	if err := waitDrained(ctx, b.svcDB, 2*time.Minute); err != nil {
		return err
	}
	if _, err := b.svcDB.Pool.Exec(ctx, `TRUNCATE orders, outbox`); err != nil {
		return err
	}
	b.say("loading %s orders", human(s.GetSmall))
	_, err := b.svcDB.Pool.Exec(ctx, `
		INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
		SELECT gen_random_uuid(), $1, 100, 'USD', 'bench order', 'new', now() - i * interval '1 day', now()
		FROM generate_series(1, $2) AS i`, lightUser, s.LightOrders)
	if err != nil {
		return err
	}
	if err := loadOrders(ctx, b.svcDB, s.LightOrders+1, s.GetSmall, s.HeavySmall); err != nil {
		return err
	}
	small, err := b.measureGets(ctx, human(s.GetSmall))
	if err != nil {
		return err
	}
	b.say("loading %s orders", human(s.GetLarge))
	start := time.Now()
	if err := loadOrders(ctx, b.svcDB, s.GetSmall+1, s.GetLarge, s.HeavyLarge-s.HeavySmall); err != nil {
		return err
	}
	b.say("loaded in %s", time.Since(start).Round(time.Second))
	large, err := b.measureGets(ctx, human(s.GetLarge))
	if err != nil {
		return err
	}
	var count int
	if err := b.svcDB.Pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE user_id = $1`, heavyUser).Scan(&count); err != nil {
		return err
	}
	if count != s.HeavyLarge {
		return fmt.Errorf("heavy user has %d orders, want %d", count, s.HeavyLarge)
	}
	for _, u := range []struct {
		user         string
		small, large int
	}{{lightUser, s.LightOrders, s.LightOrders}, {heavyUser, s.HeavySmall, s.HeavyLarge}} {
		b.add(fmt.Sprintf("GetOrders p99, user with %s orders, %s rows", human(u.small), human(s.GetSmall)), "ms", small[u.user][1])
		r := b.add(fmt.Sprintf("GetOrders p99, user with %s orders, %s rows", human(u.large), human(s.GetLarge)), "ms", large[u.user][1]).
			vs(human(s.GetSmall)+" rows", small[u.user][1])
		r.target("≤ 1.5× "+human(s.GetSmall), *r.Ratio <= 1.5)
	}
	b.res.Details["get_orders"] = map[string]any{"small_p50_p99_ms": small, "large_p50_p99_ms": large,
		"requests_per_cell": s.GetRequests, "page_size": 50, "callers": 1}
	return nil
}

// measureGets calls GetOrders for the first page of 50 of each user, one
// call at a time, and returns the p50 and p99 per user.
func (b *bench) measureGets(ctx context.Context, label string) (map[string][2]float64, error) {
	out := map[string][2]float64{}
	snap := b.cpuSnap(ctx, b.svcDB)
	for _, user := range []string{lightUser, heavyUser} {
		var want int
		if err := b.svcDB.Pool.QueryRow(ctx, `SELECT least(count(*), 50) FROM orders WHERE user_id = $1`, user).Scan(&want); err != nil {
			return nil, err
		}
		req := &orderspb.GetOrdersRequest{UserId: user, PageSize: 50}
		lat := make([]time.Duration, 0, b.sizes.GetRequests)
		for i := range b.sizes.GetRequests + b.sizes.GetRequests/10 {
			t0 := time.Now()
			resp, err := b.client.GetOrders(ctx, req)
			if err != nil {
				return nil, err
			}
			if got := len(resp.GetOrders()); got != want {
				return nil, fmt.Errorf("GetOrders(%s) returned %d orders, want %d", user, got, want)
			}
			if i >= b.sizes.GetRequests/10 { // the first tenth warms up
				lat = append(lat, time.Since(t0))
			}
		}
		out[user] = [2]float64{quantile(lat, 0.5), quantile(lat, 0.99)}
		b.say("GetOrders %s rows, %s: p50 %.2fms p99 %.2fms", label, user, out[user][0], out[user][1])
	}
	b.account(ctx, "GetOrders "+label+" rows", snap, 2*(b.sizes.GetRequests+b.sizes.GetRequests/10))
	return out, nil
}

// human writes 10000 as 10k and 1000000 as 1M.
func human(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}
