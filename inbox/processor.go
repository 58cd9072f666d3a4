package inbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/internal/periodic"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/telemetry"
)

// PaymentApplier applies payment results to their orders
// (postgres.OrderService). ApplyPayments applies ps in turn and returns nil
// when each applied or was a no-op, else ENOTFOUND for an unknown order or
// ECONFLICT for a transition the order's state refuses, at the first that
// does not apply.
type PaymentApplier interface {
	// tx is the Processor's: a payment must commit with its inbox row's mark.
	ApplyPayments(ctx context.Context, tx pgx.Tx, ps []orders.Payment) error
}

// ProcessorStore is the inbox table as the Processor uses it
// (*postgres.DB). InTx yields a pgx.Tx because PaymentApplier needs one.
type ProcessorStore interface {
	InTx(ctx context.Context, wroteOutbox bool, fn func(pgx.Tx) error) error
	DeleteProcessedInbox(ctx context.Context, olderThan time.Duration, limit int) (int64, error)
	DeleteDeadInbox(ctx context.Context, olderThan time.Duration, limit int) (int64, error)
	CountPendingInbox(ctx context.Context, limit int) (int64, error)
}

// ProcessorDeps are what a Processor works with. Store and Applier are
// required.
type ProcessorDeps struct {
	Store   ProcessorStore
	Applier PaymentApplier
	Metrics *Metrics // from NewMetrics, shared with the Consumer; nil: unregistered ones
	Logger  *slog.Logger
}

// ProcessorOptions tune a Processor; zero values take the defaults.
type ProcessorOptions struct {
	DLQTopic          string          // KAFKA_DLQ_TOPIC; required
	Wake              <-chan struct{} // Consumer.Stored: process at once instead of waiting for the poll; nil: poll only
	BatchSize         int             // rows per transaction; default 50 (when a row fails, each gets a savepoint, and PostgreSQL caches 64 subtransactions)
	PollInterval      time.Duration   // wait between polls when idle; default 500ms
	MaxAttempts       int             // INBOX_MAX_ATTEMPTS; default 10
	RetryBase         time.Duration   // wait after the first failed attempt, doubling; default 1s
	RetryMax          time.Duration   // cap of the wait between attempts; default 60s
	Retention         time.Duration   // INBOX_RETENTION for processed rows; default 336h
	DeadRetention     time.Duration   // INBOX_DEAD_RETENTION for dead rows, from when they died; default 720h
	RetentionInterval time.Duration   // how often old processed rows are deleted; default 1m
	RetentionBatch    int             // rows per delete statement; default 1000
	GaugeInterval     time.Duration   // refresh of orders_inbox_unprocessed; default 5s
	GaugeLimit        int             // bound of the pending count; default 100000
	// AllowedSources, when not empty, are the only ce_source values applied
	// (KAFKA_INBOX_ALLOWED_SOURCES); a record from any other source, or
	// without one, is dead-lettered at once.
	AllowedSources []string
}

func (c ProcessorOptions) withDefaults() ProcessorOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	defInt(&c.BatchSize, 50)
	def(&c.PollInterval, 500*time.Millisecond)
	defInt(&c.MaxAttempts, 10)
	def(&c.RetryBase, time.Second)
	def(&c.RetryMax, time.Minute)
	def(&c.Retention, 336*time.Hour)
	def(&c.DeadRetention, 720*time.Hour)
	def(&c.RetentionInterval, time.Minute)
	defInt(&c.RetentionBatch, 1000)
	def(&c.GaugeInterval, 5*time.Second)
	defInt(&c.GaugeLimit, 100_000)
	return c
}

