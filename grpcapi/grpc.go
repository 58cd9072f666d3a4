package grpcapi

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/gen/orderspb"
)

// Options configure the gRPC server around the API.
type Options struct {
	Log            *slog.Logger
	Reflection     bool          // serve server reflection (GRPC_REFLECTION)
	MaxRecvMsgSize int           // bytes; 0 means 1 MiB
	CallTimeout    time.Duration // server-side deadline for every call; 0 means 30s
	// StreamTimeout ends every streaming call (health Watch, reflection)
	// after this long, answering DEADLINE_EXCEEDED; 0 means 10m.
	StreamTimeout time.Duration
	// MaxConnectionIdle and MaxConnectionAge close a connection idle or
	// open that long (GOAWAY; in-flight calls get CallTimeout to finish);
	// 0 means 5m and 30m.
	MaxConnectionIdle, MaxConnectionAge time.Duration
	// KeepaliveMinTime is the shortest ping interval allowed of a client;
	// one pinging more often is disconnected. 0 means 10s.
	KeepaliveMinTime time.Duration
	// ConnectionTimeout bounds a new connection's TLS and HTTP/2 handshake;
	// 0 means 5s.
	ConnectionTimeout time.Duration
	// MaxHeaderListSize is the largest metadata (header list) of a call,
	// in bytes; a call with more is reset before its headers are decoded
	// in full. 0 means 32 KiB.
	MaxHeaderListSize int
	Observers         []grpc.UnaryServerInterceptor  // outermost, so they see every call's final code (metrics)
	Interceptors      []grpc.UnaryServerInterceptor  // run after logging and recovery, before the handler (auth, limits)
	Streams           []grpc.StreamServerInterceptor // for streaming calls (reflection, health Watch)
	ServerOptions     []grpc.ServerOption            // credentials, stats handlers
}

// NewServer returns the transport: a gRPC server serving api (a Handler), the health service hs and,
// when enabled, reflection. Every call is logged, bounded by CallTimeout, and
// a panicking handler answers INTERNAL while the process lives on.
func NewServer(api orderspb.OrderServiceServer, hs *health.Server, o Options) *grpc.Server {
	if o.MaxRecvMsgSize == 0 {
		o.MaxRecvMsgSize = 1 << 20
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = 30 * time.Second
	}
	o.StreamTimeout = cmp.Or(o.StreamTimeout, 10*time.Minute)
	o.MaxConnectionIdle = cmp.Or(o.MaxConnectionIdle, 5*time.Minute)
	o.MaxConnectionAge = cmp.Or(o.MaxConnectionAge, 30*time.Minute)
	o.KeepaliveMinTime = cmp.Or(o.KeepaliveMinTime, 10*time.Second)
	o.ConnectionTimeout = cmp.Or(o.ConnectionTimeout, 5*time.Second)
	o.MaxHeaderListSize = cmp.Or(o.MaxHeaderListSize, 32<<10)
	log := o.Log
	recovered := func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in gRPC handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	}
	chain := slices.Concat(o.Observers, []grpc.UnaryServerInterceptor{
		logCalls(log),
		recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(recovered)),
		deadline(o.CallTimeout),
	}, o.Interceptors, []grpc.UnaryServerInterceptor{
		rejectInvalidUTF8(log), // after authentication: without a token, UNAUTHENTICATED whatever the body
	})
	opts := append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(o.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.MaxHeaderListSize(uint32(o.MaxHeaderListSize)),
		grpc.ConnectionTimeout(o.ConnectionTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: o.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     o.MaxConnectionIdle,
			MaxConnectionAge:      o.MaxConnectionAge,
			MaxConnectionAgeGrace: o.CallTimeout,
		}),
		grpc.ForceServerCodecV2(newUTF8Codec()),
		grpc.ChainUnaryInterceptor(chain...),
		grpc.ChainStreamInterceptor(append([]grpc.StreamServerInterceptor{
			streamDeadline(o.StreamTimeout), // first: the rest, recovery included, runs in its goroutine
			recovery.StreamServerInterceptor(recovery.WithRecoveryHandlerContext(recovered)),
		}, o.Streams...)...),
	}, o.ServerOptions...)
	srv := grpc.NewServer(opts...)
	orderspb.RegisterOrderServiceServer(srv, api)
	healthpb.RegisterHealthServer(srv, hs)
	if o.Reflection {
		reflection.Register(srv)
	}
	return srv
}

