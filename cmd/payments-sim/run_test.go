package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/internal/kafkatest"
)

// TestRunAnswersOrders runs the command's run against the test's Kafka (the
// real cluster when KAFKA_TEST_BROKERS is set) configured only through its
// environment: an order at the decline limit is paid, one above it fails.
func TestRunAnswersOrders(t *testing.T) {
	cluster := kafkatest.New(t)
	in, out, group := cluster.Name("orders.events"), cluster.Name("payments.events"), cluster.Name("payments-sim")
	cluster.CreateTopics(2, in, out)
	env := map[string]string{"KAFKA_BROKER": strings.Join(cluster.Brokers, ","), "KAFKA_TOPIC": in,
		"KAFKA_INBOX_TOPIC": out, "KAFKA_GROUP_ID": group, "PAYMENTS_SIM_DECLINE_ABOVE": "5000"}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, nil, func(k string) string { return env[k] }, io.Discard, t.Output())
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run = %v, want nil after its context ended", err)
		}
	}()

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.Brokers...), kgo.ConsumeTopics(out),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want := map[string]string{}
	for _, amount := range []int64{5000, 5001} {
		id := uuid.NewString()
		data, err := json.Marshal(orders.OrderCreated{OrderID: id, UserID: "u1", Amount: amount, Currency: "EUR",
			Status: orders.StatusNew, CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		rec := &kgo.Record{Topic: in, Key: []byte(id), Value: data, Headers: []kgo.RecordHeader{
			{Key: "ce_specversion", Value: []byte("1.0")}, {Key: "ce_id", Value: []byte(uuid.NewString())},
			{Key: "ce_type", Value: []byte(orders.TypeOrderCreated)}}}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		want[id] = orders.TypePaymentSucceeded
		if amount > 5000 {
			want[id] = orders.TypePaymentFailed
		}
	}

	got := map[string]string{}
	for len(got) < len(want) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("payment results within 60s: %v, want one for each of %v", got, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "ce_type" {
					got[string(r.Key)] = string(h.Value)
				}
			}
		})
	}
	for id, typ := range want {
		if got[id] != typ {
			t.Errorf("order %s answered with %q, want %q", id, got[id], typ)
		}
	}
}
