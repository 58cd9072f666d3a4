package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/acme/orders-service/internal/poll"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

var jwtEnv = map[string]string{"AUTH_MODE": "jwt", "AUTH_JWT_HS256_SECRET": strings.Repeat("k", 32)}

func withEnv(base map[string]string, kv ...string) map[string]string {
	env := map[string]string{}
	for k, v := range base {
		env[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return env
}

// TestStreamTimeoutEndsTokenFreeStreams: health Watch and reflection need
// no token, so GRPC_STREAM_TIMEOUT ends them whatever the client does.
func TestStreamTimeoutEndsTokenFreeStreams(t *testing.T) {
	conn := serveOptions(t, withEnv(jwtEnv, "GRPC_STREAM_TIMEOUT", "300ms"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("first Watch answer: %v", err)
	}
	start := time.Now()
	_, err = watch.Recv()
	if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 10*time.Second {
		t.Fatalf("Watch after the stream timeout: %v after %v, want DeadlineExceeded from the server well before the client's 20s", err, time.Since(start))
	}
	t.Logf("Watch ended %v after its first answer", time.Since(start))

	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if _, err := refl.Recv(); status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 10*time.Second {
		t.Fatalf("idle reflection stream: %v after %v, want DeadlineExceeded from the server well before the client's 20s", err, time.Since(start))
	}
}

// TestMaxConnectionIdleClosesIdleConnections: the server sends GOAWAY to a
// connection idle for GRPC_MAX_CONNECTION_IDLE, so the client goes idle.
func TestMaxConnectionIdleClosesIdleConnections(t *testing.T) {
	conn := serveOptions(t, withEnv(jwtEnv, "GRPC_MAX_CONNECTION_IDLE", "300ms"))
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, "the idle connection closed by the server", func() bool {
		return conn.GetState() != connectivity.Ready
	})
}

// TestMaxConnectionsMakesTheNextOneWait: with GRPC_MAX_CONNECTIONS=2 a
// third connection is not served until one of the two closes.
func TestMaxConnectionsMakesTheNextOneWait(t *testing.T) {
	addr := serveAPI(t, withEnv(jwtEnv, "GRPC_MAX_CONNECTIONS", "2"))
	dial := func() *grpc.ClientConn {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	check := func(c *grpc.ClientConn, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		return err
	}
	first, second, third := dial(), dial(), dial()
	for i, c := range []*grpc.ClientConn{first, second} {
		if err := check(c, 10*time.Second); err != nil {
			t.Fatalf("connection %d of 2: %v", i+1, err)
		}
	}
	if err := check(third, time.Second); err == nil {
		t.Fatal("a third connection was served with GRPC_MAX_CONNECTIONS=2")
	}
	first.Close()
	poll.Eventually(t, 10*time.Second, "the third connection served after the first closed", func() bool {
		return check(third, time.Second) == nil
	})
}

// TestKeepaliveEnforcement: a client may ping every GRPC_KEEPALIVE_MIN_TIME
// without streams; one pinging more often is sent GOAWAY ENHANCE_YOUR_CALM.
func TestKeepaliveEnforcement(t *testing.T) {
	pinger := func(addr string, every time.Duration, n int) (goaway bool) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write([]byte(http2.ClientPreface))
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		got := make(chan bool, 1)
		go func() {
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					got <- false
					return
				}
				if ga, ok := f.(*http2.GoAwayFrame); ok {
					got <- ga.ErrCode == http2.ErrCodeEnhanceYourCalm
					return
				}
			}
		}()
		for i := range n {
			if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
				break
			}
			select {
			case g := <-got:
				return g
			case <-time.After(every):
			}
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		return <-got
	}
	strict := serveAPI(t, withEnv(jwtEnv, "GRPC_KEEPALIVE_MIN_TIME", "1h"))
	if !pinger(strict, 10*time.Millisecond, 20) {
		t.Error("pings every 10ms with GRPC_KEEPALIVE_MIN_TIME=1h: no GOAWAY ENHANCE_YOUR_CALM")
	}
	lenient := serveAPI(t, withEnv(jwtEnv, "GRPC_KEEPALIVE_MIN_TIME", "50ms"))
	if pinger(lenient, 150*time.Millisecond, 8) {
		t.Error("pings every 150ms with GRPC_KEEPALIVE_MIN_TIME=50ms: GOAWAY ENHANCE_YOUR_CALM")
	}
}
