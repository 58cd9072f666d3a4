package postgres

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
)

func benchHeaders() []Header {
	return cloudevents.AppendHeaders([]Header(nil), cloudevents.Event{ID: "0190f5e4-8c1a-7b3e-9f00-1234567890ab",
		Type: orders.TypeOrderCreated, Source: "orders-service", Time: time.Date(2026, 11, 26, 12, 0, 0, 123456000, time.UTC),
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
}

// BenchmarkEncodeHeaders encodes an event's headers as InsertOutbox stores them.
func BenchmarkEncodeHeaders(b *testing.B) {
	hs := benchHeaders()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeHeaders(hs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeHeaders decodes headers as the relay's claim reads them
// back from jsonb: decodeHeaders (the fast path, as PostgreSQL prints them
// without escapes) against encoding/json.
func BenchmarkDecodeHeaders(b *testing.B) {
	raw, err := encodeHeaders(benchHeaders())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decodeHeaders", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeHeaders(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var hs []Header
			if err := json.Unmarshal(raw, &hs); err != nil {
				b.Fatal(err)
			}
		}
	})
}
