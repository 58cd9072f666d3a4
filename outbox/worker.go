// Package outbox relays the transactional outbox to Kafka: OutboxWorker
// publishes unsent rows in id order, marks them sent only after Kafka
// acknowledged them, and deletes sent rows after a retention period.
package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/telemetry"
)

// Producer is what the worker needs of *kgo.Client: asynchronous produce
// with a promise called once per record, and Flush, which sends buffered
// records at once instead of after the client's linger and returns when
// they all have an outcome or ctx ends. The client's settings (acks=all,
// idempotence) are the caller's.
type Producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	Flush(ctx context.Context) error
}

// Config tunes an OutboxWorker. Zero values take the defaults shown.
type Config struct {
	BatchSize         int           // rows per publishing transaction (1000)
	PollInterval      time.Duration // wait for other replicas' commits (500ms); local commits wake the worker at once
	BatchDelay        time.Duration // after a batch with rows, wait this long after the next commit for more to join (2ms)
	ProduceTimeout    time.Duration // bound on one batch's acknowledgements (10s)
	Retention         time.Duration // age after which sent rows are deleted (168h)
	RetentionInterval time.Duration // how often retention runs (1m)
	RetentionBatch    int           // rows per DELETE statement (1000)
	GaugeInterval     time.Duration // refresh of the unsent and oldest-age gauges (5s)
}

func (c Config) withDefaults() Config {
	setDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.RetentionBatch <= 0 {
		c.RetentionBatch = 1000
	}
	setDur(&c.PollInterval, 500*time.Millisecond)
	setDur(&c.BatchDelay, 2*time.Millisecond)
	setDur(&c.ProduceTimeout, 10*time.Second)
	setDur(&c.Retention, 7*24*time.Hour)
	setDur(&c.RetentionInterval, time.Minute)
	setDur(&c.GaugeInterval, 5*time.Second)
	return c
}

const (
	// failGrace is how long past ProduceTimeout the worker waits for the
	// client to fail the records it timed out, for an accurate error.
	failGrace = 250 * time.Millisecond
	// idleGrace is how long past ProduceTimeout the server lets a publishing
	// transaction sit idle before it ends the session and frees the lock.
	idleGrace = 10 * time.Second
	// gaugeCountCap bounds the unsent count query.
	gaugeCountCap = 100000
)

// OutboxWorker is the outbox relay. Any number of replicas may run one on the
// same database: a PostgreSQL advisory lock lets one batch at a time be
// published, so one order's events reach Kafka in the order they were
// written. Delivery is at least once: a row is marked sent only after Kafka
// acknowledged it, and a failure before the mark commits republishes it
// later with the same ce_id.
type OutboxWorker struct {
	db       *postgres.DB
	producer Producer
	cfg      Config
	log      *slog.Logger
	m        metrics

	minBackoff, maxBackoff time.Duration
	lockBusy               atomic.Int64 // attempts that found another relay publishing
	awaiting               atomic.Bool  // waiting for a failed batch's records to resolve
}

// NewWorker returns a worker publishing db's outbox through producer
// (normally a *kgo.Client) and registers its metrics on reg (nil: none).
func NewWorker(db *postgres.DB, producer Producer, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*OutboxWorker, error) {
	if log == nil {
		log = slog.Default()
	}
	m := newMetrics()
	if reg != nil {
		if err := m.register(reg); err != nil {
			return nil, fmt.Errorf("register outbox metrics: %w", err)
		}
	}
	return &OutboxWorker{
		db:         db,
		producer:   producer,
		cfg:        cfg.withDefaults(),
		log:        log.With("component", "outbox"),
		m:          m,
		minBackoff: 100 * time.Millisecond,
		maxBackoff: 5 * time.Second,
	}, nil
}

// Run publishes the outbox, applies retention and refreshes the gauges until
// ctx is cancelled. A batch in flight is finished first, which takes at most
// ProduceTimeout plus a few seconds. Failures are logged and retried, never
// returned; Run returns nil once stopped.
func (w *OutboxWorker) Run(ctx context.Context) error {
	w.log.Info("outbox worker starting",
		"batch_size", w.cfg.BatchSize, "poll_interval", w.cfg.PollInterval,
		"produce_timeout", w.cfg.ProduceTimeout, "retention", w.cfg.Retention)
	var wg sync.WaitGroup
	wg.Go(func() { w.retentionLoop(ctx) })
	wg.Go(func() { w.gaugeLoop(ctx) })
	w.publishLoop(ctx)
	wg.Wait()
	w.log.Info("outbox worker stopped")
	return nil
}

