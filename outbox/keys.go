package outbox

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
)

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

// waits is the relay's per-key state across batches: the keys whose record
// failed retriably, each with its own backoff. The claim leaves their rows
// out until the backoff ends, so a stuck key holds back only itself and
// every other key keeps flowing. It is shared by a replica's publishers,
// since any of them may take the key's lane next.
type waits struct {
	min, max time.Duration

	mu   sync.Mutex
	keys map[string]*keyWait
}

// keyWait is one waiting key.
type keyWait struct {
	rec     postgres.OutboxRecord // the row that failed (its topic and key)
	until   time.Time             // the key's rows are claimed again after this
	backoff time.Duration         // the wait after the last failure
}

func newWaits(min, max time.Duration) *waits {
	return &waits{min: min, max: max, keys: map[string]*keyWait{}}
}

// skip returns the keys still waiting at now, for the claim to leave out,
// and forgets keys whose wait ended long ago.
func (s *waits) skip(now time.Time) postgres.OutboxSkip {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sk postgres.OutboxSkip
	for k, w := range s.keys {
		switch {
		case now.Before(w.until):
			sk.Add(w.rec)
		case now.Sub(w.until) > 2*s.max:
			delete(s.keys, k)
		}
	}
	return sk
}

// next returns when the earliest wait ends; zero when none is waiting.
func (s *waits) next(now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var t time.Time
	for _, w := range s.keys {
		if now.Before(w.until) && (t.IsZero() || w.until.Before(t)) {
			t = w.until
		}
	}
	return t
}

// fail makes r's key wait: twice its last wait, from min to max.
func (s *waits) fail(r postgres.OutboxRecord, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := keyOf(r)
	w := s.keys[k]
	if w == nil {
		w = &keyWait{}
		s.keys[k] = w
	}
	w.rec = r
	w.backoff = min(max(2*w.backoff, s.min), s.max)
	w.until = now.Add(w.backoff)
}

// holdUntil makes r's key wait until at least until (its partition is
// held back), leaving its own backoff as it is.
func (s *waits) holdUntil(r postgres.OutboxRecord, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := keyOf(r)
	w := s.keys[k]
	if w == nil {
		w = &keyWait{}
		s.keys[k] = w
	}
	w.rec = r
	if until.After(w.until) {
		w.until = until
	}
}

// clear forgets every waiting key.
func (s *waits) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.keys)
}

// done forgets the key of r: its rows went out.
func (s *waits) done(r postgres.OutboxRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, keyOf(r))
}

// outcome is what became of one claimed row's record.
type outcome struct {
	acked   time.Time // when Kafka acknowledged it; zero when not
	err     error     // the produce error, nil when acknowledged or without an outcome
	parkErr string    // non-empty: park the row with this error
	hold    bool      // leave the row unsent for a later claim

	held      bool  // its partition is held back (partitions.go): not produced
	partition int32 // the record's partition when known (the client's, or mark's); -1 when not
}

// batch is one claimed batch walked in id order, once before producing
// (plan) and once after every record has an outcome (settle), with the state
// of each of its keys: open, parked (behind which row) or waiting.
type batch struct {
	recs    []postgres.OutboxRecord
	krecs   []*kgo.Record
	outs    []outcome
	parked  map[string]int64 // plan's state: key -> the row its later rows park behind
	cut     bool             // produce gave up on its records without an outcome (StallTimeout)
	blocked bool             // produce gave up: the lane's last transaction is not finished, so none of its records can be appended
	// deadline ends the time the batch may take in Kafka, records and
	// transaction (ProduceTimeout+ResolveTimeout after its claim).
	deadline time.Time
}

// endContext returns ctx bounded for ending the batch's transaction: by
// the batch's deadline, or endFloor from now if that is later.
func (b *batch) endContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithDeadline(ctx, later(b.deadline, time.Now().Add(endFloor)))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// newBatch returns recs as a batch, with their Kafka records.
func newBatch(recs []postgres.OutboxRecord) *batch {
	b := &batch{recs: recs, krecs: make([]*kgo.Record, len(recs)), outs: make([]outcome, len(recs)), parked: map[string]int64{}}
	for i, r := range recs {
		b.krecs[i] = record(r)
		b.outs[i].partition = -1
	}
	return b
}

