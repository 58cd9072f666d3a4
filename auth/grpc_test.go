package auth

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	whoUnaryMethod   = "/authtest.Who/Unary"
	unknownStreamRPC = "/authtest.Unknown/Stream"
	noPrincipal      = "<no principal>"
)

func subjectOf(ctx context.Context) string {
	if p, ok := FromContext(ctx); ok {
		return p.Subject
	}
	return noPrincipal
}

// whoDesc is a test service whose one unary method answers the caller's sub.
var whoDesc = grpc.ServiceDesc{
	ServiceName: "authtest.Who",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			req := new(emptypb.Empty)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, _ any) (any, error) { return wrapperspb.String(subjectOf(ctx)), nil }
			if in == nil {
				return h(ctx, req)
			}
			return in(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: whoUnaryMethod}, h)
		},
	}},
}

// unknownStream answers any unregistered streaming method with the caller's sub.
func unknownStream(_ any, ss grpc.ServerStream) error {
	if err := ss.RecvMsg(new(emptypb.Empty)); err != nil {
		return err
	}
	return ss.SendMsg(wrapperspb.String(subjectOf(ss.Context())))
}

// startServer serves health, whoDesc and unknownStream behind v's
// interceptors on a bufconn and returns a client connection.
func startServer(t *testing.T, v *Verifier) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(UnaryServerInterceptor(v)),
		grpc.ChainStreamInterceptor(StreamServerInterceptor(v)),
		grpc.UnknownServiceHandler(unknownStream),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	srv.RegisterService(&whoDesc, struct{}{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func callUnary(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	out := new(wrapperspb.StringValue)
	err := conn.Invoke(ctx, whoUnaryMethod, new(emptypb.Empty), out)
	return out.GetValue(), err
}

func callStream(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, unknownStreamRPC)
	if err != nil {
		return "", err
	}
	// io.EOF from SendMsg means the server already ended the stream (as it
	// does when it refuses a token): its status comes from RecvMsg.
	if err := s.SendMsg(new(emptypb.Empty)); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if err := s.CloseSend(); err != nil {
		return "", err
	}
	out := new(wrapperspb.StringValue)
	err = s.RecvMsg(out)
	return out.GetValue(), err
}

func TestInterceptors(t *testing.T) {
	v := newTestVerifier(t, Config{Mode: ModeJWT, HS256Secret: testSecret, Issuer: testIss, Audience: testAud})
	conn := startServer(t, v)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("health check needs no token", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check = %v, %v; want SERVING", resp, err)
		}
	})
	t.Run("health watch needs no token", func(t *testing.T) {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		w, err := healthpb.NewHealthClient(conn).Watch(wctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := w.Recv()
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Watch = %v, %v; want SERVING", resp, err)
		}
	})

	valid := mustMint(t, []byte(testSecret), "alice", []string{RoleAdmin}, testIss, testAud)
	for name, call := range map[string]func(context.Context, *grpc.ClientConn) (string, error){
		"unary": callUnary, "stream": callStream,
	} {
		t.Run(name+" valid token", func(t *testing.T) {
			sub, err := call(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+valid), conn)
			if err != nil || sub != "alice" {
				t.Fatalf("call = %q, %v; want alice", sub, err)
			}
		})
		t.Run(name+" lower-case scheme", func(t *testing.T) {
			sub, err := call(metadata.AppendToOutgoingContext(ctx, "authorization", "bearer "+valid), conn)
			if err != nil || sub != "alice" {
				t.Fatalf("call = %q, %v; want alice", sub, err)
			}
		})
	}

	expired := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "",
		goodClaims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}))
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	rejected := []struct {
		name   string
		header []string // authorization values sent
		secret string   // must not appear in the status message
	}{
		{"no metadata", nil, ""},
		{"expired token", []string{"Bearer " + expired}, expired},
		{"alg none", []string{"Bearer " + none}, none},
		{"garbage token", []string{"Bearer not-a-jwt-but-secret-looking"}, "not-a-jwt-but-secret-looking"},
		{"bearer without token", []string{"Bearer "}, ""},
		{"basic scheme", []string{"Basic " + valid}, valid},
		{"token without scheme", []string{valid}, valid},
		{"two authorization values", []string{"Bearer " + valid, "Bearer " + valid}, valid},
	}
	for _, tc := range rejected {
		md := metadata.MD{}
		for _, h := range tc.header {
			md.Append("authorization", h)
		}
		cctx := metadata.NewOutgoingContext(ctx, md)
		for name, call := range map[string]func(context.Context, *grpc.ClientConn) (string, error){
			"unary": callUnary, "stream": callStream,
		} {
			t.Run(name+" "+tc.name, func(t *testing.T) {
				sub, err := call(cctx, conn)
				st := status.Convert(err)
				if st.Code() != codes.Unauthenticated {
					t.Fatalf("call = %q, %v; want Unauthenticated", sub, err)
				}
				if tc.secret != "" && strings.Contains(st.Message(), tc.secret) {
					t.Errorf("status message echoes the token: %q", st.Message())
				}
				if st.Message() != "missing or invalid bearer token" {
					t.Errorf("status message = %q, want the generic one", st.Message())
				}
			})
		}
	}
}

func TestInterceptorsDisabledPassThrough(t *testing.T) {
	v, err := NewVerifier(Config{Mode: ModeNone})
	if err != nil {
		t.Fatal(err)
	}
	conn := startServer(t, v)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, call := range map[string]func(context.Context, *grpc.ClientConn) (string, error){
		"unary": callUnary, "stream": callStream,
	} {
		if sub, err := call(ctx, conn); err != nil || sub != noPrincipal {
			t.Errorf("%s without token on disabled verifier = %q, %v; want %q", name, sub, err, noPrincipal)
		}
	}
}
