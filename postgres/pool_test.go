package postgres_test

import (
	"runtime"
	"strings"
	"testing"

	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestPoolLeavesRoomForTheWorkers: without pool_max_conns in the DSN the pool
// is pgxpool's default plus postgres.BackgroundConns, so the relay and the
// inbox holding connections across their batches do not take the API's; a
// DSN's pool_max_conns is used as it is.
func TestPoolLeavesRoomForTheWorkers(t *testing.T) {
	db := pgtest.Open(t, testDSN)
	if got, want := db.Pool.Config().MaxConns, int32(max(4, runtime.NumCPU())+postgres.BackgroundConns); got != want {
		t.Errorf("default pool size = %d, want pgxpool's default + %d = %d", got, postgres.BackgroundConns, want)
	}
	sep := "?"
	if strings.Contains(testDSN, "?") {
		sep = "&"
	}
	db = pgtest.Open(t, testDSN+sep+"pool_max_conns=3")
	if got := db.Pool.Config().MaxConns; got != 3 {
		t.Errorf("pool size with pool_max_conns=3 = %d", got)
	}
}
