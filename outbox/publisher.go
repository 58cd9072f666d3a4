package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/telemetry"
)

// publisher publishes one lane's batch at a time through its producer.
type publisher struct {
	w        *Relay
	producer Producer
}

// batchResult is what one lane's batch did.
type batchResult struct {
	busy     bool // another publisher holds the lane
	rows     int  // rows claimed
	parked   int  // rows parked
	aborted  bool // rows acknowledged in a transaction that aborted wait to be published again at once
	again    bool // the batch was given up before any of it reached Kafka (see send): the lane is published again at once
	noAnswer bool // the batch failed because Kafka did not answer (unreachable), not with an error of Kafka's
}

// publishBatch publishes one batch of lane in one transaction: take the
// lane's lock, claim rows neither sent nor parked nor of a waiting key,
// park those that can never be produced (and later rows of their keys),
// produce the rest, and once every record has an outcome (or, past
// ResolveTimeout, never will) mark the acknowledged ones sent and park
// those Kafka refused for good. A row that failed otherwise stays unsent
// and its key waits with its own backoff (keys.go); the batch fails as a
// whole only when PostgreSQL fails or no record reached Kafka.
func (p *publisher) publishBatch(ctx context.Context, lane int) (batchResult, error) {
	w := p.w
	// Finish the batch even when ctx ends meanwhile: records Kafka already
	// acknowledged are then marked, not republished after a restart.
	idle := w.cfg.ProduceTimeout + w.cfg.ResolveTimeout + idleGrace
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idle+idleGrace)
	defer cancel()

	var res batchResult
	var b *batch
	var s settled
	var fatal error
	busy, err := w.db.PublishOutboxLane(bctx, lane, w.cfg.BatchSize, idle, w.waits.skip(time.Now()),
		func(recs []postgres.OutboxRecord, firstParked map[string]int64, generation int) (postgres.OutboxMarks, error) {
			res.rows = len(recs)
			b = newBatch(recs)
			b.deadline = time.Now().Add(w.cfg.ProduceTimeout + w.cfg.ResolveTimeout)
			b.plan(firstParked, w.cfg.MaxRecordBytes)
			w.parts.mark(bctx, b)
			pctx, span := w.publishSpan(bctx, recs)
			defer span.End()
			committed, err := p.send(pctx, lane, generation, b)
			var move bool
			switch {
			case errors.Is(err, kafka.ErrTransactionStuck):
				w.log.Warn("outbox: the lane's Kafka transactional id cannot produce until a partition returns; the lane moves to a new one",
					"lane", lane, "generation", generation+1, "error", err)
				res.again = true
				return postgres.OutboxMarks{NextGeneration: true}, nil
			case errors.Is(err, kafka.ErrCommitUnfinished):
				// Its records are visible as their partitions take the
				// markers; the id cannot produce until the partition
				// returns.
				w.log.Warn("outbox: the lane's Kafka transaction is committed but cannot finish until a partition returns; its rows are sent, and the lane moves to a new one",
					"lane", lane, "generation", generation+1, "error", err)
				move, err = true, nil
			case errors.Is(err, errBlocked):
				w.log.Info("outbox: the lane's last Kafka transaction is not finished; making the lane's producer again", "lane", lane)
				res.again = true
				return postgres.OutboxMarks{}, nil
			}
			if err != nil {
				fatal = err
			}
			s = b.settle(committed)
			if s.err != nil {
				span.RecordError(s.err)
				span.SetStatus(codes.Error, "records left unsent")
			}
			if !committed {
				res.aborted = true
				if len(s.waiting) == 0 && fatal == nil {
					fatal = errors.New("kafka transaction aborted")
				}
			}
			// Nothing reached Kafka: the relay backs off (and its keys wait).
			res.noAnswer = !b.anyAcked() && len(s.waiting) > 0 && !kafkaAnswered(s.err)
			res.parked = len(s.marks.Parked)
			s.marks.NextGeneration = move
			return s.marks, nil
		})
	if busy {
		res.busy = true
		w.lockBusy.Add(1)
	}
	if err != nil {
		return res, cmp.Or(fatal, err)
	}
	if b == nil || res.again {
		return res, fatal
	}
	now := time.Now()
	for _, i := range s.sent {
		w.waits.done(b.recs[i])
		w.m.published.Inc()
		w.m.latency.Observe(max(b.outs[i].acked.Sub(b.recs[i].CreatedAt).Seconds(), 0))
	}
	for _, i := range s.waiting {
		w.waits.fail(b.recs[i], now)
	}
	w.parts.settle(bctx, b, s, &res, now)
	if res.noAnswer {
		return res, cmp.Or(fatal, s.err)
	}
	if s.err != nil {
		w.m.errors.Inc()
		w.log.Warn("outbox records left unsent; their keys wait, the others go on", "lane", lane, "error", s.err, "keys_waiting", len(s.waiting))
	}
	for _, i := range s.overtook {
		r := b.recs[i]
		w.log.Error("outbox record reached Kafka although an earlier row of its key was parked",
			"outbox_id", r.ID, "event_id", r.EventID, "topic", r.Topic, "key", kafka.KeyText(r.Key))
	}
	if res.parked > 0 {
		w.m.parked.Add(float64(res.parked))
		for i, o := range b.outs {
			if o.parkErr != "" {
				r := b.recs[i]
				w.log.Error("outbox row parked: Kafka will never accept it; re-drive it once the cause is fixed",
					"outbox_id", r.ID, "event_id", r.EventID, "topic", r.Topic, "key", kafka.KeyText(r.Key), "error", o.parkErr)
			}
		}
	}
	return res, fatal
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

