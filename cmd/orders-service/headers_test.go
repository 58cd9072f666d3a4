package main

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/acme/orders-service/gen/orderspb"
)

// healthCheckHeaders is an HPACK block of a token-less Health/Check call
// with extra bytes of metadata in headers of 8 KiB each.
func healthCheckHeaders(extra int) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.health.v1.Health/Check"},
		{":authority", "localhost"}, {"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := 0; extra > 0; i++ {
		n := min(extra, 8<<10)
		enc.WriteField(hpack.HeaderField{Name: "x-pad-" + strings.Repeat("p", i%7) + string(rune('a'+i%26)), Value: strings.Repeat("x", n), Sensitive: true})
		extra -= n
	}
	return buf.Bytes()
}

// rawHealthCheck sends block as one Health/Check call on a new HTTP/2
// connection (HEADERS and CONTINUATION frames of 16 KiB) and reports
// whether the server answered it with grpc-status 0.
func rawHealthCheck(t *testing.T, addr string, block []byte) (served bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings()
	const chunk = 16 << 10
	first := block[:min(len(block), chunk)]
	rest := block[len(first):]
	// The server may close the connection while we write: then it refused.
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(rest) == 0}); err != nil {
		return false
	}
	for len(rest) > 0 {
		n := min(len(rest), chunk)
		if err := fr.WriteContinuation(1, n == len(rest), rest[:n]); err != nil {
			return false
		}
		rest = rest[n:]
	}
	// An empty request message: 5 bytes of gRPC framing.
	if err := fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}); err != nil {
		return false
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return false
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			if st := f.PseudoValue("status"); st != "" && st != "200" {
				return false
			}
			if gs := f.RegularFields(); len(gs) > 0 {
				for _, h := range gs {
					if h.Name == "grpc-status" {
						return h.Value == "0"
					}
				}
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			return false
		}
	}
}

// TestMaxHeaderListSize: a token-less call with 64 KiB of metadata is
// refused (grpc-go's default would take 16 MiB), and many of 4 MiB each
// cost the server next to nothing, while a call with an 8 KiB token, well
// within GRPC_MAX_HEADER_LIST_BYTES, is served.
func TestMaxHeaderListSize(t *testing.T) {
	addr := serveAPI(t, withEnv(jwtEnv))
	if !rawHealthCheck(t, addr, healthCheckHeaders(0)) {
		t.Fatal("a plain Health/Check over the raw HTTP/2 client was not served")
	}
	if rawHealthCheck(t, addr, healthCheckHeaders(64<<10)) {
		t.Error("a Health/Check with 64 KiB of metadata was served")
	}

	big := healthCheckHeaders(4 << 20) // encoded once: the client's own bytes stay out of the count
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 8 {
		rawHealthCheck(t, addr, big)
	}
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("8 calls with 4 MiB of metadata each: the process allocated %.1f MiB", float64(allocated)/(1<<20))
	if allocated > 8<<20 {
		t.Errorf("8 calls with 4 MiB of metadata each allocated %.1f MiB, want the server to drop them unread (< 8 MiB)", float64(allocated)/(1<<20))
	}

	// An 8 KiB token passes: the call gets past authentication to validation.
	claims := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "pad": strings.Repeat("p", 5900)}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtEnv["AUTH_JWT_HS256_SECRET"]))
	if err != nil || len(tok) < 7<<10 || len(tok) > 8<<10 {
		t.Fatalf("token of %d bytes (%v), want about 8 KiB, the longest the verifier takes", len(tok), err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	_, err = orderspb.NewOrderServiceClient(conn).GetOrderStatus(ctx, &orderspb.GetOrderStatusRequest{OrderId: "not-a-uuid"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetOrderStatus with a %d-byte token: %v, want InvalidArgument (authenticated, then validated)", len(tok), err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("Health/Check with a %d-byte token: %v", len(tok), err)
	}
}
