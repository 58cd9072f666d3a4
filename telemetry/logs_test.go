package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/acme/orders-service/telemetry"
)

func TestTraceHandlerAddsTraceAndSpanIDs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(telemetry.TraceHandler{Handler: slog.NewJSONHandler(&buf, nil)}).With("component", "test")
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled,
	}))

	log.InfoContext(ctx, "with span")
	log.InfoContext(context.Background(), "without span")

	var lines []map[string]any
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want 2", len(lines))
	}
	with, without := lines[0], lines[1]
	if with["trace_id"] != traceID.String() || with["span_id"] != spanID.String() || with["component"] != "test" {
		t.Errorf("record with a span = %v, want trace_id %s, span_id %s and the handler's attributes", with, traceID, spanID)
	}
	if _, ok := without["trace_id"]; ok {
		t.Errorf("record without a span has trace_id: %v", without)
	}
	if _, ok := without["span_id"]; ok {
		t.Errorf("record without a span has span_id: %v", without)
	}
}
