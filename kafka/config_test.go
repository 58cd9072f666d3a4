package kafka

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:9092"}}
	with := func(f func(*Config)) Config {
		c := ok
		c.Brokers = append([]string(nil), ok.Brokers...)
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want string // "" means valid; otherwise the exact error
	}{
		{"minimal", ok, ""},
		{"several brokers, host without port", with(func(c *Config) { c.Brokers = []string{"kafka-0:9092", "kafka-1", "[::1]:9093"} }), ""},
		{"no brokers", Config{}, "KAFKA_BROKER: no brokers given"},
		{"empty broker", with(func(c *Config) { c.Brokers = []string{"a:1", ""} }), `KAFKA_BROKER: invalid broker address "" (want host:port)`},
		{"broker with space", with(func(c *Config) { c.Brokers = []string{" a:1"} }), `KAFKA_BROKER: invalid broker address " a:1" (want host:port)`},
		{"broker URL", with(func(c *Config) { c.Brokers = []string{"kafka://a:1"} }), `KAFKA_BROKER: invalid broker address "kafka://a:1" (want host:port)`},
		{"broker bad port", with(func(c *Config) { c.Brokers = []string{"a:99999"} }), `KAFKA_BROKER: invalid broker address "a:99999": port must be 1-65535`},
		{"broker missing host", with(func(c *Config) { c.Brokers = []string{":9092"} }), `KAFKA_BROKER: invalid broker address ":9092": missing host`},
		{"TLS with system roots", with(func(c *Config) { c.TLS.Enabled = true }), ""},
		{"mTLS", with(func(c *Config) { c.TLS = TLSConfig{Enabled: true, CAFile: "ca", CertFile: "c", KeyFile: "k"} }), ""},
		{"CA file without TLS", with(func(c *Config) { c.TLS.CAFile = "ca" }), "KAFKA_TLS_CA_FILE: set but KAFKA_TLS is not true"},
		{"cert file without TLS", with(func(c *Config) { c.TLS.CertFile = "c" }), "KAFKA_TLS_CERT_FILE: set but KAFKA_TLS is not true"},
		{"key file without TLS", with(func(c *Config) { c.TLS.KeyFile = "k" }), "KAFKA_TLS_KEY_FILE: set but KAFKA_TLS is not true"},
		{"cert without key", with(func(c *Config) { c.TLS = TLSConfig{Enabled: true, CertFile: "c"} }), "KAFKA_TLS_KEY_FILE: required when KAFKA_TLS_CERT_FILE is set"},
		{"key without cert", with(func(c *Config) { c.TLS = TLSConfig{Enabled: true, KeyFile: "k"} }), "KAFKA_TLS_CERT_FILE: required when KAFKA_TLS_KEY_FILE is set"},
		{"PLAIN over TLS", with(func(c *Config) {
			c.TLS.Enabled = true
			c.SASL = SASLConfig{Mechanism: "PLAIN", User: "u", Password: "p"}
		}), ""},
		{"PLAIN without TLS", with(func(c *Config) { c.SASL = SASLConfig{Mechanism: "plain", User: "u", Password: "p"} }), "KAFKA_SASL_MECHANISM: PLAIN without KAFKA_TLS=true sends the password in clear text; set KAFKA_TLS=true, or KAFKA_SASL_ALLOW_PLAINTEXT=true to accept that"},
		{"PLAIN allowed in clear text", with(func(c *Config) {
			c.SASL = SASLConfig{Mechanism: "PLAIN", User: "u", Password: "p", AllowPlaintext: true}
		}), ""},
		{"SCRAM without TLS", with(func(c *Config) { c.SASL = SASLConfig{Mechanism: "SCRAM-SHA-256", User: "u", Password: "p"} }), "KAFKA_SASL_MECHANISM: SCRAM-SHA-256 without KAFKA_TLS=true sends the SCRAM exchange (open to offline password guessing) and every record in clear text; set KAFKA_TLS=true, or KAFKA_SASL_ALLOW_PLAINTEXT=true to accept that"},
		{"SCRAM allowed in clear text", with(func(c *Config) {
			c.SASL = SASLConfig{Mechanism: "SCRAM-SHA-512", User: "u", Password: "p", AllowPlaintext: true}
		}), ""},
		{"SCRAM-SHA-256", with(func(c *Config) {
			c.TLS.Enabled = true
			c.SASL = SASLConfig{Mechanism: "SCRAM-SHA-256", User: "u", Password: "p"}
		}), ""},
		{"SCRAM-SHA-512 lower case", with(func(c *Config) {
			c.TLS.Enabled = true
			c.SASL = SASLConfig{Mechanism: "scram-sha-512", User: "u", Password: "p"}
		}), ""},
		{"unknown mechanism", with(func(c *Config) { c.SASL = SASLConfig{Mechanism: "FOO", User: "u", Password: "p"} }), `KAFKA_SASL_MECHANISM: unknown mechanism "FOO" (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)`},
		{"mechanism without user", with(func(c *Config) { c.SASL = SASLConfig{Mechanism: "PLAIN", Password: "p"} }), "KAFKA_SASL_USER: required when KAFKA_SASL_MECHANISM is set"},
		{"mechanism without password", with(func(c *Config) { c.SASL = SASLConfig{Mechanism: "PLAIN", User: "u"} }), "KAFKA_SASL_PASSWORD: required when KAFKA_SASL_MECHANISM is set"},
		{"user without mechanism", with(func(c *Config) { c.SASL = SASLConfig{User: "u", Password: "p"} }), "KAFKA_SASL_MECHANISM: required when KAFKA_SASL_USER is set"},
		{"password without mechanism", with(func(c *Config) { c.SASL = SASLConfig{Password: "p"} }), "KAFKA_SASL_MECHANISM: required when KAFKA_SASL_PASSWORD is set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate() = nil, want %q", tt.want)
			case tt.want != "" && err.Error() != tt.want:
				t.Fatalf("Validate() = %q, want %q", err, tt.want)
			}
		})
	}
}

