package cloudevents_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
)

// TestEncoder: an event's record has the order id as key, the event's JSON
// as value and its CloudEvents headers, with a new UUIDv7 as ce_id; it
// continues the given trace, else ctx's.
func TestEncoder(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 5000, time.UTC)
	o := &orders.Order{ID: "0190f5e4-8c1a-7b3e-9f00-1234567890ab", UserID: "u", Amount: 100, Currency: "USD",
		Status: orders.StatusNew, CreatedAt: now, UpdatedAt: now}
	type ctxKey struct{}
	enc := cloudevents.Encoder[recordHeader]{Source: "orders-service/test", TraceParent: func(ctx context.Context) string {
		tp, _ := ctx.Value(ctxKey{}).(string)
		return tp
	}}
	ctx := context.WithValue(context.Background(), ctxKey{}, "00-from-ctx")
	for _, tc := range []struct {
		ctx       context.Context
		given     string
		wantTrace string
	}{
		{ctx, "", "00-from-ctx"},
		{ctx, "00-given", "00-given"},
		{context.Background(), "", ""},
	} {
		ev := o.Created()
		m, err := enc.Encode(tc.ctx, ev, tc.given, now)
		if err != nil {
			t.Fatal(err)
		}
		wantValue, _ := json.Marshal(ev)
		if string(m.Key) != o.ID || string(m.Value) != string(wantValue) || m.Type != orders.TypeOrderCreated {
			t.Errorf("message = key %q, type %q, value %s; want %q, %q, %s", m.Key, m.Type, m.Value, o.ID, orders.TypeOrderCreated, wantValue)
		}
		if id, err := uuid.Parse(m.ID); err != nil || id.Version() != 7 {
			t.Errorf("ce_id %q is not a UUIDv7", m.ID)
		}
		want := cloudevents.Event{ID: m.ID, Type: orders.TypeOrderCreated, Source: "orders-service/test", Time: now,
			DataSchema: cloudevents.DataSchemaURI(orders.TypeOrderCreated), TraceParent: tc.wantTrace}
		if got := cloudevents.Parse(m.Headers); got != want {
			t.Errorf("headers parse as %+v, want %+v", got, want)
		}
		wantHeaders := 7
		if tc.wantTrace != "" {
			wantHeaders = 8
		}
		if len(m.Headers) != wantHeaders {
			t.Errorf("%d headers, want %d: %q", len(m.Headers), wantHeaders, m.Headers)
		}
	}
}
