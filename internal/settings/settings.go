// Package settings reads orders-service's configuration from the environment.
// Every variable the service reads is one row of one table (All): its name,
// default, parser, doc line and whether it is a secret. Loading, the masked
// start-up log line, the documentation check and the deployment check all
// derive from that table, so a setting cannot be read without being listed.
// It is the only package that names environment variables in its errors,
// besides the messages kafka.Config and auth.Config validation already
// phrase in those names.
package settings

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/internal/pgdsn"
	"github.com/acme/orders-service/kafka"
)

// Config is every setting of the service, read from the environment once at
// start. Names and defaults follow DESIGN.md's configuration contract.
type Config struct {
	PostgresDSN string
	// PostgresStartTimeout is how long a starting replica waits for
	// PostgreSQL before it gives up (POSTGRES_START_TIMEOUT).
	PostgresStartTimeout time.Duration

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
	GRPCHost        string // address GRPC_PORT binds to; empty: every interface
	HTTPPort        int
	HTTPHost        string // address HTTP_PORT binds to; empty: every interface
	HTTPPprof       bool   // serve net/http/pprof under /debug/pprof/ on HTTP_PORT
	GRPCReflection  bool
	MaxRecvMsgBytes int
	CallTimeout     time.Duration

	GRPCMaxConnections    int           // concurrent gRPC connections; more wait to be accepted
	GRPCMaxPeerConns      int           // concurrent gRPC connections of one peer IP; more are closed at once
	GRPCConnectionTimeout time.Duration // a new connection's TLS and HTTP/2 handshake must end within this
	GRPCMaxHeaderBytes    int           // largest accepted metadata (header list) of a call
	GRPCMaxConnectionIdle time.Duration // close connections idle this long
	GRPCMaxConnectionAge  time.Duration // close connections open this long
	GRPCKeepaliveMinTime  time.Duration // shortest client ping interval allowed
	GRPCStreamTimeout     time.Duration // streaming calls (health Watch, reflection) end after this
	ShutdownTimeout       time.Duration
	DefaultCurrency       string

	ReadinessInterval time.Duration // how often readiness is checked; each check must answer within it

	LogFormat string
	LogLevel  slog.Level

	OutboxPublishers int // lanes one replica publishes at once
	// OutboxTransactions publishes each lane's batch in a Kafka transaction
	// (OUTBOX_TRANSACTIONS); OutboxTransactionalIDPrefix prefixes the
	// lanes' transactional ids, empty: "orders-service." + KafkaTopic + ".lane-".
	OutboxTransactions          bool
	OutboxTransactionalIDPrefix string
	OutboxBatchSize             int
	OutboxPollInterval          time.Duration
	OutboxRetention             time.Duration
	InboxMaxAttempts            int
	InboxRetention              time.Duration
	InboxDeadRetention          time.Duration
	SimDeclineAbove             int64 // -dev payments simulator: decline orders above this amount; 0 approves all

	// InboxAllowedSources are the only ce_source values the inbox applies
	// (KAFKA_INBOX_ALLOWED_SOURCES); empty: any source.
	InboxAllowedSources []string

	Auth               auth.Config
	TLSCertFile        string
	TLSKeyFile         string
	TLSClientCAFile    string
	RateLimitPerUser   float64 // calls per second per user; 0 = off
	RateLimitBurst     int
	RateLimitPerPeer   float64 // calls per second per peer IP, before authentication; 0 = off
	RateLimitPeerBurst int
}

// Setting is one environment variable of the service.
type Setting struct {
	Name    string // the environment variable
	Default string // the value used when it is unset or blank; "" when there is none or it is derived (see Doc)
	Doc     string // one line for the reader of the configuration
	Secret  bool   // read verbatim (not trimmed) and masked in the start-up log

	// set parses v (Default when the variable is unset or blank) into c. Its
	// error follows "NAME: ", such as `want true or false, got "maybe"`.
	set func(c *Config, v string) error
	// log is the value in the start-up log line.
	log func(c *Config) slog.Value
}

