package auth

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// publicPrefixes are served without a token: health checks, and server
// reflection, which only describes the API (the proto is public; switch
// reflection off with GRPC_REFLECTION=false to hide it). Without them grpcurl
// could not even check health of a service running with AUTH_MODE=jwt.
var publicPrefixes = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

func public(method string) bool {
	for _, p := range publicPrefixes {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

// errUnauthenticated is the only answer to a missing or bad token: it never
// says more, and never echoes the token.
var errUnauthenticated = status.Error(codes.Unauthenticated, "missing or invalid bearer token")

// UnaryServerInterceptor authenticates each call from its
// "authorization: Bearer <jwt>" metadata and puts the Principal in the
// handler's context. Health checks and reflection pass without a token. A missing or invalid token is codes.Unauthenticated. A disabled v
// lets every call through without a principal; install it only when
// v.Enabled().
func UnaryServerInterceptor(v *Verifier) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := v.authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streaming calls.
func StreamServerInterceptor(v *Verifier) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := v.authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
	}
}

func (v *Verifier) authenticate(ctx context.Context, method string) (context.Context, error) {
	if !v.Enabled() || public(method) {
		return ctx, nil
	}
	token, ok := bearerToken(ctx)
	if !ok {
		return nil, errUnauthenticated
	}
	p, err := v.Verify(token)
	if err != nil {
		return nil, errUnauthenticated
	}
	return NewContext(ctx, p), nil
}

// bearerToken returns the token of the single authorization metadata value
// "Bearer <token>" (scheme case-insensitive).
func bearerToken(ctx context.Context) (string, bool) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(vals) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }
