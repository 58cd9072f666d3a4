package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/api"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestEmittedEventsMatchTheirSchemas runs the service and makes it emit each
// of its event types through the outbox: CreateOrder (OrderCreated),
// MarkOrderFinished (OrderFinished) and a PaymentFailed from the inbox topic
// (OrderCancelled). Every record on the topic carries the ce_dataschema of
// its type, and its value validates against that schema in api/schemas.
func TestEmittedEventsMatchTheirSchemas(t *testing.T) {
	schemas, err := api.Schemas()
	if err != nil {
		t.Fatal(err)
	}
	k := newKafka(t)
	in := startInstance(t, nil, k.env(pgtest.NewDSN(t)))
	ctx := context.Background()

	finished, err := in.client.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: "contract", Amount: 1250, Currency: "EUR", Description: "two books\nand a pen"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.client.MarkOrderFinished(ctx, &orderspb.MarkOrderFinishedRequest{OrderId: finished.GetOrder().GetId()}); err != nil {
		t.Fatal(err)
	}
	cancelled, err := in.client.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: "contract", Amount: 99})
	if err != nil {
		t.Fatal(err)
	}
	cancelledID := cancelled.GetOrder().GetId()
	payment, err := json.Marshal(orders.PaymentResult{OrderID: cancelledID, PaymentID: "pay-1", Reason: "card declined"})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Validate(schemas[orders.TypePaymentFailed], payment); err != nil {
		t.Fatalf("the test's PaymentFailed does not match its schema: %v", err)
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(k.brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	rec := &kgo.Record{Topic: k.inboxTopic, Key: []byte(cancelledID), Value: payment,
		Headers: cloudevents.AppendHeaders([]kgo.RecordHeader(nil), cloudevents.Event{ID: "contract-payment-1", Type: orders.TypePaymentFailed,
			Source: "payments-service", Time: time.Now(), DataSchema: cloudevents.DataSchemaURI(orders.TypePaymentFailed)})}
	if err := producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 15*time.Second, "order cancelled by the failed payment", func() bool {
		st, err := in.client.GetOrderStatus(ctx, &orderspb.GetOrderStatusRequest{OrderId: cancelledID})
		return err == nil && st.GetStatus() == orderspb.OrderStatus_ORDER_STATUS_CANCELLED
	})

	events := readTopic(t, k.brokers, k.topic, 4, 15*time.Second)
	seen := map[string]int{}
	for _, e := range events {
		seen[e.typ]++
		s, ok := schemas[e.typ]
		if !ok {
			t.Errorf("event %s has no schema in api/schemas", e.typ)
			continue
		}
		if got, want := e.headers[cloudevents.HeaderDataSchema], cloudevents.DataSchemaURI(e.typ); got != want {
			t.Errorf("%s ce_dataschema = %q, want %q", e.typ, got, want)
		}
		if err := api.Validate(s, e.value); err != nil {
			t.Errorf("%s %s does not match its schema: %v", e.typ, e.value, err)
		}
		var data struct {
			OrderID string `json:"order_id"`
		}
		if err := json.Unmarshal(e.value, &data); err != nil || data.OrderID != e.key {
			t.Errorf("%s key %q, data order_id %q (%v)", e.typ, e.key, data.OrderID, err)
		}
	}
	want := map[string]int{orders.TypeOrderCreated: 2, orders.TypeOrderFinished: 1, orders.TypeOrderCancelled: 1}
	if len(seen) != len(want) || seen[orders.TypeOrderCreated] != 2 || seen[orders.TypeOrderFinished] != 1 || seen[orders.TypeOrderCancelled] != 1 {
		t.Errorf("events by type %v, want %v", seen, want)
	}
}