// LogKey is the setting's key in the start-up log line: its name in lower
// case.
func (s Setting) LogKey() string { return strings.ToLower(s.Name) }

const redacted = "[REDACTED]"

// value makes a setting stored in the field of Config that field returns,
// parsed by parse.
func value[T any](name, def, doc string, parse func(string) (T, error), field func(*Config) *T) Setting {
	return Setting{
		Name: name, Default: def, Doc: doc,
		set: func(c *Config, v string) error {
			x, err := parse(v)
			if err != nil {
				return err
			}
			*field(c) = x
			return nil
		},
		log: func(c *Config) slog.Value { return logValue(*field(c)) },
	}
}

// secret is value for a string read verbatim and never logged.
func secret(name, doc string, field func(*Config) *string) Setting {
	s := value(name, "", doc, text, field)
	s.Secret = true
	s.log = func(c *Config) slog.Value {
		if *field(c) == "" {
			return slog.StringValue("")
		}
		return slog.StringValue(redacted)
	}
	return s
}

// logValue shows durations and levels as people write them (30s, INFO).
func logValue(v any) slog.Value {
	switch v := v.(type) {
	case time.Duration:
		return slog.StringValue(v.String())
	case []string:
		return slog.StringValue(strings.Join(v, ","))
	case fmt.Stringer:
		return slog.StringValue(v.String())
	}
	return slog.AnyValue(v)
}

func text(v string) (string, error) { return v, nil }

func integer(min, max int) func(string) (int, error) {
	return func(v string) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < min || n > max {
			return 0, fmt.Errorf("want an integer from %d to %d, got %q", min, max, v)
		}
		return n, nil
	}
}

func nonNegative(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("want a non-negative number, got %q", v)
	}
	return f, nil
}

func duration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want a positive duration such as 500ms, 30s or 168h, got %q", v)
	}
	return d, nil
}

func boolean(v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("want true or false, got %q", v)
	}
	return b, nil
}

func oneOf(allowed ...string) func(string) (string, error) {
	return func(v string) (string, error) {
		v = strings.ToLower(v)
		if slices.Contains(allowed, v) {
			return v, nil
		}
		return "", fmt.Errorf("want one of %s, got %q", strings.Join(allowed, ", "), v)
	}
}

var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func validName(v string) bool { return topicName.MatchString(v) && v != "." && v != ".." }

func topic(v string) (string, error) {
	if !validName(v) {
		return "", fmt.Errorf("%q is not a valid Kafka topic name (letters, digits, '.', '_', '-', at most 249)", v)
	}
	return v, nil
}

func brokers(v string) ([]string, error) {
	var bs []string
	for _, b := range strings.Split(v, ",") {
		if b = strings.TrimSpace(b); b != "" {
			bs = append(bs, b)
		}
	}
	if len(bs) == 0 {
		return nil, fmt.Errorf("want host:port[,host:port...], got %q", v)
	}
	return bs, nil
}

// list is a comma-separated list; blank items are dropped, and "" is none.
func list(v string) ([]string, error) {
	var l []string
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			l = append(l, x)
		}
	}
	return l, nil
}

func dsn(v string) (string, error) {
	if _, err := url.Parse(v); err != nil && strings.Contains(v, "://") {
		return "", fmt.Errorf("not a valid connection URL")
	}
	return v, nil
}

func currency(v string) (string, error) {
	if v != strings.ToUpper(v) || len(v) != 3 {
		return "", fmt.Errorf("want a three-letter ISO 4217 code such as USD, got %q", v)
	}
	return v, nil
}

func nonEmpty(v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("must not be empty")
	}
	return v, nil
}

