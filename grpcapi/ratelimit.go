package grpcapi

import (
	"context"
	"log/slog"
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
// The caller is the token's subject, else the request's user_id, else the
// peer's address. Health checks are never limited.
func RateLimit(l Limiter, log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if strings.HasPrefix(info.FullMethod, "/grpc.health.v1.Health/") || l.Allow(callerKey(ctx, req)) {
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
	if p, ok := peer.FromContext(ctx); ok {
		addr := p.Addr.String()
		if i := strings.LastIndexByte(addr, ':'); i > 0 {
			addr = addr[:i]
		}
		return "peer:" + addr
	}
	return ""
}
