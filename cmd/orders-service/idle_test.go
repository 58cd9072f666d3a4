package main

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// idleSockets opens n TCP connections from 127.0.0.1 that never start
// HTTP/2, and waits until the server has taken each: it sent its SETTINGS
// frame, or closed the socket at once.
func idleSockets(t *testing.T, addr string, n int) {
	t.Helper()
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 9)); err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			t.Fatalf("idle socket %d: the server neither greeted nor closed it: %v", i+1, err)
		}
		c.SetReadDeadline(time.Time{})
	}
}

// healthFrom127002 calls Health/Check from 127.0.0.2, another peer than the
// idle sockets', and returns how long it took.
func healthFrom127002(t *testing.T, addr string) (time.Duration, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	return time.Since(start), err
}

// TestIdleSocketsDoNotLockOthersOut: sockets of one peer that never speak
// HTTP/2 do not keep another peer's health check from answering within 2s,
// whether the per-peer cap (GRPC_MAX_CONNECTIONS_PER_PEER) turns them away
// or the handshake timeout (GRPC_CONNECTION_TIMEOUT) closes them.
func TestIdleSocketsDoNotLockOthersOut(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"per-peer cap":      withEnv(jwtEnv, "GRPC_MAX_CONNECTIONS", "5", "GRPC_MAX_CONNECTIONS_PER_PEER", "2", "GRPC_CONNECTION_TIMEOUT", "1h"),
		"handshake timeout": withEnv(jwtEnv, "GRPC_MAX_CONNECTIONS", "5", "GRPC_MAX_CONNECTIONS_PER_PEER", "5", "GRPC_CONNECTION_TIMEOUT", "300ms"),
	} {
		t.Run(name, func(t *testing.T) {
			addr := serveAPI(t, env)
			idleSockets(t, addr, 5)
			took, err := healthFrom127002(t, addr)
			if err != nil {
				t.Fatalf("health check from 127.0.0.2 beside 5 idle sockets of 127.0.0.1 (GRPC_MAX_CONNECTIONS=5): %v after %v", err, took)
			}
			t.Logf("health check from another peer answered in %v", took)
		})
	}
}
