package main

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/kafka"
)

// config is every setting of the service, read from the environment once at
// start. Names and defaults follow DESIGN.md's configuration contract.
type config struct {
	PostgresDSN string

	Kafka           kafka.Config // brokers, TLS, SASL
	EmbeddedKafka   bool         // KAFKA_BROKER=embedded: run an in-process broker
	EmbeddedAddr    string       // where the embedded broker listens
	EmbeddedDataDir string       // where it keeps its log; empty keeps it in memory
	KafkaTopic      string
	KafkaInboxTopic string
	KafkaDLQTopic   string
	KafkaGroupID    string
	// KafkaGroupInstanceID makes the inbox consumer a static group member
	// (KAFKA_GROUP_INSTANCE_ID); empty means a dynamic member.
	KafkaGroupInstanceID string
	TopicPartitions      int
	TopicReplicas        int // KAFKA_TOPIC_REPLICATION_FACTOR; -1: the cluster's default.replication.factor

	// KafkaGroupProtocol is the inbox consumer's group protocol
	// (KAFKA_GROUP_PROTOCOL): classic, or consumer for KIP-848's
	// broker-assigned groups (Kafka 4.0+).
	KafkaGroupProtocol string

	GRPCPort        int
	HTTPPort        int
	HTTPHost        string // address HTTP_PORT binds to; empty: every interface
	HTTPPprof       bool   // serve net/http/pprof under /debug/pprof/ on HTTP_PORT
	GRPCReflection  bool
	MaxRecvMsgBytes int
	CallTimeout     time.Duration

	GRPCMaxConnections    int           // concurrent gRPC connections; more wait to be accepted
	GRPCMaxConnectionIdle time.Duration // close connections idle this long
	GRPCMaxConnectionAge  time.Duration // close connections open this long
	GRPCKeepaliveMinTime  time.Duration // shortest client ping interval allowed
	GRPCStreamTimeout     time.Duration // streaming calls (health Watch, reflection) end after this
	ShutdownTimeout       time.Duration
	DefaultCurrency       string

	ReadinessInterval time.Duration // how often readiness is checked; each check must answer within it

	LogFormat string
	LogLevel  slog.Level

	OutboxBatchSize    int
	OutboxPollInterval time.Duration
	OutboxRetention    time.Duration
	InboxMaxAttempts   int
	InboxRetention     time.Duration
	SimDeclineAbove    int64 // -dev payments simulator: decline orders above this amount; 0 approves all

	Auth               auth.Config
	TLSCertFile        string
	TLSKeyFile         string
	TLSClientCAFile    string
	RateLimitPerUser   float64 // calls per second per user; 0 = off
	RateLimitBurst     int
	RateLimitPerPeer   float64 // calls per second per peer IP, before authentication; 0 = off
	RateLimitPeerBurst int

	getenv func(string) string // for settings read by libraries (OTEL_*)
}

// envReader reads typed settings and keeps the first bad one.
type envReader struct {
	get func(string) string
	err error
}

func (e *envReader) fail(name, format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
}

func (e *envReader) str(name, def string) string {
	if v := strings.TrimSpace(e.get(name)); v != "" {
		return v
	}
	return def
}

func (e *envReader) int(name string, def, min, max int) int {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		e.fail(name, "want an integer from %d to %d, got %q", min, max, v)
		return def
	}
	return n
}

func (e *envReader) float(name string, def float64) float64 {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		e.fail(name, "want a non-negative number, got %q", v)
		return def
	}
	return f
}

func (e *envReader) duration(name string, def time.Duration) time.Duration {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		e.fail(name, "want a positive duration such as 500ms, 30s or 168h, got %q", v)
		return def
	}
	return d
}

func (e *envReader) bool(name string, def bool) bool {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.fail(name, "want true or false, got %q", v)
		return def
	}
	return b
}

func (e *envReader) oneOf(name, def string, allowed ...string) string {
	v := strings.ToLower(e.str(name, def))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	e.fail(name, "want one of %s, got %q", strings.Join(allowed, ", "), v)
	return def
}

