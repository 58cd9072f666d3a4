package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/grpcapi"
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

	fails(t, addr, 1, "Unauthenticated: ", "create", "-amount", "100")
	fails(t, addr, 1, "Unauthenticated: ", "-token", "not-a-jwt", "list")

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
	fails(t, addr, 1, "PermissionDenied: ", "-token", tok, "finish", id)

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
	fails(t, addr, 1, "Unauthenticated: ", "-token", noAud, "list")
}

func TestTLS(t *testing.T) {
	pki := newPKI(t)
	tlsCfg, err := tlsconfig.ServerConfig(pki.serverCert, pki.serverKey, "")
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, grpcapi.Options{ServerOptions: []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tlsCfg))}})
	u := user(t)

	ok(t, addr, "-tls", "-ca", pki.caCert, "create", "-user", u, "-amount", "1")
	if out := ok(t, addr, "-ca", pki.caCert, "list", "-user", u); !strings.Contains(out, u) {
		t.Fatalf("-ca alone (TLS implied): %s", out)
	}
	ok(t, addr, "-insecure-skip-verify", "list", "-user", u)
	// The system roots do not trust the test CA; plaintext is refused.
	fails(t, addr, 1, "Unavailable: ", "-tls", "-timeout", "5s", "list", "-user", u)
	fails(t, addr, 1, "Unavailable: ", "-timeout", "5s", "list", "-user", u)
	fails(t, addr, 1, "-ca ", "-ca", pki.serverKey, "list", "-user", u)
}

func TestMutualTLS(t *testing.T) {
	pki := newPKI(t)
	tlsCfg, err := tlsconfig.ServerConfig(pki.serverCert, pki.serverKey, pki.caCert)
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, grpcapi.Options{ServerOptions: []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tlsCfg))}})
	u := user(t)

	ok(t, addr, "-tls", "-ca", pki.caCert, "-cert", pki.clientCert, "-key", pki.clientKey, "create", "-user", u, "-amount", "1")
	fails(t, addr, 1, "Unavailable: ", "-tls", "-ca", pki.caCert, "-timeout", "5s", "list", "-user", u)
}

// pki is a test CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files in a temporary directory.
type pki struct {
	caCert, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ordersctl test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := pki{caCert: writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)}
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "PRIVATE KEY", keyDER)
	}
	p.serverCert, p.serverKey = issue("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = issue("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
