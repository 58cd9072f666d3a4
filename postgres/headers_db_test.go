package postgres_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestOutboxHeadersRoundTrip: headers written by InsertOutbox are claimed
// back exactly, text and binary values alike, and PostgreSQL prints the
// usual ones in the shape decodeHeaders parses without encoding/json.
func TestOutboxHeadersRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	usual := []postgres.Header{
		{Key: "ce_specversion", Value: []byte("1.0")},
		{Key: "ce_id", Value: []byte("0190f5e4-8c1a-7b3e-9f00-1234567890ab")},
		{Key: "ce_time", Value: []byte("2026-11-26T12:00:00.123456Z")},
		{Key: "unicode ключ 🔑", Value: []byte("значение ✓")},
		{Key: "binary", Value: []byte{0, 1, 0xfe, 0xff}},
		{Key: "empty", Value: []byte{}},
	}
	unusual := []postgres.Header{
		{Key: "quote\"back\\slash", Value: []byte("tab\tnew\nline\x07")},
	}
	err := db.InTx(ctx, false, func(tx pgx.Tx) error {
		return postgres.InsertOutbox(ctx, tx,
			postgres.OutboxMessage{EventID: "0190f5e4-8c1a-7b3e-9f00-1234567890ab", EventType: "t", Topic: "orders.events", Key: []byte("k"), Headers: usual, Payload: []byte("{}")},
			postgres.OutboxMessage{EventID: "0190f5e4-8c1a-7b3e-9f00-1234567890ac", EventType: "t", Topic: "orders.events", Key: []byte("k"), Headers: unusual, Payload: []byte("{}")})
	})
	if err != nil {
		t.Fatal(err)
	}
	var printed string
	if err := db.Pool.QueryRow(ctx, `SELECT headers::text FROM outbox ORDER BY id LIMIT 1`).Scan(&printed); err != nil {
		t.Fatal(err)
	}
	if hs, ok := postgres.DecodeHeadersFast([]byte(printed)); !ok || !reflect.DeepEqual(hs, usual) {
		t.Fatalf("fast path on PostgreSQL's %s: %q, %v; want %q", printed, hs, ok, usual)
	}
	var recs []postgres.OutboxRecord
	err = db.InTx(ctx, false, func(tx pgx.Tx) error {
		recs, err = postgres.ClaimOutbox(ctx, tx, 10)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || !reflect.DeepEqual(recs[0].Headers, usual) || !reflect.DeepEqual(recs[1].Headers, unusual) {
		t.Fatalf("claimed %+v; want headers %q then %q", recs, usual, unusual)
	}
}

// TestHeaderListScansJSONB: a jsonb value scans into the claims' header list
// in text and binary formats alike, and SQL NULL gives no headers.
func TestHeaderListScansJSONB(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	want := postgres.HeaderList{{Key: "ce_id", Value: []byte("1")}, {Key: "bin", Value: []byte{0, 0xff}}}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		var got, null postgres.HeaderList
		err := db.Pool.QueryRow(ctx, `SELECT '[{"key": "ce_id", "value": "1"}, {"key": "bin", "value_base64": "AP8="}]'::jsonb, NULL::jsonb`, mode).
			Scan(&got, &null)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) || null != nil {
			t.Errorf("mode %v: scanned %q and %q, want %q and nil", mode, got, null, want)
		}
	}
}
