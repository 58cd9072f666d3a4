package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestInTxClassifiesSQLSTATEs: an error a transaction's helpers return, wrapped
// with context, is classified once, by InTx: connection exceptions,
// shutdowns, too many connections, serialization failures and deadlocks are
// EUNAVAILABLE; other errors and domain errors pass through.
func TestInTxClassifiesSQLSTATEs(t *testing.T) {
	db := pgtest.Open(t, testDSN)
	ctx := context.Background()
	for code, want := range map[string]orders.Code{
		pgerrcode.ConnectionFailure:         orders.EUNAVAILABLE,
		pgerrcode.ConnectionDoesNotExist:    orders.EUNAVAILABLE,
		pgerrcode.AdminShutdown:             orders.EUNAVAILABLE,
		pgerrcode.CrashShutdown:             orders.EUNAVAILABLE,
		pgerrcode.CannotConnectNow:          orders.EUNAVAILABLE,
		pgerrcode.TooManyConnections:        orders.EUNAVAILABLE,
		pgerrcode.SerializationFailure:      orders.EUNAVAILABLE,
		pgerrcode.DeadlockDetected:          orders.EUNAVAILABLE,
		pgerrcode.UniqueViolation:           orders.EINTERNAL,
		pgerrcode.UndefinedTable:            orders.EINTERNAL,
		pgerrcode.InvalidTextRepresentation: orders.EINTERNAL,
	} {
		err := db.InTx(ctx, false, func(pgx.Tx) error {
			return fmt.Errorf("helper: %w", &pgconn.PgError{Code: code})
		})
		if got := orders.ErrorCode(err); got != want {
			t.Errorf("SQLSTATE %s (%s): code %q, want %q", code, pgerrcode.Name(code), got, want)
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != code {
			t.Errorf("SQLSTATE %s: classified error %v lost the original", code, err)
		}
	}
	conflict := orders.Errorf(orders.ECONFLICT, "cancelled")
	if err := db.InTx(ctx, false, func(pgx.Tx) error { return conflict }); !errors.Is(err, conflict) {
		t.Errorf("domain error came back as %v", err)
	}
}

// TestTxHelpersUnavailableAtBoundary: when the connection dies under an
// outbox or an inbox helper, InTx reports EUNAVAILABLE for both alike.
func TestTxHelpersUnavailableAtBoundary(t *testing.T) {
	db := pgtest.Open(t, testDSN)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, helper := range map[string]func(pgx.Tx) error{
		"ClaimOutbox": func(tx pgx.Tx) error { _, err := postgres.ClaimOutbox(ctx, tx, 1); return err },
		"ClaimInbox":  func(tx pgx.Tx) error { _, err := postgres.ClaimInbox(ctx, tx, 1); return err },
	} {
		err := db.InTx(ctx, false, func(tx pgx.Tx) error {
			// The server ends this backend with SQLSTATE 57P01 (admin_shutdown).
			_, _ = tx.Exec(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
			return helper(tx)
		})
		if orders.ErrorCode(err) != orders.EUNAVAILABLE {
			t.Errorf("%s on a terminated connection: %v (code %q), want EUNAVAILABLE", name, err, orders.ErrorCode(err))
		}
	}
}
