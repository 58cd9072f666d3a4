package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/acme/orders-service/internal/settings"
)

func TestLoadConfig(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	cfg, err := loadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.kafka.Brokers, ",") != "127.0.0.1:9092" || cfg.group != "payments-sim" ||
		cfg.sim.InTopic != "orders.events" || cfg.sim.OutTopic != "payments.events" || cfg.sim.DeclineAbove != 0 {
		t.Errorf("defaults = %+v", cfg)
	}
	cfg, err = loadConfig(env(map[string]string{"KAFKA_BROKER": "a:1, b:2", "PAYMENTS_SIM_DECLINE_ABOVE": "5000"}))
	if err != nil || strings.Join(cfg.kafka.Brokers, ",") != "a:1,b:2" || cfg.sim.DeclineAbove != 5000 {
		t.Errorf("cfg = %+v, %v", cfg, err)
	}
	for name, value := range map[string]string{"PAYMENTS_SIM_DECLINE_ABOVE": "-1", "KAFKA_BROKER": " , ", "KAFKA_SASL_MECHANISM": "FOO"} {
		_, err := loadConfig(env(map[string]string{name: value}))
		var ce *configError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: err = %v, want a config error naming the variable", name, value, err)
		}
	}
}

// TestHelpListsEverySettingRead checks that -h lists each variable of the
// table the simulator reads, and that a stray argument is a usage error.
func TestHelpListsEverySettingRead(t *testing.T) {
	var out strings.Builder
	err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out, io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -h = %v, want flag.ErrHelp", err)
	}
	for _, s := range settings.PaymentsSim() {
		if !strings.Contains(out.String(), "  "+s.Name) {
			t.Errorf("-h does not list %s:\n%s", s.Name, out.String())
		}
	}
	if !strings.Contains(out.String(), "KAFKA_GROUP_ID (default payments-sim)") {
		t.Errorf("-h does not give the simulator's group default:\n%s", out.String())
	}
	err = run(context.Background(), []string{"extra"}, func(string) string { return "" }, io.Discard, io.Discard)
	if !errors.Is(err, errUsage) {
		t.Errorf("run extra = %v, want a usage error", err)
	}
}
