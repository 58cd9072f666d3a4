package settings

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/acme/orders-service/auth"
)

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range All() {
		if seen[s.Name] {
			t.Errorf("%s is in the table twice", s.Name)
		}
		seen[s.Name] = true
		if s.Doc == "" {
			t.Errorf("%s has no doc line", s.Name)
		}
	}
}

// TestLoadReadsOnlyTheTable: Load asks the environment for every setting of
// the table and for nothing else, so no variable is read past the table.
func TestLoadReadsOnlyTheTable(t *testing.T) {
	asked := map[string]bool{}
	if _, err := Load(func(k string) string { asked[k] = true; return "" }); err != nil {
		t.Fatal(err)
	}
	for _, s := range All() {
		if !asked[s.Name] {
			t.Errorf("Load does not read %s", s.Name)
		}
		delete(asked, s.Name)
	}
	for name := range asked {
		t.Errorf("Load reads %s, which is not in the table", name)
	}
}

// TestLogValueShowsEverySetting: the start-up log line has every setting,
// durations as people write them, and no secret.
func TestLogValueShowsEverySetting(t *testing.T) {
	c, err := Load(envOf(map[string]string{
		"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USER": "orders", "KAFKA_SASL_PASSWORD": "s3cret-sasl", "KAFKA_TLS": "true",
		"AUTH_MODE": "jwt", "AUTH_JWT_HS256_SECRET": "s3cret-jwt-0123456789-0123456789-0123456789",
		"POSTGRES_DSN": "postgres://app:s3cret@db/orders",
	}))
	if err != nil {
		t.Fatal(err)
	}
	v := c.LogValue()
	got := map[string]string{}
	for _, a := range v.Group() {
		got[a.Key] = a.Value.String()
	}
	for _, s := range All() {
		val, ok := got[s.LogKey()]
		switch {
		case !ok:
			t.Errorf("start-up log lacks %s (%s)", s.LogKey(), s.Name)
		case s.Secret && val != redacted:
			t.Errorf("start-up log shows secret %s as %q, want %s", s.Name, val, redacted)
		}
	}
	for key, want := range map[string]string{
		"default_currency": "USD", "grpc_max_recv_msg_bytes": "1048576", "rate_limit_burst": "1",
		"grpc_call_timeout": "30s", "outbox_retention": "168h0m0s", "log_level": "INFO",
		"kafka_broker": "127.0.0.1:9092", "postgres_dsn": "postgres://app:xxxxx@db/orders",
	} {
		if got[key] != want {
			t.Errorf("start-up log %s = %q, want %q", key, got[key], want)
		}
	}
	if strings.Contains(v.String(), "s3cret") {
		t.Errorf("start-up log leaks a secret: %s", v)
	}
}

// TestSettingsDocumented: every setting has a row in README.md's and
// docs/operations.md's configuration tables, and every variable those tables
// name is a setting (OTEL_* aside, which OpenTelemetry reads).
func TestSettingsDocumented(t *testing.T) {
	var names []string
	for _, s := range All() {
		names = append(names, s.Name)
	}
	for _, doc := range []string{"README.md", "docs/operations.md"} {
		documented := configTable(t, filepath.Join("..", "..", doc))
		for _, name := range names {
			if !slices.Contains(documented, name) {
				t.Errorf("%s: the configuration table has no row for %s", doc, name)
			}
		}
		for _, name := range documented {
			if !slices.Contains(names, name) {
				t.Errorf("%s: the configuration table documents %s, which the service does not read", doc, name)
			}
		}
	}
}

var varName = regexp.MustCompile("`([A-Z][A-Z0-9_]*)`")

// configTable returns the variables named in the first column of the first
// table under the "## Configuration" heading of the Markdown file path.
func configTable(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	var inSection, inTable bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			if inTable {
				return names
			}
			inSection = line == "## Configuration"
		case inSection && strings.HasPrefix(line, "|"):
			inTable = true
			cells := strings.Split(line, "|")
			for _, m := range varName.FindAllStringSubmatch(cells[1], -1) {
				names = append(names, m[1])
			}
		case inTable:
			return names
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !inTable {
		t.Fatalf("%s: no table under ## Configuration", path)
	}
	return names
}

func TestKafkaSASLPlainNeedsTLS(t *testing.T) {
	env := map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USER": "u", "KAFKA_SASL_PASSWORD": "p"}
	getenv := func(k string) string { return env[k] }
	if _, err := LoadPaymentsSim(getenv); err == nil || !strings.HasPrefix(err.Error(), "KAFKA_SASL_MECHANISM: ") ||
		!strings.Contains(err.Error(), "KAFKA_TLS=true") || !strings.Contains(err.Error(), "KAFKA_SASL_ALLOW_PLAINTEXT=true") {
		t.Fatalf("PLAIN without TLS: err = %v, want one line naming KAFKA_SASL_MECHANISM, KAFKA_TLS and KAFKA_SASL_ALLOW_PLAINTEXT", err)
	}
	env["KAFKA_SASL_ALLOW_PLAINTEXT"] = "yes please"
	if _, err := LoadPaymentsSim(getenv); err == nil || !strings.HasPrefix(err.Error(), "KAFKA_SASL_ALLOW_PLAINTEXT: ") {
		t.Fatalf("bad KAFKA_SASL_ALLOW_PLAINTEXT: err = %v", err)
	}
	for k, v := range map[string]string{"KAFKA_SASL_ALLOW_PLAINTEXT": "true", "KAFKA_TLS": "true"} {
		delete(env, "KAFKA_SASL_ALLOW_PLAINTEXT")
		delete(env, "KAFKA_TLS")
		env[k] = v
		if _, err := LoadPaymentsSim(getenv); err != nil {
			t.Errorf("PLAIN with %s=%s: %v", k, v, err)
		}
	}
}