func host(v string) (string, error) {
	if strings.ContainsAny(v, "/[] ") || (strings.Contains(v, ":") && net.ParseIP(v) == nil) {
		return "", fmt.Errorf("want an IP address or host name without a port, got %q", v)
	}
	return v, nil
}

func logLevel(v string) (slog.Level, error) {
	v, err := oneOf("debug", "info", "warn", "error")(v)
	if err != nil {
		return 0, err
	}
	var l slog.Level
	return l, l.UnmarshalText([]byte(v))
}

// orDerived parses v with parse, or returns derive(c) when v is empty.
func orDerived[T any](parse func(string) (T, error), derive func(*Config) T, field func(*Config) *T) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = derive(c)
			return nil
		}
		x, err := parse(v)
		if err != nil {
			return err
		}
		*field(c) = x
		return nil
	}
}

// groupInstanceID reads KAFKA_GROUP_INSTANCE_ID: "none" for a dynamic
// member, else an id of at most 249 letters, digits, '.', '_' or '-'. The
// default is the host name and the gRPC port, stable across restarts of one
// replica (a Kubernetes pod keeps its name) and distinct for replicas on one
// host. With GRPC_PORT=0 the port is a new one at every start, so an id made
// from it would not survive a restart and a crashed replica's partitions
// would wait for the session timeout: the default is then a dynamic member.
func groupInstanceID(c *Config, v string) error {
	switch {
	case v == "none", v == "" && c.GRPCPort == 0:
		c.KafkaGroupInstanceID = ""
		return nil
	case v == "":
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no host name to default to (%v); set it, or none", err)
		}
		host = regexp.MustCompile(`[^a-zA-Z0-9._-]`).ReplaceAllString(host, "_")
		v = fmt.Sprintf("%.240s-%d", host, c.GRPCPort)
	}
	if !validName(v) {
		return fmt.Errorf("%q is not a valid group instance id (letters, digits, '.', '_', '-', at most 249), or none", v)
	}
	c.KafkaGroupInstanceID = v
	return nil
}

// kafkaConnection are the settings of a Kafka connection, shared with
// payments-sim (see PaymentsSim).
var kafkaConnection = []Setting{
	value("KAFKA_BROKER", "127.0.0.1:9092", "comma-separated seed brokers; embedded runs an in-process development broker",
		brokers, func(c *Config) *[]string { return &c.Kafka.Brokers }),
	value("KAFKA_COMPRESSION", "none", "producer compression: none, gzip, snappy, lz4, zstd",
		text, func(c *Config) *string { return &c.Kafka.Compression }),
	value("KAFKA_TLS", "false", "connect to Kafka over TLS",
		boolean, func(c *Config) *bool { return &c.Kafka.TLS.Enabled }),
	value("KAFKA_TLS_CA_FILE", "", "PEM CA bundle of the brokers; empty: the system roots",
		text, func(c *Config) *string { return &c.Kafka.TLS.CAFile }),
	value("KAFKA_TLS_CERT_FILE", "", "PEM client certificate for mutual TLS, with KAFKA_TLS_KEY_FILE",
		text, func(c *Config) *string { return &c.Kafka.TLS.CertFile }),
	value("KAFKA_TLS_KEY_FILE", "", "PEM client key for mutual TLS, with KAFKA_TLS_CERT_FILE",
		text, func(c *Config) *string { return &c.Kafka.TLS.KeyFile }),
	value("KAFKA_SASL_MECHANISM", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: no SASL",
		text, func(c *Config) *string { return &c.Kafka.SASL.Mechanism }),
	value("KAFKA_SASL_USER", "", "SASL user",
		text, func(c *Config) *string { return &c.Kafka.SASL.User }),
	secret("KAFKA_SASL_PASSWORD", "SASL password", func(c *Config) *string { return &c.Kafka.SASL.Password }),
	value("KAFKA_SASL_ALLOW_PLAINTEXT", "false", "accept SASL (PLAIN or SCRAM) without KAFKA_TLS=true (credentials and records cross the network in clear text)",
		boolean, func(c *Config) *bool { return &c.Kafka.SASL.AllowPlaintext }),
}

