package telemetry

import (
	"context"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
)

// GRPCStatsHandler is otelgrpc's server handler, recording a span for
// every call but health checks. Install it when traces are exported
// (TracesExported); otherwise ContinueTrace gives calls what they need at a
// fraction of the cost (a stats handler is called for every event of every
// call, and otelgrpc starts a span even when it records nothing).
func GRPCStatsHandler() stats.Handler {
	return otelgrpc.NewServerHandler(otelgrpc.WithFilter(filters.Not(filters.HealthCheck())))
}

// ContinueTrace puts the caller's trace context (W3C traceparent,
// tracestate and baggage in the call's metadata, as the global propagator
// reads them) into the call's context, where GRPCStatsHandler would have
// put it: the events a call writes and its log lines then carry the
// caller's trace although no span is recorded. Install it first, so every
// later interceptor sees the trace.
func ContinueTrace(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(otel.GetTextMapPropagator().Extract(ctx, incomingMetadata{ctx}), req)
}

// incomingMetadata reads a call's metadata as a propagation.TextMapCarrier,
// without the copy metadata.FromIncomingContext makes.
type incomingMetadata struct{ ctx context.Context }

func (c incomingMetadata) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (incomingMetadata) Set(string, string) {}

func (c incomingMetadata) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}
