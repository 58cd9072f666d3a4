package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// TracerName names the tracer of the service's own spans.
const TracerName = "github.com/acme/orders-service"

// Tracer returns the service's tracer from the global provider.
func Tracer() trace.Tracer { return otel.Tracer(TracerName) }

// SetupTracing installs the W3C trace-context propagator and, when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set
// (OTEL_EXPORTER_OTLP_PROTOCOL grpc or http/protobuf), a tracer provider
// that exports over OTLP, configured by the standard OTEL_* variables; its
// sampler is sampler's unless OTEL_TRACES_SAMPLER names one.
// Without an exporter no span is recorded, which costs nothing per call, yet
// a caller's trace context still flows from gRPC into events and back: the
// global no-op tracer passes an incoming span context on unchanged. The
// returned function flushes and stops.
func SetupTracing(ctx context.Context, getenv func(string) string, service string, log *slog.Logger) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if !TracesExported(getenv) {
		return func(context.Context) error { return nil }, nil
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithAttributes(semconv.ServiceName(service)))
	if err != nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	exp, err := newExporter(ctx, getenv)
	if err != nil {
		return nil, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithBatcher(exp)}
	if getenv("OTEL_TRACES_SAMPLER") == "" { // else the SDK reads it, with OTEL_TRACES_SAMPLER_ARG
		s, err := sampler(getenv("OTEL_TRACES_SAMPLER_ARG"))
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithSampler(s))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	log.Info("exporting traces over OTLP")
	return tp.Shutdown, nil
}

// TracesExported reports whether SetupTracing installs an exporter: an OTLP
// endpoint is set and OTEL_SDK_DISABLED is not true.
func TracesExported(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// sampler is the service's sampler when OTEL_TRACES_SAMPLER is unset: a
// trace that starts here, or arrives from a caller or a Kafka record, is
// sampled by its trace id at the ratio arg (OTEL_TRACES_SAMPLER_ARG, 0 to 1;
// default 1), and spans under a local parent follow that parent. A remote
// parent's sampled flag decides nothing: anyone able to send a request or a
// payment record could otherwise have every span exported. Services that
// sample by the same ratio keep whole traces, since the decision is the
// trace id's. OTEL_TRACES_SAMPLER=parentbased_traceidratio gives the
// standard behaviour instead, where the caller's flag decides.
func sampler(arg string) (sdktrace.Sampler, error) {
	ratio := 1.0
	if arg != "" {
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || math.IsNaN(r) || r < 0 || r > 1 {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: want a sampling ratio from 0 to 1, got %q", arg)
		}
		ratio = r
	}
	byTraceID := sdktrace.TraceIDRatioBased(ratio)
	return sdktrace.ParentBased(byTraceID,
		sdktrace.WithRemoteParentSampled(byTraceID), sdktrace.WithRemoteParentNotSampled(byTraceID)), nil
}

func newExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch protocol {
	case "", "grpc":
		return otlptracegrpc.New(ctx)
	case "http/protobuf":
		return otlptracehttp.New(ctx)
	}
	return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: want grpc or http/protobuf, got %q", protocol)
}

// TraceParent returns the W3C traceparent of the span in ctx, or "" when
// there is none.
func TraceParent(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier["traceparent"]
}

// ContextWithTraceParent returns ctx carrying the remote span context of
// traceparent, so a span started from it continues that trace.
func ContextWithTraceParent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}