var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func (e *envReader) topic(name, def string) string {
	v := e.str(name, def)
	if !topicName.MatchString(v) || v == "." || v == ".." {
		e.fail(name, "%q is not a valid Kafka topic name (letters, digits, '.', '_', '-', at most 249)", v)
	}
	return v
}

// loadConfig reads the configuration through getenv. The error names the
// first bad variable.
func loadConfig(getenv func(string) string) (config, error) {
	e := &envReader{get: getenv}
	c := config{
		getenv:          getenv,
		PostgresDSN:     e.str("POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/orders?sslmode=disable"),
		KafkaTopic:      e.topic("KAFKA_TOPIC", "orders.events"),
		KafkaInboxTopic: e.topic("KAFKA_INBOX_TOPIC", "payments.events"),
		KafkaDLQTopic:   e.topic("KAFKA_DLQ_TOPIC", "payments.events.dlq"),
		KafkaGroupID:    e.str("KAFKA_GROUP_ID", "orders-service"),
		TopicPartitions: e.int("KAFKA_TOPIC_PARTITIONS", 6, 1, 10000),
		TopicReplicas:   e.int("KAFKA_TOPIC_REPLICATION_FACTOR", -1, 1, math.MaxInt16),
		GRPCPort:        e.int("GRPC_PORT", 50051, 1, 65535),
		HTTPPort:        e.int("HTTP_PORT", 8080, 0, 65535),
		HTTPPprof:       e.bool("HTTP_PPROF", false),
		GRPCReflection:  e.bool("GRPC_REFLECTION", true),
		MaxRecvMsgBytes: e.int("GRPC_MAX_RECV_MSG_BYTES", 1<<20, 1024, 64<<20),
		CallTimeout:     e.duration("GRPC_CALL_TIMEOUT", 30*time.Second),
		ShutdownTimeout: e.duration("SHUTDOWN_TIMEOUT", 30*time.Second),
		DefaultCurrency: e.str("DEFAULT_CURRENCY", "USD"),
		LogFormat:       e.oneOf("LOG_FORMAT", "json", "json", "text"),

		OutboxBatchSize:    e.int("OUTBOX_BATCH_SIZE", 1000, 1, 100_000),
		OutboxPollInterval: e.duration("OUTBOX_POLL_INTERVAL", 500*time.Millisecond),
		OutboxRetention:    e.duration("OUTBOX_RETENTION", 7*24*time.Hour),
		InboxMaxAttempts:   e.int("INBOX_MAX_ATTEMPTS", 10, 1, 1000),
		InboxRetention:     e.duration("INBOX_RETENTION", 14*24*time.Hour),
		SimDeclineAbove:    int64(e.int("PAYMENTS_SIM_DECLINE_ABOVE", 0, 0, math.MaxInt)),
	}
	if _, err := url.Parse(c.PostgresDSN); err != nil && strings.Contains(c.PostgresDSN, "://") {
		e.fail("POSTGRES_DSN", "not a valid connection URL")
	}
	c.ReadinessInterval = e.duration("READINESS_INTERVAL", 5*time.Second)
	kc, kerr := kafka.ConfigFromEnv(getenv, "orders-service")
	c.Kafka = kc
	c.EmbeddedAddr = e.str("KAFKA_EMBEDDED_ADDR", "127.0.0.1:9092")
	c.EmbeddedDataDir = e.str("KAFKA_EMBEDDED_DATA_DIR", "")
	if len(c.Kafka.Brokers) == 1 && c.Kafka.Brokers[0] == "embedded" {
		c.EmbeddedKafka = true
		c.Kafka.Brokers = []string{c.EmbeddedAddr}
		kerr = c.Kafka.Validate()
	}
	if kerr != nil && e.err == nil {
		e.err = kerr
	}
	if c.DefaultCurrency != strings.ToUpper(c.DefaultCurrency) || len(c.DefaultCurrency) != 3 {
		e.fail("DEFAULT_CURRENCY", "want a three-letter ISO 4217 code such as USD, got %q", c.DefaultCurrency)
	}
	if c.KafkaGroupID == "" {
		e.fail("KAFKA_GROUP_ID", "must not be empty")
	}
	c.KafkaGroupInstanceID = groupInstanceID(e, c.GRPCPort)
	c.KafkaGroupProtocol = e.oneOf("KAFKA_GROUP_PROTOCOL", "classic", "classic", "consumer")
	switch lvl := e.oneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error"); lvl {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "warn":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	}
	c.Auth = auth.ConfigFromEnv(getenv)
	if err := c.Auth.Validate(); err != nil && e.err == nil {
		e.err = err
	}
	c.TLSCertFile = e.str("GRPC_TLS_CERT_FILE", "")
	c.TLSKeyFile = e.str("GRPC_TLS_KEY_FILE", "")
	c.TLSClientCAFile = e.str("GRPC_TLS_CLIENT_CA_FILE", "")
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		e.fail("GRPC_TLS_CERT_FILE", "set together with GRPC_TLS_KEY_FILE, or neither")
	case c.TLSClientCAFile != "" && c.TLSCertFile == "":
		e.fail("GRPC_TLS_CLIENT_CA_FILE", "needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE")
	}
	c.RateLimitPerUser = e.float("RATE_LIMIT_PER_USER", 0)
	c.RateLimitBurst = e.int("RATE_LIMIT_BURST", max(1, int(c.RateLimitPerUser)), 1, 1_000_000)
	c.RateLimitPerPeer = e.float("RATE_LIMIT_PER_PEER", 1000)
	c.RateLimitPeerBurst = e.int("RATE_LIMIT_PEER_BURST", max(1, 2*int(c.RateLimitPerPeer)), 1, 1_000_000)
	c.HTTPHost = e.str("HTTP_HOST", "")
	c.GRPCMaxConnections = e.int("GRPC_MAX_CONNECTIONS", 1000, 1, 1_000_000)
	c.GRPCMaxConnectionIdle = e.duration("GRPC_MAX_CONNECTION_IDLE", 5*time.Minute)
	c.GRPCMaxConnectionAge = e.duration("GRPC_MAX_CONNECTION_AGE", 30*time.Minute)
	c.GRPCKeepaliveMinTime = e.duration("GRPC_KEEPALIVE_MIN_TIME", 10*time.Second)
	c.GRPCStreamTimeout = e.duration("GRPC_STREAM_TIMEOUT", 10*time.Minute)
	if strings.ContainsAny(c.HTTPHost, "/[] ") || (strings.Contains(c.HTTPHost, ":") && net.ParseIP(c.HTTPHost) == nil) {
		e.fail("HTTP_HOST", "want an IP address or host name without a port, got %q", c.HTTPHost)
	}
	if c.HTTPPort == c.GRPCPort {
		e.fail("HTTP_PORT", "must differ from GRPC_PORT (%d)", c.GRPCPort)
	}
	return c, e.err
}

