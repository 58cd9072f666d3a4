package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/postgres/pgtest"
)

// adminLine returns the one "admin command" log line of out, decoded.
func adminLine(t *testing.T, out string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, l := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "admin command" {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d admin command log lines in %q, want 1", len(found), out)
	}
	return found[0]
}

// TestOutboxRedriveNeedsAll: outbox-redrive without ids un-parks nothing
// and asks for -all; with -all it un-parks every parked row. Each run logs
// one line saying who ran what on how many rows.
func TestOutboxRedriveNeedsAll(t *testing.T) {
	dsn := pgtest.NewDSN(t)
	db := pgtest.Open(t, dsn)
	ctx := context.Background()
	for _, key := range []string{"order-a", "order-b"} {
		_, err := db.Pool.Exec(ctx, `
			INSERT INTO outbox (event_id, event_type, topic, key, headers, payload, parked_at, last_error)
			VALUES (gen_random_uuid(), 'test', 'payments.events.dlq', $1, '[]', '\x7b7d', now(), 'MESSAGE_TOO_LARGE: test')`, key)
		if err != nil {
			t.Fatal(err)
		}
	}
	parked := func() (n int) {
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	env := envOf(map[string]string{"POSTGRES_DSN": dsn})
	var out bytes.Buffer
	err := run(ctx, []string{"outbox-redrive"}, env, &out)
	if err == nil || !strings.Contains(err.Error(), "-all") {
		t.Errorf("outbox-redrive without ids: %v, want a usage error asking for -all", err)
	}
	if n := parked(); n != 2 {
		t.Errorf("after outbox-redrive without ids: %d parked rows, want both still parked", n)
	}

	out.Reset()
	if err := run(ctx, []string{"outbox-redrive", "-all"}, env, &out); err != nil {
		t.Fatalf("outbox-redrive -all: %v", err)
	}
	if n := parked(); n != 0 {
		t.Errorf("after outbox-redrive -all: %d parked rows, want 0", n)
	}
	line := adminLine(t, out.String())
	if line["command"] != "outbox-redrive" || line["rows"] != 2.0 || line["os_user"] == "" || line["db_user"] != "postgres" {
		t.Errorf("admin log line %v, want command outbox-redrive, rows 2, os_user and db_user postgres", line)
	}
}

// TestOutboxParkedIsReadOnly: outbox-parked on a database without the
// schema applies no migrations: it fails saying so and leaves the database
// as it was; on a migrated one it logs one admin line.
func TestOutboxParkedIsReadOnly(t *testing.T) {
	ctx := context.Background()
	empty := pgtest.NewEmptyDSN(t)
	var out bytes.Buffer
	err := run(ctx, []string{"outbox-parked"}, envOf(map[string]string{"POSTGRES_DSN": empty}), &out)
	if err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Errorf("outbox-parked on an empty database: %v, want an error telling to run migrate", err)
	}
	conn, err := pgx.Connect(ctx, empty)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("outbox-parked created %d tables in the empty database, want none (read-only)", tables)
	}

	out.Reset()
	if err := run(ctx, []string{"outbox-parked"}, envOf(map[string]string{"POSTGRES_DSN": pgtest.NewDSN(t)}), &out); err != nil {
		t.Fatalf("outbox-parked: %v", err)
	}
	if line := adminLine(t, out.String()); line["command"] != "outbox-parked" || line["rows"] != 0.0 {
		t.Errorf("admin log line %v, want command outbox-parked, rows 0", line)
	}
}