// Backoff returns the wait after the n-th failed attempt (n >= 1): base,
// doubling per attempt, capped at limit. With the defaults, ten attempts
// span about four to five minutes.
func Backoff(n int, base, limit time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// Processor applies stored inbox messages to their orders. It claims a
// batch of due rows in one transaction and applies them; when one fails, it
// handles the batch again with each row in a savepoint, so a failing row is
// rolled back alone: applied rows are marked processed in the same
// transaction that changed the order; rows that may apply later are
// rescheduled with backoff; rows that never can, or ran out of attempts, are
// marked dead and copied to the dead-letter topic through the outbox.
type Processor struct {
	db      ProcessorStore
	app     PaymentApplier
	metrics *Metrics
	log     *slog.Logger
	cfg     ProcessorOptions
}

// InboxProcessor is the name the design gives the Processor.
type InboxProcessor = Processor

// NewProcessor returns a processor applying d.Store's messages through
// d.Applier. A nil d.Logger logs to slog.Default().
func NewProcessor(d ProcessorDeps, o ProcessorOptions) *Processor {
	m := d.Metrics
	if m == nil {
		m = newMetrics()
	}
	return &Processor{db: d.Store, app: d.Applier, metrics: m,
		log: cmp.Or(d.Logger, slog.Default()).With("component", "inbox-processor"), cfg: o.withDefaults()}
}

// Run processes until ctx ends, then returns nil. It runs batches back to
// back while they are full, otherwise waits for a wake-up or the poll
// interval. A failing transaction (database down) marks nothing and is
// retried with capped backoff. Beside it, it refreshes the pending gauge
// every GaugeInterval and applies retention every RetentionInterval.
func (p *Processor) Run(ctx context.Context) error {
	p.log.Info("inbox processor started", "batch_size", p.cfg.BatchSize, "max_attempts", p.cfg.MaxAttempts,
		"dlq_topic", p.cfg.DLQTopic)
	defer p.log.Info("inbox processor stopped")
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		periodic.Run(ctx, p.cfg.RetentionInterval, p.retention, func(err error) {
			p.log.Warn("inbox retention failed", "error", err)
		})
	})
	wg.Go(func() {
		periodic.Run(ctx, p.cfg.GaugeInterval, p.refreshGauge, func(err error) {
			p.log.Warn("count pending inbox rows failed", "error", err)
		})
	})
	p.process(ctx)
	return nil
}