// publishLoop runs batches back to back while they come back full, then
// waits for a local commit or the poll interval. Failures back off
// exponentially; finding another replica publishing retries shortly, since
// that replica may have claimed its batch before our latest commit.
func (w *OutboxWorker) publishLoop(ctx context.Context) {
	busyWait := min(max(w.cfg.PollInterval/5, time.Millisecond), 100*time.Millisecond)
	timer := time.NewTimer(w.cfg.PollInterval)
	defer timer.Stop()
	var backoff time.Duration
	var unresolved <-chan struct{}
	for ctx.Err() == nil {
		if unresolved != nil && !w.awaitUnresolved(ctx, unresolved) {
			return
		}
		res, err := w.publishBatch(ctx)
		unresolved = res.unresolved
		var wait time.Duration
		switch {
		case err != nil:
			w.m.errors.Inc()
			backoff = min(max(2*backoff, w.minBackoff), w.maxBackoff)
			w.log.Warn("outbox publish failed, will retry", "error", err, "rows", res.rows, "retry_in", backoff)
			wait = backoff
		case res.busy:
			wait = busyWait
		case res.rows == w.cfg.BatchSize:
			backoff = 0
			continue
		default:
			backoff = 0
		}
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
			continue
		}
		timer.Reset(w.cfg.PollInterval)
		select {
		case <-ctx.Done():
		case <-w.db.OutboxWritten():
			if res.rows > 0 {
				// Commits keep coming: let a few more join the next batch
				// rather than paying a transaction per commit.
				timer.Reset(w.cfg.BatchDelay)
				select {
				case <-ctx.Done():
				case <-timer.C:
				}
			}
		case <-timer.C:
		}
	}
}

type batchResult struct {
	busy       bool            // another replica holds the outbox lock
	rows       int             // rows claimed
	unresolved <-chan struct{} // closed when a failed batch's records all have an outcome
}

// awaitUnresolved waits until the records of a failed batch that were still
// in flight have an outcome. The client keeps such records until the broker
// answers; producing the batch again meanwhile would only queue more copies
// behind them. Other replicas publish in the meantime. It reports false when
// ctx ends first.
func (w *OutboxWorker) awaitUnresolved(ctx context.Context, unresolved <-chan struct{}) bool {
	select {
	case <-unresolved:
		return true
	default:
	}
	w.awaiting.Store(true)
	defer w.awaiting.Store(false)
	w.log.Warn("outbox waiting for Kafka to answer for records of a failed batch before publishing again")
	since := time.Now()
	ticker := time.NewTicker(30 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-unresolved:
			w.log.Info("outbox records of the failed batch resolved, publishing again", "waited", time.Since(since).Round(time.Millisecond))
			return true
		case <-ticker.C:
			w.log.Warn("outbox still waiting for Kafka to answer for records of a failed batch", "waited", time.Since(since).Round(time.Second))
		case <-ctx.Done():
			return false
		}
	}
}

// publishBatch publishes one batch in one transaction: take the outbox lock,
// claim unsent rows, produce them all, and mark them sent once every record
// is acknowledged. Any failure rolls back, leaving the rows unsent.
func (w *OutboxWorker) publishBatch(ctx context.Context) (batchResult, error) {
	// Finish the batch even when ctx ends meanwhile: records Kafka already
	// acknowledged are then marked, not republished after a restart.
	idle := w.cfg.ProduceTimeout + idleGrace
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idle+idleGrace)
	defer cancel()

	var res batchResult
	var recs []postgres.OutboxRecord
	var acked []time.Time
	err := w.db.InTx(bctx, false, func(tx pgx.Tx) error {
		if err := postgres.SetIdleTimeout(bctx, tx, idle); err != nil {
			return err
		}
		locked, err := postgres.TryLockOutbox(bctx, tx)
		if err != nil {
			return err
		}
		if !locked {
			res.busy = true
			w.lockBusy.Add(1)
			return nil
		}
		recs, err = postgres.ClaimOutbox(bctx, tx, w.cfg.BatchSize)
		if err != nil {
			return err
		}
		res.rows = len(recs)
		if len(recs) == 0 {
			return nil
		}
		pctx, span := w.publishSpan(bctx, recs)
		defer span.End()
		if acked, res.unresolved, err = w.produce(pctx, recs); err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "produce failed")
			return err
		}
		ids := make([]int64, len(recs))
		for i, r := range recs {
			ids[i] = r.ID
		}
		return postgres.MarkOutboxSent(bctx, tx, ids)
	})
	if err != nil {
		return res, err
	}
	w.m.published.Add(float64(len(recs)))
	for i, r := range recs {
		w.m.latency.Observe(max(acked[i].Sub(r.CreatedAt).Seconds(), 0))
	}
	return res, nil
}

