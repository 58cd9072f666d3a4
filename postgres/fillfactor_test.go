package postgres_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/postgres"
)

// pageOf returns the heap page of each row of table selected by where
// (with its one argument), keyed by id column idCol.
func pageOf(t *testing.T, db *postgres.DB, table, idCol, where string, arg any) map[string]int64 {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(),
		fmt.Sprintf(`SELECT %s::text, (ctid::text::point)[0]::bigint FROM %s WHERE %s`, idCol, table, where), arg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var page int64
		if err := rows.Scan(&id, &page); err != nil {
			t.Fatal(err)
		}
		out[id] = page
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// movedRows counts the rows whose page changed between before and after.
func movedRows(t *testing.T, before, after map[string]int64) int {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("%d rows before, %d after", len(before), len(after))
	}
	moved := 0
	for id, page := range before {
		if after[id] != page {
			moved++
		}
	}
	return moved
}

// TestMarksStayOnTheirPage: marking outbox rows sent and inbox rows
// processed writes each row's new version on its own page, where
// PostgreSQL logs only the changed bytes instead of the whole row (see
// migration 00007). With full pages every version moved to another page.
func TestMarksStayOnTheirPage(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t)
	user := "fillfactor-" + t.Name()
	for i := range 200 {
		if _, err := svc.CreateOrder(ctx, orders.NewOrder{UserID: user, Amount: int64(100 + i),
			Description: fmt.Sprintf("order %d of a test of the pages the outbox's marks land on", i)}); err != nil {
			t.Fatal(err)
		}
	}
	const outboxRows = `convert_from(payload, 'UTF8')::jsonb->>'user_id' = $1`
	before := pageOf(t, db, "outbox", "id", outboxRows, user)
	ids := make([]int64, 0, len(before))
	for id := range before {
		var n int64
		fmt.Sscan(id, &n)
		ids = append(ids, n)
	}
	if err := db.InTx(ctx, false, func(tx pgx.Tx) error { return postgres.MarkOutboxSent(ctx, tx, ids) }); err != nil {
		t.Fatal(err)
	}
	after := pageOf(t, db, "outbox", "id", outboxRows, user)
	if moved := movedRows(t, before, after); moved != 0 {
		t.Errorf("marking %d outbox rows sent moved %d of them to another page", len(before), moved)
	}

	msgs := make([]postgres.InboxMessage, 200)
	msgIDs := make([]string, len(msgs))
	for i := range msgs {
		msgIDs[i] = fmt.Sprintf("%s-%d", user, i)
		msgs[i] = postgres.InboxMessage{MessageID: msgIDs[i], Topic: "payments.events", Offset: int64(i), Key: []byte(user),
			EventType: "payments.v1.PaymentSucceeded", Payload: []byte(`{"order_id":"00000000-0000-0000-0000-000000000000","payment_id":"a payment id of typical length"}`),
			Headers: cloudevents.AppendHeaders([]postgres.Header(nil), cloudevents.Event{ID: msgIDs[i], Type: "payments.v1.PaymentSucceeded", Source: "payments-service"})}
	}
	if _, err := db.InsertInbox(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	const inboxRows = `message_id LIKE $1 || '-%'`
	before = pageOf(t, db, "inbox", "message_id", inboxRows, user)
	if err := db.InTx(ctx, false, func(tx pgx.Tx) error { return postgres.MarkInboxProcessed(ctx, tx, msgIDs...) }); err != nil {
		t.Fatal(err)
	}
	if moved := movedRows(t, before, pageOf(t, db, "inbox", "message_id", inboxRows, user)); moved != 0 {
		t.Errorf("marking %d inbox rows processed moved %d of them to another page", len(before), moved)
	}
}