// service are the settings of orders-service besides the Kafka connection,
// in the order they are read (a derived default reads earlier settings).
var service = []Setting{
	{
		Name: "POSTGRES_DSN", Default: "postgres://postgres@127.0.0.1:5432/orders?sslmode=disable",
		Doc: "PostgreSQL connection string (its passwords are masked in the log and in error messages)",
		set: func(c *Config, v string) error {
			var err error
			c.PostgresDSN, err = dsn(v)
			return err
		},
		log: func(c *Config) slog.Value { return slog.StringValue(RedactDSN(c.PostgresDSN)) },
	},
	value("POSTGRES_START_TIMEOUT", "2m", "how long the service waits at start for PostgreSQL to accept connections (alive, not ready meanwhile) before it exits",
		duration, func(c *Config) *time.Duration { return &c.PostgresStartTimeout }),
	value("KAFKA_EMBEDDED_ADDR", "127.0.0.1:9092", "where KAFKA_BROKER=embedded listens",
		text, func(c *Config) *string { return &c.EmbeddedAddr }),
	value("KAFKA_EMBEDDED_DATA_DIR", "", "keep the embedded broker's log on disk here; empty: in memory",
		text, func(c *Config) *string { return &c.EmbeddedDataDir }),
	value("KAFKA_TOPIC", "orders.events", "topic of the service's own events",
		topic, func(c *Config) *string { return &c.KafkaTopic }),
	value("KAFKA_INBOX_TOPIC", "payments.events", "topic of payment results; must differ from KAFKA_TOPIC",
		topic, func(c *Config) *string { return &c.KafkaInboxTopic }),
	value("KAFKA_INBOX_ALLOWED_SOURCES", "", "comma-separated ce_source values the inbox applies; records from other sources are dead-lettered at once; empty: any source",
		list, func(c *Config) *[]string { return &c.InboxAllowedSources }),
	value("KAFKA_DLQ_TOPIC", "payments.events.dlq", "dead-letter topic; must differ from KAFKA_INBOX_TOPIC and KAFKA_TOPIC",
		topic, func(c *Config) *string { return &c.KafkaDLQTopic }),
	value("KAFKA_GROUP_ID", "orders-service", "consumer group of the inbox consumer",
		nonEmpty, func(c *Config) *string { return &c.KafkaGroupID }),
	value("KAFKA_TOPIC_PARTITIONS", "6", "partitions of topics the service creates",
		integer(1, 10000), func(c *Config) *int { return &c.TopicPartitions }),
	{
		Name: "KAFKA_TOPIC_REPLICATION_FACTOR", Doc: "replicas of topics the service creates; empty: the cluster's default.replication.factor",
		set: orDerived(integer(1, math.MaxInt16), func(*Config) int { return -1 }, func(c *Config) *int { return &c.TopicReplicas }),
		log: func(c *Config) slog.Value { return slog.IntValue(c.TopicReplicas) },
	},
	value("GRPC_PORT", "50051", "gRPC listen port; 0: a free port, logged at start",
		integer(0, 65535), func(c *Config) *int { return &c.GRPCPort }),
	{
		Name: "KAFKA_GROUP_INSTANCE_ID", Doc: "static group member id of this replica; none: a dynamic member; empty: the host name and GRPC_PORT (with GRPC_PORT=0: a dynamic member)",
		set: groupInstanceID,
		log: func(c *Config) slog.Value { return slog.StringValue(c.KafkaGroupInstanceID) },
	},
	value("KAFKA_GROUP_PROTOCOL", "classic", "inbox consumer group protocol: classic, or consumer (KIP-848, Kafka 4.0+)",
		oneOf("classic", "consumer"), func(c *Config) *string { return &c.KafkaGroupProtocol }),
	value("HTTP_PORT", "8080", "/metrics, /healthz and /readyz listen port; 0: a free port, logged at start",
		integer(0, 65535), func(c *Config) *int { return &c.HTTPPort }),
	value("GRPC_HOST", "", "address GRPC_PORT binds to (no port); empty: every interface (-dev: 127.0.0.1)",
		host, func(c *Config) *string { return &c.GRPCHost }),
	value("HTTP_HOST", "", "address HTTP_PORT binds to (no port); empty: every interface (-dev: 127.0.0.1)",
		host, func(c *Config) *string { return &c.HTTPHost }),
	value("HTTP_PPROF", "false", "serve net/http/pprof under /debug/pprof/ on HTTP_PORT",
		boolean, func(c *Config) *bool { return &c.HTTPPprof }),
	value("GRPC_REFLECTION", "true", "serve gRPC server reflection",
		boolean, func(c *Config) *bool { return &c.GRPCReflection }),
	value("GRPC_MAX_RECV_MSG_BYTES", "1048576", "largest accepted request",
		integer(1024, 64<<20), func(c *Config) *int { return &c.MaxRecvMsgBytes }),
	value("GRPC_CALL_TIMEOUT", "30s", "server-side deadline of every call",
		duration, func(c *Config) *time.Duration { return &c.CallTimeout }),
	value("GRPC_MAX_CONNECTIONS", "1000", "concurrent gRPC connections; further ones wait to be accepted",
		integer(1, 1_000_000), func(c *Config) *int { return &c.GRPCMaxConnections }),
	value("GRPC_MAX_CONNECTIONS_PER_PEER", "100", "concurrent gRPC connections of one peer IP address; further ones are closed at once",
		integer(1, 1_000_000), func(c *Config) *int { return &c.GRPCMaxPeerConns }),
	value("GRPC_CONNECTION_TIMEOUT", "5s", "a new gRPC connection must finish its TLS and HTTP/2 handshake within this, or is closed",
		duration, func(c *Config) *time.Duration { return &c.GRPCConnectionTimeout }),
	value("GRPC_MAX_HEADER_LIST_BYTES", "32768", "largest accepted metadata (headers) of a call; a larger call is reset unread",
		integer(8<<10+512, 16<<20), func(c *Config) *int { return &c.GRPCMaxHeaderBytes }),
	value("GRPC_MAX_CONNECTION_IDLE", "5m", "close connections without calls for this long",
		duration, func(c *Config) *time.Duration { return &c.GRPCMaxConnectionIdle }),
	value("GRPC_MAX_CONNECTION_AGE", "30m", "close connections open this long",
		duration, func(c *Config) *time.Duration { return &c.GRPCMaxConnectionAge }),
	value("GRPC_KEEPALIVE_MIN_TIME", "10s", "shortest keepalive ping interval allowed of a client",
		duration, func(c *Config) *time.Duration { return &c.GRPCKeepaliveMinTime }),
	value("GRPC_STREAM_TIMEOUT", "10m", "streaming calls (health Watch, reflection) end after this",
		duration, func(c *Config) *time.Duration { return &c.GRPCStreamTimeout }),
	value("GRPC_TLS_CERT_FILE", "", "serve gRPC over TLS with this PEM certificate, with GRPC_TLS_KEY_FILE",
		text, func(c *Config) *string { return &c.TLSCertFile }),
	value("GRPC_TLS_KEY_FILE", "", "PEM key of GRPC_TLS_CERT_FILE",
		text, func(c *Config) *string { return &c.TLSKeyFile }),
	value("GRPC_TLS_CLIENT_CA_FILE", "", "also require client certificates signed by this PEM CA (mTLS)",
		text, func(c *Config) *string { return &c.TLSClientCAFile }),
	value("SHUTDOWN_TIMEOUT", "25s", "the whole graceful shutdown after SIGTERM: in-flight calls get the first half, the relay's final drain and the consumer's close the rest",
		duration, func(c *Config) *time.Duration { return &c.ShutdownTimeout }),
	value("READINESS_INTERVAL", "5s", "how often /readyz and the gRPC health status are re-checked",
		duration, func(c *Config) *time.Duration { return &c.ReadinessInterval }),
	value("DEFAULT_CURRENCY", "USD", "currency of orders created without one",
		currency, func(c *Config) *string { return &c.DefaultCurrency }),
	value("LOG_FORMAT", "json", "json or text",
		oneOf("json", "text"), func(c *Config) *string { return &c.LogFormat }),
	value("LOG_LEVEL", "info", "debug, info, warn or error",
		logLevel, func(c *Config) *slog.Level { return &c.LogLevel }),
	value("OUTBOX_PUBLISHERS", "4", "lanes this replica's relay publishes at once, each with its own Kafka producer (1 to 16)",
		integer(1, 16), func(c *Config) *int { return &c.OutboxPublishers }),
	value("OUTBOX_TRANSACTIONS", "true", "publish each outbox batch in a Kafka transaction, one transactional id per lane, fencing older producers of the lane; false for clusters that forbid transactions (see docs/kafka.md for what is lost)",
		boolean, func(c *Config) *bool { return &c.OutboxTransactions }),
	value("OUTBOX_TRANSACTIONAL_ID_PREFIX", "", "prefix of the outbox lanes' transactional ids (the lane number follows); empty: orders-service.<KAFKA_TOPIC>.lane-; deployments sharing a cluster need different ones",
		text, func(c *Config) *string { return &c.OutboxTransactionalIDPrefix }),
	value("OUTBOX_BATCH_SIZE", "1000", "rows the relay publishes per transaction",
		integer(1, 100_000), func(c *Config) *int { return &c.OutboxBatchSize }),
	value("OUTBOX_POLL_INTERVAL", "500ms", "how often the relay looks for other replicas' rows",
		duration, func(c *Config) *time.Duration { return &c.OutboxPollInterval }),
	value("OUTBOX_RETENTION", "168h", "sent outbox rows are deleted after this",
		duration, func(c *Config) *time.Duration { return &c.OutboxRetention }),
	value("INBOX_MAX_ATTEMPTS", "10", "attempts before a payment result is dead-lettered",
		integer(1, 1000), func(c *Config) *int { return &c.InboxMaxAttempts }),
	value("INBOX_RETENTION", "336h", "processed inbox rows are deleted after this",
		duration, func(c *Config) *time.Duration { return &c.InboxRetention }),
	value("INBOX_DEAD_RETENTION", "720h", "dead (dead-lettered) inbox rows are deleted this long after they died; their DLQ copies stay",
		duration, func(c *Config) *time.Duration { return &c.InboxDeadRetention }),
	{
		Name: "PAYMENTS_SIM_DECLINE_ABOVE", Default: "0", Doc: "the payments simulator (-dev, payments-sim) declines orders above this amount (minor units); 0 approves all",
		set: func(c *Config, v string) error {
			n, err := integer(0, math.MaxInt)(v)
			c.SimDeclineAbove = int64(n)
			return err
		},
		log: func(c *Config) slog.Value { return slog.Int64Value(c.SimDeclineAbove) },
	},
	value(auth.EnvMode, "", "none or jwt; required outside -dev",
		text, func(c *Config) *string { return &c.Auth.Mode }),
	secret(auth.EnvHS256Secret, "HS256 shared secret (at least 32 bytes)", func(c *Config) *string { return &c.Auth.HS256Secret }),
	value(auth.EnvHS256SecretFile, "", "file holding the HS256 shared secret",
		text, func(c *Config) *string { return &c.Auth.HS256SecretFile }),
	value(auth.EnvPublicKeyFile, "", "PEM public key (RS256 or ES256) or a JWKS file",
		text, func(c *Config) *string { return &c.Auth.PublicKeyFile }),
	value(auth.EnvIssuer, "", "required iss of tokens when set",
		text, func(c *Config) *string { return &c.Auth.Issuer }),
	value(auth.EnvAudience, "", "required aud of tokens when set",
		text, func(c *Config) *string { return &c.Auth.Audience }),
	value("RATE_LIMIT_PER_USER", "0", "calls per second per user; 0: off",
		nonNegative, func(c *Config) *float64 { return &c.RateLimitPerUser }),
	{
		Name: "RATE_LIMIT_BURST", Doc: "burst of RATE_LIMIT_PER_USER; empty: the rate, at least 1",
		set: orDerived(integer(1, 1_000_000), func(c *Config) int { return max(1, int(c.RateLimitPerUser)) },
			func(c *Config) *int { return &c.RateLimitBurst }),
		log: func(c *Config) slog.Value { return slog.IntValue(c.RateLimitBurst) },
	},
	value("RATE_LIMIT_PER_PEER", "0", "calls per second per peer IP address, before authentication; 0: off",
		nonNegative, func(c *Config) *float64 { return &c.RateLimitPerPeer }),
	{
		Name: "RATE_LIMIT_PEER_BURST", Doc: "burst of RATE_LIMIT_PER_PEER; empty: twice the rate, at least 1",
		set: orDerived(integer(1, 1_000_000), func(c *Config) int { return max(1, 2*int(c.RateLimitPerPeer)) },
			func(c *Config) *int { return &c.RateLimitPeerBurst }),
		log: func(c *Config) slog.Value { return slog.IntValue(c.RateLimitPeerBurst) },
	},
}

