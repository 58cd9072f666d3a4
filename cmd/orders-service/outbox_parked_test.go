package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/acme/orders-service/postgres/pgtest"
)

// TestOutboxParkedAndRedrive: outbox-parked lists parked rows with their
// error; outbox-redrive un-parks the named row with its key's other parked
// rows, and refuses an argument that is not a row id.
func TestOutboxParkedAndRedrive(t *testing.T) {
	dsn := pgtest.NewDSN(t)
	db := pgtest.Open(t, dsn)
	ctx := context.Background()
	var ids []int64
	for _, key := range []string{"order-a", "order-a", "order-b"} {
		var id int64
		err := db.Pool.QueryRow(ctx, `
			INSERT INTO outbox (event_id, event_type, topic, key, headers, payload, parked_at, last_error)
			VALUES (gen_random_uuid(), 'test', 'payments.events.dlq', $1, '[]', '\x7b7d', now(), 'MESSAGE_TOO_LARGE: test')
			RETURNING id`, key).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	env := envOf(map[string]string{"POSTGRES_DSN": dsn})

	var out bytes.Buffer
	if err := run(ctx, []string{"outbox-parked"}, env, &out); err != nil {
		t.Fatalf("outbox-parked: %v", err)
	}
	if !strings.Contains(out.String(), "3 parked outbox row(s)") || !strings.Contains(out.String(), "MESSAGE_TOO_LARGE: test") {
		t.Errorf("outbox-parked printed %q", out.String())
	}

	out.Reset()
	if err := run(ctx, []string{"outbox-redrive", strconv.FormatInt(ids[1], 10)}, env, &out); err != nil {
		t.Fatalf("outbox-redrive: %v", err)
	}
	if !strings.Contains(out.String(), "un-parked 2 outbox row(s)") {
		t.Errorf("outbox-redrive printed %q, want both rows of order-a un-parked", out.String())
	}
	var left int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL`).Scan(&left); err != nil || left != 1 {
		t.Errorf("parked rows left = %d, %v; want 1 (order-b)", left, err)
	}

	if err := run(ctx, []string{"outbox-redrive", "abc"}, env, &out); err == nil || !strings.Contains(err.Error(), `"abc" is not an outbox row id`) {
		t.Errorf("outbox-redrive abc = %v, want a usage error", err)
	}
}