// produce sends the rows plan left to produce and records each one's
// outcome in b.outs. It waits up to ProduceTimeout for them, then, while
// records the client already sent have no outcome, up to ResolveTimeout
// longer: the caller's claim stays held meanwhile. When even that passes,
// it closes the producer, so those records are never sent again, and
// replaces it; the records without an outcome stay so (their keys wait).
// It returns ErrStalled when it cannot replace the producer.
func (p *publisher) produce(ctx context.Context, lane int, producer Producer, b *batch) error {
	w := p.w
	pctx, cancel := context.WithTimeout(ctx, w.cfg.ProduceTimeout)
	defer cancel()

	var (
		mu      sync.Mutex
		pending int
		lastAck time.Time // the latest acknowledgement of the batch
		wg      sync.WaitGroup
	)
	for i := range b.recs {
		if b.outs[i].parkErr == "" && !b.outs[i].held {
			pending++
		}
	}
	outs := make([]outcome, len(b.outs)) // written by the promises, copied to b.outs under mu
	for i := range outs {
		outs[i].partition = -1
	}
	wg.Add(pending)
	for i, rec := range b.krecs {
		if b.outs[i].parkErr != "" || b.outs[i].held {
			continue
		}
		producer.Produce(pctx, rec, func(r *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			pending--
			outs[i].partition = r.Partition
			if err != nil {
				outs[i].err = err
				return
			}
			outs[i].acked = time.Now()
			lastAck = outs[i].acked
		})
	}
	collect := func() {
		mu.Lock()
		defer mu.Unlock()
		for i := range outs {
			b.outs[i].acked, b.outs[i].err = outs[i].acked, outs[i].err
			if outs[i].partition >= 0 {
				b.outs[i].partition = outs[i].partition
			}
		}
	}
	// cut gives up on the records without an outcome when the rest of the
	// batch was acknowledged more than StallTimeout ago (see Options).
	// It also gives up, StallTimeout after they were produced, on records
	// that are all of partitions held back (partitions.go).
	start := time.Now()
	cut := func() bool {
		mu.Lock()
		stalled := pending > 0 && !lastAck.IsZero() && time.Since(lastAck) >= w.cfg.StallTimeout
		var idx []int
		if pending > 0 && !stalled && time.Since(start) >= w.cfg.StallTimeout && w.parts.anyHeld() {
			for i := range outs {
				if outs[i].acked.IsZero() && outs[i].err == nil && b.outs[i].parkErr == "" && !b.outs[i].held {
					idx = append(idx, i)
				}
			}
		}
		mu.Unlock()
		if !stalled && (len(idx) == 0 || !w.parts.allHeld(ctx, b, idx)) {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		b.cut = true
		for i := range outs {
			b.outs[i].acked, b.outs[i].err = outs[i].acked, outs[i].err
			if outs[i].partition >= 0 {
				b.outs[i].partition = outs[i].partition
			}
			if outs[i].acked.IsZero() && outs[i].err == nil && b.outs[i].parkErr == "" && !b.outs[i].held {
				b.outs[i].err = errStalledRecord
			}
		}
		w.log.Warn("outbox batch cut: records without an outcome long after the rest were acknowledged; their keys wait, the other rows are published again",
			"lane", lane, "unanswered", pending, "of", len(b.recs), "stall_timeout", w.cfg.StallTimeout)
		return true
	}
	// ending reports, while nothing of the batch is acknowledged, whether
	// the lane's last transaction has ended but cannot finish (a partition
	// it wrote has no leader, kafka.TxClient.TransactionStuck): until it
	// finishes none of this one's records can be appended. The batch is
	// then given up and the lane's producer made again, which moves the
	// lane to a new transactional id (send). It asks the coordinator from
	// StallTimeout/2 on, at most every StallTimeout/4, before and after
	// ProduceTimeout.
	var (
		tp          TxProducer
		stallCheck  <-chan time.Time
		endingCheck = start.Add(w.cfg.StallTimeout / 4)
	)
	ending := func() bool {
		mu.Lock()
		quiet := pending > 0 && lastAck.IsZero()
		mu.Unlock()
		if !quiet || time.Since(endingCheck) < w.cfg.StallTimeout/4 {
			return false
		}
		endingCheck = time.Now()
		dctx, cancel := context.WithTimeout(ctx, w.cfg.StallTimeout)
		defer cancel()
		stuck, err := tp.TransactionStuck(dctx, time.Since(start))
		return err == nil && stuck
	}
	if p, tx := producer.(TxProducer); tx {
		tp = p
		t := time.NewTicker(max(w.cfg.StallTimeout/4, 10*time.Millisecond))
		defer t.Stop()
		stallCheck = t.C
	}

	// The batch is complete: waiting for the linger to fill it further
	// would only hold the transaction (and its connection) open longer.
	// Flush also keeps the client from lingering until pctx ends.
	go producer.Flush(pctx)
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
wait:
	for {
		select {
		case <-done:
			collect()
			return nil
		case <-stallCheck:
			if cut() {
				w.parts.holdCut(ctx, b) // at once: other lanes' batches leave its rows out from now
				return nil
			}
			if ending() {
				b.blocked = true
				return nil
			}
		case <-pctx.Done():
			break wait
		}
	}
	grace := time.NewTimer(failGrace)
	defer grace.Stop()
	select {
	case <-done:
		collect()
		return nil
	case <-grace.C:
	}

	// Records the client sent cannot be failed: the broker may have
	// appended them. Keep the claim until they have an outcome, so no
	// other publisher publishes in the lane behind them.
	w.awaiting.Store(true)
	defer w.awaiting.Store(false)
	w.m.errors.Inc() // the batch missed its deadline: an outage shows now, not after ResolveTimeout
	mu.Lock()
	w.log.Warn("outbox keeps its claim until Kafka answers for records it sent",
		"unresolved", pending, "of", len(b.recs), "produce_timeout", w.cfg.ProduceTimeout, "resolve_timeout", w.cfg.ResolveTimeout)
	mu.Unlock()
	bound := time.NewTimer(w.cfg.ResolveTimeout)
	defer bound.Stop()
	// With transactions, records all of partitions held back (their leader
	// is gone) are given up on at once: the lane's next producer fences
	// their transaction, so they can never become visible.
	var heldCheck <-chan time.Time
	if w.cfg.NewLaneProducer != nil && w.parts.on() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		heldCheck = t.C
	}
resolve:
	for {
		select {
		case <-done:
			w.log.Info("outbox records resolved, finishing the batch")
			collect()
			return nil
		case <-bound.C:
			break resolve
		case <-stallCheck:
			if ending() {
				b.blocked = true
				return nil
			}
		case <-heldCheck:
			var idx []int
			mu.Lock()
			for i := range outs {
				if outs[i].acked.IsZero() && outs[i].err == nil && b.outs[i].parkErr == "" && !b.outs[i].held {
					idx = append(idx, i)
				}
			}
			mu.Unlock()
			if len(idx) > 0 && w.parts.allHeld(ctx, b, idx) {
				break resolve
			}
		}
	}
	// Give up on the records without an outcome: close the producer first,
	// so they can never be sent again, then keep what the promises said
	// until now (the closed client fails the rest, which changes nothing:
	// without an outcome they stay unsent either way).
	mu.Lock()
	n := pending
	for i := range outs {
		b.outs[i].acked, b.outs[i].err = outs[i].acked, outs[i].err
		if outs[i].partition >= 0 {
			b.outs[i].partition = outs[i].partition
		}
		if outs[i].acked.IsZero() && outs[i].err == nil && b.outs[i].parkErr == "" && !b.outs[i].held {
			b.outs[i].err = errUnresolved
		}
	}
	mu.Unlock()
	cause := fmt.Errorf("produce: %d of %d records without an outcome after %s: %w",
		n, len(b.recs), w.cfg.ProduceTimeout+w.cfg.ResolveTimeout, errUnresolved)
	if w.cfg.NewLaneProducer != nil {
		// The lane's next producer fences this one's transaction.
		w.log.Error("outbox closing the lane's Kafka producer: records stayed without an outcome; they will never be committed", "lane", lane, "error", cause)
		w.dropLaneProducer(lane)
		return nil
	}
	return p.replaceProducer(cause)
}

