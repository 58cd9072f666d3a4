package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// Micro-benchmarks of CreateOrder's hot path, for comparing changes with
// benchstat:
//
//	go test -run '^$' -bench . -count 8 ./postgres > old.txt
//	(change)
//	go test -run '^$' -bench . -count 8 ./postgres > new.txt
//	benchstat old.txt new.txt
//
// The end-to-end figures are cmd/ordersbench's (make bench).

// BenchmarkCreateOrder creates orders one after another: the order row and
// its outbox row in one committed transaction.
func BenchmarkCreateOrder(b *testing.B) {
	ctx := context.Background()
	db := pgtest.Open(b, testDSN)
	svc := postgres.NewOrderService(db, postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "orders-service"}), "USD")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		_, err := svc.CreateOrder(ctx, orders.NewOrder{UserID: fmt.Sprintf("bench-%d", i%100), Amount: 100, Description: "bench order"})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteOrder writes OrderCreated events into the outbox inside one
// transaction that is rolled back: the serialisation and the insert,
// without a commit per event.
func BenchmarkWriteOrder(b *testing.B) {
	ctx := context.Background()
	db := pgtest.Open(b, testDSN)
	w := postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "orders-service"})
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback(ctx)
	o := &orders.Order{ID: "0190f5e4-8c1a-7b3e-9f00-1234567890ab", UserID: "bench", Amount: 100, Currency: "USD",
		Description: "bench order", Status: orders.StatusNew, CreatedAt: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if err := w.WriteOrder(ctx, tx, o.Created()); err != nil {
			b.Fatal(err)
		}
	}
}
