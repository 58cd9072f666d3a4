// Package outbox relays the transactional outbox to Kafka: the Relay
// publishes unsent rows in id order, marks them sent only after Kafka
// acknowledged them, and deletes sent rows after a retention period.
package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/internal/periodic"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/telemetry"
)

// Store is the outbox table as the relay uses it (*postgres.DB).
type Store interface {
	// PublishOutbox claims a batch under the outbox lock, calls publish
	// with it while holding the claim, and parks and marks the rows as
	// publish says, in one transaction; busy: another replica holds the lock.
	PublishOutbox(ctx context.Context, limit int, idle time.Duration,
		publish func(recs []postgres.OutboxRecord, parkedKeys map[string]bool) (postgres.OutboxMarks, error)) (busy bool, err error)
	DeleteSentOutbox(ctx context.Context, olderThan time.Duration, limit int) (int64, error)
	CountUnsentOutbox(ctx context.Context, limit int) (int64, error)
	OldestUnsentOutboxAge(ctx context.Context) (time.Duration, error)
	CountParkedOutbox(ctx context.Context, limit int) (int64, error)
}

// Producer is what the relay needs of *kgo.Client: asynchronous produce
// with a promise called once per record, Flush, which sends buffered
// records at once instead of after the client's linger and returns when
// they all have an outcome or ctx ends, and Close, which abandons records
// still buffered so they are never sent again. The client's settings
// (acks=all, idempotence) are the caller's.
type Producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	Flush(ctx context.Context) error
	Close()
}

// ErrStalled is returned by Run when records stayed without an outcome for
// ResolveTimeout past ProduceTimeout and the relay has no NewProducer to
// replace its producer with: it stopped publishing for good.
var ErrStalled = errors.New("outbox relay stopped: Kafka gave no outcome for produced records")

// Deps are what a Relay works with. Store and Producer are required.
type Deps struct {
	Store    Store
	Producer Producer // normally a *kgo.Client
	Metrics  *Metrics // from NewMetrics; nil: unregistered ones
	Logger   *slog.Logger
}

// Options tune a Relay. Zero values take the defaults shown.
type Options struct {
	// Wake delivers a value after local commits that wrote outbox rows
	// (postgres.DB.OutboxWritten), so the relay publishes at once instead of
	// after PollInterval. Nil: the relay polls only.
	Wake           <-chan struct{}
	BatchSize      int           // rows per publishing transaction (1000)
	PollInterval   time.Duration // wait for other replicas' commits (500ms)
	BatchDelay     time.Duration // after a batch with rows, wait this long after the next commit for more to join (2ms)
	ProduceTimeout time.Duration // bound on one batch's acknowledgements (10s)
	// ResolveTimeout is how much longer than ProduceTimeout the relay keeps
	// its claim (transaction and outbox lock) while records it sent have no
	// outcome, so no other replica publishes behind them (3 x ProduceTimeout).
	// After it, the relay closes its producer, whose records then can never
	// be sent again, releases the claim, and goes on with a producer from
	// NewProducer; without NewProducer, Run returns ErrStalled.
	ResolveTimeout time.Duration
	// NewProducer makes a replacement producer. When it is set the relay
	// owns its producers: it closes the one it gives up on and, when Run
	// returns, the one in use, the one given in Deps included. Nil:
	// see ResolveTimeout.
	NewProducer func() (Producer, error)
	// MaxRecordBytes is the producer's limit on one record batch
	// (kgo.ProducerBatchMaxBytes, 1000012): a row whose record cannot fit is
	// parked before it is produced.
	MaxRecordBytes    int
	Retention         time.Duration // age after which sent rows are deleted (168h)
	RetentionInterval time.Duration // how often retention runs (1m)
	RetentionBatch    int           // rows per DELETE statement (1000)
	GaugeInterval     time.Duration // refresh of the unsent and oldest-age gauges (5s)
}

func (c Options) withDefaults() Options {
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
	setDur(&c.ResolveTimeout, 3*c.ProduceTimeout)
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = kafka.ProducerBatchMaxBytes
	}
	setDur(&c.Retention, 7*24*time.Hour)
	setDur(&c.RetentionInterval, time.Minute)
	setDur(&c.GaugeInterval, 5*time.Second)
	return c
}