// streamWorkers is how many calls run on a pool of goroutines whose stacks
// have already grown, instead of a fresh goroutine per call that grows its
// stack by copying (a tenth of the service's CPU per CreateOrder without the
// pool). Calls mostly wait on PostgreSQL, so the pool is sized for the calls
// in flight, not for the cores; a call finding every worker busy still gets
// a goroutine of its own.
const streamWorkers = 64

// maxConcurrentStreams bounds the calls one connection may have in flight,
// so a single client cannot pile up unbounded work and memory.
const maxConcurrentStreams = 256

// logCalls logs every finished call at the level levelOf gives its code,
// with the fields of go-grpc-middleware's logging interceptor and the order
// and user it is about. The line is built only when its level is enabled:
// successful calls are debug, and building a line that is then dropped
// cost more than the rest of the interceptors together.
func logCalls(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		code := status.Code(err)
		level := levelOf(code)
		if !log.Enabled(ctx, level) {
			return resp, err
		}
		service, method, _ := strings.Cut(strings.TrimPrefix(info.FullMethod, "/"), "/")
		attrs := make([]slog.Attr, 0, 14)
		attrs = append(attrs, slog.String("protocol", "grpc"), slog.String("grpc.component", "server"),
			slog.String("grpc.service", service), slog.String("grpc.method", method), slog.String("grpc.method_type", "unary"))
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
		}
		attrs = append(attrs, slog.String("grpc.start_time", start.Format(time.RFC3339)))
		if d, ok := ctx.Deadline(); ok {
			attrs = append(attrs, slog.String("grpc.request.deadline", d.Format(time.RFC3339)))
		}
		attrs = append(attrs, requestFields(req)...)
		attrs = append(attrs, slog.String("grpc.code", code.String()))
		if err != nil {
			attrs = append(attrs, slog.String("grpc.error", err.Error()))
		}
		attrs = append(attrs, slog.String("grpc.time_ms", strconv.FormatFloat(float64(time.Since(start))/float64(time.Millisecond), 'f', 3, 64)))
		log.LogAttrs(ctx, level, "finished call", attrs...)
		return resp, err
	}
}

// requestFields returns the order and user a call is about, for its log
// line. They are logged as sent, before validation, so each is cut to the
// contract's longest valid value: a huge field costs its sender, not the log.
func requestFields(req any) []slog.Attr {
	var f []slog.Attr
	if r, ok := req.(interface{ GetOrderId() string }); ok && r.GetOrderId() != "" {
		f = append(f, slog.String("order_id", clip(r.GetOrderId(), maxLoggedOrderID)))
	}
	if r, ok := req.(interface{ GetUserId() string }); ok && r.GetUserId() != "" {
		f = append(f, slog.String("user_id", clip(r.GetUserId(), orders.MaxUserIDLen)))
	}
	return f
}

// maxLoggedOrderID is the longest order_id logged: a UUID is 36 characters.
const maxLoggedOrderID = 36

// clip cuts s to at most n bytes on a character boundary, marking a cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "...(cut)"
}

// deadline bounds every call by max, keeping a shorter client deadline
// (without a timer of its own: gRPC already ends the call then).
func deadline(max time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if d, ok := ctx.Deadline(); ok && time.Until(d) <= max {
			return handler(ctx, req)
		}
		ctx, cancel := context.WithTimeout(ctx, max)
		defer cancel()
		return handler(ctx, req)
	}
}

// streamDeadline ends a streaming call after max. Handlers blocked in
// Recv (reflection) do not watch the context, so the handler runs aside and
// the call ends when max passes; returning closes the stream, which ends
// the handler's Recv or Send.
func streamDeadline(max time.Duration) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := context.WithTimeout(ss.Context(), max)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- handler(srv, &contextStream{ServerStream: ss, ctx: ctx}) }()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return status.Error(codes.DeadlineExceeded, "stream deadline exceeded")
			}
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// contextStream is a ServerStream with another context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// levelOf keeps successful calls out of the info log: at a thousand calls a
// second they would drown everything else. Client mistakes are info, server
// faults are errors, and outages are warnings.
func levelOf(c codes.Code) slog.Level {
	switch c {
	case codes.OK:
		return slog.LevelDebug
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return slog.LevelError
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
