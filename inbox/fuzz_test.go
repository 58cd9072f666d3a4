package inbox

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/postgres"
)

// FuzzRecordDecoding feeds arbitrary Kafka records through the inbox's
// decoding: mapping to a row must always produce a storable row (a usable
// message id, headers that survive jsonb), and decoding the payment must never
// panic and accept only a known type with a UUID order_id.
func FuzzRecordDecoding(f *testing.F) {
	f.Add("payments.v1.PaymentSucceeded", "0190f5e4-0000-7000-8000-000000000001", []byte("k"),
		[]byte(`{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab","payment_id":"p1"}`), []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	f.Add("payments.v1.PaymentFailed", "", []byte(nil), []byte(`{"order_id":"x","reason":"declined"}`), []byte(nil))
	f.Add("payments.v1.PaymentSucceeded", "id\x00with nul", []byte{0xff, 0x00}, []byte(`[1,2,3]`), []byte{0xc3, 0x28})
	f.Add("", strings.Repeat("i", 300), []byte("key"), []byte(`not json`), []byte("\x00"))
	f.Add("orders.v1.OrderCreated", "\xff\xfe", []byte("k"), []byte(`{"order_id":null}`), []byte(""))
	f.Add("payments.v1.PaymentSucceeded", "payments.events/2/41", []byte("k"), []byte(`{}`), []byte("v"))
	f.Fuzz(func(t *testing.T, ceType, ceID string, key, payload, headerValue []byte) {
		r := &kgo.Record{Topic: "payments.events", Partition: 2, Offset: 42, Key: key, Value: payload,
			Headers: []kgo.RecordHeader{
				{Key: "ce_type", Value: []byte(ceType)},
				{Key: "ce_id", Value: []byte(ceID)},
				{Key: string(headerValue), Value: headerValue},
			}}
		m := messageFromRecord(r)
		if m.MessageID == "" || !utf8.ValidString(m.MessageID) || strings.ContainsRune(m.MessageID, 0) ||
			len(m.MessageID) > cloudevents.MaxMessageIDLen {
			t.Fatalf("unusable message id %q", m.MessageID)
		}
		if strings.Contains(m.MessageID, "/") && m.MessageID != "payments.events/2/42" {
			t.Fatalf("message id %q is neither a ce_id nor the record's position", m.MessageID)
		}
		if !utf8.ValidString(m.EventType) || strings.ContainsRune(m.EventType, 0) {
			t.Fatalf("event type %q cannot be stored", m.EventType)
		}
		b, err := json.Marshal(m.Headers)
		if err != nil || !json.Valid(b) || strings.Contains(string(b), `\u0000`) {
			t.Fatalf("headers do not encode for jsonb: %s (%v)", b, err)
		}
		var back []postgres.Header
		if err := json.Unmarshal(b, &back); err != nil || len(back) != len(r.Headers) {
			t.Fatalf("headers do not round-trip: %v", err)
		}
		for i, h := range back {
			if string(h.Value) != string(r.Headers[i].Value) {
				t.Fatalf("header %d value %q came back as %q", i, r.Headers[i].Value, h.Value)
			}
		}
		p, _, err := decode(m)
		if err != nil {
			return
		}
		if m.EventType != orders.TypePaymentSucceeded && m.EventType != orders.TypePaymentFailed {
			t.Fatalf("decoded a record of type %q", m.EventType)
		}
		if orders.ValidateOrderID(p.OrderID) != "" {
			t.Fatalf("decoded order_id %q", p.OrderID)
		}
	})
}
