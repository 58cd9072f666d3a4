package postgres_test

import (
	"bytes"
	"context"
	"maps"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

func keyedMessage(topic string, key []byte) postgres.OutboxMessage {
	return postgres.OutboxMessage{EventID: uuid.NewString(), EventType: "test", Topic: topic, Key: key, Payload: []byte(`{}`)}
}

// claimAll claims every unsent, unparked row.
func claimAll(t *testing.T, db *postgres.DB) []postgres.OutboxRecord {
	t.Helper()
	var recs []postgres.OutboxRecord
	err := db.InTx(context.Background(), false, func(tx pgx.Tx) error {
		var err error
		recs, err = postgres.ClaimOutbox(context.Background(), tx, 1000)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestOutboxKeepsEveryKey: a record key written to the outbox, alone or in
// a multi-row insert, is claimed exactly as written: nil stays a null key,
// an empty key stays empty (not null), text stays text and is readable in
// the key column, and bytes a text column cannot hold (not UTF-8, or NUL)
// come back as the same bytes.
func TestOutboxKeepsEveryKey(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	keys := [][]byte{nil, {}, []byte("order-1"), {0xff, 0x00, 0x01}, []byte("a\x00b"), []byte("zürich")}
	var msgs []postgres.OutboxMessage
	for _, k := range keys {
		msgs = append(msgs, keyedMessage("single", k))
	}
	var multi []postgres.OutboxMessage
	for _, k := range keys {
		multi = append(multi, keyedMessage("multi", k))
	}
	err := db.InTx(ctx, false, func(tx pgx.Tx) error {
		for _, m := range msgs {
			if err := postgres.InsertOutbox(ctx, tx, m); err != nil {
				return err
			}
		}
		return postgres.InsertOutbox(ctx, tx, multi...)
	})
	if err != nil {
		t.Fatal(err)
	}
	recs := claimAll(t, db)
	if len(recs) != 2*len(keys) {
		t.Fatalf("claimed %d rows, want %d", len(recs), 2*len(keys))
	}
	for i, r := range recs {
		want := keys[i%len(keys)]
		if (r.Key == nil) != (want == nil) || !bytes.Equal(r.Key, want) {
			t.Errorf("row %d (%s): key %#v, want %#v", r.ID, r.Topic, r.Key, want)
		}
	}
	var text string
	if err := db.Pool.QueryRow(ctx, `SELECT key FROM outbox WHERE topic = 'multi' AND key_bytes IS NULL AND key LIKE 'order-%'`).Scan(&text); err != nil || text != "order-1" {
		t.Errorf("text key column = %q, %v; want order-1, readable", text, err)
	}
}

// TestParkedNullAndBinaryKeys: a parked row with a binary key holds back
// later rows of the same bytes (the claim names it) and re-driving it
// brings its key's rows back together; a parked row with a null key holds
// back nothing and is re-driven alone.
func TestParkedNullAndBinaryKeys(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	binKey, textKey := []byte{0xff, 0x00, 0x01}, []byte("order-1")
	err := db.InTx(ctx, false, func(tx pgx.Tx) error {
		return postgres.InsertOutbox(ctx, tx,
			keyedMessage("dlq", nil), keyedMessage("dlq", binKey), keyedMessage("dlq", textKey),
			keyedMessage("dlq", binKey), keyedMessage("dlq", nil), keyedMessage("dlq", []byte{0xff, 0x00, 0x02}))
	})
	if err != nil {
		t.Fatal(err)
	}
	recs := claimAll(t, db)
	ids := func(rs ...postgres.OutboxRecord) []int64 {
		var out []int64
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	// Park the first null-keyed, the first binary and the text row.
	park(t, db, ids(recs[0], recs[1], recs[2])...)

	// The claim names, for each of the later rows, its key's first parked
	// row: the binary key's only.
	parked := map[string]int64{}
	for _, r := range recs[3:] {
		maps.Copy(parked, claimedParked(t, db, laneOfRow(t, db, r.ID)))
	}
	want := map[string]int64{"dlq\x00" + string(binKey): recs[1].ID}
	if !maps.Equal(parked, want) {
		t.Errorf("parked keys named with the later rows = %v, want %v (the binary key only)", parked, want)
	}

	list, err := db.ListParkedOutbox(ctx, 10)
	if err != nil || len(list) != 3 || list[0].Key != nil || !bytes.Equal(list[1].Key, binKey) || !bytes.Equal(list[2].Key, textKey) {
		t.Errorf("ListParkedOutbox = %+v, %v; want the null, binary and text rows with their keys", list, err)
	}

	// The later row of the binary key is parked behind its first, as the
	// relay does; re-driving the first brings both back, nothing else.
	park(t, db, recs[3].ID)
	if n, err := db.RedriveOutbox(ctx, ids(recs[1])); err != nil || n != 2 {
		t.Errorf("RedriveOutbox(binary key row) = %d, %v; want 2 rows", n, err)
	}
	if n, err := db.RedriveOutbox(ctx, ids(recs[0])); err != nil || n != 1 {
		t.Errorf("RedriveOutbox(null key row) = %d, %v; want 1 row", n, err)
	}
	if n, err := db.CountParkedOutbox(ctx, 10); err != nil || n != 1 {
		t.Errorf("parked rows left = %d, %v; want 1, the text key's", n, err)
	}
}
