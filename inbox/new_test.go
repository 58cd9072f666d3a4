package inbox_test

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/inbox"
)

// TestNewWithoutLoggerOrMetrics: a Consumer and a Processor built with no
// Logger and no Metrics log to slog.Default() and count in unregistered
// metrics of their own, like the outbox Relay: they run and apply a
// message instead of panicking on a nil logger or nil metrics.
func TestNewWithoutLoggerOrMetrics(t *testing.T) {
	e := newEnv(t)
	e.store(paymentMessage(e.createOrder(100)))
	p := inbox.NewProcessor(inbox.ProcessorDeps{Store: e.db, Applier: e.svc}, inbox.ProcessorOptions{DLQTopic: e.dlqTopic})
	if n, err := p.ProcessBatch(context.Background()); err != nil || n != 1 {
		t.Fatalf("ProcessBatch = %d, %v; want 1 message", n, err)
	}
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Run(stopped); err != nil {
		t.Errorf("Processor.Run = %v", err)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.brokers...)}, inbox.ClientOptions(e.group, e.inboxTopic)...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c := inbox.NewConsumer(inbox.ConsumerDeps{Client: cl, Store: e.db}, inbox.ConsumerOptions{})
	if err := c.Run(stopped); err != nil {
		t.Errorf("Consumer.Run = %v", err)
	}
}
