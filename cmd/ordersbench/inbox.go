package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/outbox"
	"github.com/acme/orders-service/paymentsim"
	"github.com/acme/orders-service/postgres"
)

// benchOrderID is the id of the i-th order fillOrders writes: PostgreSQL's
// md5('order' || i)::uuid.
func benchOrderID(i int) string {
	sum := md5.Sum(fmt.Appendf(nil, "order%d", i))
	h := hex.EncodeToString(sum[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// fillOrders empties orders, inbox and outbox and writes n new orders with
// the ids benchOrderID gives.
func fillOrders(ctx context.Context, db *postgres.DB, n int) error {
	if _, err := db.Pool.Exec(ctx, `TRUNCATE orders, inbox, outbox RESTART IDENTITY`); err != nil {
		return err
	}
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
		SELECT md5('order' || i)::uuid, 'bench-user-' || (i % 1000), 100 + i % 10000, 'USD', 'bench order #' || i, 'new', now(), now()
		FROM generate_series(1, $1) AS i`, n)
	if err != nil {
		return fmt.Errorf("fill orders: %w", err)
	}
	_, err = db.Pool.Exec(ctx, `VACUUM ANALYZE orders, inbox, outbox`)
	return err
}

// paymentRecords returns one PaymentSucceeded record per order, made by the
// payments simulator as it answers an OrderCreated event.
func paymentRecords(topic string, n int) ([]*kgo.Record, error) {
	sim := paymentsim.Config{OutTopic: topic}
	now := time.Now()
	recs := make([]*kgo.Record, n)
	for i := range n {
		created, err := json.Marshal(orders.OrderCreated{OrderID: benchOrderID(i + 1), Amount: 100})
		if err != nil {
			return nil, err
		}
		if recs[i], err = sim.Answer(&kgo.Record{Value: created}, now); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// inboxPhase times applying n payment results: by the inbox Consumer and
// Processor from a topic (with the relay publishing the resulting
// events, as in the service), and by the same inserts and updates as SQL
// alone.
func (b *bench) inboxPhase(ctx context.Context) error {
	paymentsTopic, eventsTopic, dlqTopic := b.topic("bench.payments"), b.topic("bench.inbox.events"), b.topic("bench.inbox.dlq")
	n := b.sizes.InboxRecords
	db, _, err := b.openDatabase(ctx, "inbox")
	if err != nil {
		return err
	}
	defer db.Close()
	kcfg := b.kafkaConfig()
	svc := postgres.NewOrderService(db, postgres.NewOrderWriter(eventsTopic, cloudevents.Encoder[postgres.Header]{Source: "orders-service"}), "USD")
	recs, err := paymentRecords(paymentsTopic, n)
	if err != nil {
		return err
	}

	if err := fillOrders(ctx, db, n); err != nil {
		return err
	}
	// The bare SQL of applying n payments: the consumer's inserts, the
	// processor's claims, applies and marks, and the relay's claims and
	// marks of the n events they wrote, without Kafka.
	snap := b.cpuSnap(ctx, db)
	sqlRate, err := inboxSQLAlone(ctx, db, svc, recs)
	if err != nil {
		return err
	}
	if _, err := claimAndMark(ctx, db, n); err != nil {
		return fmt.Errorf("claim and mark the events: %w", err)
	}
	bare := b.account(ctx, "inbox SQL alone, events marked sent", snap, n)
	b.say("inbox SQL alone: %.0f records/s", sqlRate)

	if err := fillOrders(ctx, db, n); err != nil {
		return err
	}
	producer, err := kafka.NewClient(kcfg)
	if err != nil {
		return err
	}
	defer producer.Close()
	if err := kafka.EnsureTopics(ctx, producer, 6, -1, paymentsTopic, eventsTopic, dlqTopic); err != nil {
		return err
	}
	if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce payment records: %w", err)
	}
	consumerClient, err := kafka.NewClient(kcfg, inbox.ClientOptions("ordersbench-inbox", paymentsTopic)...)
	if err != nil {
		return err
	}
	defer consumerClient.Close()
	reg := prometheus.NewRegistry()
	m, err := inbox.NewMetrics(reg)
	if err != nil {
		return err
	}
	om, err := outbox.NewMetrics(reg)
	if err != nil {
		return err
	}
	consumer := inbox.NewConsumer(inbox.ConsumerDeps{Client: consumerClient, Store: db, Metrics: m, Logger: b.log}, inbox.ConsumerOptions{})
	processor := inbox.NewProcessor(inbox.ProcessorDeps{Store: db, Applier: svc, Metrics: m, Logger: b.log},
		inbox.ProcessorOptions{DLQTopic: dlqTopic, Wake: consumer.Stored()})
	relay := outbox.New(outbox.Deps{Store: db, Producer: producer, Metrics: om, Logger: b.log}, outbox.Options{Wake: db.OutboxWritten()})

	snap = b.cpuSnap(ctx, db)
	stopProfile := b.profileSelf("inbox")
	wctx, stop := context.WithCancel(ctx)
	var g errgroup.Group
	start := time.Now()
	g.Go(func() error { return consumer.Run(wctx) })
	g.Go(func() error { return processor.Run(wctx) })
	g.Go(func() error { return relay.Run(wctx) })
	err = waitCounter(ctx, reg, "orders_inbox_processed_total", float64(n), 5*time.Minute)
	elapsed := time.Since(start)
	var relayed time.Duration
	if err == nil {
		err = waitCounter(ctx, reg, "orders_outbox_published_total", float64(n), 5*time.Minute)
		relayed = time.Since(start)
	}
	stop()
	if werr := g.Wait(); err == nil {
		err = werr
	}
	stopProfile()
	if err != nil {
		return err
	}
	cost := b.account(ctx, "inbox consumer+processor+relay", snap, n)
	rate := float64(n) / elapsed.Seconds()
	b.say("inbox: %.0f records/s applied; events relayed after %s", rate, relayed.Round(time.Millisecond))
	var finished int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE status = 'finished'`).Scan(&finished); err != nil {
		return err
	}
	if finished != n {
		return fmt.Errorf("%d of %d orders finished", finished, n)
	}
	b.add(fmt.Sprintf("Inbox, %s payment records applied", human(n)), "/s", rate).vs("SQL alone", sqlRate).
		target("≥ 5,000/s", rate >= 5000)
	pg := b.add("PostgreSQL CPU per applied payment, relay included", "µs", cost.PostgresUS).vs("SQL alone", bare.PostgresUS)
	pg.target("≤ 1.2× SQL alone", pg.Ratio != nil && *pg.Ratio <= 1.2)
	wal := b.add("WAL per applied payment, relay included", "B", cost.WALBytes).vs("SQL alone", bare.WALBytes)
	wal.target("≤ 1.2× SQL alone", wal.Ratio != nil && *wal.Ratio <= 1.2)
	b.add("Consumer+processor+relay CPU per applied payment (in-process)", "µs", cost.BenchUS).vs("SQL alone", bare.BenchUS)
	b.res.Details["inbox"] = map[string]any{"records": n, "applied_per_s": rate, "sql_alone_per_s": sqlRate,
		"applied_seconds": elapsed.Seconds(), "events_relayed_seconds": relayed.Seconds()}
	return nil
}

// inboxSQLAlone stores recs in the inbox and applies them with the same
// statements as the inbox Consumer and Processor, without Kafka: inserts of
// 500 rows (the consumer's poll size) in one goroutine, and in another,
// transactions claiming 50 rows and applying them together (lock their
// orders, update them, write their events to the outbox, mark the rows
// processed).
func inboxSQLAlone(ctx context.Context, db *postgres.DB, svc *postgres.OrderService, recs []*kgo.Record) (float64, error) {
	msgs := make([]postgres.InboxMessage, len(recs))
	orderOf := make(map[string]string, len(recs))
	for i, r := range recs {
		m := postgres.InboxMessage{Topic: r.Topic, Partition: int32(i % 6), Offset: int64(i / 6), Key: r.Key, Payload: r.Value}
		for _, h := range r.Headers {
			m.Headers = append(m.Headers, postgres.Header{Key: h.Key, Value: h.Value})
			switch h.Key {
			case cloudevents.HeaderID:
				m.MessageID = string(h.Value)
			case cloudevents.HeaderType:
				m.EventType = string(h.Value)
			}
		}
		msgs[i] = m
		orderOf[m.MessageID] = string(r.Key)
	}
	stored := make(chan struct{}, 1)
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	g.Go(func() error {
		for i := 0; i < len(msgs); i += 500 {
			if _, err := db.InsertInbox(gctx, msgs[i:min(i+500, len(msgs))]); err != nil {
				return err
			}
			select {
			case stored <- struct{}{}:
			default:
			}
		}
		return nil
	})
	processed := 0
	g.Go(func() error {
		for processed < len(msgs) {
			claimed := 0
			err := db.InTx(gctx, false, func(tx pgx.Tx) error {
				batch, err := postgres.ClaimInbox(gctx, tx, 50)
				if err != nil {
					return err
				}
				claimed = len(batch)
				ids := make([]string, len(batch))
				payments := make([]orders.Payment, len(batch))
				for i, m := range batch {
					ids[i] = m.MessageID
					payments[i] = orders.Payment{Succeeded: true, Result: orders.PaymentResult{OrderID: orderOf[m.MessageID]}}
				}
				if err := svc.ApplyPayments(gctx, tx, payments); err != nil {
					return err
				}
				return postgres.MarkInboxProcessed(gctx, tx, ids...)
			})
			if err != nil {
				return err
			}
			processed += claimed
			if claimed == 0 {
				select {
				case <-stored:
				case <-time.After(5 * time.Millisecond):
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return 0, fmt.Errorf("inbox SQL alone: %w", err)
	}
	return float64(len(msgs)) / time.Since(start).Seconds(), nil
}
