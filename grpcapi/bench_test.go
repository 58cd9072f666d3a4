package grpcapi_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/telemetry"
)

// stubOrders creates orders in memory, so that a benchmark measures the
// transport, the interceptors and the handler only.
type stubOrders struct{ OrderService }

// OrderService is grpcapi.OrderService, embedded so the stub needs only
// CreateOrder.
type OrderService = grpcapi.OrderService

func (stubOrders) CreateOrder(_ context.Context, n orders.NewOrder) (*orders.Order, error) {
	now := time.Now().UTC()
	return &orders.Order{ID: "0190f5e4-8c1a-7b3e-9f00-1234567890ab", UserID: n.UserID, Amount: n.Amount, Currency: "USD",
		Description: n.Description, Status: orders.StatusNew, CreatedAt: now, UpdatedAt: now}, nil
}

// BenchmarkCreateOrder: CreateOrder calls from 32 concurrent callers over
// one loopback connection, through the server as the service builds it
// (metrics, logging, recovery, the call deadline, the UTF-8 check) with an
// in-memory OrderService; the trace context is read by ContinueTrace, as
// without an exporter, or by otelgrpc's stats handler, as with one (its
// spans are not recorded here). ns/op, allocs/op and cpu-µs/op (CPU time of
// the process) count the client's work too.
func BenchmarkCreateOrder(b *testing.B) {
	b.Run("no_exporter", func(b *testing.B) {
		benchmarkCreateOrder(b, grpcapi.Options{Observers: []grpc.UnaryServerInterceptor{telemetry.ContinueTrace}})
	})
	b.Run("otelgrpc", func(b *testing.B) {
		benchmarkCreateOrder(b, grpcapi.Options{ServerOptions: []grpc.ServerOption{grpc.StatsHandler(telemetry.GRPCStatsHandler())}})
	})
}

func benchmarkCreateOrder(b *testing.B, opts grpcapi.Options) {
	metrics := telemetry.NewGRPCMetrics(prometheus.NewRegistry())
	opts.Log = quiet
	opts.Observers = append(opts.Observers, metrics.UnaryServerInterceptor())
	srv := grpcapi.NewServer(grpcapi.NewHandler(stubOrders{}, []byte("page key"), quiet), health.NewServer(), opts)
	metrics.InitializeMetrics(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := orderspb.NewOrderServiceClient(conn)
	req := &orderspb.CreateOrderRequest{UserId: "bench", Amount: 1250, Currency: "USD", Description: "benchmark order"}
	b.SetParallelism(16) // 32 callers on two cores
	b.ReportAllocs()
	start := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.CreateOrder(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is the CPU time this process (client and server) has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
