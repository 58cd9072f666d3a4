package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is a single-node Kafka-protocol broker (franz-go's kfake) running
// in this process and listening on TCP, so that outside clients such as kcat
// can use it too. It is meant for development and tests.
type Embedded struct {
	cluster *kfake.Cluster
	addr    string
}

// EmbeddedOption configures StartEmbedded.
type EmbeddedOption func(*embeddedConfig)

type embeddedConfig struct {
	opts []kfake.Opt
}

// WithDataDir persists the broker's topics, records, committed offsets and
// producer state in dir (created if missing) and reloads them on start, so a
// broker restarted with the same dir keeps its data. Writes go through the
// page cache and are synced on Close, like Kafka's defaults; state persisted
// in dir, including SASL users, takes precedence over options on reload.
func WithDataDir(dir string) EmbeddedOption {
	return func(c *embeddedConfig) { c.opts = append(c.opts, kfake.DataDir(dir)) }
}

// WithDefaultPartitions sets the partition count of topics created with the
// broker default (-1), overriding kfake's 10.
func WithDefaultPartitions(n int) EmbeddedOption {
	return func(c *embeddedConfig) { c.opts = append(c.opts, kfake.DefaultNumPartitions(n)) }
}

// WithLogger sends the broker's logs to l: kfake's errors and warnings at
// their levels, its request traces at debug level.
func WithLogger(l *slog.Logger) EmbeddedOption {
	return func(c *embeddedConfig) { c.opts = append(c.opts, kfake.WithLogger(slogAdapter{l})) }
}

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Logf(level kfake.LogLevel, format string, args ...any) {
	lvl := slog.LevelDebug
	switch level {
	case kfake.LogLevelNone:
		return
	case kfake.LogLevelError:
		lvl = slog.LevelError
	case kfake.LogLevelWarn:
		lvl = slog.LevelWarn
	}
	ctx := context.Background()
	if a.l.Enabled(ctx, lvl) {
		a.l.Log(ctx, lvl, fmt.Sprintf(format, args...), "component", "kfake")
	}
}

// StartEmbedded starts a one-broker cluster listening on addr, such as
// "127.0.0.1:9092", or "127.0.0.1:0" for a free port. The broker advertises
// the address it listens on, so addr should be a loopback address.
func StartEmbedded(addr string, opts ...EmbeddedOption) (*Embedded, error) {
	var cfg embeddedConfig
	for _, o := range opts {
		o(&cfg)
	}
	listen := func(network, _ string) (net.Listener, error) {
		// kfake asks for 127.0.0.1:<port>; we listen on the address given.
		return net.Listen(network, addr)
	}
	kopts := append([]kfake.Opt{kfake.NumBrokers(1), kfake.ListenFn(listen)}, cfg.opts...)
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka on %s: %w", addr, err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) != 1 {
		c.Close()
		return nil, fmt.Errorf("start embedded kafka on %s: listening on %d addresses, want 1", addr, len(addrs))
	}
	return &Embedded{cluster: c, addr: addrs[0]}, nil
}

// Addr returns the host:port the broker listens on and advertises.
func (e *Embedded) Addr() string { return e.addr }

// Close stops the broker, closing its listener and client connections, and
// with a data directory writes its state there. It is safe to call twice.
func (e *Embedded) Close() { e.cluster.Close() }
