package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
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
	defer inbox.CloseClient(consumerClient, w.cfg.KafkaGroupID, w.cfg.KafkaGroupInstanceID, w.cfg.ShutdownTimeout, w.log)
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
	var newLaneProducer func(int) (outbox.TxProducer, error)
	if w.cfg.OutboxTransactions {
		prefix := cmp.Or(w.cfg.OutboxTransactionalIDPrefix, "orders-service."+w.cfg.KafkaTopic+".lane-")
		newLaneProducer = func(lane int) (outbox.TxProducer, error) {
			return kafka.NewClient(w.cfg.Kafka, kgo.WithHooks(w.produced),
				kgo.TransactionalID(prefix+strconv.Itoa(lane)), kgo.TransactionTimeout(outboxTransactionTimeout))
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
	})

	g, ctx := errgroup.WithContext(ctx)
	// The relay and the processor need no topic to make progress in
	// PostgreSQL; the relay's produce waits for Kafka by itself.
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return processor.Run(ctx) })
	g.Go(func() error {
		if err := w.ensureTopics(ctx); err != nil {
			return err
		}
		return consumer.Run(ctx)
	})
	if w.dev {
		g.Go(func() error {
			if err := w.ensureTopics(ctx); err != nil {
				return err
			}
			return w.runSimulator(ctx)
		})
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ensureTopics creates the service's topics, retrying with capped backoff
// while the brokers cannot be reached, until ctx ends. Topics that exist with
// other partitions or replication are used as they are, with one warning each.
func (w workers) ensureTopics(ctx context.Context) error {
	delay := 500 * time.Millisecond
	partitions, replicas := int32(w.cfg.TopicPartitions), int16(w.cfg.TopicReplicas)
	topics := []string{w.cfg.KafkaTopic, w.cfg.KafkaInboxTopic, w.cfg.KafkaDLQTopic}
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := kafka.EnsureTopics(attemptCtx, w.producer, partitions, replicas, topics...)
		var diffs []kafka.TopicDifference
		if err == nil {
			diffs, err = kafka.TopicDifferences(attemptCtx, w.producer, partitions, replicas, topics...)
		}
		cancel()
		if err == nil {
			for _, d := range diffs {
				w.log.Warn("Kafka topic exists with other settings; using it as it is",
					"topic", d.Topic, "setting", d.Setting, "have", d.Have, "want", d.Want)
			}
			return nil
		}
		if kafka.IsAuthenticationFailure(err) {
			return err // wrong credentials do not fix themselves: stop the service with this one error
		}
		w.log.Warn("Kafka topics not ready; retrying", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
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