// process runs batches until ctx ends.
func (p *Processor) process(ctx context.Context) {
	var failWait time.Duration
	for {
		// A batch in flight when ctx ends is finished, not abandoned at its
		// commit, whose outcome would then be unknown.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
		n, err := p.ProcessBatch(bctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		wait := p.cfg.PollInterval
		if err != nil {
			failWait = min(max(2*failWait, p.cfg.PollInterval), 30*time.Second)
			wait = failWait
			p.log.Warn("inbox batch failed; nothing was marked, retrying", "retry_in", wait, "error", err)
		} else {
			failWait = 0
			if n == p.cfg.BatchSize {
				continue
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-p.cfg.Wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// batchTimeout bounds one batch's transaction, also at shutdown.
const batchTimeout = 30 * time.Second

// errNothingClaimed rolls back an empty claim so the outbox relay is not woken.
var errNothingClaimed = errors.New("no inbox rows due")

// outcome is what happened to one row of a batch, counted after the commit.
type outcome int

const (
	outcomeProcessed outcome = iota
	outcomeRetry
	outcomeDead
)

// errRowFailed rolls back an optimistic batch in which a row did not apply.
var errRowFailed = errors.New("an inbox row did not apply")

// ProcessBatch handles one batch of due rows in one transaction and returns
// how many rows it claimed. It first applies every row of the batch directly
// and marks them processed together; when a row does not apply, that
// transaction rolls back and a batch is claimed again and handled row by
// row, each in a savepoint, so that the failing row is rolled back,
// rescheduled or dead-lettered alone. An error means the transaction rolled
// back.
func (p *Processor) ProcessBatch(ctx context.Context) (int, error) {
	claimed, counts, err := p.processBatch(ctx, p.applyAll)
	if errors.Is(err, errRowFailed) {
		p.log.Debug("inbox batch redone row by row", "rows", claimed)
		claimed, counts, err = p.processBatch(ctx, p.applyEach)
	}
	if errors.Is(err, errNothingClaimed) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("process inbox batch: %w", err)
	}
	p.metrics.Processed.Add(float64(counts[outcomeProcessed]))
	p.metrics.Dead.Add(float64(counts[outcomeDead]))
	return claimed, nil
}

// processBatch claims a batch and handles it with apply in one transaction.
func (p *Processor) processBatch(ctx context.Context, apply func(context.Context, pgx.Tx, []postgres.InboxMessage) ([3]int, error)) (claimed int, counts [3]int, err error) {
	err = p.db.InTx(ctx, true, func(tx pgx.Tx) error {
		claimed, counts = 0, [3]int{}
		msgs, err := postgres.ClaimInbox(ctx, tx, p.cfg.BatchSize)
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			return errNothingClaimed
		}
		claimed = len(msgs)
		counts, err = apply(ctx, tx, msgs)
		return err
	})
	return claimed, counts, err
}

// applyAll applies msgs in tx without savepoints, in a few statements for
// the whole batch, dead-letters those that never can apply, and marks the
// applied ones processed in one statement. It fails with errRowFailed when a
// row does not apply: tx may then hold partial writes and must roll back.
func (p *Processor) applyAll(ctx context.Context, tx pgx.Tx, msgs []postgres.InboxMessage) ([3]int, error) {
	var counts [3]int
	payments := make([]orders.Payment, 0, len(msgs))
	applied := make([]string, 0, len(msgs))
	for _, m := range msgs {
		// Each row's span covers the batch it is applied in, and the event
		// the row causes continues its trace.
		sctx, span := applySpan(ctx, m)
		defer span.End()
		result, succeeded, err := p.decode(m)
		if err != nil {
			if err := p.deadLetter(ctx, tx, m, "", err); err != nil {
				return counts, err
			}
			counts[outcomeDead]++
			continue
		}
		payments = append(payments, orders.Payment{Succeeded: succeeded, Result: result, TraceParent: telemetry.TraceParent(sctx)})
		applied = append(applied, m.MessageID)
	}
	if err := p.app.ApplyPayments(ctx, tx, payments); err != nil {
		if ctx.Err() != nil {
			return counts, ctx.Err()
		}
		return counts, errRowFailed
	}
	if err := postgres.MarkInboxProcessed(ctx, tx, applied...); err != nil {
		return counts, err
	}
	counts[outcomeProcessed] = len(applied)
	return counts, nil
}

// applyEach handles msgs in tx one by one, each in a savepoint. It first
// locks all their orders in id order, as ApplyPayments does, so that it
// cannot deadlock with another batch holding some of the same orders.
func (p *Processor) applyEach(ctx context.Context, tx pgx.Tx, msgs []postgres.InboxMessage) ([3]int, error) {
	var counts [3]int
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if result, _, err := p.decode(m); err == nil {
			ids = append(ids, result.OrderID)
		}
	}
	if err := postgres.LockOrders(ctx, tx, ids); err != nil {
		return counts, err
	}
	for _, m := range msgs {
		o, err := p.handle(ctx, tx, m)
		if err != nil {
			return counts, err
		}
		counts[o]++
	}
	return counts, nil
}

// handle applies one row inside a savepoint of tx and records the outcome.
// An error means tx itself is unusable and must roll back.
func (p *Processor) handle(ctx context.Context, tx pgx.Tx, m postgres.InboxMessage) (outcome, error) {
	ctx, span := applySpan(ctx, m)
	defer span.End()
	result, succeeded, err := p.decode(m)
	if err != nil {
		return outcomeDead, p.deadLetter(ctx, tx, m, "", err)
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("savepoint: %w", err)
	}
	applyErr := p.app.ApplyPayments(ctx, sp, []orders.Payment{{Succeeded: succeeded, Result: result}})
	if applyErr == nil {
		applyErr = postgres.MarkInboxProcessed(ctx, sp, m.MessageID)
	}
	if applyErr == nil {
		applyErr = sp.Commit(ctx)
		if applyErr == nil {
			return outcomeProcessed, nil
		}
	}
	if err := sp.Rollback(ctx); err != nil {
		return 0, fmt.Errorf("roll back savepoint after %v: %w", applyErr, err)
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if orders.ErrorCode(applyErr) == orders.ECONFLICT {
		return outcomeDead, p.deadLetter(ctx, tx, m, result.OrderID, applyErr)
	}
	attempts := m.Attempts + 1
	if attempts >= p.cfg.MaxAttempts {
		return outcomeDead, p.deadLetter(ctx, tx, m, result.OrderID,
			fmt.Errorf("gave up after %d attempts: %w", attempts, applyErr))
	}
	delay := Backoff(attempts, p.cfg.RetryBase, p.cfg.RetryMax)
	p.log.Warn("inbox message not applied; retrying later", "message_id", m.MessageID, "order_id", result.OrderID,
		"attempt", attempts, "retry_in", delay, "error", applyErr)
	return outcomeRetry, postgres.RetryInbox(ctx, tx, m.MessageID, errorText(applyErr), delay)
}

// applySpan starts the span that applies m, parented by the record's
// traceparent, so the payment's trace continues into its application.
func applySpan(ctx context.Context, m postgres.InboxMessage) (context.Context, trace.Span) {
	return telemetry.Tracer().Start(telemetry.ContextWithTraceParent(ctx, traceParent(m.Headers)),
		"inbox.apply", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
			attribute.String("messaging.message.id", m.MessageID), attribute.String("cloudevents.event_type", m.EventType)))
}

// decode checks that m comes from an allowed source (AllowedSources) and is
// a payment result this service understands. Its error is permanent: the
// same message can never decode.
func (p *Processor) decode(m postgres.InboxMessage) (orders.PaymentResult, bool, error) {
	if len(p.cfg.AllowedSources) > 0 {
		source, _ := cloudevents.Lookup(m.Headers, cloudevents.HeaderSource)
		if !slices.Contains(p.cfg.AllowedSources, source) {
			return orders.PaymentResult{}, false, fmt.Errorf("ce_source %q is not an allowed source", validText(source))
		}
	}
	return decode(m)
}

// decode checks that m is a payment result this service understands. Its
// error is permanent: the same message can never decode.
func decode(m postgres.InboxMessage) (orders.PaymentResult, bool, error) {
	var succeeded bool
	switch m.EventType {
	case orders.TypePaymentSucceeded:
		succeeded = true
	case orders.TypePaymentFailed:
	case "":
		return orders.PaymentResult{}, false, errors.New("missing ce_type header")
	default:
		return orders.PaymentResult{}, false, fmt.Errorf("unknown ce_type %q", m.EventType)
	}
	if !json.Valid(m.Payload) {
		return orders.PaymentResult{}, false, errors.New("undecodable data: not valid JSON")
	}
	var object map[string]json.RawMessage
	if err := json.Unmarshal(m.Payload, &object); err != nil || object == nil {
		return orders.PaymentResult{}, false, errors.New("data is not a JSON object")
	}
	var r orders.PaymentResult
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		return r, false, fmt.Errorf("undecodable data: %w", err)
	}
	if r.OrderID == "" {
		return r, false, errors.New("data has no order_id")
	}
	if reason := orders.ValidateOrderID(r.OrderID); reason != "" {
		return orders.PaymentResult{}, false, fmt.Errorf("order_id %q %s", validText(r.OrderID), reason)
	}
	return r, succeeded, nil
}

// traceParent returns the traceparent header of hs, or "".
func traceParent(hs []postgres.Header) string {
	tp, _ := cloudevents.Lookup(hs, cloudevents.HeaderTraceParent)
	return tp
}

// deadLetter marks m dead with cause and, in the same transaction, queues a
// copy of it for the dead-letter topic: the original key (null, text or
// any bytes, as it was), headers and payload, plus the dlq_* headers
// (cloudevents.DeadLetter).
func (p *Processor) deadLetter(ctx context.Context, tx pgx.Tx, m postgres.InboxMessage, orderID string, cause error) error {
	text := errorText(cause)
	if err := postgres.MarkInboxDead(ctx, tx, m.MessageID, text); err != nil {
		return err
	}
	pos := cloudevents.Position{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}
	payload, headers := cloudevents.DeadLetter(pos, m.Payload, m.Headers, text, func(hs []postgres.Header) int {
		return kafka.MaxValueLen(m.Key, hs)
	})
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("new dead-letter event id: %w", err)
	}
	err = postgres.InsertOutbox(ctx, tx, postgres.OutboxMessage{
		EventID:   id.String(),
		EventType: m.EventType,
		Topic:     p.cfg.DLQTopic,
		Key:       m.Key,
		Headers:   headers,
		Payload:   payload,
	})
	if err != nil {
		return fmt.Errorf("dead-letter %s: %w", m.MessageID, err)
	}
	p.log.Warn("inbox message dead-lettered", "message_id", m.MessageID, "order_id", orderID,
		"dlq_topic", p.cfg.DLQTopic, "error", text)
	return nil
}

