package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

var testDSN string

func TestMain(m *testing.M) { pgtest.Main(m, func(dsn string) { testDSN = dsn }) }

func newService(t *testing.T) (*postgres.DB, *postgres.OrderService) {
	db := pgtest.Open(t, testDSN)
	w := postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "orders-service/test"})
	return db, postgres.NewOrderService(db, w, "USD")
}

func countOutbox(t *testing.T, db *postgres.DB, orderID, eventType string) int {
	t.Helper()
	var n int
	err := db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM outbox WHERE key = $1 AND event_type = $2`, orderID, eventType).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func uniqueUser(t *testing.T) string { return fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()) }

func TestCreateOrderWritesCompleteOutboxRow(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t)
	o, err := svc.CreateOrder(ctx, orders.NewOrder{UserID: uniqueUser(t), Amount: 1250, Description: "two books"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != orders.StatusNew || o.Currency != "USD" {
		t.Fatalf("order = %+v, want status new and default currency USD", o)
	}
	var topic, key, eventType string
	var headers []postgres.Header
	var payload []byte
	var sent bool
	err = db.Pool.QueryRow(ctx, `SELECT topic, key, event_type, headers, payload, sent FROM outbox WHERE key = $1`, o.ID).
		Scan(&topic, &key, &eventType, &headers, &payload, &sent)
	if err != nil {
		t.Fatal(err)
	}
	if topic != "orders.events" || key != o.ID || eventType != orders.TypeOrderCreated || sent {
		t.Fatalf("outbox row topic=%q key=%q type=%q sent=%v", topic, key, eventType, sent)
	}
	got := map[string]string{}
	for _, h := range headers {
		got[h.Key] = string(h.Value)
	}
	for _, k := range []string{"ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "content-type"} {
		if got[k] == "" {
			t.Errorf("header %s missing in %v", k, got)
		}
	}
	if got["ce_type"] != orders.TypeOrderCreated || got["ce_specversion"] != "1.0" || got["content-type"] != "application/json" {
		t.Errorf("headers = %v", got)
	}
	want := fmt.Sprintf(`{"order_id":%q,"user_id":%q,"amount":1250,"currency":"USD","description":"two books","status":"new","created_at":%q}`,
		o.ID, o.UserID, o.CreatedAt.Format(time.RFC3339Nano))
	if string(payload) != want {
		t.Errorf("payload\n got %s\nwant %s", payload, want)
	}
}

func TestCreateOrderIdempotent(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t)
	req := orders.NewOrder{UserID: uniqueUser(t), Amount: 500, Description: "x", RequestID: "req-1"}
	first, err := svc.CreateOrder(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := svc.CreateOrder(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID {
		t.Fatalf("retry created a second order: %s vs %s", again.ID, first.ID)
	}
	other := req
	other.Amount = 501
	if _, err := svc.CreateOrder(ctx, other); orders.ErrorCode(err) != orders.EEXISTS {
		t.Fatalf("same request_id with other fields: err = %v, want EEXISTS", err)
	}
	// The same key for another user is another order.
	req2 := req
	req2.UserID += "-other"
	third, err := svc.CreateOrder(ctx, req2)
	if err != nil || third.ID == first.ID {
		t.Fatalf("other user's order = %v, %v", third, err)
	}
	if n := countOutbox(t, db, first.ID, orders.TypeOrderCreated); n != 1 {
		t.Fatalf("OrderCreated rows = %d, want 1", n)
	}
}

func TestCreateOrderIdempotentConcurrent(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t)
	req := orders.NewOrder{UserID: uniqueUser(t), Amount: 700, Description: "race", RequestID: "same-key"}
	var wg sync.WaitGroup
	ids := make([]string, 20)
	errs := make([]error, 20)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := svc.CreateOrder(ctx, req)
			errs[i] = err
			if err == nil {
				ids[i] = o.ID
			}
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("call %d got order %s, call 0 got %s", i, ids[i], ids[0])
		}
	}
	var n int
	db.Pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE user_id = $1`, req.UserID).Scan(&n)
	if n != 1 {
		t.Fatalf("orders = %d, want 1", n)
	}
	if n := countOutbox(t, db, ids[0], orders.TypeOrderCreated); n != 1 {
		t.Fatalf("OrderCreated rows = %d, want 1", n)
	}
}