const (
	// failGrace is how long past ProduceTimeout the relay waits for the
	// client to fail the records it timed out, for an accurate error.
	failGrace = 250 * time.Millisecond
	// idleGrace is how long past ProduceTimeout the server lets a publishing
	// transaction sit idle before it ends the session and frees the lock.
	idleGrace = 10 * time.Second
	// gaugeCountCap bounds the unsent count query.
	gaugeCountCap = 100000
)

// Relay is the outbox relay (the design's OutboxWorker). Any number of
// replicas may run one on the same database: a PostgreSQL advisory lock lets
// one batch at a time be published, so one order's events reach Kafka in
// the order they were written. Delivery is at least once: a row is marked
// sent only after Kafka acknowledged it, and a failure before the mark
// commits republishes it later with the same ce_id.
type Relay struct {
	db       Store
	producer Producer
	cfg      Options
	log      *slog.Logger
	m        *Metrics

	minBackoff, maxBackoff time.Duration
	probeInterval          time.Duration // how often a backoff after a Kafka failure asks whether the broker answers
	lockBusy               atomic.Int64  // attempts that found another relay publishing
	awaiting               atomic.Bool   // holding the claim past ProduceTimeout for records without an outcome
	backingOff             atomic.Int64  // the backoff under way after a failed batch, in nanoseconds; 0 when none
	stalled                atomic.Bool   // gave up on a producer with no way to replace it
}

// OutboxWorker is the name the design gives the Relay.
type OutboxWorker = Relay

// New returns a relay publishing d.Store's outbox through d.Producer. A nil
// d.Logger logs to slog.Default().
func New(d Deps, o Options) *Relay {
	log := cmp.Or(d.Logger, slog.Default())
	m := d.Metrics
	if m == nil {
		m = newMetrics()
	}
	return &Relay{
		db:            d.Store,
		producer:      d.Producer,
		cfg:           o.withDefaults(),
		log:           log.With("component", "outbox"),
		m:             m,
		minBackoff:    100 * time.Millisecond,
		maxBackoff:    5 * time.Second,
		probeInterval: 100 * time.Millisecond,
	}
}

// Run publishes the outbox, applies retention and refreshes the gauges until
// ctx is cancelled. A batch in flight is finished first, which takes at most
// ProduceTimeout plus ResolveTimeout plus a few seconds. Failures are logged
// and retried; Run returns nil once stopped, or ErrStalled (see
// ResolveTimeout).
func (w *Relay) Run(ctx context.Context) error {
	w.log.Info("outbox worker starting",
		"batch_size", w.cfg.BatchSize, "poll_interval", w.cfg.PollInterval,
		"produce_timeout", w.cfg.ProduceTimeout, "resolve_timeout", w.cfg.ResolveTimeout, "retention", w.cfg.Retention)
	if w.cfg.NewProducer != nil {
		defer func() { w.producer.Close() }()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		periodic.Run(ctx, w.cfg.RetentionInterval, w.retention, func(err error) {
			w.log.Warn("outbox retention failed, will retry", "error", err)
		})
	})
	wg.Go(func() {
		periodic.Run(ctx, w.cfg.GaugeInterval, w.refreshGauges, func(err error) {
			w.log.Warn("outbox gauges not refreshed", "error", err)
		})
	})
	err := w.publishLoop(ctx)
	cancel()
	wg.Wait()
	if err != nil {
		w.log.Error("outbox worker stopped publishing", "error", err)
		return err
	}
	w.log.Info("outbox worker stopped")
	return nil
}

