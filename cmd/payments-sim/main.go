// Command payments-sim answers the orders-service's OrderCreated events with
// payment results, standing in for payments-service against a real cluster.
// It reads the Kafka settings orders-service reads (KAFKA_BROKER, the topics,
// KAFKA_TLS*, KAFKA_SASL_*, KAFKA_COMPRESSION), KAFKA_GROUP_ID,
// PAYMENTS_SIM_DECLINE_ABOVE, LOG_FORMAT and LOG_LEVEL; `payments-sim -h`
// lists them with their defaults. It stops at start, naming KAFKA_BROKER,
// when no broker answers within brokerCheckTimeout.
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
	"strings"
	"syscall"
	"time"

	"github.com/acme/orders-service/internal/buildinfo"
	"github.com/acme/orders-service/internal/settings"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/paymentsim"
)

type config struct {
	kafka     kafka.Config
	group     string
	sim       paymentsim.Config
	logFormat string
	logLevel  slog.Level
}

// brokerCheckTimeout bounds the start-up check that a broker answers.
const brokerCheckTimeout = 10 * time.Second

// configError is a bad environment value; it exits with status 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "payments-sim:", err)
		var ce *configError
		if errors.As(err, &ce) || errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// run answers payments with the configuration of getenv until ctx ends,
// logging to logOut; -h lists the environment variables it reads.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, logOut io.Writer) error {
	fs := flag.NewFlagSet("payments-sim", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: payments-sim")
		fmt.Fprintln(stdout, "Stands in for payments-service: answers each orders.v1.OrderCreated on KAFKA_TOPIC with a")
		fmt.Fprintln(stdout, "payments.v1.PaymentSucceeded on KAFKA_INBOX_TOPIC, or PaymentFailed above PAYMENTS_SIM_DECLINE_ABOVE.")
		fmt.Fprintln(stdout, "environment variables:")
		settings.WriteUsage(stdout, settings.PaymentsSim())
	}
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *version {
		fmt.Fprintln(stdout, "payments-sim", buildinfo.Read())
		return nil
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	var h slog.Handler = slog.NewJSONHandler(logOut, opts)
	if cfg.logFormat == "text" {
		h = slog.NewTextHandler(logOut, opts)
	}
	log := slog.New(h)
	cfg.sim.Log = log

	cl, err := kafka.NewClient(cfg.kafka, paymentsim.ClientOptions(cfg.group, cfg.sim.InTopic)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	log.Debug("checking that a Kafka broker answers", "brokers", cfg.kafka.Brokers)
	pctx, cancel := context.WithTimeout(ctx, brokerCheckTimeout)
	err = cl.Ping(pctx)
	cancel()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("KAFKA_BROKER: no broker answers at %s: %w", strings.Join(cfg.kafka.Brokers, ","), err)
	}
	return cfg.sim.Run(ctx, cl)
}

// loadConfig reads payments-sim's settings (settings.PaymentsSim).
func loadConfig(getenv func(string) string) (config, error) {
	c, err := settings.LoadPaymentsSim(getenv)
	if err != nil {
		return config{}, &configError{err.Error()}
	}
	return config{
		kafka:     c.Kafka,
		group:     c.KafkaGroupID,
		sim:       paymentsim.Config{InTopic: c.KafkaTopic, OutTopic: c.KafkaInboxTopic, DeclineAbove: c.SimDeclineAbove},
		logFormat: c.LogFormat,
		logLevel:  c.LogLevel,
	}, nil
}