// plan decides, before producing, which rows to park: rows behind an
// earlier parked row of their key (firstParked, from postgres.ParkedKeys),
// and rows whose record could never fit maxBytes, with the later rows of
// their keys. The rest are produced.
func (b *batch) plan(firstParked map[string]int64, maxBytes int) {
	for i, r := range b.recs {
		k := keyOf(r)
		switch first := firstParked[k]; {
		case b.parked[k] != 0:
			b.outs[i].parkErr = fmt.Sprintf("parked behind parked outbox row %d of the same key", b.parked[k])
		case first != 0 && first < r.ID:
			b.outs[i].parkErr = fmt.Sprintf("parked behind an earlier parked row of topic %s key %s", r.Topic, kafka.KeyText(r.Key))
			b.parked[k] = first
		default:
			kr := b.krecs[i]
			if n := kafka.RecordBatchBytes(kr.Key, len(kr.Value), kr.Headers); n > maxBytes {
				b.outs[i].parkErr = fmt.Sprintf("%v (a record batch of %d bytes; the producer's limit is %d)", kerr.MessageTooLarge, n, maxBytes)
				b.parked[k] = r.ID
			}
		}
	}
}

// anyAcked reports whether Kafka acknowledged any of the batch's records.
func (b *batch) anyAcked() bool {
	for _, o := range b.outs {
		if !o.acked.IsZero() {
			return true
		}
	}
	return false
}

// settled is what settle decided: the rows to mark and park, the rows whose
// keys now wait, and the first error that left a row unsent.
type settled struct {
	marks    postgres.OutboxMarks
	sent     []int // indexes of the rows marked sent
	waiting  []int // indexes of the rows whose key waits
	held     []int // indexes of the rows not produced: their partition is held back
	overtook []int // indexes of rows Kafka took after refusing an earlier row of their key
	err      error
}

// settle decides, in id order, what becomes of each row once its record
// has an outcome or never will (committed: whether the records Kafka
// acknowledged are visible, false when their transaction aborted).
// Acknowledged rows are marked sent; rows Kafka refused for good are parked,
// and later rows of their keys behind them unless Kafka already
// acknowledged them; a row that failed otherwise, or has no outcome, stays
// unsent and its key waits, with every later row of the key, even those
// acknowledged (republished after it, in order). So a later row of a key is
// never marked before an earlier unresolved one.
func (b *batch) settle(committed bool) settled {
	var s settled
	retry := map[string]bool{}
	parked := map[string]int64{} // key -> its first row parked, of those walked so far
	unsent := 0
	for i, r := range b.recs {
		o := &b.outs[i]
		k := keyOf(r)
		switch {
		case o.parkErr != "":
			if parked[k] == 0 {
				parked[k] = r.ID
			}
		case parked[k] != 0 && !o.acked.IsZero() && committed:
			// Kafka refused an earlier row of the key for good and took
			// this one: it is out, so it is marked, and logged.
			s.overtook = append(s.overtook, i)
		case parked[k] != 0:
			o.parkErr = fmt.Sprintf("parked behind parked outbox row %d of the same key", parked[k])
		case o.held:
			o.hold = true
			retry[k] = true
			unsent++
			s.held = append(s.held, i)
		case retry[k]:
			o.hold = true
			unsent++
		case !o.acked.IsZero() && committed:
		case !o.acked.IsZero():
			o.hold = true // acknowledged in a transaction that aborted: published again, unseen by read_committed readers
			unsent++
		case o.err != nil && permanent(o.err):
			o.parkErr = fmt.Sprintf("topic %s key %s: %v", r.Topic, kafka.KeyText(r.Key), o.err)
			parked[k] = r.ID
		default:
			o.hold = true
			retry[k] = true
			unsent++
			s.waiting = append(s.waiting, i)
			if s.err == nil {
				cause := o.err
				if cause == nil {
					cause = errUnresolved
				}
				s.err = fmt.Errorf("topic %s key %s event %s: %w", r.Topic, kafka.KeyText(r.Key), r.EventID, cause)
			}
		}
	}
	for i, o := range b.outs {
		switch {
		case o.parkErr != "":
			s.marks.Parked = append(s.marks.Parked, b.recs[i].ID)
			s.marks.ParkErrs = append(s.marks.ParkErrs, o.parkErr)
		case !o.hold:
			s.marks.Sent = append(s.marks.Sent, b.recs[i].ID)
			s.sent = append(s.sent, i)
		}
	}
	if s.err != nil {
		s.err = fmt.Errorf("produce: %d of %d records left unsent for a retry, first: %w", unsent, len(b.recs), s.err)
	}
	return s
}

// record is the Kafka record of outbox row r.
func record(r postgres.OutboxRecord) *kgo.Record {
	headers := make([]kgo.RecordHeader, len(r.Headers))
	for j, h := range r.Headers {
		headers[j] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
	}
	// Partition -1 until the client partitions it: a record that fails
	// before that names no partition.
	return &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Payload, Headers: headers, Partition: -1}
}