// All returns every setting the service reads, besides the OTEL_* family
// that OpenTelemetry reads itself.
func All() []Setting { return slices.Concat(service, kafkaConnection) }

// PaymentsSim returns every setting cmd/payments-sim reads: the Kafka
// connection, the two topics, PAYMENTS_SIM_DECLINE_ABOVE and the LOG_*
// settings as orders-service reads them (with docs from the simulator's
// side), and KAFKA_GROUP_ID with the simulator's own default.
func PaymentsSim() []Setting {
	docs := map[string]string{
		"KAFKA_TOPIC":                "consumes orders-service's events (OrderCreated) from this topic",
		"KAFKA_INBOX_TOPIC":          "publishes payment results to this topic (orders-service's inbox)",
		"PAYMENTS_SIM_DECLINE_ABOVE": "decline orders above this amount (minor units); 0 approves all",
		"KAFKA_GROUP_ID":             "consumer group of the simulator",
	}
	var ss []Setting
	for _, s := range service {
		switch s.Name {
		case "KAFKA_TOPIC", "KAFKA_INBOX_TOPIC", "PAYMENTS_SIM_DECLINE_ABOVE", "KAFKA_GROUP_ID", "LOG_FORMAT", "LOG_LEVEL":
			if s.Name == "KAFKA_GROUP_ID" {
				s.Default = "payments-sim"
			}
			if d, ok := docs[s.Name]; ok {
				s.Doc = d
			}
			ss = append(ss, s)
		}
	}
	return append(ss, kafkaConnection...)
}

