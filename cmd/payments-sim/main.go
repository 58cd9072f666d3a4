// Command payments-sim answers the orders-service's OrderCreated events with
// payment results, standing in for payments-service against a real cluster.
//
// Environment: KAFKA_BROKER (comma-separated seed brokers, default
// 127.0.0.1:9092), KAFKA_TOPIC (orders.events), KAFKA_INBOX_TOPIC
// (payments.events), KAFKA_GROUP_ID (payments-sim), PAYMENTS_SIM_DECLINE_ABOVE
// (amount in minor units above which payments fail; 0, the default, approves
// all), and KAFKA_COMPRESSION, KAFKA_TLS* / KAFKA_SASL_* as for orders-service.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/acme/orders-service/internal/settings"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/paymentsim"
)

type config struct {
	kafka kafka.Config
	group string
	sim   paymentsim.Config
}

// configError is a bad environment value; it exits with status 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Getenv, slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "payments-sim:", err)
		var ce *configError
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run answers payments with the configuration of getenv until ctx ends.
func run(ctx context.Context, getenv func(string) string, log *slog.Logger) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	cfg.sim.Log = log

	cl, err := kafka.NewClient(cfg.kafka, paymentsim.ClientOptions(cfg.group, cfg.sim.InTopic)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	return cfg.sim.Run(ctx, cl)
}

func loadConfig(getenv func(string) string) (config, error) {
	str := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	cfg := config{
		group: str("KAFKA_GROUP_ID", "payments-sim"),
		sim: paymentsim.Config{
			InTopic:  str("KAFKA_TOPIC", "orders.events"),
			OutTopic: str("KAFKA_INBOX_TOPIC", "payments.events"),
		},
	}
	kc, err := settings.Kafka(getenv, "payments-sim")
	if err != nil {
		return cfg, &configError{err.Error()}
	}
	if kc.Brokers[0] == "embedded" {
		return cfg, &configError{"KAFKA_BROKER: want comma-separated host:port seed brokers (the embedded broker runs only inside orders-service -dev)"}
	}
	cfg.kafka = kc
	v := str("PAYMENTS_SIM_DECLINE_ABOVE", "0")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return cfg, &configError{fmt.Sprintf("invalid PAYMENTS_SIM_DECLINE_ABOVE %q: want an amount in minor units, 0 to approve all", v)}
	}
	cfg.sim.DeclineAbove = n
	return cfg, nil
}
