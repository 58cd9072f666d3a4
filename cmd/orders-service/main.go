// Command orders-service serves the orders gRPC API, relays the outbox to
// Kafka and applies payment results from the inbox.
//
//	orders-service            serve (migrations are applied first)
//	orders-service -dev       serve with an embedded Kafka broker, the database
//	                          created if missing and a payments simulator
//	orders-service migrate    apply migrations and exit
//	orders-service redrive (message_id... | -all)
//	                          re-queue dead inbox rows (the given ones, or all)
//	orders-service outbox-parked
//	                          list parked outbox rows (reads only: applies no
//	                          migrations)
//	orders-service outbox-redrive (id... | -all)
//	                          un-park outbox rows (the given ones with their
//	                          keys' other parked rows, or all)
//	orders-service healthcheck
//	                          exit 0 when the local /readyz answers 200 (for
//	                          container healthchecks; the image has no shell)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/acme/orders-service/internal/buildinfo"
	"github.com/acme/orders-service/internal/settings"
	"github.com/acme/orders-service/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orders-service:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// run parses args and runs the chosen command until ctx is cancelled.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("orders-service", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dev := fs.Bool("dev", false, "local mode: listens on 127.0.0.1 (unless GRPC_HOST/HTTP_HOST are set), embedded Kafka on 127.0.0.1:9092 (unless KAFKA_BROKER is set), database created if missing, payments simulator")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: orders-service [-dev] [-version] [serve | migrate | redrive (message_id... | -all) | outbox-parked | outbox-redrive (id... | -all) | healthcheck]")
		fs.PrintDefaults()
		fmt.Fprintln(stdout, "environment variables (and OTEL_*, as OpenTelemetry defines them):")
		settings.WriteUsage(stdout, settings.All())
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil // -h asked for the usage text, which is printed: not an error
	} else if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *version {
		fmt.Fprintln(stdout, "orders-service", buildinfo.Read())
		return nil
	}
	terminal := isTerminal(stdout)
	if *dev {
		getenv = devEnv(getenv, terminal)
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := newLogger(stdout, cfg)

	switch cmd := fs.Arg(0); cmd {
	case "", "serve":
		if err := requireAuthMode(cfg, *dev); err != nil {
			return fmt.Errorf("config: %w", err)
		}
		var welcome io.Writer
		if *dev && terminal {
			welcome = stdout
		}
		return serve(ctx, cfg, log, *dev, welcome)
	case "migrate":
		return migrate(ctx, cfg, log, *dev)
	case "healthcheck":
		return healthcheck(ctx, cfg)
	case "redrive":
		return redrive(ctx, cfg, log, fs.Args()[1:], stdout)
	case "outbox-parked":
		return outboxParked(ctx, cfg, log, stdout)
	case "outbox-redrive":
		return outboxRedrive(ctx, cfg, log, fs.Args()[1:], stdout)
	default:
		return fmt.Errorf("%w: unknown command %q (want serve, migrate, redrive, outbox-parked, outbox-redrive or healthcheck)", errUsage, cmd)
	}
}

// devEnv defaults KAFKA_BROKER to the embedded broker in -dev mode,
// GRPC_HOST and HTTP_HOST to 127.0.0.1 (-dev serves without authentication,
// so only this machine may reach it; 0.0.0.0 opens it), and LOG_FORMAT to
// text when a person reads the log on a terminal.
func devEnv(getenv func(string) string, terminal bool) func(string) string {
	return func(name string) string {
		if v := getenv(name); v != "" {
			return v
		}
		switch {
		case name == "KAFKA_BROKER":
			return "embedded"
		case name == "GRPC_HOST", name == "HTTP_HOST":
			return "127.0.0.1"
		case name == "LOG_FORMAT" && terminal:
			return "text"
		}
		return ""
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newLogger(w io.Writer, cfg config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(telemetry.TraceHandler{Handler: h})
}

// healthcheck asks the local /readyz and fails unless it answers 200. It
// needs the port: with HTTP_PORT=0 the server's port is only in its log.
func healthcheck(ctx context.Context, cfg config) error {
	if cfg.HTTPPort == 0 {
		return errors.New("healthcheck: HTTP_PORT=0 leaves the port to the server; set HTTP_PORT to the port it logged")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := "http://" + cfg.healthcheckAddr() + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("healthcheck: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
