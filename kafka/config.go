// Package kafka builds franz-go clients from the service's Kafka settings,
// ensures topics exist, runs an embedded kfake development broker, and
// computes the producer's record size limits. The CloudEvents headers the
// outbox and the inbox share are package cloudevents'.
package kafka

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
)

// SASL mechanisms accepted in SASLConfig.Mechanism (case-insensitively).
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// Environment variables named in error messages; the caller maps them to
// Config.
const (
	envBroker             = "KAFKA_BROKER"
	envTLS                = "KAFKA_TLS"
	envTLSCAFile          = "KAFKA_TLS_CA_FILE"
	envTLSCertFile        = "KAFKA_TLS_CERT_FILE"
	envTLSKeyFile         = "KAFKA_TLS_KEY_FILE"
	envSASLMechanism      = "KAFKA_SASL_MECHANISM"
	envSASLUser           = "KAFKA_SASL_USER"
	envSASLPassword       = "KAFKA_SASL_PASSWORD"
	envCompression        = "KAFKA_COMPRESSION"
	envSASLAllowPlaintext = "KAFKA_SASL_ALLOW_PLAINTEXT"
)

// Producer compression codecs accepted in Config.Compression.
const (
	CompressionNone   = "none"
	CompressionGzip   = "gzip"
	CompressionSnappy = "snappy"
	CompressionLZ4    = "lz4"
	CompressionZstd   = "zstd"
)

const (
	redacted       = "[REDACTED]"
	mechanismsWant = "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
)

// Config holds the connection settings of a Kafka client. Its zero value is
// not usable: Brokers must name at least one seed broker.
type Config struct {
	// Brokers are the seed brokers as host:port (KAFKA_BROKER); a missing
	// port means 9092.
	Brokers []string
	// ClientID is sent to the brokers; empty keeps franz-go's default.
	ClientID string
	// Compression is the producer's batch codec (KAFKA_COMPRESSION): none,
	// gzip, snappy, lz4 or zstd. Empty means none, so that every consumer can
	// read what the client produces.
	Compression string
	TLS         TLSConfig
	SASL        SASLConfig
}

// TLSConfig enables TLS to the brokers.
type TLSConfig struct {
	Enabled bool   // KAFKA_TLS
	CAFile  string // KAFKA_TLS_CA_FILE: PEM CA bundle; empty means the system roots
	// CertFile and KeyFile (KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE) hold a
	// PEM client certificate and key for mutual TLS; both or neither.
	CertFile string
	KeyFile  string
}

// SASLConfig authenticates to the brokers. An empty Mechanism disables SASL.
// Its String, GoString and LogValue never reveal the password.
type SASLConfig struct {
	Mechanism string // KAFKA_SASL_MECHANISM: "", PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	User      string // KAFKA_SASL_USER
	Password  string // KAFKA_SASL_PASSWORD
	// AllowPlaintext (KAFKA_SASL_ALLOW_PLAINTEXT) accepts SASL (PLAIN or
	// SCRAM) without TLS, which sends the password or the SCRAM exchange and
	// every record in clear text; Validate refuses that otherwise.
	AllowPlaintext bool
}

// Validate reports the first invalid setting, naming its environment
// variable. It reads no files; Options reports unreadable ones.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return fmt.Errorf("%s: no brokers given", envBroker)
	}
	for _, b := range c.Brokers {
		if err := validateBroker(b); err != nil {
			return fmt.Errorf("%s: %w", envBroker, err)
		}
	}
	if _, err := c.compressionCodec(); err != nil {
		return err
	}
	if err := c.TLS.validate(); err != nil {
		return err
	}
	if err := c.SASL.validate(); err != nil {
		return err
	}
	if m := c.SASL.mechanism(); m != "" && !c.TLS.Enabled && !c.SASL.AllowPlaintext {
		what := "the password"
		if m != MechanismPlain {
			// SCRAM hides the password, but not from offline guessing, and
			// the session it opens (payment results included) is not
			// protected: treated as PLAIN is.
			what = "the SCRAM exchange (open to offline password guessing) and every record"
		}
		return fmt.Errorf("%s: %s without %s=true sends %s in clear text; set %s=true, or %s=true to accept that",
			envSASLMechanism, m, envTLS, what, envTLS, envSASLAllowPlaintext)
	}
	return nil
}