// send produces the batch: through the publisher's producer, or, with
// transactions, in one transaction of the lane's producer, committed only
// when every record was acknowledged. It reports whether the records
// Kafka acknowledged are committed (visible, or, with an error wrapping
// kafka.ErrCommitUnfinished, as their partitions take the markers).
func (p *publisher) send(ctx context.Context, lane, generation int, b *batch) (committed bool, err error) {
	w := p.w
	if w.cfg.NewLaneProducer == nil {
		return true, p.produce(ctx, lane, p.producer, b)
	}
	lp, err := w.laneProducer(ctx, lane, generation)
	if err != nil {
		return false, err
	}
	if err := lp.BeginTransaction(); err != nil {
		w.dropLaneProducer(lane)
		return false, fmt.Errorf("begin Kafka transaction: %w", err)
	}
	if err := p.produce(ctx, lane, lp, b); err != nil {
		return false, err
	}
	if b.blocked {
		// The lane's next producer fences the id first, which aborts this
		// batch's transaction should it have begun after all (the last one
		// finishing meanwhile), and moves the lane to a new id if the last
		// one stays unfinished (laneProducer).
		w.dropLaneProducer(lane)
		return false, errBlocked
	}
	if b.cut && w.lanes[lane] == lp {
		// Aborting would wait for the requests to a broker that does not
		// answer (up to ProduceTimeout); the lane's next producer fences
		// this one's transaction instead, at once.
		w.lanes[lane] = nil
		go lp.Close()
		return false, nil
	}
	if w.lanes[lane] != lp {
		return false, nil // given up on: its transaction is fenced by the next
	}
	// End the transaction even when ctx ends (a publish span's context):
	// an open one holds back read_committed consumers.
	return w.endTransaction(context.WithoutCancel(ctx), lane, lp, b)
}

