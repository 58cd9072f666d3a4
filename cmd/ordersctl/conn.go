package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/acme/orders-service/gen/orderspb"
)

// app holds the global options and the connection of one invocation.
type app struct {
	addr, token        string
	tokenSet           bool // -token was given, perhaps empty
	tls                bool
	ca, cert, key      string
	insecureSkipVerify bool
	timeout            time.Duration
	output             string
	command            string // the subcommand being run

	stdout, stderr io.Writer
	getenv         func(string) string
	conn           *grpc.ClientConn
}

// defaultPort is the service's GRPC_PORT default, used when -addr names
// only a host.
const defaultPort = "50051"

// ready completes the global options once every flag is parsed: the token
// from the environment unless -token was given, the address with its
// default port, and checks.
func (a *app) ready() error {
	if !a.tokenSet {
		a.token = a.getenv("ORDERSCTL_TOKEN")
	}
	a.token = strings.TrimSpace(a.token)
	addr, err := normalizeAddr(a.addr)
	if err != nil {
		return err
	}
	a.addr = addr
	return a.check()
}

// normalizeAddr returns addr as host:port, adding the default port to a bare
// host ("localhost", "10.0.0.7", "::1", "[::1]"). A URL is a usage error:
// gRPC targets have no http:// or https:// scheme.
func normalizeAddr(addr string) (string, error) {
	if scheme, _, ok := strings.Cut(addr, "://"); ok {
		return "", usagef("-addr %q: want host[:port], not a URL: drop %s:// (and add -tls or -ca for a TLS server)", addr, scheme)
	}
	if addr == "" {
		return "", usagef("-addr: must not be empty")
	}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if port == "" {
			port = defaultPort
		}
		return net.JoinHostPort(host, port), nil
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), defaultPort), nil
}

// check validates the global flags.
func (a *app) check() error {
	switch {
	case a.output != "table" && a.output != "json":
		return usagef("-o: want table or json, got %q", a.output)
	case a.timeout <= 0:
		return usagef("-timeout: must be positive")
	case (a.cert == "") != (a.key == ""):
		return usagef("-cert and -key go together")
	}
	return nil
}

// client connects on first use. grpc.NewClient does not dial yet: an
// unreachable server shows up as UNAVAILABLE on the first call.
func (a *app) client() (orderspb.OrderServiceClient, error) {
	if a.conn == nil {
		creds, err := a.credentials()
		if err != nil {
			return nil, err
		}
		if a.token != "" && creds.Info().SecurityProtocol == "insecure" {
			fmt.Fprintf(a.stderr, "ordersctl: warning: the bearer token goes to %s over plaintext, readable on the way; use -tls or -ca\n", a.addr)
		}
		conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(creds), grpc.WithUnaryInterceptor(a.nameUnreachable))
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", a.addr, err)
		}
		a.conn = conn
	}
	return orderspb.NewOrderServiceClient(a.conn), nil
}

// nameUnreachable puts the address into the error of a call that never
// reached a server (connection refused, unknown host), keeping its code:
// gRPC's own message names at most an IP address.
func (a *app) nameUnreachable(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	if st, ok := status.FromError(err); ok && err != nil && p.Addr == nil && st.Code() == codes.Unavailable {
		return status.Errorf(codes.Unavailable, "cannot reach %s: %s", a.addr, st.Message())
	}
	return err
}

func (a *app) close() {
	if a.conn != nil {
		a.conn.Close()
	}
}

// callContext bounds one call by -timeout and attaches the bearer token.
func (a *app) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	if a.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.token)
	}
	return ctx, cancel
}

func (a *app) credentials() (credentials.TransportCredentials, error) {
	if !a.tls && a.ca == "" && a.cert == "" && !a.insecureSkipVerify {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: a.insecureSkipVerify}
	if a.ca != "" {
		pem, err := os.ReadFile(a.ca)
		if err != nil {
			return nil, fmt.Errorf("-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca %s: no PEM certificate found", a.ca)
		}
		cfg.RootCAs = pool
	}
	if a.cert != "" {
		pair, err := tls.LoadX509KeyPair(a.cert, a.key)
		if err != nil {
			return nil, fmt.Errorf("-cert/-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(cfg), nil
}