func validateBroker(b string) error {
	if b == "" || strings.TrimSpace(b) != b || strings.ContainsAny(b, " \t,/") {
		return fmt.Errorf("invalid broker address %q (want host:port)", b)
	}
	host, port, err := net.SplitHostPort(b)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return nil
		}
		return fmt.Errorf("invalid broker address %q (want host:port)", b)
	}
	if host == "" {
		return fmt.Errorf("invalid broker address %q: missing host", b)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("invalid broker address %q: port must be 1-65535", b)
	}
	return nil
}

func (t TLSConfig) validate() error {
	if !t.Enabled {
		for _, f := range []struct{ env, v string }{
			{envTLSCAFile, t.CAFile}, {envTLSCertFile, t.CertFile}, {envTLSKeyFile, t.KeyFile},
		} {
			if f.v != "" {
				return fmt.Errorf("%s: set but %s is not true", f.env, envTLS)
			}
		}
		return nil
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		return fmt.Errorf("%s: required when %s is set", envTLSKeyFile, envTLSCertFile)
	case t.KeyFile != "" && t.CertFile == "":
		return fmt.Errorf("%s: required when %s is set", envTLSCertFile, envTLSKeyFile)
	}
	return nil
}

func (s SASLConfig) validate() error {
	if s.Mechanism == "" {
		switch {
		case s.User != "":
			return fmt.Errorf("%s: required when %s is set", envSASLMechanism, envSASLUser)
		case s.Password != "":
			return fmt.Errorf("%s: required when %s is set", envSASLMechanism, envSASLPassword)
		}
		return nil
	}
	if s.mechanism() == "" {
		return fmt.Errorf("%s: unknown mechanism %q (want %s)", envSASLMechanism, s.Mechanism, mechanismsWant)
	}
	if s.User == "" {
		return fmt.Errorf("%s: required when %s is set", envSASLUser, envSASLMechanism)
	}
	if s.Password == "" {
		return fmt.Errorf("%s: required when %s is set", envSASLPassword, envSASLMechanism)
	}
	return nil
}

// mechanism returns the canonical mechanism name, or "" if unknown.
func (s SASLConfig) mechanism() string {
	for _, m := range []string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512} {
		if strings.EqualFold(s.Mechanism, m) {
			return m
		}
	}
	return ""
}

func (s SASLConfig) maskedPassword() string {
	if s.Password == "" {
		return ""
	}
	return redacted
}

// String describes the settings with the password masked.
func (s SASLConfig) String() string {
	return fmt.Sprintf("{Mechanism:%s User:%s Password:%s}", s.Mechanism, s.User, s.maskedPassword())
}

// GoString is String, so %#v masks the password too.
func (s SASLConfig) GoString() string { return s.String() }

// LogValue implements slog.LogValuer with the password masked.
func (s SASLConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("mechanism", s.Mechanism),
		slog.String("user", s.User),
		slog.String("password", s.maskedPassword()),
		slog.Bool("allow_plaintext", s.AllowPlaintext),
	)
}

// String describes the settings with the SASL password masked.
func (c Config) String() string {
	return fmt.Sprintf("{Brokers:%v ClientID:%s Compression:%s TLS:%+v SASL:%s}", c.Brokers, c.ClientID, c.Compression, c.TLS, c.SASL)
}

// GoString is String, so %#v masks the password too.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer with the SASL password masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("brokers", strings.Join(c.Brokers, ",")),
		slog.String("client_id", c.ClientID),
		slog.String("compression", c.compression()),
		slog.Group("tls",
			slog.Bool("enabled", c.TLS.Enabled),
			slog.String("ca_file", c.TLS.CAFile),
			slog.String("cert_file", c.TLS.CertFile),
			slog.String("key_file", c.TLS.KeyFile),
		),
		slog.Any("sasl", c.SASL),
	)
}