// groupInstanceID reads KAFKA_GROUP_INSTANCE_ID: "none" for a dynamic
// member, else an id of at most 249 letters, digits, '.', '_' or '-'. The
// default is the host name and the gRPC port, stable across restarts of one
// replica (a Kubernetes pod keeps its name) and distinct for replicas on one
// host.
func groupInstanceID(e *envReader, grpcPort int) string {
	const name = "KAFKA_GROUP_INSTANCE_ID"
	v := e.str(name, "")
	switch v {
	case "none":
		return ""
	case "":
		host, err := os.Hostname()
		if err != nil {
			e.fail(name, "no host name to default to (%v); set it, or none", err)
			return ""
		}
		host = regexp.MustCompile(`[^a-zA-Z0-9._-]`).ReplaceAllString(host, "_")
		v = fmt.Sprintf("%.240s-%d", host, grpcPort)
	}
	if !topicName.MatchString(v) || v == "." || v == ".." {
		e.fail(name, "%q is not a valid group instance id (letters, digits, '.', '_', '-', at most 249), or none", v)
		return ""
	}
	return v
}

// httpAddr is where the metrics and health server listens.
func (c config) httpAddr() string {
	return net.JoinHostPort(c.HTTPHost, strconv.Itoa(c.HTTPPort))
}

// healthcheckAddr is where the healthcheck subcommand asks /readyz: HTTP_HOST,
// or the loopback address when it binds every interface.
func (c config) healthcheckAddr() string {
	host := c.HTTPHost
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(c.HTTPPort))
}

