package postgres_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestClaimReadsCommittedWhateverTheDatabaseDefault: with the database's
// default_transaction_isolation set to repeatable read or serializable, a
// relay transaction that starts (its first statement takes the snapshot),
// then gets the outbox lock after another relay marked the rows sent, must
// not claim those rows again. InTx asks for READ COMMITTED explicitly, so
// every statement sees the latest commits, as the advisory lock requires.
func TestClaimReadsCommittedWhateverTheDatabaseDefault(t *testing.T) {
	for _, level := range []string{"repeatable read", "serializable"} {
		t.Run(strings.ReplaceAll(level, " ", "_"), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dsn := pgtest.NewEmptyDSN(t)
			u, err := url.Parse(dsn)
			if err != nil {
				t.Fatal(err)
			}
			admin := pgtest.Open(t, dsn)
			name := pgx.Identifier{strings.TrimPrefix(u.Path, "/")}.Sanitize()
			if _, err := admin.Pool.Exec(ctx, `ALTER DATABASE `+name+` SET default_transaction_isolation = '`+level+`'`); err != nil {
				t.Fatal(err)
			}
			db := pgtest.Open(t, dsn) // new sessions take the database default
			if _, err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			var def string
			if err := db.Pool.QueryRow(ctx, `SHOW default_transaction_isolation`).Scan(&def); err != nil || def != level {
				t.Fatalf("default_transaction_isolation = %q, %v; want %q", def, err, level)
			}
			_, err = db.Pool.Exec(ctx, `
				INSERT INTO outbox (event_id, event_type, topic, key, headers, payload)
				VALUES (gen_random_uuid(), 'test', 'orders.events', 'k', '[]', '\x7b7d')`)
			if err != nil {
				t.Fatal(err)
			}

			var isolation string
			var claimed []postgres.OutboxRecord
			err = db.InTx(ctx, false, func(tx pgx.Tx) error {
				if err := postgres.SetIdleTimeout(ctx, tx, 10*time.Second); err != nil {
					return err
				}
				if err := tx.QueryRow(ctx, `SHOW transaction_isolation`).Scan(&isolation); err != nil {
					return err
				}
				// Another relay publishes and marks the row while this
				// transaction has taken its first snapshot.
				if _, err := admin.Pool.Exec(ctx, `UPDATE outbox SET sent = true, sent_at = now()`); err != nil {
					return err
				}
				locked, err := postgres.TryLockOutbox(ctx, tx)
				if err != nil || !locked {
					t.Fatalf("outbox lock: %v, %v", locked, err)
				}
				claimed, err = postgres.ClaimOutbox(ctx, tx, 10)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if isolation != "read committed" {
				t.Errorf("InTx transaction isolation = %q, want read committed", isolation)
			}
			if len(claimed) != 0 {
				t.Errorf("claimed %d row(s) another relay had already marked sent; they would be published twice", len(claimed))
			}
		})
	}
}
