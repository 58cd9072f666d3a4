package cloudevents_test

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/acme/orders-service/cloudevents"
)

// FuzzHeaders feeds arbitrary headers through the parser and the message id
// rule: the id is always storable (valid UTF-8 without NUL, at most
// MaxMessageIDLen bytes) and either the last ce_id or the record's position,
// never another position; and an event's headers parse back to the event.
func FuzzHeaders(f *testing.F) {
	f.Add("0190f5e4-0000-7000-8000-000000000001", "payments.v1.PaymentSucceeded", "2026-03-04T04:06:07.000891Z", []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	f.Add("", "", "", []byte(nil))
	f.Add("payments.events/2/41", "t", "yesterday", []byte{0xc3, 0x28})
	f.Add("id\x00with nul", "\xff", "2026-13-01T00:00:00Z", []byte("\x00"))
	f.Add(strings.Repeat("i", 300), "x", "2026-03-04T04:06:07+01:00", []byte(""))
	f.Add("a/b", "orders.v1.OrderCreated", "2026-03-04T04:06:07Z", []byte("ce_id"))
	f.Fuzz(func(t *testing.T, ceID, ceType, ceTime string, other []byte) {
		pos := cloudevents.Position{Topic: "payments.events", Partition: 2, Offset: 42}
		hs := []struct {
			Key   string
			Value []byte
		}{
			{Key: string(other), Value: other},
			{Key: cloudevents.HeaderID, Value: []byte(ceID)},
			{Key: cloudevents.HeaderType, Value: []byte(ceType)},
			{Key: cloudevents.HeaderTime, Value: []byte(ceTime)},
			{Key: cloudevents.HeaderDataSchema, Value: []byte(cloudevents.DataSchemaURI(ceType))},
		}
		id, alias := cloudevents.MessageID(pos, hs)
		if id == "" || !utf8.ValidString(id) || strings.ContainsRune(id, 0) || len(id) > cloudevents.MaxMessageIDLen+len(pos.String()) {
			t.Fatalf("unusable message id %q", id)
		}
		switch {
		case id == pos.String():
			if alias != "" && (alias != ceID || !strings.Contains(alias, "/")) {
				t.Fatalf("alias %q for ce_id %q", alias, ceID)
			}
		case id == ceID:
			if strings.Contains(id, "/") || len(id) > cloudevents.MaxMessageIDLen || alias != "" {
				t.Fatalf("ce_id %q used as message id (alias %q)", id, alias)
			}
		default:
			t.Fatalf("message id %q is neither the ce_id %q nor the position", id, ceID)
		}

		e := cloudevents.Parse(hs)
		if e.ID != ceID || e.Type != ceType || e.DataSchema != cloudevents.DataSchemaURI(ceType) {
			t.Fatalf("Parse = %+v, want ce_id %q, ce_type %q", e, ceID, ceType)
		}
		want, err := time.Parse(time.RFC3339Nano, ceTime)
		if err != nil {
			want = time.Time{}
		}
		if !e.Time.Equal(want) {
			t.Fatalf("ce_time %q parsed as %v, want %v (%v)", ceTime, e.Time, want, err)
		}
		if y := e.Time.UTC().Year(); y < 0 || y > 9999 {
			e.Time = time.Time{} // RFC 3339 has four-digit years: an offset can push one out of range in UTC
		}
		back := cloudevents.Parse(cloudevents.AppendHeaders(hs[:0:0], e))
		if back.ID != e.ID || back.Type != e.Type || back.Source != e.Source || back.DataSchema != e.DataSchema || back.TraceParent != e.TraceParent || !back.Time.Equal(e.Time) {
			t.Fatalf("headers of %+v parse as %+v", e, back)
		}
	})
}