// requireAuthMode refuses to serve outside -dev unless AUTH_MODE was set
// explicitly, so a forgotten setting cannot leave the API open to everyone.
func requireAuthMode(c config, dev bool) error {
	if dev || c.Auth.Mode != "" {
		return nil
	}
	return fmt.Errorf("%s: required outside -dev: set %s=jwt, or %s=none to let every caller act for any user",
		auth.EnvMode, auth.EnvMode, auth.EnvMode)
}

// LogValue is the effective configuration for the start-up log line, with
// secrets masked.
func (c config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("postgres_dsn", redactDSN(c.PostgresDSN)),
		slog.Any("kafka", c.Kafka),
		slog.Bool("kafka_embedded", c.EmbeddedKafka),
		slog.String("kafka_topic", c.KafkaTopic),
		slog.String("kafka_inbox_topic", c.KafkaInboxTopic),
		slog.String("kafka_dlq_topic", c.KafkaDLQTopic),
		slog.String("kafka_group_id", c.KafkaGroupID),
		slog.String("kafka_group_instance_id", c.KafkaGroupInstanceID),
		slog.String("kafka_group_protocol", c.KafkaGroupProtocol),
		slog.Int("kafka_topic_partitions", c.TopicPartitions),
		slog.Int("kafka_topic_replication_factor", c.TopicReplicas),
		slog.Int("grpc_port", c.GRPCPort),
		slog.Int("http_port", c.HTTPPort),
		slog.String("http_host", c.HTTPHost),
		slog.Bool("http_pprof", c.HTTPPprof),
		slog.Bool("grpc_reflection", c.GRPCReflection),
		slog.String("grpc_call_timeout", c.CallTimeout.String()),
		slog.Int("grpc_max_connections", c.GRPCMaxConnections),
		slog.String("grpc_max_connection_idle", c.GRPCMaxConnectionIdle.String()),
		slog.String("grpc_max_connection_age", c.GRPCMaxConnectionAge.String()),
		slog.String("grpc_keepalive_min_time", c.GRPCKeepaliveMinTime.String()),
		slog.String("grpc_stream_timeout", c.GRPCStreamTimeout.String()),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.String("readiness_interval", c.ReadinessInterval.String()),
		slog.Int("outbox_batch_size", c.OutboxBatchSize),
		slog.String("outbox_poll_interval", c.OutboxPollInterval.String()),
		slog.String("outbox_retention", c.OutboxRetention.String()),
		slog.Int("inbox_max_attempts", c.InboxMaxAttempts),
		slog.String("inbox_retention", c.InboxRetention.String()),
		slog.String("log_format", c.LogFormat),
		slog.String("log_level", c.LogLevel.String()),
		slog.Any("auth", c.Auth),
		slog.Bool("grpc_tls", c.TLSCertFile != ""),
		slog.Bool("grpc_mtls", c.TLSClientCAFile != ""),
		slog.Float64("rate_limit_per_user", c.RateLimitPerUser),
		slog.Float64("rate_limit_per_peer", c.RateLimitPerPeer),
		slog.Int("rate_limit_peer_burst", c.RateLimitPeerBurst),
	)
}

// kvSecret matches a key=value pair whose key names a secret (password,
// sslpassword, ...), with the value bare or single-quoted.
var kvSecret = regexp.MustCompile(`(?i)(\b\w*password\w*\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// secretKey reports whether a DSN key holds a secret: any key containing
// "password" (password, sslpassword).
func secretKey(k string) bool { return strings.Contains(strings.ToLower(k), "password") }

// redactDSN masks every secret of a URL or key=value PostgreSQL DSN: the
// URL's user password and the value of every key secretKey names.
func redactDSN(dsn string) string {
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "(unparsable DSN hidden)"
		}
		q := u.Query()
		masked := false
		for k := range q {
			if secretKey(k) {
				q[k] = []string{"xxxxx"}
				masked = true
			}
		}
		if masked {
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	return kvSecret.ReplaceAllString(dsn, "${1}xxxxx")
}
