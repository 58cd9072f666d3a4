package main

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

// TestDevOnTerminalLogsText: -dev on a terminal logs text; elsewhere, and
// when LOG_FORMAT is set, the setting and the JSON default stand.
func TestDevOnTerminalLogsText(t *testing.T) {
	for _, tc := range []struct {
		env      map[string]string
		terminal bool
		want     string
	}{
		{nil, true, "text"},
		{nil, false, "json"},
		{map[string]string{"LOG_FORMAT": "json"}, true, "json"},
	} {
		c, err := loadConfig(devEnv(envOf(tc.env), tc.terminal))
		if err != nil {
			t.Fatal(err)
		}
		if c.LogFormat != tc.want {
			t.Errorf("env %v, terminal %v: LOG_FORMAT %q, want %q", tc.env, tc.terminal, c.LogFormat, tc.want)
		}
	}
}

// TestWelcomeNamesAddressesAndWalkThrough: the greeting of -dev names where
// gRPC, HTTP, Kafka and the database are, with the README's three commands
// on the real ports, and durations in the configuration read as durations.
func TestWelcomeNamesAddressesAndWalkThrough(t *testing.T) {
	cfg, err := loadConfig(devEnv(envOf(map[string]string{"POSTGRES_DSN": "postgres://app:s3cret@db:5432/orders"}), true))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	writeWelcome(&b, cfg, &net.TCPAddr{Port: 50999}, &net.TCPAddr{Port: 8999})
	out := b.String()
	for _, want := range []string{
		"localhost:50999", "localhost:8999", "127.0.0.1:9092 (embedded)", "db:5432/orders",
		"grpcurl -plaintext -d '{\"user_id\":\"alice\",\"amount\":1250}' localhost:50999 orders.v1.OrderService/CreateOrder",
		"localhost:50999 orders.v1.OrderService/GetOrderStatus",
		"kcat -b 127.0.0.1:9092 -C -t orders.events -f '%k %h\\n%s\\n\\n'",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("welcome lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("welcome shows the database password:\n%s", out)
	}
	if v := cfg.LogValue().String(); !strings.Contains(v, "grpc_call_timeout=30s") {
		t.Errorf("configuration log value shows durations unreadably: %s", v)
	}
}
