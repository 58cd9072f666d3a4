package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// laneOf returns the lane of text key key, as the index computes it.
func laneOf(t *testing.T, db *postgres.DB, key string) int {
	t.Helper()
	var lane int
	if err := db.Pool.QueryRow(context.Background(), `SELECT hashtext($1) & 15`, key).Scan(&lane); err != nil {
		t.Fatal(err)
	}
	return lane
}

// keyInOtherLane returns a key whose lane differs from lane.
func keyInOtherLane(t *testing.T, db *postgres.DB, lane int) string {
	t.Helper()
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		if laneOf(t, db, k) != lane {
			return k
		}
	}
	t.Fatal("no key in another lane")
	return ""
}

func insertRows(t *testing.T, db *postgres.DB, keys ...string) []int64 {
	t.Helper()
	var ids []int64
	for _, k := range keys {
		var id int64
		err := db.Pool.QueryRow(context.Background(), `
			INSERT INTO outbox (event_id, event_type, topic, key, headers, payload)
			VALUES (gen_random_uuid(), 'test', 'orders.events', $1, '[]', '\x7b7d') RETURNING id`, k).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestLanesLockApart: two publishers never hold one lane (the second finds
// it busy), publishers of different lanes run at once, and a relay from
// before lanes (the global lock, exclusive) and a lane publisher never
// publish at once, whichever comes first.
func TestLanesLockApart(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	const key = "order-1"
	lane := laneOf(t, db, key)
	other := keyInOtherLane(t, db, lane)
	insertRows(t, db, key, other)
	try := func(lane int) (busy bool, claimed int) {
		t.Helper()
		busy, err := db.PublishOutboxLane(ctx, lane, 10, 10*time.Second, postgres.OutboxSkip{}, func(recs []postgres.OutboxRecord, _ map[string]int64, _ int) (postgres.OutboxMarks, error) {
			claimed = len(recs)
			return postgres.OutboxMarks{}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return busy, claimed
	}

	_, err := db.PublishOutboxLane(ctx, lane, 10, 10*time.Second, postgres.OutboxSkip{}, func(recs []postgres.OutboxRecord, _ map[string]int64, _ int) (postgres.OutboxMarks, error) {
		if busy, _ := try(lane); !busy {
			t.Error("a second publisher took a lane held by another")
		}
		if busy, n := try(laneOf(t, db, other)); busy || n != 1 {
			t.Errorf("another lane: busy %v, claimed %d; want its row claimed", busy, n)
		}
		// An old relay's batch finds the outbox taken.
		err := db.InTx(ctx, false, func(tx pgx.Tx) error {
			ok, err := postgres.TryLockOutbox(ctx, tx)
			if ok {
				t.Error("an old-style relay took the global lock while a lane publisher published")
			}
			return err
		})
		return postgres.OutboxMarks{}, err
	})
	if err != nil {
		t.Fatal(err)
	}

	// And while an old relay publishes, no lane publisher does.
	err = db.InTx(ctx, false, func(tx pgx.Tx) error {
		ok, err := postgres.TryLockOutbox(ctx, tx)
		if err != nil || !ok {
			t.Fatalf("old-style lock = %v, %v", ok, err)
		}
		for l := range postgres.OutboxLanes {
			if busy, n := try(l); !busy || n != 0 {
				t.Errorf("lane %d while an old relay publishes: busy %v, claimed %d; want busy", l, busy, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestClaimSkipsWaitingKeys: the claim leaves out the keys the relay named
// as waiting, so a lane whose head is a waiting key still yields its other
// rows; ActiveOutboxLanes names the lanes with rows.
func TestClaimSkipsWaitingKeys(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	const stuck = "stuck"
	lane := laneOf(t, db, stuck)
	var same string
	for i := range 1000 {
		if k := "k" + string(rune('a'+i%26)) + string(rune('a'+i/26)); k != stuck && laneOf(t, db, k) == lane {
			same = k
			break
		}
	}
	if same == "" {
		t.Fatal("no second key in the lane")
	}
	ids := insertRows(t, db, stuck, stuck, stuck, same)

	lanes, err := db.ActiveOutboxLanes(ctx)
	if err != nil || len(lanes) != 1 || lanes[0] != lane {
		t.Fatalf("ActiveOutboxLanes = %v, %v; want [%d]", lanes, err, lane)
	}
	var skip postgres.OutboxSkip
	skip.Add(postgres.OutboxRecord{ID: ids[0], Topic: "orders.events", Key: []byte(stuck)})
	var got []int64
	_, err = db.PublishOutboxLane(ctx, lane, 2, 10*time.Second, skip, func(recs []postgres.OutboxRecord, _ map[string]int64, _ int) (postgres.OutboxMarks, error) {
		for _, r := range recs {
			got = append(got, r.ID)
		}
		return postgres.OutboxMarks{}, nil
	})
	if err != nil || len(got) != 1 || got[0] != ids[3] {
		t.Fatalf("claim with the stuck key waiting = %v, %v; want only row %d", got, err, ids[3])
	}
}

// park parks the rows with the given ids, as the relay does.
func park(t *testing.T, db *postgres.DB, ids ...int64) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(), `UPDATE outbox SET parked_at = now(), last_error = 'test' WHERE id = ANY($1)`, ids); err != nil {
		t.Fatal(err)
	}
}

// laneOfRow returns the lane of the row with the given id, as the index
// computes it.
func laneOfRow(t *testing.T, db *postgres.DB, id int64) int {
	t.Helper()
	var lane int
	err := db.Pool.QueryRow(context.Background(),
		`SELECT hashtext(coalesce(key, encode(key_bytes, 'hex'), id::text)) & 15 FROM outbox WHERE id = $1`, id).Scan(&lane)
	if err != nil {
		t.Fatal(err)
	}
	return lane
}

// claimedParked claims lane's rows without marking any and returns the
// first parked row of each claimed key that has one, as PublishOutboxLane
// gives them to the relay.
func claimedParked(t *testing.T, db *postgres.DB, lane int) map[string]int64 {
	t.Helper()
	var parked map[string]int64
	_, err := db.PublishOutboxLane(context.Background(), lane, 1000, 10*time.Second, postgres.OutboxSkip{},
		func(_ []postgres.OutboxRecord, p map[string]int64, _ int) (postgres.OutboxMarks, error) {
			parked = p
			return postgres.OutboxMarks{}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return parked
}

// TestClaimNamesTheFirstParkedRow: the claim gives each claimed key's
// first parked row, so the relay parks a row only behind an earlier one.
func TestClaimNamesTheFirstParkedRow(t *testing.T) {
	db := pgtest.NewDB(t)
	ids := insertRows(t, db, "k", "k", "k")
	park(t, db, ids[1], ids[2])
	parked := claimedParked(t, db, laneOf(t, db, "k"))
	if len(parked) != 1 || parked["orders.events\x00k"] != ids[1] {
		t.Fatalf("parked keys = %v; want k's first parked row %d", parked, ids[1])
	}
}
