package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestPublishOutboxLane: one publishing transaction claims the lane's unsent
// rows in id order, holds the lane's lock while publish runs (another caller
// finds it busy and publishes nothing), and commits the marks publish
// returns; an error of publish leaves every row as it was.
func TestPublishOutboxLane(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO outbox (event_id, event_type, topic, key, headers, payload)
		SELECT gen_random_uuid(), 'test', 'orders.events', 'k', '[]', '\x7b7d'
		FROM generate_series(1, 3) AS i`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		sent    bool
		parked  bool
		lastErr string
	}
	rows := func() []row {
		t.Helper()
		r, err := db.Pool.Query(ctx, `SELECT sent, parked_at IS NOT NULL, coalesce(last_error, '') FROM outbox ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		var out []row
		for r.Next() {
			var x row
			if err := r.Scan(&x.sent, &x.parked, &x.lastErr); err != nil {
				t.Fatal(err)
			}
			out = append(out, x)
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}

	lane := laneOf(t, db, "k")
	failed := errors.New("produce failed")
	busy, err := db.PublishOutboxLane(ctx, lane, 10, 10*time.Second, postgres.OutboxSkip{}, func(recs []postgres.OutboxRecord, _ map[string]int64, _ int) (postgres.OutboxMarks, error) {
		return postgres.OutboxMarks{Sent: []int64{recs[0].ID}}, failed
	})
	if busy || !errors.Is(err, failed) {
		t.Fatalf("PublishOutboxLane = busy %v, %v; want the error of publish", busy, err)
	}
	for i, r := range rows() {
		if r.sent || r.parked {
			t.Errorf("after a failed publish row %d = %+v, want unsent", i, r)
		}
	}

	var claimed int
	busy, err = db.PublishOutboxLane(ctx, lane, 2, 10*time.Second, postgres.OutboxSkip{}, func(recs []postgres.OutboxRecord, _ map[string]int64, _ int) (postgres.OutboxMarks, error) {
		claimed = len(recs)
		otherBusy, err := db.PublishOutboxLane(ctx, lane, 10, 10*time.Second, postgres.OutboxSkip{}, func([]postgres.OutboxRecord, map[string]int64, int) (postgres.OutboxMarks, error) {
			t.Error("a second publisher claimed rows while the first held the lock")
			return postgres.OutboxMarks{}, nil
		})
		if !otherBusy || err != nil {
			t.Errorf("second PublishOutboxLaneLane = busy %v, %v; want busy", otherBusy, err)
		}
		return postgres.OutboxMarks{Sent: []int64{recs[0].ID}, Parked: []int64{recs[1].ID}, ParkErrs: []string{"too large"}}, nil
	})
	if busy || err != nil || claimed != 2 {
		t.Fatalf("PublishOutboxLane = busy %v, %v, claimed %d; want 2 rows claimed", busy, err, claimed)
	}
	want := []row{{sent: true}, {parked: true, lastErr: "too large"}, {}}
	got := rows()
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			t.Fatalf("rows = %+v, want %+v", got, want)
		}
	}

	claimed = 0
	if _, err := db.PublishOutboxLane(ctx, lane, 10, 10*time.Second, postgres.OutboxSkip{}, func(recs []postgres.OutboxRecord, _ map[string]int64, _ int) (postgres.OutboxMarks, error) {
		claimed = len(recs)
		return postgres.OutboxMarks{}, nil
	}); err != nil || claimed != 1 {
		t.Errorf("next PublishOutboxLane claimed %d rows, %v; want only the row neither sent nor parked", claimed, err)
	}
}

// TestOutboxLaneGeneration: a lane starts in generation 0; a batch whose
// marks ask for it moves the lane to the next generation, which the next
// batch of the lane reads, while other lanes stay where they are. A batch
// that fails moves nothing.
func TestOutboxLaneGeneration(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	insertRows(t, db, "k", "other")
	lane, other := laneOf(t, db, "k"), laneOf(t, db, "other")
	if lane == other {
		t.Fatalf("keys k and other share lane %d; the test needs two", lane)
	}
	publish := func(lane int, marks postgres.OutboxMarks, fail error) (generation int) {
		t.Helper()
		generation = -1
		_, err := db.PublishOutboxLane(ctx, lane, 10, 10*time.Second, postgres.OutboxSkip{}, func(_ []postgres.OutboxRecord, _ map[string]int64, g int) (postgres.OutboxMarks, error) {
			generation = g
			return marks, fail
		})
		if !errors.Is(err, fail) {
			t.Fatalf("PublishOutboxLane(%d) = %v, want %v", lane, err, fail)
		}
		return generation
	}
	next := postgres.OutboxMarks{NextGeneration: true}
	for want := range 3 {
		if g := publish(lane, next, nil); g != want {
			t.Fatalf("lane %d's generation = %d, want %d", lane, g, want)
		}
	}
	if g := publish(lane, next, errors.New("produce failed")); g != 3 {
		t.Fatalf("lane %d's generation = %d, want 3", lane, g)
	}
	if g := publish(lane, postgres.OutboxMarks{}, nil); g != 3 {
		t.Fatalf("after a failed batch lane %d's generation = %d, want 3 still", lane, g)
	}
	if g := publish(other, postgres.OutboxMarks{}, nil); g != 0 {
		t.Fatalf("lane %d's generation = %d, want 0", other, g)
	}
}
