package tlsconfig

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ca is a test certificate authority.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1000),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (c *ca) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// issue returns PEM certificate and key for a leaf with the given serial,
// valid for 127.0.0.1 and localhost as a server or as a client.
func (c *ca) issue(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func (c *ca) clientCert(t *testing.T, serial int64) tls.Certificate {
	t.Helper()
	certPEM, keyPEM := c.issue(t, serial)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// replace writes data to path atomically, the way secret mounts update.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type files struct{ cert, key, ca string }

func writeFiles(t *testing.T, certPEM, keyPEM, caPEM []byte) files {
	t.Helper()
	dir := t.TempDir()
	f := files{cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key")}
	replace(t, f.cert, certPEM)
	replace(t, f.key, keyPEM)
	if caPEM != nil {
		f.ca = filepath.Join(dir, "ca.crt")
		replace(t, f.ca, caPEM)
	}
	return f
}

// serve runs a gRPC server with the health service over cfg on 127.0.0.1
// and returns its address.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// check makes a health check over a new connection and returns the serial
// of the server certificate it saw.
func check(t *testing.T, addr string, client *tls.Config) (*big.Int, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(client)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var p peer.Peer
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	if err != nil {
		return nil, err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health status = %v", resp.GetStatus())
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		t.Fatalf("peer auth info = %T, want TLSInfo", p.AuthInfo)
	}
	if info.State.Version < tls.VersionTLS12 {
		t.Errorf("negotiated TLS version %x, want >= 1.2", info.State.Version)
	}
	return info.State.PeerCertificates[0].SerialNumber, nil
}

func wantSerial(t *testing.T, addr string, client *tls.Config, want int64) {
	t.Helper()
	got, err := check(t, addr, client)
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	if got.Int64() != want {
		t.Fatalf("server certificate serial = %v, want %d", got, want)
	}
}

func TestServerConfigServesTLS(t *testing.T) {
	authority := newCA(t, "ca")
	certPEM, keyPEM := authority.issue(t, 1)
	f := writeFiles(t, certPEM, keyPEM, nil)
	cfg, err := ServerConfig(f.cert, f.key, "")
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	wantSerial(t, addr, &tls.Config{RootCAs: authority.pool()}, 1)

	old := &tls.Config{RootCAs: authority.pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	conn, err := tls.Dial("tcp", addr, old)
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake succeeded, want refused")
	}
	if !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("TLS 1.1 handshake error = %v, want the server's protocol version alert", err)
	}
}

// fakeClock is a clock the test moves while server goroutines read it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestRotation(t *testing.T) {
	authority := newCA(t, "ca")
	certPEM, keyPEM := authority.issue(t, 1)
	f := writeFiles(t, certPEM, keyPEM, nil)
	r, err := newReloader(f.cert, f.key, "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Now()}
	r.now = clock.now
	addr := serve(t, r.outer())
	client := &tls.Config{RootCAs: authority.pool()}
	wantSerial(t, addr, client, 1)

	certPEM, keyPEM = authority.issue(t, 2)
	replace(t, f.cert, certPEM)
	replace(t, f.key, keyPEM)
	wantSerial(t, addr, client, 1) // within the check interval: not looked at yet

	clock.advance(time.Minute)
	wantSerial(t, addr, client, 2)

	replace(t, f.cert, []byte("half-written garbage"))
	clock.advance(time.Minute)
	wantSerial(t, addr, client, 2) // a change that does not load keeps the previous pair

	certPEM, keyPEM = authority.issue(t, 3)
	replace(t, f.key, keyPEM)
	replace(t, f.cert, certPEM)
	clock.advance(time.Minute)
	wantSerial(t, addr, client, 3)
}

func TestMutualTLS(t *testing.T) {
	authority, other := newCA(t, "ca"), newCA(t, "other")
	certPEM, keyPEM := authority.issue(t, 1)
	f := writeFiles(t, certPEM, keyPEM, authority.pem)
	r, err := newReloader(f.cert, f.key, f.ca, 0)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.outer())
	roots := authority.pool()

	if _, err := check(t, addr, &tls.Config{RootCAs: roots}); status.Code(err) != codes.Unavailable {
		t.Fatalf("client without certificate: err = %v, want Unavailable", err)
	}
	if err := readAlert(addr, &tls.Config{RootCAs: roots}); !strings.Contains(fmt.Sprint(err), "certificate required") {
		t.Fatalf("raw TLS client without certificate: err = %v, want the certificate required alert", err)
	}
	strange := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{other.clientCert(t, 20)}}
	if _, err := check(t, addr, strange); status.Code(err) != codes.Unavailable {
		t.Fatalf("client with a certificate of another CA: err = %v, want Unavailable", err)
	}
	trusted := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{authority.clientCert(t, 10)}}
	wantSerial(t, addr, trusted, 1)

	// Rotating the client CA file trusts the new CA and drops the old one.
	replace(t, f.ca, other.pem)
	wantSerial(t, addr, strange, 1)
	if _, err := check(t, addr, trusted); status.Code(err) != codes.Unavailable {
		t.Fatalf("client of the removed CA: err = %v, want Unavailable", err)
	}
}

// readAlert completes a TLS handshake and returns the error of the first
// read: in TLS 1.3 the server rejects a client certificate after the client
// finished its handshake.
func readAlert(addr string, cfg *tls.Config) error {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	return err
}

func TestServerConfigErrors(t *testing.T) {
	authority := newCA(t, "ca")
	certPEM, keyPEM := authority.issue(t, 1)
	_, otherKey := authority.issue(t, 2)
	good := writeFiles(t, certPEM, keyPEM, authority.pem)
	mismatched := writeFiles(t, certPEM, otherKey, nil)
	badCA := writeFiles(t, certPEM, keyPEM, []byte("not pem"))
	tests := []struct {
		name                string
		cert, key, ca, want string
	}{
		{"missing cert", "/nonexistent/tls.crt", good.key, "", "/nonexistent/tls.crt"},
		{"missing key", good.cert, "/nonexistent/tls.key", "", "/nonexistent/tls.key"},
		{"missing CA", good.cert, good.key, "/nonexistent/ca.crt", "/nonexistent/ca.crt"},
		{"key of another cert", mismatched.cert, mismatched.key, "", mismatched.key},
		{"CA file without certificates", badCA.cert, badCA.key, badCA.ca, badCA.ca},
	}
	for _, tc := range tests {
		if _, err := ServerConfig(tc.cert, tc.key, tc.ca); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ServerConfig error = %v, want one naming %s", tc.name, err, tc.want)
		}
	}
	if cfg, err := ServerConfig(good.cert, good.key, good.ca); err != nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("ServerConfig(good) = %v, %v; want MinVersion TLS 1.2", cfg, err)
	}
}