// publishLoop runs batches back to back while they come back full, then
// waits for a local commit or the poll interval. Failures back off
// exponentially, but a broker that answers again ends the backoff (see
// backOff); finding another replica publishing retries shortly, since
// that replica may have claimed its batch before our latest commit. It
// returns ErrStalled when the relay can no longer publish.
func (w *Relay) publishLoop(ctx context.Context) error {
	busyWait := min(max(w.cfg.PollInterval/5, time.Millisecond), 100*time.Millisecond)
	timer := time.NewTimer(w.cfg.PollInterval)
	defer timer.Stop()
	var backoff time.Duration
	for ctx.Err() == nil {
		res, err := w.publishBatch(ctx)
		var wait time.Duration
		switch {
		case errors.Is(err, ErrStalled):
			w.m.errors.Inc()
			return err
		case err != nil:
			w.m.errors.Inc()
			backoff = min(max(2*backoff, w.minBackoff), w.maxBackoff)
			w.log.Warn("outbox publish failed, will retry", "error", err, "rows", res.rows, "retry_in", backoff)
			w.backingOff.Store(int64(backoff))
			w.backOff(ctx, backoff, res.noAnswer)
			w.backingOff.Store(0)
			continue
		case res.busy:
			wait = busyWait
		case res.rows == w.cfg.BatchSize || res.parked > 0:
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
		case <-w.cfg.Wake:
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
	return nil
}

type batchResult struct {
	busy     bool // another replica holds the outbox lock
	rows     int  // rows claimed
	parked   int  // rows parked
	noAnswer bool // records failed because Kafka did not answer (unreachable), not with an error of Kafka's
}

// pinger is a producer that can ask the cluster whether it answers, such
// as *kgo.Client (a metadata request to any reachable broker).
type pinger interface {
	Ping(ctx context.Context) error
}

// backOff waits d after a failed batch, or less when Kafka comes back: while
// it waits, it asks the broker every probeInterval whether it answers, and
// returns as soon as it does after a failure in which Kafka did not answer
// (noAnswer), or after a probe of this wait found it unreachable. So a
// returning broker is noticed within probeInterval, not at the end of a
// backoff of up to maxBackoff. Failures elsewhere (PostgreSQL, an error
// Kafka returned) with the broker answering throughout wait the whole d.
func (w *Relay) backOff(ctx context.Context, d time.Duration, noAnswer bool) {
	deadline := time.Now().Add(d)
	p, ok := w.producer.(pinger)
	if !ok || d <= w.probeInterval {
		sleepCtx(ctx, d)
		return
	}
	down := false
	for ctx.Err() == nil {
		next := time.Now().Add(w.probeInterval)
		pctx, cancel := context.WithDeadline(ctx, next)
		err := p.Ping(pctx)
		cancel()
		switch {
		case err != nil:
			down = true
		case noAnswer || down:
			w.log.Info("outbox: Kafka answers again, retrying now")
			return
		default:
			sleepCtx(ctx, time.Until(deadline))
			return
		}
		if !next.Before(deadline) {
			sleepCtx(ctx, time.Until(deadline))
			return
		}
		sleepCtx(ctx, time.Until(next))
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// outcome is what became of one claimed row's record.
type outcome struct {
	acked     time.Time // when Kafka acknowledged it; zero when not
	err       error     // the produce error, nil when acknowledged or unresolved
	parkErr   string    // non-empty: park the row with this error
	unsettled bool      // leave the row unsent for the next claim
}

// publishBatch publishes one batch in one transaction: take the outbox lock,
// claim rows neither sent nor parked, park those that can never be produced
// (and later rows of their keys), produce the rest, and once every record
// has an outcome mark the acknowledged ones sent and park those Kafka
// refused for good. Rows that failed otherwise stay unsent, with the later
// rows of their keys, and the batch reports the error so the loop backs off.
// The claim is kept until every record has an outcome (see ResolveTimeout).
func (w *Relay) publishBatch(ctx context.Context) (batchResult, error) {
	// Finish the batch even when ctx ends meanwhile: records Kafka already
	// acknowledged are then marked, not republished after a restart.
	idle := w.cfg.ProduceTimeout + w.cfg.ResolveTimeout + idleGrace
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idle+idleGrace)
	defer cancel()

	var res batchResult
	var recs []postgres.OutboxRecord
	var outs []outcome
	var retryErr error
	busy, err := w.db.PublishOutbox(bctx, w.cfg.BatchSize, idle, func(claimed []postgres.OutboxRecord, parkedKeys map[string]bool) (postgres.OutboxMarks, error) {
		recs = claimed
		res.rows = len(recs)
		krecs := make([]*kgo.Record, len(recs))
		for i, r := range recs {
			krecs[i] = record(r)
		}
		outs = w.prePark(recs, krecs, parkedKeys)
		pctx, span := w.publishSpan(bctx, recs)
		defer span.End()
		if err := w.produce(pctx, krecs, outs); err != nil {
			res.noAnswer = true
			span.RecordError(err)
			span.SetStatus(codes.Error, "produce failed")
			return postgres.OutboxMarks{}, err
		}
		retryErr = w.settle(recs, outs)
		res.noAnswer = retryErr != nil && !kafkaAnswered(retryErr)
		var marks postgres.OutboxMarks
		for i, o := range outs {
			switch {
			case o.parkErr != "":
				marks.Parked = append(marks.Parked, recs[i].ID)
				marks.ParkErrs = append(marks.ParkErrs, o.parkErr)
			case !o.unsettled:
				marks.Sent = append(marks.Sent, recs[i].ID)
			}
		}
		res.parked = len(marks.Parked)
		return marks, nil
	})
	if busy {
		res.busy = true
		w.lockBusy.Add(1)
	}
	if err != nil {
		return res, err
	}
	for i, o := range outs {
		if o.parkErr == "" && !o.unsettled {
			w.m.published.Inc()
			w.m.latency.Observe(max(o.acked.Sub(recs[i].CreatedAt).Seconds(), 0))
		}
	}
	if res.parked > 0 {
		w.m.parked.Add(float64(res.parked))
		for i, o := range outs {
			if o.parkErr != "" {
				w.log.Error("outbox row parked: Kafka will never accept it; re-drive it once the cause is fixed",
					"outbox_id", recs[i].ID, "event_id", recs[i].EventID, "topic", recs[i].Topic, "key", kafka.KeyText(recs[i].Key), "error", o.parkErr)
			}
		}
	}
	return res, retryErr
}

// keyOf names the group of rows whose order one row belongs to: its topic
// and key, as postgres.ParkedKeys returns them. A row with a null key is a
// group of its own: Kafka keeps no order among null-keyed records, so one
// such row neither parks nor holds back another.
func keyOf(r postgres.OutboxRecord) string {
	if r.Key == nil {
		return "\x00" + strconv.FormatInt(r.ID, 10) // topics are never empty, so no topic and key is named so
	}
	return r.Topic + "\x00" + string(r.Key)
}

// prePark decides, before producing, which rows to park: rows of a topic
// and key that already has a parked row, and rows whose record could never
// fit the producer's limit, with the later rows of their keys.
func (w *Relay) prePark(recs []postgres.OutboxRecord, krecs []*kgo.Record, parkedKeys map[string]bool) []outcome {
	outs := make([]outcome, len(recs))
	root := map[string]int64{}
	for i, r := range recs {
		k := keyOf(r)
		switch {
		case parkedKeys[k]:
			outs[i].parkErr = fmt.Sprintf("parked behind an earlier parked row of topic %s key %s", r.Topic, kafka.KeyText(r.Key))
		case root[k] != 0:
			outs[i].parkErr = fmt.Sprintf("parked behind parked outbox row %d of the same key", root[k])
		default:
			if n := kafka.RecordBatchBytes(krecs[i].Key, len(krecs[i].Value), krecs[i].Headers); n > w.cfg.MaxRecordBytes {
				outs[i].parkErr = fmt.Sprintf("%v (a record batch of %d bytes; the producer's limit is %d)", kerr.MessageTooLarge, n, w.cfg.MaxRecordBytes)
				root[k] = r.ID
			}
		}
	}
	return outs
}

// record is the Kafka record of outbox row r.
func record(r postgres.OutboxRecord) *kgo.Record {
	headers := make([]kgo.RecordHeader, len(r.Headers))
	for j, h := range r.Headers {
		headers[j] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
	}
	return &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Payload, Headers: headers}
}

// settle decides, in id order, what becomes of each produced row: acked
// rows are marked sent, rows Kafka refused for good are parked, rows after
// a parked one of their key are parked behind it unless Kafka already
// acknowledged them, and rows that failed otherwise stay unsent with every
// later row of their key (republished after them, in order). It returns the
// first error that leaves rows unsent.
func (w *Relay) settle(recs []postgres.OutboxRecord, outs []outcome) error {
	parkedRoot := map[string]int64{}
	retry := map[string]bool{}
	var first error
	unsent := 0
	for i, r := range recs {
		o := &outs[i]
		k := keyOf(r)
		switch {
		case o.parkErr != "":
			if parkedRoot[k] == 0 {
				parkedRoot[k] = r.ID
			}
		case parkedRoot[k] != 0 && !o.acked.IsZero():
			w.log.Error("outbox record reached Kafka although an earlier row of its key was parked",
				"outbox_id", r.ID, "event_id", r.EventID, "topic", r.Topic, "key", kafka.KeyText(r.Key), "parked_row", parkedRoot[k])
		case parkedRoot[k] != 0:
			o.parkErr = fmt.Sprintf("parked behind parked outbox row %d of the same key", parkedRoot[k])
		case retry[k]:
			o.unsettled = true
			unsent++
		case !o.acked.IsZero():
		case o.err != nil && permanent(o.err):
			o.parkErr = fmt.Sprintf("topic %s key %s: %v", r.Topic, kafka.KeyText(r.Key), o.err)
			parkedRoot[k] = r.ID
		default:
			o.unsettled = true
			retry[k] = true
			unsent++
			if first == nil {
				first = fmt.Errorf("topic %s key %s event %s: %w", r.Topic, kafka.KeyText(r.Key), r.EventID, o.err)
			}
		}
	}
	if first != nil {
		return fmt.Errorf("produce: %d of %d records left unsent for a retry, first: %w", unsent, len(recs), first)
	}
	return nil
}

// kafkaAnswered reports whether err carries an error code a broker
// returned, as opposed to a record that timed out or could not reach one.
func kafkaAnswered(err error) bool {
	var ke *kerr.Error
	return errors.As(err, &ke)
}

// permanent reports whether Kafka will refuse a record with err however
// often it is produced: the record is too large, the topic is invalid or
// may not be written, or the record is invalid. These are not retriable
// (kerr.IsRetriable), and unlike other such errors (SASL, cluster
// authorization) they are about the record, not the client.
func permanent(err error) bool {
	for _, e := range []error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord,
		kerr.TopicAuthorizationFailed, kerr.InvalidTopicException, kerr.PolicyViolation} {
		if errors.Is(err, e) {
			return !kerr.IsRetriable(e)
		}
	}
	return false
}

// produce sends the rows not yet decided and records each one's outcome in
// outs. It waits up to ProduceTimeout for them, then, while records the
// client already sent have no outcome, up to ResolveTimeout longer: the
// caller's claim stays held meanwhile. When even that passes, it closes the
// producer, so those records are never sent again, replaces it, and returns
// an error: the caller then rolls back and the rows are claimed again.
func (w *Relay) produce(ctx context.Context, recs []*kgo.Record, outs []outcome) error {
	pctx, cancel := context.WithTimeout(ctx, w.cfg.ProduceTimeout)
	defer cancel()

	var (
		mu      sync.Mutex
		pending int
		wg      sync.WaitGroup
	)
	for i := range recs {
		if outs[i].parkErr == "" {
			pending++
		}
	}
	wg.Add(pending)
	for i, rec := range recs {
		if outs[i].parkErr != "" {
			continue
		}
		w.producer.Produce(pctx, rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			pending--
			if err != nil {
				outs[i].err = err
				return
			}
			outs[i].acked = time.Now()
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
		return nil
	case <-pctx.Done():
	}
	grace := time.NewTimer(failGrace)
	defer grace.Stop()
	select {
	case <-done:
		return nil
	case <-grace.C:
	}

	// Records the client sent cannot be failed: the broker may have
	// appended them. Keep the claim until they have an outcome, so no
	// other replica publishes behind them.
	w.awaiting.Store(true)
	defer w.awaiting.Store(false)
	w.m.errors.Inc() // the batch missed its deadline: an outage shows now, not after ResolveTimeout
	mu.Lock()
	w.log.Warn("outbox keeps its claim until Kafka answers for records it sent",
		"unresolved", pending, "of", len(recs), "produce_timeout", w.cfg.ProduceTimeout, "resolve_timeout", w.cfg.ResolveTimeout)
	mu.Unlock()
	bound := time.NewTimer(w.cfg.ResolveTimeout)
	defer bound.Stop()
	select {
	case <-done:
		w.log.Info("outbox records resolved, finishing the batch")
		return nil
	case <-bound.C:
	}
	mu.Lock()
	n := pending
	mu.Unlock()
	return w.replaceProducer(fmt.Errorf("produce: %d of %d records without an outcome after %s: %w",
		n, len(recs), w.cfg.ProduceTimeout+w.cfg.ResolveTimeout, errUnresolved))
}

var errUnresolved = errors.New("records unresolved")

// replaceProducer closes the producer whose records stayed without an
// outcome, while the caller still holds the claim, and installs a new one
// from NewProducer. Without NewProducer the relay stops: Run returns
// ErrStalled.
func (w *Relay) replaceProducer(cause error) error {
	w.log.Error("outbox closing its Kafka producer: records stayed without an outcome; they will never be sent again", "error", cause)
	if w.cfg.NewProducer == nil {
		w.stalled.Store(true)
		return fmt.Errorf("%w: %w", ErrStalled, cause)
	}
	w.producer.Close()
	p, err := w.cfg.NewProducer()
	if err != nil {
		w.stalled.Store(true)
		return fmt.Errorf("%w: new producer: %w (after %w)", ErrStalled, err, cause)
	}
	w.producer = p
	return cause
}

// retention runs DeleteExpired and logs what it deleted.
func (w *Relay) retention(ctx context.Context) error {
	n, _, err := w.DeleteExpired(ctx)
	if err == nil && n > 0 {
		w.log.Info("outbox retention deleted sent rows", "deleted", n)
	}
	return err
}

// DeleteExpired deletes rows sent more than Retention ago by the database
// clock, RetentionBatch at a time, until a statement deletes fewer than
// that. Run calls it every RetentionInterval.
func (w *Relay) DeleteExpired(ctx context.Context) (deleted int64, statements int, err error) {
	return periodic.DeleteInBatches(ctx, w.cfg.RetentionBatch, func(ctx context.Context, batch int) (int64, error) {
		return w.db.DeleteSentOutbox(ctx, w.cfg.Retention, batch)
	})
}

// refreshGauges sets the backlog gauges. Run calls it every GaugeInterval.
func (w *Relay) refreshGauges(ctx context.Context) error {
	n, err := w.db.CountUnsentOutbox(ctx, gaugeCountCap)
	if err != nil {
		return err
	}
	age, err := w.db.OldestUnsentOutboxAge(ctx)
	if err != nil {
		return err
	}
	parked, err := w.db.CountParkedOutbox(ctx, gaugeCountCap)
	if err != nil {
		return err
	}
	w.m.unsent.Set(float64(n))
	w.m.parkedNow.Set(float64(parked))
	w.m.oldestAge.Set(max(age.Seconds(), 0))
	return nil
}

// maxSpanLinks bounds the links from a publish span to the traces of the
// events it carries.
const maxSpanLinks = 128

// publishSpan starts the span of one batch's publication, linked to the
// trace of each event (its traceparent header) that has one.
func (w *Relay) publishSpan(ctx context.Context, recs []postgres.OutboxRecord) (context.Context, trace.Span) {
	var links []trace.Link
	for _, r := range recs {
		if len(links) == maxSpanLinks {
			break
		}
		if tp, ok := cloudevents.Lookup(r.Headers, cloudevents.HeaderTraceParent); ok {
			sc := trace.SpanContextFromContext(telemetry.ContextWithTraceParent(ctx, tp))
			if sc.IsValid() {
				links = append(links, trace.Link{SpanContext: sc})
			}
		}
	}
	return telemetry.Tracer().Start(ctx, "outbox.publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(links...), trace.WithAttributes(attribute.Int("messaging.batch.message_count", len(recs))))
}