func TestKafkaCompression(t *testing.T) {
	c, err := LoadPaymentsSim(envOf(map[string]string{"KAFKA_COMPRESSION": " lz4 "}))
	if err != nil || c.Kafka.Compression != "lz4" {
		t.Fatalf("LoadPaymentsSim: %+v, %v; want compression lz4", c.Kafka, err)
	}
	if _, err := LoadPaymentsSim(envOf(map[string]string{"KAFKA_COMPRESSION": "lzma"})); err == nil ||
		!strings.Contains(err.Error(), `KAFKA_COMPRESSION: want none, gzip, snappy, lz4 or zstd, got "lzma"`) {
		t.Fatalf("LoadPaymentsSim with lzma: %v", err)
	}
}

func TestAuthRead(t *testing.T) {
	env := map[string]string{auth.EnvMode: auth.ModeJWT, auth.EnvHS256Secret: "s", auth.EnvHS256SecretFile: "f",
		auth.EnvPublicKeyFile: "k", auth.EnvIssuer: "i", auth.EnvAudience: "a"}
	var c Config
	if err := read(&c, envOf(env), All()); err != nil {
		t.Fatal(err)
	}
	want := auth.Config{Mode: auth.ModeJWT, HS256Secret: "s", HS256SecretFile: "f", PublicKeyFile: "k", Issuer: "i", Audience: "a"}
	if c.Auth != want {
		t.Fatalf("Auth = %#v, want %#v", c.Auth, want)
	}
}

// TestPortZero: GRPC_PORT and HTTP_PORT accept 0 (a free port, logged at
// start), alone or both; two equal non-zero ports are refused; with
// GRPC_PORT=0 the default KAFKA_GROUP_INSTANCE_ID is a dynamic member, not
// one id ("host-0") shared by every replica on the host.
func TestPortZero(t *testing.T) {
	for _, env := range []map[string]string{
		{"GRPC_PORT": "0"}, {"HTTP_PORT": "0"}, {"GRPC_PORT": "0", "HTTP_PORT": "0"},
	} {
		c, err := Load(envOf(env))
		if err != nil {
			t.Errorf("%v: %v", env, err)
			continue
		}
		if env["GRPC_PORT"] == "0" && c.KafkaGroupInstanceID != "" {
			t.Errorf("%v: group instance id %q, want a dynamic member", env, c.KafkaGroupInstanceID)
		}
	}
	if _, err := Load(envOf(map[string]string{"GRPC_PORT": "9000", "HTTP_PORT": "9000"})); err == nil || !strings.HasPrefix(err.Error(), "HTTP_PORT: must differ from GRPC_PORT") {
		t.Errorf("equal ports: err = %v, want HTTP_PORT: must differ from GRPC_PORT", err)
	}
	c, err := Load(envOf(map[string]string{"GRPC_PORT": "0", "KAFKA_GROUP_INSTANCE_ID": "orders-0"}))
	if err != nil || c.KafkaGroupInstanceID != "orders-0" {
		t.Errorf("GRPC_PORT=0 with KAFKA_GROUP_INSTANCE_ID=orders-0: %q, %v; want orders-0", c.KafkaGroupInstanceID, err)
	}
	if c, err := Load(envOf(map[string]string{"GRPC_PORT": "50052"})); err != nil || !strings.HasSuffix(c.KafkaGroupInstanceID, "-50052") {
		t.Errorf("GRPC_PORT=50052: group instance id %q, %v; want the host name and -50052", c.KafkaGroupInstanceID, err)
	}
}

// TestTopicsDistinct: the dead-letter topic may be neither the inbox topic
// (a record without a usable ce_id would be dead-lettered onto the topic it
// came from at a new offset, so with a new id, again and again) nor the
// service's own topic, and the inbox topic is not the service's own topic.
// Each is refused with one line naming the variable.
func TestTopicsDistinct(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"KAFKA_DLQ_TOPIC": "payments.events"}, "KAFKA_DLQ_TOPIC: must differ from KAFKA_INBOX_TOPIC (payments.events)"},
		{map[string]string{"KAFKA_INBOX_TOPIC": "x", "KAFKA_DLQ_TOPIC": "x"}, "KAFKA_DLQ_TOPIC: must differ from KAFKA_INBOX_TOPIC (x)"},
		{map[string]string{"KAFKA_DLQ_TOPIC": "orders.events"}, "KAFKA_DLQ_TOPIC: must differ from KAFKA_TOPIC (orders.events)"},
		{map[string]string{"KAFKA_INBOX_TOPIC": "orders.events"}, "KAFKA_INBOX_TOPIC: must differ from KAFKA_TOPIC (orders.events)"},
	} {
		_, err := Load(envOf(tc.env))
		if err == nil || err.Error() != tc.want || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: err = %v, want %q", tc.env, err, tc.want)
		}
	}
	if _, err := Load(envOf(map[string]string{"KAFKA_TOPIC": "a", "KAFKA_INBOX_TOPIC": "b", "KAFKA_DLQ_TOPIC": "c"})); err != nil {
		t.Errorf("distinct topics: %v", err)
	}
}
