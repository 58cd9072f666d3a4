package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Producer settings for an outbox relay. The producer is idempotent (the
// franz-go default), waits for all in-sync replicas, and retries a record
// until it is acknowledged: no RecordDeliveryTimeout or RecordRetries limit
// is set, so a broker outage delays records instead of failing them.
//
// No linger: the relay produces a whole batch asynchronously and waits for
// it, so a linger would be added to every batch's commit-to-acknowledgement
// latency. Records that accumulate while a request is in flight are still
// batched together.
//
// Retries after a failure wait at most about 100 ms (retryBackoff) and the
// metadata may be refreshed every 100 ms (metadataMinAge), where franz-go's
// defaults back off to 5 s: a broker that returns after an outage, or a
// partition that moved to another broker, is found within about 100 ms
// instead of at the end of a backoff. A retry costs a refused dial or one
// small request, negligible next to the backlog the wait would delay.
const (
	producerLinger = time.Duration(0)
	metadataMinAge = 100 * time.Millisecond
	// ProducerBatchMaxBytes is the producer's limit on one record batch:
	// Kafka's historical max.message.bytes, safe on every broker. A record
	// that cannot fit in a batch of its own is refused with MESSAGE_TOO_LARGE.
	ProducerBatchMaxBytes = 1_000_012
)

// Options validates c and returns the franz-go options for it: seed brokers,
// client id, TLS, SASL and the producer settings of an outbox relay,
// compression included (none unless c.Compression says otherwise). With
// SASL it also installs a hook through which EnsureTopics reports failed
// authentication promptly and clearly. Errors
// name the environment variable at fault and never contain the password.
func (c Config) Options() ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	codec, err := c.compressionCodec()
	if err != nil {
		return nil, err
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ProducerBatchCompression(codec),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(producerLinger),
		kgo.ProducerBatchMaxBytes(ProducerBatchMaxBytes),
		kgo.RetryBackoffFn(retryBackoff),
		kgo.MetadataMinAge(metadataMinAge),
	}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.TLS.Enabled {
		tc, err := c.TLS.load()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := c.SASL.saslMechanism(); m != nil {
		opts = append(opts, kgo.SASL(m), kgo.WithHooks(newSASLWatch(m.Name(), c.SASL.User)))
	}
	return opts, nil
}

// retryBackoff is franz-go's wait before the fails-th retry of a request
// (a produce, a metadata request, a dial): 50 ms, then 100 ms, with ±20%
// jitter so clients that lost the same broker do not retry in step.
func retryBackoff(fails int) time.Duration {
	d := 100 * time.Millisecond
	if fails <= 1 {
		d = 50 * time.Millisecond
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// NewClient returns a client for c; extra options are applied after c's and
// so override them. Like kgo.NewClient it does not connect yet.
func NewClient(c Config, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// compression returns the canonical codec name; empty means none.
func (c Config) compression() string {
	if c.Compression == "" {
		return CompressionNone
	}
	return strings.ToLower(c.Compression)
}

// compressionCodec maps Compression to franz-go's codec. franz-go compresses
// with snappy unless told otherwise, so none is set explicitly.
func (c Config) compressionCodec() (kgo.CompressionCodec, error) {
	switch c.compression() {
	case CompressionNone:
		return kgo.NoCompression(), nil
	case CompressionGzip:
		return kgo.GzipCompression(), nil
	case CompressionSnappy:
		return kgo.SnappyCompression(), nil
	case CompressionLZ4:
		return kgo.Lz4Compression(), nil
	case CompressionZstd:
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("%s: want none, gzip, snappy, lz4 or zstd, got %q", envCompression, c.Compression)
}

// load builds the client TLS config from the files. Without a CA file the
// system roots verify the brokers.
func (t TLSConfig) load() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envTLSCAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificates in %s", envTLSCAFile, t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", envTLSCertFile, envTLSKeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// saslMechanism returns the franz-go mechanism, or nil when SASL is off. It
// expects a validated config.
func (s SASLConfig) saslMechanism() sasl.Mechanism {
	switch s.mechanism() {
	case MechanismPlain:
		return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()
	case MechanismScramSHA256:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()
	case MechanismScramSHA512:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()
	}
	return nil
}

// CommitAfterWorkOptions make a consumer-group member that commits offsets
// only when its owner says the polled work is durable: membership of group
// consuming topic from its start when the group has no offsets, no
// auto-commit, rebalances held while a polled batch is handled, and only
// committed records of transactional producers.
func CommitAfterWorkOptions(group, topic string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}
}
