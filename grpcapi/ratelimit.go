package grpcapi

import (
	"context"
	"log/slog"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/auth"
)

// Limiter decides whether a caller may make one more call now.
type Limiter interface {
	Allow(key string) bool
}

// RateLimit refuses calls over the per-user rate with RESOURCE_EXHAUSTED.
// The caller is the verified token's subject; without authentication
// (AUTH_MODE=none) it is the request's user_id, which callers choose, so the
// limit is then a courtesy only; else the peer's address. Install it after
// authentication. Health checks are never limited.
func RateLimit(l Limiter, log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if strings.HasPrefix(info.FullMethod, "/grpc.health.v1.Health/") || l.Allow(callerKey(ctx, req)) {
			return handler(ctx, req)
		}
		return nil, toStatus(ctx, log, orders.Errorf(orders.ELIMIT, "rate limit exceeded, slow down"))
	}
}

// PeerRateLimit refuses calls over the per-peer rate with
// RESOURCE_EXHAUSTED, keyed on the IP address of the connection's peer.
// Install it before authentication, so calls with missing or bad tokens
// count too. Health checks are never limited.
func PeerRateLimit(l Limiter, log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if strings.HasPrefix(info.FullMethod, "/grpc.health.v1.Health/") || l.Allow(peerIP(ctx)) {
			return handler(ctx, req)
		}
		return nil, toStatus(ctx, log, orders.Errorf(orders.ELIMIT, "rate limit exceeded, slow down"))
	}
}

func callerKey(ctx context.Context, req any) string {
	if p, ok := auth.FromContext(ctx); ok {
		return "sub:" + p.Subject
	}
	if r, ok := req.(interface{ GetUserId() string }); ok && r.GetUserId() != "" {
		return "user:" + r.GetUserId()
	}
	return "peer:" + peerIP(ctx)
}

// peerIP is the IP address of the call's peer without the port, or its
// whole address when it has no port.
func peerIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	addr := p.Addr.String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
