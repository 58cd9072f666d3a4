package postgres_test

import (
	"context"
	"slices"
	"testing"

	"github.com/acme/orders-service/postgres/pgtest"
)

// TestQueueTablesVacuumEarly: the migrations give outbox and inbox
// autovacuum thresholds of 2% (at least 1,000 rows) for updates, deletes
// and inserts alike, instead of the server's 20%, so the dead rows of
// marking sent or processed and of retention are reclaimed whatever the
// tables' size (see docs/performance.md).
func TestQueueTablesVacuumEarly(t *testing.T) {
	db := pgtest.Open(t, testDSN)
	want := []string{
		"autovacuum_vacuum_scale_factor=0.02", "autovacuum_vacuum_threshold=1000",
		"autovacuum_vacuum_insert_scale_factor=0.02", "autovacuum_vacuum_insert_threshold=1000",
		"autovacuum_analyze_scale_factor=0.02", "autovacuum_analyze_threshold=1000",
	}
	for _, table := range []string{"outbox", "inbox"} {
		var opts []string
		err := db.Pool.QueryRow(context.Background(),
			`SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = $1::regclass`, table).Scan(&opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !slices.Contains(opts, w) {
				t.Errorf("%s: storage parameters %v lack %s", table, opts, w)
			}
		}
	}
}
