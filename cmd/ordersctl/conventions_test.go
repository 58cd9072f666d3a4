package main

import (
	"net"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
)

// TestFlagsAfterCommand: global flags may follow the command and its
// arguments, as kubectl users type them.
func TestFlagsAfterCommand(t *testing.T) {
	addr := startServer(t, grpcapi.Options{})
	u := user(t)
	_, body := rows(t, ok(t, addr, "create", "-user", u, "-amount", "700"), len(orderColumns))
	id := body[0][0]

	r := ctl(t, nil, "status", id, "-o", "json", "-addr", addr)
	var st orderspb.GetOrderStatusResponse
	if r.code != 0 || protojson.Unmarshal([]byte(r.stdout), &st) != nil || st.GetOrderId() != id {
		t.Fatalf("status <id> -o json -addr: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := ctl(t, nil, "list", "-user", u, "-addr", addr, "-o", "json"); r.code != 0 || !strings.HasPrefix(r.stdout, "{") {
		t.Fatalf("list ... -addr -o json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestLocalValidation: what ordersctl can tell is wrong without the server
// is a usage error (exit 2), and no call is made.
func TestLocalValidation(t *testing.T) {
	secret := strings.Repeat("s", 32)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "not-a-uuid"}, "UUID"},
		{[]string{"get", "123"}, "UUID"},
		{[]string{"finish", "6f1c5a3e-1b2c-4d5e-8f90-123456789abg"}, "UUID"},
		{[]string{"create", "-user", "u"}, "-amount"},
		{[]string{"create", "-user", "u", "-amount", "0"}, "-amount"},
		{[]string{"create", "-user", "u", "-amount", "-5"}, "-amount"},
		{[]string{"token", "-secret", secret, "-sub", "ops", "-roles", "orders.admn"}, "orders.admn"},
		{[]string{"-addr", "http://localhost:50051", "list"}, "http://"},
		{[]string{"-addr", "https://orders.example.com", "list"}, "-tls"},
	} {
		r := ctl(t, nil, append([]string{"-addr", "127.0.0.1:1"}, tc.args...)...)
		if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("ordersctl %q: exit %d, stdout %q, stderr %q; want exit 2 and a message naming %q", tc.args, r.code, r.stdout, r.stderr, tc.want)
		}
	}
}

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"localhost":         "localhost:50051",
		"localhost:9000":    "localhost:9000",
		"10.0.0.7":          "10.0.0.7:50051",
		"::1":               "[::1]:50051",
		"[::1]":             "[::1]:50051",
		"[::1]:7":           "[::1]:7",
		"orders.example:0x": "orders.example:0x", // left to the dialer, which names it
	} {
		if got, err := normalizeAddr(in); err != nil || got != want {
			t.Errorf("normalizeAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"http://localhost:50051", "dns:///localhost:50051", ""} {
		if got, err := normalizeAddr(in); err == nil {
			t.Errorf("normalizeAddr(%q) = %q, want an error", in, got)
		}
	}
}

// TestExitCodes: a failed call exits 64 + its gRPC code (as grpcurl does),
// so scripts can tell NotFound from Unavailable; the address of a server
// that cannot be reached is named.
func TestExitCodes(t *testing.T) {
	addr := startServer(t, grpcapi.Options{})
	fails(t, addr, 64+5, "NotFound: ", "status", "6f1c5a3e-1b2c-4d5e-8f90-123456789abc")
	fails(t, addr, 64+3, "InvalidArgument: ", "create", "-user", "", "-amount", "5")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	r := fails(t, closed, 64+14, "Unavailable: ", "-timeout", "5s", "list", "-user", "u")
	if !strings.Contains(r.stderr, "cannot reach "+closed) {
		t.Errorf("unreachable server: stderr %q does not name %s", r.stderr, closed)
	}
	r = fails(t, "no-such-host.invalid", 64+14, "Unavailable: ", "-timeout", "5s", "list", "-user", "u")
	if !strings.Contains(r.stderr, "cannot reach no-such-host.invalid:50051") {
		t.Errorf("unresolvable host: stderr %q does not name it", r.stderr)
	}
}

// TestTokenOverPlaintextWarns: a bearer token sent without TLS is visible
// to anyone on the path; ordersctl says so once, and still calls.
func TestTokenOverPlaintextWarns(t *testing.T) {
	addr := startServer(t, grpcapi.Options{})
	r := ctl(t, nil, "-addr", addr, "-token", "x.y.z", "list", "-user", user(t))
	if r.code != 0 || strings.Count(r.stderr, "warning:") != 1 || !strings.Contains(r.stderr, "plaintext") {
		t.Fatalf("-token over plaintext: exit %d, stderr %q; want one warning and exit 0", r.code, r.stderr)
	}
	if r := ctl(t, nil, "-addr", addr, "list", "-user", user(t)); r.stderr != "" {
		t.Fatalf("no token: stderr %q, want nothing", r.stderr)
	}
}
