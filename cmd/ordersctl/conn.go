package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/acme/orders-service/gen/orderspb"
)

// app holds the global options and the connection of one invocation.
type app struct {
	addr, token        string
	tls                bool
	ca, cert, key      string
	insecureSkipVerify bool
	timeout            time.Duration
	output             string
	version            bool   // -version: print the version and exit
	command            string // the subcommand being run

	stdout, stderr io.Writer
	conn           *grpc.ClientConn
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
	case a.addr == "":
		return usagef("-addr: must not be empty")
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
		conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", a.addr, err)
		}
		a.conn = conn
	}
	return orderspb.NewOrderServiceClient(a.conn), nil
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
