package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/outbox"
	"github.com/acme/orders-service/paymentsim"
	"github.com/acme/orders-service/postgres"
)

// outboxTransactionTimeout bounds an outbox batch's Kafka transaction: longer
// than the relay's produce and resolve timeouts (10s + 30s), so the
// coordinator never aborts a batch the relay still waits for, and within
// the brokers' default transaction.max.timeout.ms (15 minutes).
const outboxTransactionTimeout = time.Minute

// workers are the Kafka-facing loops: the outbox relay, the inbox consumer
// and processor, and in -dev mode the payments simulator.
type workers struct {
	cfg      config
	log      *slog.Logger
	db       *postgres.DB
	orders   *postgres.OrderService
	producer *kgo.Client
	produced *kafka.ProduceHealth // hooked into every producer of the service
	topics   *topicsCheck         // readiness of the service's topics
	stopBy   *stopBy              // when the workers must have stopped, once shutdown begins
	reg      prometheus.Registerer
	dev      bool
}

// run ensures the topics exist, then runs every worker until ctx ends. While
// Kafka is unreachable it keeps retrying: orders are still accepted and wait
// in the outbox.
func (w workers) run(ctx context.Context) error {
	inboxMetrics, err := inbox.NewMetrics(w.reg)
	if err != nil {
		return fmt.Errorf("inbox metrics: %w", err)
	}
	outboxMetrics, err := outbox.NewMetrics(w.reg)
	if err != nil {
		return fmt.Errorf("outbox metrics: %w", err)
	}
	consumerOpts := inbox.ClientOptions(w.cfg.KafkaGroupID, w.cfg.KafkaInboxTopic)
	if w.cfg.KafkaGroupInstanceID != "" {
		consumerOpts = append(consumerOpts, kgo.InstanceID(w.cfg.KafkaGroupInstanceID))
	}
	if w.cfg.KafkaGroupProtocol == "consumer" {
		// KIP-848: the group coordinator assigns partitions; franz-go falls
		// back to classic against a broker without it.
		consumerOpts = append(consumerOpts, kgo.ServerSideBalancer())
	}
	consumerClient, err := kafka.NewClient(w.cfg.Kafka, consumerOpts...)
	if err != nil {
		return fmt.Errorf("inbox consumer client: %w", err)
	}
	// Closed as soon as the consumer stops, beside the relay's drain, within
	// the shutdown's time.
	closeConsumer := func() {
		inbox.CloseClient(consumerClient, w.cfg.KafkaGroupID, w.cfg.KafkaGroupInstanceID, w.stopBy.remaining(w.cfg.ShutdownTimeout), w.log)
	}
	consumer := inbox.NewConsumer(inbox.ConsumerDeps{Client: consumerClient, Store: w.db, Metrics: inboxMetrics, Logger: w.log},
		inbox.ConsumerOptions{})
	processor := inbox.NewProcessor(inbox.ProcessorDeps{Store: w.db, Applier: w.orders, Metrics: inboxMetrics, Logger: w.log},
		inbox.ProcessorOptions{
			DLQTopic:      w.cfg.KafkaDLQTopic,
			Wake:          consumer.Stored(),
			MaxAttempts:   w.cfg.InboxMaxAttempts,
			Retention:     w.cfg.InboxRetention,
			DeadRetention: w.cfg.InboxDeadRetention,

			AllowedSources: w.cfg.InboxAllowedSources,
		})

	// The relay has producers of its own: it closes one whose records stay
	// without an outcome and goes on with a new one.
	newRelayProducer := func() (outbox.Producer, error) { return kafka.NewClient(w.cfg.Kafka, kgo.WithHooks(w.produced)) }
	relayProducer, err := newRelayProducer()
	if err != nil {
		return fmt.Errorf("outbox producer: %w", err)
	}
	var newLaneProducer func(context.Context, int, int) (outbox.TxProducer, error)
	if w.cfg.OutboxTransactions {
		prefix := cmp.Or(w.cfg.OutboxTransactionalIDPrefix, "orders-service."+w.cfg.KafkaTopic+".lane-")
		newLaneProducer = func(ctx context.Context, lane, generation int) (outbox.TxProducer, error) {
			cl, err := kafka.NewTransactionalClient(ctx, w.cfg.Kafka, outbox.TransactionalID(prefix, lane, generation),
				outboxTransactionTimeout, kgo.WithHooks(w.produced))
			if err != nil {
				return nil, err
			}
			return cl, nil
		}
	}
	relay := outbox.New(outbox.Deps{Store: w.db, Producer: relayProducer, Metrics: outboxMetrics, Logger: w.log}, outbox.Options{
		Wake:            w.db.OutboxWritten(),
		Publishers:      w.cfg.OutboxPublishers,
		BatchSize:       w.cfg.OutboxBatchSize,
		PollInterval:    w.cfg.OutboxPollInterval,
		Retention:       w.cfg.OutboxRetention,
		NewProducer:     newRelayProducer,
		NewLaneProducer: newLaneProducer,
		MaxRecordBytes:  kafka.ProducerBatchMaxBytes,
		DrainTimeout:    relayDrain(w.cfg.ShutdownTimeout),
	})

	g, ctx := errgroup.WithContext(ctx)
	// The relay and the processor need no topic to make progress in
	// PostgreSQL; the relay's produce waits for Kafka by itself.
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return processor.Run(ctx) })
	topicsReady := make(chan struct{})
	g.Go(func() error {
		defer closeConsumer()
		if err := w.ensureTopics(ctx); err != nil {
			return err
		}
		close(topicsReady)
		// Only warnings come of the comparison: the consumer does not wait.
		go w.compareTopics(ctx)
		return consumer.Run(ctx)
	})
	if w.dev {
		g.Go(func() error {
			select {
			case <-topicsReady:
			case <-ctx.Done():
				return ctx.Err()
			}
			return w.runSimulator(ctx)
		})
	}
	stopped := make(chan error, 1)
	go func() { stopped <- g.Wait() }()
	select {
	case err = <-stopped:
	case <-ctx.Done():
		// A relay batch in flight may wait for Kafka longer than the
		// shutdown may last. Left behind, it ends with the process; its
		// rows stay unsent and are published after the next start.
		t := time.NewTimer(max(w.stopBy.remaining(w.cfg.ShutdownTimeout), 0))
		defer t.Stop()
		select {
		case err = <-stopped:
		case <-t.C:
			w.log.Warn("Kafka workers did not stop within SHUTDOWN_TIMEOUT; leaving them: unsent outbox rows are published after the next start")
			return nil
		}
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ensureTopics creates those of the service's topics that do not exist,
// retrying with capped backoff until ctx ends while the brokers cannot be
// reached or a topic is missing and may not be created. The latter is a
// fault of the configuration: w.topics reports it to readiness, and it is
// logged once, not at every retry.
func (w workers) ensureTopics(ctx context.Context) error {
	delay := 500 * time.Millisecond
	partitions, replicas := int32(w.cfg.TopicPartitions), int16(w.cfg.TopicReplicas)
	logged := ""
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := kafka.EnsureTopics(attemptCtx, w.producer, partitions, replicas, w.topicNames()...)
		cancel()
		var missing *kafka.MissingTopicsError
		switch {
		case err == nil:
			w.topics.set(nil)
			if logged != "" {
				w.log.Info("Kafka topics exist now")
			}
			return nil
		case kafka.IsAuthenticationFailure(err):
			return err // wrong credentials do not fix themselves: stop the service with this one error
		case errors.As(err, &missing):
			w.topics.set(err)
			if msg := err.Error(); msg != logged {
				w.log.Error("Kafka topics missing and the service may not create them: create them, or grant CREATE; not ready until then",
					"topics", missing.Topics, "error", err)
				logged = msg
			}
		default:
			w.log.Warn("Kafka topics not ready; retrying", "error", err, "retry_in", delay)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// compareTopics warns of each existing topic whose partitions or
// replication differ from the settings; the topics are used as they are.
// A comparison that cannot be made (no permission to describe the brokers'
// configs) is one warning too.
func (w workers) compareTopics(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	diffs, err := kafka.TopicDifferences(ctx, w.producer, int32(w.cfg.TopicPartitions), int16(w.cfg.TopicReplicas), w.topicNames()...)
	if err != nil {
		if ctx.Err() == nil || !errors.Is(err, context.Canceled) {
			w.log.Warn("could not compare the Kafka topics' settings with KAFKA_TOPIC_PARTITIONS and KAFKA_TOPIC_REPLICATION_FACTOR", "error", err)
		}
		return
	}
	for _, d := range diffs {
		w.log.Warn("Kafka topic exists with other settings; using it as it is",
			"topic", d.Topic, "setting", d.Setting, "have", d.Have, "want", d.Want)
	}
}

func (w workers) topicNames() []string {
	return []string{w.cfg.KafkaTopic, w.cfg.KafkaInboxTopic, w.cfg.KafkaDLQTopic}
}

// topicsCheck is the readiness check of the service's topics: failing while
// one is missing and may not be created, passing otherwise (also while
// Kafka cannot be reached, which the kafka check shows).
type topicsCheck struct {
	mu  sync.Mutex
	err error
}

func (c *topicsCheck) set(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

// Run implements a telemetry.Check's Run.
func (c *topicsCheck) Run(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// runSimulator answers every OrderCreated with a payment result (-dev only).
func (w workers) runSimulator(ctx context.Context) error {
	cl, err := kafka.NewClient(w.cfg.Kafka, paymentsim.ClientOptions("payments-sim", w.cfg.KafkaTopic)...)
	if err != nil {
		return fmt.Errorf("payments simulator client: %w", err)
	}
	defer cl.Close()
	sim := paymentsim.Config{
		InTopic:      w.cfg.KafkaTopic,
		OutTopic:     w.cfg.KafkaInboxTopic,
		DeclineAbove: w.cfg.SimDeclineAbove,
		Log:          w.log.With("component", "payments-sim"),
	}
	return sim.Run(ctx, cl)
}