var (
	errBlocked       = errors.New("the lane's last Kafka transaction is not finished")
	errUnresolved    = errors.New("records unresolved")
	errStalledRecord = errors.New("no outcome long after the rest of its batch was acknowledged")
)

// replaceProducer closes the producer whose records stayed without an
// outcome, while the caller still holds the claim, and installs a new one
// from NewProducer. Without NewProducer the relay stops: Run returns
// ErrStalled (after the batch marked what Kafka acknowledged).
func (p *publisher) replaceProducer(cause error) error {
	w := p.w
	w.log.Error("outbox closing its Kafka producer: records stayed without an outcome; they will never be sent again", "error", cause)
	if w.cfg.NewProducer == nil {
		w.stalled.Store(true)
		return fmt.Errorf("%w: %w", ErrStalled, cause)
	}
	p.producer.Close()
	np, err := w.cfg.NewProducer()
	if err != nil {
		w.stalled.Store(true)
		return fmt.Errorf("%w: new producer: %w (after %w)", ErrStalled, err, cause)
	}
	if cl, ok := np.(*kgo.Client); ok && p == w.pubs[0] && w.parts.on() {
		w.parts.cl.Store(cl) // the partitions' metadata was asked through the closed one
	}
	p.producer = np
	return nil
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
func (w *Relay) backOff(ctx context.Context, p *publisher, d time.Duration, noAnswer bool) {
	deadline := time.Now().Add(d)
	pg, ok := p.producer.(pinger)
	if !ok || d <= w.probeInterval {
		sleepCtx(ctx, d)
		return
	}
	down := false
	for ctx.Err() == nil {
		next := time.Now().Add(w.probeInterval)
		pctx, cancel := context.WithDeadline(ctx, next)
		err := pg.Ping(pctx)
		cancel()
		switch {
		case err != nil:
			down = true
		case noAnswer || down:
			w.log.Info("outbox: Kafka answers again, retrying now")
			w.waits.clear() // keys that failed while Kafka was away need not wait longer
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
