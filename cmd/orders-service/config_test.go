package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/acme/orders-service/internal/settings"
)

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestConfigDefaults(t *testing.T) {
	c, err := loadConfig(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.PostgresDSN != "postgres://postgres@127.0.0.1:5432/orders?sslmode=disable" || c.Kafka.Brokers[0] != "127.0.0.1:9092" ||
		c.KafkaTopic != "orders.events" || c.KafkaGroupID != "orders-service" || c.GRPCPort != 50051 ||
		c.KafkaInboxTopic != "payments.events" || c.KafkaDLQTopic != "payments.events.dlq" || c.HTTPPort != 8080 ||
		c.ReadinessInterval != 5*time.Second || c.HTTPPprof {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestConfigBadValueNamesVariable(t *testing.T) {
	for name, value := range map[string]string{
		"GRPC_PORT":                      "abc",
		"HTTP_PORT":                      "70000",
		"KAFKA_TOPIC":                    "bad topic!",
		"KAFKA_INBOX_TOPIC":              "..",
		"KAFKA_TOPIC_PARTITIONS":         "0",
		"KAFKA_TOPIC_REPLICATION_FACTOR": "0",
		"KAFKA_COMPRESSION":              "brotli",
		"GRPC_REFLECTION":                "maybe",
		"HTTP_PPROF":                     "maybe",
		"SHUTDOWN_TIMEOUT":               "-1s",
		"READINESS_INTERVAL":             "0s",
		"LOG_FORMAT":                     "xml",
		"LOG_LEVEL":                      "loud",
		"DEFAULT_CURRENCY":               "usd",
		"KAFKA_BROKER":                   " , ",
		"KAFKA_SASL_MECHANISM":           "FOO",
		"KAFKA_TLS":                      "sometimes",
		"AUTH_MODE":                      "magic",
		"RATE_LIMIT_PER_USER":            "-3",
		"GRPC_TLS_CLIENT_CA_FILE":        "/ca.pem",
		"KAFKA_GROUP_INSTANCE_ID":        "pod 0",
		"KAFKA_GROUP_PROTOCOL":           "eager",
		"RATE_LIMIT_PER_PEER":            "lots",
		"RATE_LIMIT_PEER_BURST":          "0",
		"HTTP_HOST":                      "0.0.0.0:8080",
		"GRPC_MAX_CONNECTIONS":           "0",
		"GRPC_STREAM_TIMEOUT":            "forever",
		"GRPC_KEEPALIVE_MIN_TIME":        "-1s",
	} {
		_, err := loadConfig(envOf(map[string]string{name: value}))
		if err == nil || !strings.HasPrefix(err.Error(), name+":") {
			t.Errorf("%s=%q: err = %v, want one naming %s", name, value, err, name)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", name, err)
		}
	}
}

func TestRedactDSN(t *testing.T) {
	for _, dsn := range []string{
		"postgres://app:s3cret@db:5432/orders?sslmode=require",
		"postgres://app@db/orders?password=s3cret",
		"host=db user=app password=s3cret dbname=orders",
		"host=db user=app password='s3 cret' dbname=orders",
	} {
		got := settings.RedactDSN(dsn)
		if strings.Contains(got, "s3") || !strings.Contains(got, "db") {
			t.Errorf("RedactDSN(%q) = %q", dsn, got)
		}
	}
	c, _ := loadConfig(envOf(map[string]string{"POSTGRES_DSN": "postgres://app:s3cret@db/orders",
		"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USER": "orders", "KAFKA_SASL_PASSWORD": "s3cret-sasl",
		"AUTH_MODE": "jwt", "AUTH_JWT_HS256_SECRET": "s3cret-jwt-0123456789-0123456789-0123456789"}))
	if v := c.LogValue().String(); strings.Contains(v, "s3cret") {
		t.Fatalf("config log value leaks the password: %s", v)
	}
}

func TestConfigGroupInstanceID(t *testing.T) {
	host, _ := os.Hostname()
	for env, want := range map[string]string{
		"":         regexp.MustCompile(`[^a-zA-Z0-9._-]`).ReplaceAllString(host, "_") + "-50051",
		"none":     "",
		"orders-0": "orders-0",
	} {
		c, err := loadConfig(envOf(map[string]string{"KAFKA_GROUP_INSTANCE_ID": env}))
		if err != nil || c.KafkaGroupInstanceID != want {
			t.Errorf("KAFKA_GROUP_INSTANCE_ID=%q: %q, %v; want %q", env, c.KafkaGroupInstanceID, err, want)
		}
	}
}

// TestRedactDSNMasksEverySecretKey covers every key whose value is a secret
// (any key containing "password", such as sslpassword) in both DSN forms,
// also as it appears in the start-up log line.
func TestRedactDSNMasksEverySecretKey(t *testing.T) {
	for _, dsn := range []string{
		"postgres://app@db:5432/orders?sslmode=verify-full&sslpassword=s3cret",
		"postgres://app@db/orders?sslkey=/k.pem&sslpassword=s3cret&password=s3cret",
		"postgresql://app:s3cret@db/orders?SSLPassword=s3cret",
		"host=db user=app sslpassword=s3cret dbname=orders",
		"host=db user=app sslpassword = 's3 cret' dbname=orders",
		"host=db user=app SSLPASSWORD=s3cret password=s3cret dbname=orders",
	} {
		got := settings.RedactDSN(dsn)
		if strings.Contains(got, "s3") || !strings.Contains(got, "db") {
			t.Errorf("RedactDSN(%q) = %q", dsn, got)
		}
		c, err := loadConfig(envOf(map[string]string{"POSTGRES_DSN": dsn}))
		if err != nil {
			t.Fatal(err)
		}
		if v := c.LogValue().String(); strings.Contains(v, "s3") {
			t.Errorf("start-up log of %q leaks a secret: %s", dsn, v)
		}
	}
}

// TestServeRequiresAuthModeOutsideDev: outside -dev an unset AUTH_MODE stops
// the service before it touches anything, with one line naming AUTH_MODE;
// -dev keeps none.
func TestServeRequiresAuthModeOutsideDev(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	env := map[string]string{"POSTGRES_DSN": "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"}
	for _, args := range [][]string{nil, {"serve"}} {
		var out bytes.Buffer
		err := run(ctx, args, envOf(env), &out)
		if err == nil || !strings.HasPrefix(err.Error(), "config: AUTH_MODE: ") || strings.Contains(err.Error(), "\n") ||
			!strings.Contains(err.Error(), "-dev") {
			t.Errorf("run(%q) without AUTH_MODE = %v, want one line starting config: AUTH_MODE: and naming -dev", args, err)
		}
		if out.Len() > 0 {
			t.Errorf("run(%q) logged before refusing: %s", args, out.String())
		}
	}
	for _, mode := range []string{"none", "jwt"} {
		env["AUTH_MODE"] = mode
		if mode == "jwt" {
			env["AUTH_JWT_HS256_SECRET"] = strings.Repeat("k", 32)
		}
		var out bytes.Buffer
		if err := run(ctx, nil, envOf(env), &out); err == nil || strings.Contains(err.Error(), "AUTH_MODE") {
			t.Errorf("AUTH_MODE=%s: run = %v, want it past the AUTH_MODE check (failing at the database)", mode, err)
		}
	}
	cfg, err := loadConfig(devEnv(envOf(nil), false))
	if err != nil {
		t.Fatal(err)
	}
	if err := requireAuthMode(cfg, true); err != nil || cfg.Auth.Enabled() {
		t.Fatalf("-dev without AUTH_MODE: %v, auth enabled %v; want none", err, cfg.Auth.Enabled())
	}
}

// TestUsageListsEverySetting: -h lists every environment variable with its
// doc line, from the table of settings; asked for, the usage text is no
// error (exit 0), while a bad flag still is a usage error (exit 2).
func TestUsageListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, envOf(nil), &out); err != nil {
		t.Fatalf("-h: %v, want no error (exit 0)", err)
	}
	if err := run(context.Background(), []string{"-no-such-flag"}, envOf(nil), io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("-no-such-flag: %v, want a usage error", err)
	}
	for _, s := range settings.All() {
		if !strings.Contains(out.String(), "  "+s.Name) || !strings.Contains(out.String(), s.Doc) {
			t.Errorf("-h does not list %s: %s", s.Name, out.String())
		}
	}
	if !strings.Contains(out.String(), "GRPC_PORT (default 50051)") {
		t.Errorf("-h does not show GRPC_PORT's default: %s", out.String())
	}
}