// LoadPaymentsSim reads payments-sim's settings (PaymentsSim) through getenv
// into a Config; the error is one line naming the first bad variable.
func LoadPaymentsSim(getenv func(string) string) (Config, error) {
	var c Config
	c.Kafka.ClientID = "payments-sim"
	if err := read(&c, getenv, PaymentsSim()); err != nil {
		return c, err
	}
	if slices.Contains(c.Kafka.Brokers, "embedded") {
		return c, fmt.Errorf("KAFKA_BROKER: want comma-separated host:port seed brokers (the embedded broker runs only inside orders-service -dev)")
	}
	return c, c.Kafka.Validate()
}

// WriteUsage writes ss for a -h listing: each name, its default, its doc line.
func WriteUsage(w io.Writer, ss []Setting) {
	for _, st := range ss {
		def := ""
		if st.Default != "" {
			def = " (default " + st.Default + ")"
		}
		fmt.Fprintf(w, "  %s%s\n    \t%s\n", st.Name, def, st.Doc)
	}
}

// read sets c from the settings through getenv and returns the first error,
// naming its variable.
func read(c *Config, getenv func(string) string, settings []Setting) error {
	var first error
	for _, s := range settings {
		v := getenv(s.Name)
		if !s.Secret {
			v = strings.TrimSpace(v)
		}
		if v == "" {
			v = s.Default
		}
		if err := s.set(c, v); err != nil && first == nil {
			first = fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return first
}

// Load reads the configuration through getenv (os.Getenv in main). The error
// is one line naming the first bad variable.
func Load(getenv func(string) string) (Config, error) {
	var c Config
	c.Kafka.ClientID = "orders-service"
	err := read(&c, getenv, All())
	if err != nil {
		return c, err
	}
	if len(c.Kafka.Brokers) == 1 && c.Kafka.Brokers[0] == "embedded" {
		c.EmbeddedKafka = true
		c.Kafka.Brokers = []string{c.EmbeddedAddr}
	}
	if err := c.Kafka.Validate(); err != nil {
		return c, err
	}
	if err := c.Auth.Validate(); err != nil {
		return c, err
	}
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return c, fmt.Errorf("GRPC_TLS_CERT_FILE: set together with GRPC_TLS_KEY_FILE, or neither")
	case c.TLSClientCAFile != "" && c.TLSCertFile == "":
		return c, fmt.Errorf("GRPC_TLS_CLIENT_CA_FILE: needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE")
	case c.HTTPPort == c.GRPCPort && c.HTTPPort != 0:
		return c, fmt.Errorf("HTTP_PORT: must differ from GRPC_PORT (%d)", c.GRPCPort)
	// A record without a usable ce_id dead-lettered onto the topic it came
	// from gets a new offset, so a new id, and is dead-lettered again forever.
	case c.KafkaDLQTopic == c.KafkaInboxTopic:
		return c, fmt.Errorf("KAFKA_DLQ_TOPIC: must differ from KAFKA_INBOX_TOPIC (%s)", c.KafkaInboxTopic)
	case c.KafkaDLQTopic == c.KafkaTopic:
		return c, fmt.Errorf("KAFKA_DLQ_TOPIC: must differ from KAFKA_TOPIC (%s)", c.KafkaTopic)
	case c.KafkaInboxTopic == c.KafkaTopic:
		return c, fmt.Errorf("KAFKA_INBOX_TOPIC: must differ from KAFKA_TOPIC (%s)", c.KafkaTopic)
	}
	return c, nil
}

// LogValue is the effective configuration for the start-up log line: every
// setting under its LogKey, secrets masked, durations such as 30s.
func (c Config) LogValue() slog.Value {
	all := All()
	attrs := make([]slog.Attr, 0, len(all)+1)
	for _, s := range all {
		attrs = append(attrs, slog.Attr{Key: s.LogKey(), Value: s.log(&c)})
	}
	attrs = append(attrs, slog.Bool("kafka_embedded", c.EmbeddedKafka))
	return slog.GroupValue(attrs...)
}

// String is the configuration as LogValue shows it, secrets masked, so %v
// and %+v never reveal one.
func (c Config) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, a := range c.LogValue().Group() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%s", a.Key, a.Value)
	}
	b.WriteByte('}')
	return b.String()
}

// GoString is String, so %#v masks the secrets too.
func (c Config) GoString() string { return "settings.Config" + c.String() }

// RedactDSN masks every secret of a URL or key=value PostgreSQL DSN: the
// URL's user password and the value of every key holding a password.
func RedactDSN(dsn string) string { return pgdsn.Redact(dsn) }