// produce sends recs and waits for every acknowledgement, returning the time
// each arrived. After ProduceTimeout it gives up; records the client had
// already sent are then still pending, and unresolved is closed once all of
// them have an outcome.
func (w *OutboxWorker) produce(ctx context.Context, recs []postgres.OutboxRecord) (acks []time.Time, unresolved <-chan struct{}, err error) {
	pctx, cancel := context.WithTimeout(ctx, w.cfg.ProduceTimeout)
	defer cancel()

	var (
		acked    = make([]time.Time, len(recs))
		mu       sync.Mutex
		pending  = len(recs)
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	wg.Add(len(recs))
	for i, r := range recs {
		headers := make([]kgo.RecordHeader, len(r.Headers))
		for j, h := range r.Headers {
			headers[j] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
		rec := &kgo.Record{Topic: r.Topic, Key: []byte(r.Key), Value: r.Payload, Headers: headers}
		w.producer.Produce(pctx, rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			pending--
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = fmt.Errorf("topic %s key %s event %s: %w", r.Topic, r.Key, r.EventID, err)
				}
				return
			}
			acked[i] = time.Now()
		})
	}

	// The batch is complete: waiting for the linger to fill it further
	// would only hold the transaction (and its connection) open longer.
	// Flush also keeps the client from lingering until pctx ends.
	go w.producer.Flush(pctx)
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-pctx.Done():
		grace := time.NewTimer(failGrace)
		defer grace.Stop()
		select {
		case <-done:
		case <-grace.C:
			mu.Lock()
			defer mu.Unlock()
			return nil, done, fmt.Errorf("produce: %d of %d records unacknowledged after %s (%d failed)",
				pending, len(recs), w.cfg.ProduceTimeout, failed)
		}
	}
	if firstErr != nil {
		return nil, nil, fmt.Errorf("produce: %d of %d records failed, first: %w", failed, len(recs), firstErr)
	}
	return acked, nil, nil
}

// retentionLoop deletes expired sent rows at start and every RetentionInterval.
func (w *OutboxWorker) retentionLoop(ctx context.Context) {
	ticker := time.NewTicker(w.cfg.RetentionInterval)
	defer ticker.Stop()
	for {
		n, _, err := w.deleteExpired(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			w.log.Warn("outbox retention failed, will retry", "error", err, "deleted", n)
		case n > 0:
			w.log.Info("outbox retention deleted sent rows", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// deleteExpired deletes rows sent more than Retention ago, RetentionBatch at
// a time, until a statement deletes fewer than that.
func (w *OutboxWorker) deleteExpired(ctx context.Context) (deleted int64, statements int, err error) {
	cutoff := time.Now().Add(-w.cfg.Retention)
	for {
		n, err := w.db.DeleteSentOutbox(ctx, cutoff, w.cfg.RetentionBatch)
		statements++
		deleted += n
		if err != nil || n < int64(w.cfg.RetentionBatch) {
			return deleted, statements, err
		}
	}
}

// gaugeLoop refreshes the backlog gauges at start and every GaugeInterval.
func (w *OutboxWorker) gaugeLoop(ctx context.Context) {
	ticker := time.NewTicker(w.cfg.GaugeInterval)
	defer ticker.Stop()
	for {
		if err := w.refreshGauges(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("outbox gauges not refreshed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (w *OutboxWorker) refreshGauges(ctx context.Context) error {
	n, err := w.db.CountUnsentOutbox(ctx, gaugeCountCap)
	if err != nil {
		return err
	}
	age, err := w.db.OldestUnsentOutboxAge(ctx)
	if err != nil {
		return err
	}
	w.m.unsent.Set(float64(n))
	w.m.oldestAge.Set(max(age.Seconds(), 0))
	return nil
}

// maxSpanLinks bounds the links from a publish span to the traces of the
// events it carries.
const maxSpanLinks = 128

// publishSpan starts the span of one batch's publication, linked to the
// trace of each event (its traceparent header) that has one.
func (w *OutboxWorker) publishSpan(ctx context.Context, recs []postgres.OutboxRecord) (context.Context, trace.Span) {
	var links []trace.Link
	for _, r := range recs {
		if len(links) == maxSpanLinks {
			break
		}
		for _, h := range r.Headers {
			if h.Key == "traceparent" {
				sc := trace.SpanContextFromContext(telemetry.ContextWithTraceParent(ctx, string(h.Value)))
				if sc.IsValid() {
					links = append(links, trace.Link{SpanContext: sc})
				}
			}
		}
	}
	return telemetry.Tracer().Start(ctx, "outbox.publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(links...), trace.WithAttributes(attribute.Int("messaging.batch.message_count", len(recs))))
}
