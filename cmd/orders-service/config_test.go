package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
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
		got := redactDSN(dsn)
		if strings.Contains(got, "s3") || !strings.Contains(got, "db") {
			t.Errorf("redactDSN(%q) = %q", dsn, got)
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
