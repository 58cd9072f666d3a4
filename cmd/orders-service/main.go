// Command orders-service serves the orders gRPC API, relays the outbox to
// Kafka and applies payment results from the inbox.
//
//	orders-service            serve (migrations are applied first)
//	orders-service -dev       serve with an embedded Kafka broker, the database
//	                          created if missing and a payments simulator
//	orders-service migrate    apply migrations and exit
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
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
	dev := fs.Bool("dev", false, "local mode: embedded Kafka on 127.0.0.1:9092 (unless KAFKA_BROKER is set), database created if missing, payments simulator")
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: orders-service [-dev] [migrate]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *dev {
		getenv = devEnv(getenv)
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := newLogger(stdout, cfg)

	switch cmd := fs.Arg(0); cmd {
	case "", "serve":
		return serve(ctx, cfg, log, *dev)
	case "migrate":
		return migrate(ctx, cfg, log, *dev)
	default:
		return fmt.Errorf("%w: unknown command %q (want serve or migrate)", errUsage, cmd)
	}
}

// devEnv defaults KAFKA_BROKER to the embedded broker in -dev mode.
func devEnv(getenv func(string) string) func(string) string {
	return func(name string) string {
		if v := getenv(name); v != "" || name != "KAFKA_BROKER" {
			return v
		}
		return "embedded"
	}
}

func newLogger(w io.Writer, cfg config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
