package telemetry_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel"

	"github.com/acme/orders-service/telemetry"
)

// exportedSpans sets up tracing as the service does, exporting over
// OTLP/HTTP to a local collector, starts one span under a caller's
// traceparent that says "sampled", and reports whether anything reached
// the collector.
func exportedSpans(t *testing.T, samplerArg string) bool {
	var posts atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		posts.Add(1)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", samplerArg)
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	defer func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) }()

	ctx := context.Background()
	shutdown, err := telemetry.SetupTracing(ctx, os.Getenv, "orders-service", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	sampled := telemetry.ContextWithTraceParent(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	_, span := telemetry.Tracer().Start(sampled, "inbox.apply")
	span.End()
	if err := shutdown(ctx); err != nil { // flushes
		t.Fatal(err)
	}
	return posts.Load() > 0
}

// TestCallerCannotForceExport: with OTEL_TRACES_SAMPLER_ARG=0 no span is
// exported, although the caller's traceparent says "sampled": the ratio
// decides for remote parents too, so whoever can send a request or a Kafka
// record cannot make every span exported. With a ratio of 1 the same span
// is exported (the check can see an export).
func TestCallerCannotForceExport(t *testing.T) {
	if !exportedSpans(t, "1") {
		t.Fatal("OTEL_TRACES_SAMPLER_ARG=1: the span was not exported; the check cannot see exports")
	}
	if exportedSpans(t, "0") {
		t.Error("OTEL_TRACES_SAMPLER_ARG=0: a span under a caller's sampled traceparent was exported")
	}
}
