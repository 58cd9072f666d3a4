package telemetry_test

import (
	"context"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/acme/orders-service/telemetry"
)

// TestContinueTrace: without an exporter, a call's traceparent and baggage
// metadata reach its handler's context, as otelgrpc's handler would put
// them there; a call without them has no trace.
func TestContinueTrace(t *testing.T) {
	shutdown, err := telemetry.SetupTracing(context.Background(), func(string) string { return "" }, "test", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var gotTP, gotBaggage string
	handler := func(ctx context.Context, _ any) (any, error) {
		gotTP, gotBaggage = telemetry.TraceParent(ctx), baggage.FromContext(ctx).Member("tenant").Value()
		return nil, nil
	}
	info := &grpc.UnaryServerInfo{FullMethod: "/orders.v1.OrderService/CreateOrder"}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", tp, "baggage", "tenant=acme"))
	if _, err := telemetry.ContinueTrace(ctx, nil, info, handler); err != nil {
		t.Fatal(err)
	}
	if gotTP != tp || gotBaggage != "acme" {
		t.Errorf("handler saw traceparent %q, baggage tenant %q; want %q, acme", gotTP, gotBaggage, tp)
	}
	ctx = metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-other", "1"))
	if _, err := telemetry.ContinueTrace(ctx, nil, info, handler); err != nil {
		t.Fatal(err)
	}
	if gotTP != "" || gotBaggage != "" {
		t.Errorf("without trace metadata the handler saw traceparent %q, baggage %q", gotTP, gotBaggage)
	}
}

// TestTracesExported: an OTLP endpoint turns export on, unless the SDK is
// disabled.
func TestTracesExported(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "TRUE"}, false},
	} {
		if got := telemetry.TracesExported(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("TracesExported(%v) = %v, want %v", c.env, got, c.want)
		}
	}
}
