package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/acme/orders-service/internal/poll"

	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestLaneOwnersShareLanes: relays' sessions hold disjoint sets of lanes, a
// lane given back or held by a session that ended can be taken by another,
// a session never takes a lane twice, and Members counts the sessions.
func TestLaneOwnersShareLanes(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	open := func() *postgres.LaneOwner {
		t.Helper()
		o, err := db.NewLaneOwner(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { o.Close(context.Background()) })
		return o
	}
	take := func(o *postgres.LaneOwner, n, from int, held []int) []int {
		t.Helper()
		got, err := o.Take(ctx, n, from, held)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	a, b := open(), open()
	if n, err := a.Members(ctx); err != nil || n != 2 {
		t.Fatalf("Members = %d, %v; want 2", n, err)
	}
	first := take(a, 10, 3, nil)
	if len(first) != 10 || first[0] != 3 {
		t.Fatalf("first session took %v; want 10 lanes from lane 3", first)
	}
	if again := take(a, 16, 0, first); len(again) != 6 || slices.ContainsFunc(again, func(l int) bool { return slices.Contains(first, l) }) {
		t.Fatalf("first session took %v more; want the 6 others, none of its own again", again)
	}
	if got := take(b, 8, 0, nil); len(got) != 0 {
		t.Fatalf("second session took %v while the first holds every lane", got)
	}
	if err := a.Release(ctx, first[0]); err != nil {
		t.Fatal(err)
	}
	if got := take(b, 8, 0, nil); !slices.Equal(got, []int{first[0]}) {
		t.Fatalf("second session took %v; want the lane given back, %d", got, first[0])
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The server ends the session a moment after the client closed it.
	poll.Eventually(t, 10*time.Second, "the first session gone", func() bool {
		n, err := b.Members(ctx)
		return err == nil && n == 1
	})
	if got := take(b, 16, 0, []int{first[0]}); len(got) != 15 {
		t.Fatalf("after the first session ended the second took %v; want its 15 lanes", got)
	}
}