func TestConfigNeverShowsPassword(t *testing.T) {
	const password = "Tr0ub4dor&3-secret"
	c := Config{
		Brokers:  []string{"kafka-0:9092", "kafka-1:9092"},
		ClientID: "orders-service",
		TLS:      TLSConfig{Enabled: true, CAFile: "/etc/kafka/ca.pem"},
		SASL:     SASLConfig{Mechanism: MechanismScramSHA512, User: "orders", Password: password},
	}

	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&logs, nil), slog.NewTextHandler(&logs, nil)} {
		l := slog.New(h)
		l.Info("kafka", "config", c)
		l.Info("sasl", "sasl", c.SASL)
		l.Info("pointer", "config", &c)
	}
	//lint:ignore S1025 the test checks what the %s verb prints
	asString := fmt.Sprintf("%s", c)
	outputs := map[string]string{
		"logs":      logs.String(),
		"String":    c.String(),
		"%v":        fmt.Sprintf("%v", c),
		"%+v":       fmt.Sprintf("%+v", c),
		"%#v":       fmt.Sprintf("%#v", c),
		"%s":        asString,
		"%v ptr":    fmt.Sprintf("%v", &c),
		"%+v SASL":  fmt.Sprintf("%+v", c.SASL),
		"%#v SASL":  fmt.Sprintf("%#v", c.SASL),
		"%v slice":  fmt.Sprintf("%v", []Config{c}),
		"%+v field": fmt.Sprintf("%+v", struct{ K Config }{c}),
	}
	for name, out := range outputs {
		if strings.Contains(out, password) {
			t.Errorf("%s output contains the password: %s", name, out)
		}
		if !strings.Contains(out, "orders") {
			t.Errorf("%s output lacks the user, so it says too little: %s", name, out)
		}
	}
	for _, want := range []string{`"password":"[REDACTED]"`, `"mechanism":"SCRAM-SHA-512"`, `"brokers":"kafka-0:9092,kafka-1:9092"`, `"enabled":true`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("JSON log lacks %s: %s", want, logs.String())
		}
	}
	if !strings.Contains(c.String(), "Password:[REDACTED]") {
		t.Errorf("String() = %q, want the password shown as [REDACTED]", c.String())
	}
	if s := (SASLConfig{Mechanism: MechanismPlain, User: "u"}).String(); strings.Contains(s, "REDACTED") {
		t.Errorf("String() of a config without password = %q, want no mask", s)
	}
}
