package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/health"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

var testDSN string

func TestMain(m *testing.M) { pgtest.Main(m, func(dsn string) { testDSN = dsn }) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startServer serves the real API over a fresh connection to the test
// database on 127.0.0.1:0 and returns its address.
func startServer(t *testing.T, opts grpcapi.Options) string {
	t.Helper()
	db := pgtest.Open(t, testDSN)
	svc := postgres.NewOrderService(db, postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "test"}), "USD")
	opts.Log = quiet
	srv := grpcapi.NewServer(grpcapi.NewHandler(svc, []byte("test page key"), quiet), health.NewServer(), opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// result is what one ordersctl invocation printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

// ctl runs ordersctl in-process with args and the environment env.
func ctl(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, func(k string) string { return env[k] })
	return result{code, stdout.String(), stderr.String()}
}

// ok runs ordersctl against addr and fails the test unless it exits 0.
func ok(t *testing.T, addr string, args ...string) string {
	t.Helper()
	r := withoutTokenWarning(ctl(t, nil, append([]string{"-addr", addr}, args...)...))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("ordersctl %q: exit %d, stderr %q", args, r.code, r.stderr)
	}
	return r.stdout
}

// fails runs ordersctl against addr and checks the exit code and that
// stderr starts with "ordersctl: " + prefix, with nothing on stdout.
func fails(t *testing.T, addr string, code int, prefix string, args ...string) result {
	t.Helper()
	r := withoutTokenWarning(ctl(t, nil, append([]string{"-addr", addr}, args...)...))
	if r.code != code || !strings.HasPrefix(r.stderr, "ordersctl: "+prefix) || r.stdout != "" {
		t.Fatalf("ordersctl %q: exit %d, stdout %q, stderr %q; want exit %d and %q", args, r.code, r.stdout, r.stderr, code, "ordersctl: "+prefix)
	}
	return r
}

// withoutTokenWarning drops the warning about a token sent over plaintext
// (TestTokenOverPlaintextWarns checks it), for tests of other things.
func withoutTokenWarning(r result) result {
	r.stderr = regexp.MustCompile(`(?m)^ordersctl: warning: the bearer token .*\n`).ReplaceAllString(r.stderr, "")
	return r
}

func user(t *testing.T) string {
	return strings.ReplaceAll(t.Name(), "/", "-") + time.Now().Format("150405.000000")
}

// rows splits table output into its header and rows of fields; the last
// column (DESCRIPTION) keeps its spaces.
func rows(t *testing.T, out string, columns int) (header []string, body [][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) > columns {
			f = append(f[:columns-1], strings.Join(f[columns-1:], " "))
		}
		if i == 0 {
			header = f
		} else {
			body = append(body, f)
		}
	}
	return header, body
}