func TestMarkOrderFinishedConcurrentEmitsOneEvent(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t)
	o, err := svc.CreateOrder(ctx, orders.NewOrder{UserID: uniqueUser(t), Amount: 100})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := svc.MarkOrderFinished(ctx, o.ID)
			if err == nil && got.Status != orders.StatusFinished {
				err = fmt.Errorf("status %s", got.Status)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := countOutbox(t, db, o.ID, orders.TypeOrderFinished); n != 1 {
		t.Fatalf("OrderFinished rows = %d, want 1", n)
	}
}

func TestTransitions(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t)
	o, _ := svc.CreateOrder(ctx, orders.NewOrder{UserID: uniqueUser(t), Amount: 100})
	err := db.InTx(ctx, true, func(tx pgx.Tx) error {
		return svc.ApplyPayments(ctx, tx, []orders.Payment{{Result: orders.PaymentResult{OrderID: o.ID, Reason: "card declined"}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.MarkOrderFinished(ctx, o.ID); orders.ErrorCode(err) != orders.ECONFLICT {
		t.Fatalf("finish cancelled order: %v, want ECONFLICT", err)
	}
	if n := countOutbox(t, db, o.ID, orders.TypeOrderCancelled); n != 1 {
		t.Fatalf("OrderCancelled rows = %d, want 1", n)
	}
	if _, err := svc.MarkOrderFinished(ctx, "0190f5e4-8c1a-7b3e-9f00-1234567890ab"); orders.ErrorCode(err) != orders.ENOTFOUND {
		t.Fatalf("unknown order: %v, want ENOTFOUND", err)
	}
}

func TestOrderIsNeverStoredWithoutItsOutboxRow(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t)
	user := uniqueUser(t)
	_, err := db.Pool.Exec(ctx, `
		CREATE FUNCTION fail_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'outbox insert refused by test'; END $$;
		CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION fail_outbox();`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Pool.Exec(context.Background(), `DROP TRIGGER fail_outbox ON outbox; DROP FUNCTION fail_outbox();`)
	})
	if _, err := svc.CreateOrder(ctx, orders.NewOrder{UserID: user, Amount: 100}); err == nil {
		t.Fatal("CreateOrder succeeded although the outbox insert failed")
	}
	var n int
	db.Pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE user_id = $1`, user).Scan(&n)
	if n != 0 {
		t.Fatalf("%d orders stored without their outbox row", n)
	}
}

func TestGetOrdersPagingWhileOrdersArrive(t *testing.T) {
	ctx := context.Background()
	_, svc := newService(t)
	user := uniqueUser(t)
	want := map[string]bool{}
	for i := range 25 {
		o, err := svc.CreateOrder(ctx, orders.NewOrder{UserID: user, Amount: int64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		want[o.ID] = true
	}
	seen := map[string]bool{}
	var cursor *orders.Cursor
	var prev *orders.Order
	for page := 0; ; page++ {
		list, next, err := svc.GetOrders(ctx, user, 10, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range list {
			if seen[o.ID] {
				t.Fatalf("order %s returned twice", o.ID)
			}
			seen[o.ID] = true
			if prev != nil && o.CreatedAt.After(prev.CreatedAt) {
				t.Fatalf("not newest first: %v after %v", o.CreatedAt, prev.CreatedAt)
			}
			prev = o
		}
		// A new order arrives between pages; it is newer than every page.
		if _, err := svc.CreateOrder(ctx, orders.NewOrder{UserID: user, Amount: 999}); err != nil {
			t.Fatal(err)
		}
		if next == nil {
			if page != 2 {
				t.Fatalf("got %d pages, want 3", page+1)
			}
			break
		}
		cursor = next
	}
	for id := range want {
		if !seen[id] {
			t.Fatalf("order %s missing from the pages", id)
		}
	}
}

// TestApplyPaymentsLikeApplyPaymentInTurn: a batch of payment results has
// the effect of applying each in turn: transitions and no-ops, events in
// the order they happened, and the error of the first that cannot apply.
func TestApplyPaymentsLikeApplyPaymentInTurn(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t)
	user := uniqueUser(t)
	var ids []string
	for range 3 {
		o, err := svc.CreateOrder(ctx, orders.NewOrder{UserID: user, Amount: 100})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
	}
	a, b, c := ids[0], ids[1], ids[2]
	ok := func(id string) orders.Payment {
		return orders.Payment{Succeeded: true, Result: orders.PaymentResult{OrderID: id}}
	}
	failed := func(id string) orders.Payment {
		return orders.Payment{Result: orders.PaymentResult{OrderID: id, Reason: "card declined"}}
	}
	err := db.InTx(ctx, true, func(tx pgx.Tx) error {
		// b is cancelled, a finished, a's duplicate result is a no-op; the
		// upper-case id names a as well.
		return svc.ApplyPayments(ctx, tx, []orders.Payment{failed(b), ok(a), ok(strings.ToUpper(a))})
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]orders.Status{a: orders.StatusFinished, b: orders.StatusCancelled, c: orders.StatusNew} {
		if got, _, _ := svc.GetOrderStatus(ctx, id); got != want {
			t.Errorf("order %s is %s, want %s", id, got, want)
		}
	}
	if countOutbox(t, db, a, orders.TypeOrderFinished) != 1 || countOutbox(t, db, b, orders.TypeOrderCancelled) != 1 {
		t.Errorf("want one OrderFinished for a and one OrderCancelled for b")
	}
	var keys []string
	rows, _ := db.Pool.Query(ctx, `SELECT key FROM outbox WHERE key = ANY($1) AND event_type <> $2 ORDER BY id`,
		[]string{a, b}, orders.TypeOrderCreated)
	keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(keys) != 2 || keys[0] != b || keys[1] != a {
		t.Errorf("events in outbox order %v (%v), want b's then a's", keys, err)
	}
	var reason string
	db.Pool.QueryRow(ctx, `SELECT payload->>'reason' FROM (SELECT convert_from(payload, 'UTF8')::jsonb AS payload FROM outbox WHERE key = $1 AND event_type = $2) e`,
		b, orders.TypeOrderCancelled).Scan(&reason)
	if reason != "card declined" {
		t.Errorf("OrderCancelled reason = %q", reason)
	}

	for name, tc := range map[string]struct {
		ps   []orders.Payment
		want orders.Code
	}{
		"unknown order":                  {[]orders.Payment{ok(c), ok("0190f5e4-8c1a-7b3e-9f00-1234567890ab")}, orders.ENOTFOUND},
		"cancel a finished order":        {[]orders.Payment{ok(c), failed(a)}, orders.ECONFLICT},
		"finish and cancel in one batch": {[]orders.Payment{ok(c), failed(c)}, orders.ECONFLICT},
	} {
		err := db.InTx(ctx, true, func(tx pgx.Tx) error { return svc.ApplyPayments(ctx, tx, tc.ps) })
		if orders.ErrorCode(err) != tc.want {
			t.Errorf("%s: err = %v, want %s", name, err, tc.want)
		}
	}
	if got, _, _ := svc.GetOrderStatus(ctx, c); got != orders.StatusNew || countOutbox(t, db, c, orders.TypeOrderFinished) != 0 {
		t.Errorf("a failed batch left order c %s with its event", got)
	}
}
