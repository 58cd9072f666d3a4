package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/internal/kafkatest"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// The topics and group on a kfake broker; on a real cluster each test has
// its own (env.inboxTopic, env.dlqTopic, env.group).
const (
	inboxTopic = "payments.events"
	dlqTopic   = "payments.events.dlq"
	group      = "orders-service"
)

// env is one test's world: its own migrated database and Kafka (the real
// cluster of KAFKA_TEST_BROKERS or a kfake cluster of its own), with topics
// and a consumer group unique to the test.
type env struct {
	t       *testing.T
	db      *postgres.DB
	svc     *postgres.OrderService
	brokers []string
	log     *slog.Logger

	inboxTopic, dlqTopic, group string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := pgtest.NewDB(t)
	cluster := kafkatest.New(t, kfake.NumBrokers(3))
	e := &env{t: t, db: db, brokers: cluster.Brokers, log: testLogger(t),
		inboxTopic: cluster.Name(inboxTopic), dlqTopic: cluster.Name(dlqTopic), group: cluster.Name(group)}
	cluster.CreateTopics(3, e.inboxTopic, e.dlqTopic)
	e.svc = postgres.NewOrderService(db, postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "orders-service/test"}), "USD")
	return e
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// counting is a log handler that also counts records with one message.
type counting struct {
	slog.Handler
	msg string
	n   *atomic.Int32
}

func (c counting) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == c.msg {
		c.n.Add(1)
	}
	return c.Handler.Handle(ctx, r)
}

func (c counting) WithAttrs(as []slog.Attr) slog.Handler {
	return counting{c.Handler.WithAttrs(as), c.msg, c.n}
}

func (c counting) WithGroup(name string) slog.Handler {
	return counting{c.Handler.WithGroup(name), c.msg, c.n}
}

func newMetrics(t *testing.T) *inbox.Metrics {
	t.Helper()
	m, err := inbox.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// createOrder stores a new order through the OrderService.
func (e *env) createOrder(amount int64) string {
	e.t.Helper()
	o, err := e.svc.CreateOrder(context.Background(), orders.NewOrder{UserID: "u-" + e.t.Name(), Amount: amount})
	if err != nil {
		e.t.Fatal(err)
	}
	return o.ID
}

// insertOrder stores a new order with a chosen id, as if it were created late.
func (e *env) insertOrder(id string) {
	e.t.Helper()
	_, err := e.db.Pool.Exec(context.Background(), `
		INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
		VALUES ($1, 'late-user', 100, 'USD', '', 'new', now(), now())`, id)
	if err != nil {
		e.t.Fatal(err)
	}
}

// paymentRecord is a payment result for the test's inbox topic: it names no
// topic, so the producers of env give it theirs (kgo.DefaultProduceTopic).
func paymentRecord(orderID, ceID, typ string) *kgo.Record {
	r := &kgo.Record{
		Key:   []byte(orderID),
		Value: fmt.Appendf(nil, `{"order_id":%q,"payment_id":"pay-%s","reason":"declined"}`, orderID, orderID),
		Headers: []kgo.RecordHeader{
			{Key: "ce_specversion", Value: []byte("1.0")},
			{Key: "ce_type", Value: []byte(typ)},
			{Key: "ce_source", Value: []byte("payments-service")},
			{Key: "content-type", Value: []byte("application/json")},
		},
	}
	if ceID != "" {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "ce_id", Value: []byte(ceID)})
	}
	return r
}

func succeeded(orderID string) *kgo.Record {
	return paymentRecord(orderID, uuid.NewString(), orders.TypePaymentSucceeded)
}

// produce writes records in order to partition 0 unless they name another
// partition, and returns them with their offsets.
func (e *env) produce(records ...*kgo.Record) []*kgo.Record {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(e.inboxTopic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
	return records
}

// running is a background loop and its client; stop ends it.
type running struct {
	cancel context.CancelFunc
	done   chan error
	cl     *kgo.Client
	once   sync.Once
	err    error
}

func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
		if r.cl != nil {
			r.cl.Close()
		}
	})
	return r.err
}

func (e *env) startConsumer(m *inbox.Metrics, cfg inbox.ConsumerOptions, setup func(*inbox.Consumer, context.CancelFunc)) (*inbox.Consumer, *running) {
	e.t.Helper()
	opts := append([]kgo.Opt{kgo.SeedBrokers(e.brokers...), kgo.FetchMaxWait(200 * time.Millisecond)},
		inbox.ClientOptions(e.group, e.inboxTopic)...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	c := inbox.NewConsumer(inbox.ConsumerDeps{Client: cl, Store: e.db, Metrics: m, Logger: e.log}, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	if setup != nil {
		setup(c, cancel)
	}
	r := &running{cancel: cancel, done: make(chan error, 1), cl: cl}
	go func() { r.done <- c.Run(ctx) }()
	e.t.Cleanup(func() { r.stop() })
	return c, r
}

func (e *env) startProcessor(m *inbox.Metrics, cfg inbox.ProcessorOptions) (*inbox.Processor, *running) {
	e.t.Helper()
	if cfg.DLQTopic == "" {
		cfg.DLQTopic = e.dlqTopic
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	p := inbox.NewProcessor(inbox.ProcessorDeps{Store: e.db, Applier: e.svc, Metrics: m, Logger: e.log}, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	e.t.Cleanup(func() { r.stop() })
	return p, r
}

func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) status(orderID string) orders.Status {
	e.t.Helper()
	s, _, err := e.svc.GetOrderStatus(context.Background(), orderID)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) events(orderID, eventType string) int {
	return e.count(`SELECT count(*) FROM outbox WHERE key = $1 AND event_type = $2`, orderID, eventType)
}

type inboxRow struct {
	processed, dead bool
	attempts        int
	lastError       *string
}

func (e *env) row(messageID string) (inboxRow, bool) {
	e.t.Helper()
	var r inboxRow
	err := e.db.Pool.QueryRow(context.Background(),
		`SELECT processed, dead, attempts, last_error FROM inbox WHERE message_id = $1`, messageID).
		Scan(&r.processed, &r.dead, &r.attempts, &r.lastError)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return r, true
}

// store inserts inbox rows directly, as the consumer would.
func (e *env) store(msgs ...postgres.InboxMessage) {
	e.t.Helper()
	for i := range msgs {
		if msgs[i].Topic == "" {
			msgs[i].Topic = e.inboxTopic
		}
	}
	if _, err := e.db.InsertInbox(context.Background(), msgs); err != nil {
		e.t.Fatal(err)
	}
}

func paymentMessage(orderID string) postgres.InboxMessage {
	return postgres.InboxMessage{
		MessageID: uuid.NewString(),
		Key:       []byte(orderID),
		EventType: orders.TypePaymentSucceeded,
		Payload:   fmt.Appendf(nil, `{"order_id":%q}`, orderID),
	}
}
