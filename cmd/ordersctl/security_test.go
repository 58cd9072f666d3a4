package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/internal/testpki"
	"github.com/acme/orders-service/tlsconfig"
)

const testSecret = "a test secret that is at least 32 bytes long"

func TestJWTAuth(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{Mode: auth.ModeJWT, HS256Secret: testSecret, Issuer: "ordersctl-test", Audience: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, grpcapi.Options{Interceptors: []grpc.UnaryServerInterceptor{auth.UnaryServerInterceptor(v)}})
	alice := user(t) + "-alice"

	tok := strings.TrimSpace(ok(t, addr, "token", "-secret", testSecret, "-sub", alice, "-iss", "ordersctl-test", "-aud", "orders", "-ttl", "5m"))
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("token output %q is not a JWT", tok)
	}

	fails(t, addr, 64+16, "Unauthenticated: ", "create", "-amount", "100")
	fails(t, addr, 64+16, "Unauthenticated: ", "-token", "not-a-jwt", "list")

	// Without -user the server uses the token's subject.
	_, body := rows(t, ok(t, addr, "-token", tok, "create", "-amount", "100"), len(orderColumns))
	if len(body) != 1 || body[0][1] != alice {
		t.Fatalf("created %q, want an order of %s", body, alice)
	}
	id := body[0][0]
	env := map[string]string{"ORDERSCTL_ADDR": addr, "ORDERSCTL_TOKEN": tok}
	if r := ctl(t, env, "list"); r.code != 0 || !strings.Contains(r.stdout, id) {
		t.Fatalf("list with ORDERSCTL_TOKEN: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	fails(t, addr, 64+7, "PermissionDenied: ", "-token", tok, "finish", id)

	// A token from a secret file, with a role, may finish anyone's order.
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(ok(t, addr, "token", "-secret-file", secretFile, "-sub", "ops", "-roles", "orders.admin, orders.service", "-iss", "ordersctl-test", "-aud", "orders"))
	_, body = rows(t, ok(t, addr, "-token", admin, "finish", id), len(orderColumns))
	if body[0][4] != "FINISHED" {
		t.Fatalf("admin finish: %q", body)
	}

	// The server checks what -iss and -aud put in the token.
	noAud := strings.TrimSpace(ok(t, addr, "token", "-secret", testSecret, "-sub", alice, "-iss", "ordersctl-test"))
	fails(t, addr, 64+16, "Unauthenticated: ", "-token", noAud, "list")
}

func TestTLS(t *testing.T) {
	pki := testpki.New(t)
	tlsCfg, err := tlsconfig.ServerConfig(pki.ServerCertFile, pki.ServerKeyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, grpcapi.Options{ServerOptions: []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tlsCfg))}})
	u := user(t)

	ok(t, addr, "-tls", "-ca", pki.CAFile, "create", "-user", u, "-amount", "1")
	if out := ok(t, addr, "-ca", pki.CAFile, "list", "-user", u); !strings.Contains(out, u) {
		t.Fatalf("-ca alone (TLS implied): %s", out)
	}
	ok(t, addr, "-insecure-skip-verify", "list", "-user", u)
	// The system roots do not trust the test CA; plaintext is refused.
	fails(t, addr, 64+14, "Unavailable: ", "-tls", "-timeout", "5s", "list", "-user", u)
	fails(t, addr, 64+14, "Unavailable: ", "-timeout", "5s", "list", "-user", u)
	fails(t, addr, 1, "-ca ", "-ca", pki.ServerKeyFile, "list", "-user", u)
}

func TestMutualTLS(t *testing.T) {
	pki := testpki.New(t)
	tlsCfg, err := tlsconfig.ServerConfig(pki.ServerCertFile, pki.ServerKeyFile, pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, grpcapi.Options{ServerOptions: []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tlsCfg))}})
	u := user(t)

	ok(t, addr, "-tls", "-ca", pki.CAFile, "-cert", pki.ClientCertFile, "-key", pki.ClientKeyFile, "create", "-user", u, "-amount", "1")
	fails(t, addr, 64+14, "Unavailable: ", "-tls", "-ca", pki.CAFile, "-timeout", "5s", "list", "-user", u)
}
