package inbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/postgres"
)

type txName struct{}

// gatedApplier applies payments through the OrderService, but after the
// first payment of each transaction it waits until the other transaction
// has applied its first payment too, or is blocked on a lock. Two
// transactions that lock orders one row at a time in opposite orders are
// thus driven into the interleaving that deadlocks.
type gatedApplier struct {
	inbox.PaymentApplier
	db      *postgres.DB
	reached map[string]chan struct{} // closed after a transaction's first payment
	pid     map[string]*int32        // backend pid of each transaction
	other   map[string]string
	t       *testing.T
}

func (g *gatedApplier) ApplyPayments(ctx context.Context, tx pgx.Tx, ps []orders.Payment) error {
	err := g.PaymentApplier.ApplyPayments(ctx, tx, ps)
	name := ctx.Value(txName{}).(string)
	select {
	case <-g.reached[name]:
		return err // not the first payment of this transaction
	default:
	}
	close(g.reached[name])
	other := g.other[name]
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-g.reached[other]:
			return err
		default:
		}
		var waiting bool
		if e := g.db.Pool.QueryRow(context.Background(), `
			SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')`,
			*g.pid[other]).Scan(&waiting); e != nil {
			g.t.Error(e)
			return err
		}
		if waiting {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	g.t.Errorf("%s: the other transaction neither applied a payment nor waited for a lock", name)
	return err
}

// TestRowByRowPassCannotDeadlock: two processors redo overlapping batches
// row by row, holding the same orders in opposite orders. Each locks the
// batch's orders in id order before its first savepoint, so neither
// deadlocks: every message is applied at its first attempt, none is
// rescheduled with a deadlock error.
func TestRowByRowPassCannotDeadlock(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	for i := range 10 {
		x, y := e.createOrder(int64(100+i)), e.createOrder(int64(200+i))
		// Partly unknown orders and a duplicate of an order in one batch
		// keep the batches realistic for the row-by-row pass.
		a1, a2, a3 := paymentMessage(x), paymentMessage(uuid.NewString()), paymentMessage(y)
		b1, b2, b3 := paymentMessage(y), paymentMessage(x), paymentMessage(y)
		e.store(a1, a2, a3, b1, b2, b3)
		batches := map[string][]postgres.InboxMessage{"A": {a1, a2, a3}, "B": {b1, b2, b3}}

		g := &gatedApplier{PaymentApplier: e.svc, db: e.db, t: t,
			reached: map[string]chan struct{}{"A": make(chan struct{}), "B": make(chan struct{})},
			pid:     map[string]*int32{"A": new(int32), "B": new(int32)},
			other:   map[string]string{"A": "B", "B": "A"}}
		p := inbox.NewProcessor(inbox.ProcessorDeps{Store: e.db, Applier: g, Metrics: m, Logger: e.log}, inbox.ProcessorOptions{DLQTopic: e.dlqTopic})
		txs := map[string]pgx.Tx{}
		for _, name := range []string{"A", "B"} {
			tx, err := e.db.Pool.Begin(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(context.Background())
			if err := tx.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(g.pid[name]); err != nil {
				t.Fatal(err)
			}
			txs[name] = tx
		}
		var eg errgroup.Group
		for name, tx := range txs {
			eg.Go(func() error {
				ctx := context.WithValue(context.Background(), txName{}, name)
				if err := inbox.ApplyEach(p, ctx, tx, batches[name]); err != nil {
					return err
				}
				return tx.Commit(ctx)
			})
		}
		if err := eg.Wait(); err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		for _, msg := range []postgres.InboxMessage{a1, a3, b1, b2, b3} {
			if row, _ := e.row(msg.MessageID); !row.processed || row.attempts != 1 || row.lastError != nil {
				t.Fatalf("iteration %d: message %s = %+v, last_error %q; want processed at its first attempt",
					i, msg.MessageID, row, deref(row.lastError))
			}
		}
		if row, _ := e.row(a2.MessageID); row.processed || row.attempts != 1 {
			t.Fatalf("iteration %d: unknown order's message = %+v, want rescheduled once", i, row)
		}
	}
}
