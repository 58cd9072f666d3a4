package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/telemetry"
)

// TestGRPCMetricsMatchGoGRPCMiddleware: the same calls give the same
// series, help, types and counts as go-grpc-middleware's Prometheus
// provider configured as the service configured it before (its histogram
// with LatencyBuckets), from the zeroed series of InitializeMetrics to the
// codes of status, context and plain errors.
func TestGRPCMetricsMatchGoGRPCMiddleware(t *testing.T) {
	srv := grpc.NewServer()
	orderspb.RegisterOrderServiceServer(srv, orderspb.UnimplementedOrderServiceServer{})
	healthpb.RegisterHealthServer(srv, health.NewServer())

	ours, theirs := prometheus.NewRegistry(), prometheus.NewRegistry()
	m := telemetry.NewGRPCMetrics(ours)
	m.InitializeMetrics(srv)
	p := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(telemetry.LatencyBuckets)))
	theirs.MustRegister(p)
	p.InitializeMetrics(srv)

	calls := []struct {
		method string
		err    error
	}{
		{"/orders.v1.OrderService/CreateOrder", nil},
		{"/orders.v1.OrderService/CreateOrder", nil},
		{"/orders.v1.OrderService/CreateOrder", status.Error(codes.InvalidArgument, "bad")},
		{"/orders.v1.OrderService/GetOrders", context.Canceled},
		{"/orders.v1.OrderService/GetOrders", fmt.Errorf("wrapped: %w", context.DeadlineExceeded)},
		{"/orders.v1.OrderService/GetOrderStatus", errors.New("plain")},
		{"/orders.v1.OrderService/MarkOrderFinished", status.Error(codes.Code(42), "beyond the known codes")},
		{"/grpc.health.v1.Health/Check", nil},
		{"not-a-method", nil},
	}
	for _, ic := range []grpc.UnaryServerInterceptor{m.UnaryServerInterceptor(), p.UnaryServerInterceptor()} {
		for _, c := range calls {
			_, err := ic(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: c.method},
				func(context.Context, any) (any, error) { return nil, c.err })
			if err != c.err {
				t.Fatalf("%s: interceptor returned %v, want the handler's %v", c.method, err, c.err)
			}
		}
	}
	got, want := dump(t, ours), dump(t, theirs)
	if !slices.Equal(got, want) {
		t.Fatalf("series differ:\nours:\n%s\ngo-grpc-middleware's:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(got) < 100 {
		t.Fatalf("only %d series: InitializeMetrics created too few", len(got))
	}
}

// dump lists every series of reg with its family's help and type, and its
// value: the count for counters, the sample count and bucket bounds for
// histograms (whose timings differ between runs).
func dump(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			var value string
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				value = fmt.Sprint(m.GetCounter().GetValue())
			case dto.MetricType_HISTOGRAM:
				var bounds []float64
				for _, b := range m.GetHistogram().GetBucket() {
					bounds = append(bounds, b.GetUpperBound())
				}
				value = fmt.Sprint(m.GetHistogram().GetSampleCount(), bounds)
			default:
				value = m.String()
			}
			out = append(out, fmt.Sprintf("%s %s (%s: %s) %s", mf.GetName(), labels, mf.GetType(), mf.GetHelp(), value))
		}
	}
	slices.Sort(out)
	return out
}

// BenchmarkGRPCMetrics: the cost the metrics interceptor adds to a call.
func BenchmarkGRPCMetrics(b *testing.B) {
	srv := grpc.NewServer()
	orderspb.RegisterOrderServiceServer(srv, orderspb.UnimplementedOrderServiceServer{})
	m := telemetry.NewGRPCMetrics(prometheus.NewRegistry())
	m.InitializeMetrics(srv)
	p := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(telemetry.LatencyBuckets)))
	p.InitializeMetrics(srv)
	info := &grpc.UnaryServerInfo{FullMethod: "/orders.v1.OrderService/CreateOrder"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	for name, ic := range map[string]grpc.UnaryServerInterceptor{"telemetry": m.UnaryServerInterceptor(), "go-grpc-middleware": p.UnaryServerInterceptor()} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = ic(context.Background(), nil, info, handler)
			}
		})
	}
}
