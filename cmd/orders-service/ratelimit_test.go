package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
)

// serveOptions serves the API (without a database: the calls below fail
// validation first) with the server options built from env, as serve does.
func serveOptions(t *testing.T, env map[string]string) *grpc.ClientConn {
	t.Helper()
	addr := serveAPI(t, env)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// serveAPI serves the API as serveOptions does and returns its address
// (a free port unless env sets GRPC_PORT).
func serveAPI(t *testing.T, env map[string]string) string {
	t.Helper()
	if env["GRPC_PORT"] == "" {
		env["GRPC_PORT"] = "0"
	}
	cfg, err := loadConfig(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts, err := grpcOptions(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcapi.NewServer(grpcapi.NewHandler(nil, []byte("page key"), quiet), health.NewServer(), opts)
	ln, err := grpcListener(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return dialable(t, ln.Addr().String())
}

// TestPeerRateLimit: the per-peer limit applies before authentication, so
// neither a new user_id per call (AUTH_MODE=none) nor calls with bad tokens
// (AUTH_MODE=jwt) get around it. Health checks are never limited.
func TestPeerRateLimit(t *testing.T) {
	for _, mode := range []string{"none", "jwt"} {
		t.Run(mode, func(t *testing.T) {
			conn := serveOptions(t, map[string]string{
				"AUTH_MODE": mode, "RATE_LIMIT_PER_USER": "0.001", "RATE_LIMIT_BURST": "3",
				"RATE_LIMIT_PER_PEER": "0.001", "RATE_LIMIT_PEER_BURST": "5",
				"AUTH_JWT_HS256_SECRET": map[string]string{"jwt": strings.Repeat("k", 32)}[mode],
			})
			c := orderspb.NewOrderServiceClient(conn)
			want := codes.InvalidArgument
			ctx := context.Background()
			if mode == "jwt" {
				want = codes.Unauthenticated
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer not.a.token")
			}
			for i := range 5 {
				_, err := c.GetOrders(ctx, &orderspb.GetOrdersRequest{UserId: fmt.Sprintf("user-%d", i), PageSize: -1})
				if got := status.Code(err); got != want {
					t.Fatalf("call %d within the peer's burst: %v, want %v", i, err, want)
				}
			}
			_, err := c.GetOrders(ctx, &orderspb.GetOrdersRequest{UserId: "user-6", PageSize: -1})
			if got := status.Code(err); got != codes.ResourceExhausted {
				t.Fatalf("call 6 from the same peer: %v, want ResourceExhausted", err)
			}
			if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatalf("health is never limited: %v", err)
			}
		})
	}
}