// errorText bounds an error's text for last_error and the dlq_error header.
func errorText(err error) string {
	const maxLen = 1000
	s := validText(err.Error())
	if len(s) <= maxLen {
		return s
	}
	s = s[:maxLen]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// refreshGauge sets the pending gauge. Run calls it every GaugeInterval.
func (p *Processor) refreshGauge(ctx context.Context) error {
	n, err := p.db.CountPendingInbox(ctx, p.cfg.GaugeLimit)
	if err != nil {
		return err
	}
	p.metrics.Unprocessed.Set(float64(n))
	return nil
}

// retention runs DeleteExpired and logs what it deleted.
func (p *Processor) retention(ctx context.Context) error {
	n, _, err := p.DeleteExpired(ctx)
	if err == nil && n > 0 {
		p.log.Info("inbox retention deleted processed and dead rows", "rows", n)
	}
	return err
}

// DeleteExpired deletes rows processed more than Retention ago and rows
// dead-lettered more than DeadRetention ago, by the database clock,
// RetentionBatch at a time, until a statement deletes fewer than that. Run
// calls it every RetentionInterval.
func (p *Processor) DeleteExpired(ctx context.Context) (deleted int64, statements int, err error) {
	deleted, statements, err = periodic.DeleteInBatches(ctx, p.cfg.RetentionBatch, func(ctx context.Context, batch int) (int64, error) {
		return p.db.DeleteProcessedInbox(ctx, p.cfg.Retention, batch)
	})
	if err != nil {
		return deleted, statements, err
	}
	dead, deadStatements, err := periodic.DeleteInBatches(ctx, p.cfg.RetentionBatch, func(ctx context.Context, batch int) (int64, error) {
		return p.db.DeleteDeadInbox(ctx, p.cfg.DeadRetention, batch)
	})
	return deleted + dead, statements + deadStatements, err
}
