package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TxProducer is a lane's transactional producer (*kgo.Client with
// kgo.TransactionalID): each batch is one Kafka transaction.
type TxProducer interface {
	Producer
	BeginTransaction() error
	EndTransaction(ctx context.Context, commit kgo.TransactionEndTry) error
	AbortBufferedRecords(ctx context.Context) error
}

// laneProducer returns lane's transactional producer, making it with
// NewLaneProducer on first use or after the last one was given up. The
// caller is the publisher in the lane (Relay.taken), so no other goroutine
// uses the lane's producer meanwhile.
//
// A new producer's transactional id is the lane's, so the first record it
// produces initialises it with the transaction coordinator, which fences
// every older producer of the lane, in this replica or another: their
// transaction in progress is aborted, and records they still send are
// refused. A relay that lost its PostgreSQL session (and so its lane) while
// its records were in flight thus never lands them for read_committed
// consumers once another publisher has published in the lane.
func (w *Relay) laneProducer(lane int) (TxProducer, error) {
	if p := w.lanes[lane]; p != nil {
		return p, nil
	}
	p, err := w.cfg.NewLaneProducer(lane)
	if err != nil {
		return nil, fmt.Errorf("transactional producer of lane %d: %w", lane, err)
	}
	w.lanes[lane] = p
	return p, nil
}

// dropLaneProducer closes lane's producer: records it has not sent are
// never sent; the next batch in the lane makes a new one, which fences
// whatever this one still has in flight.
func (w *Relay) dropLaneProducer(lane int) {
	if p := w.lanes[lane]; p != nil {
		p.Close()
		w.lanes[lane] = nil
	}
}

// closeLaneProducers closes every lane's producer (Run's end).
func (w *Relay) closeLaneProducers() {
	for lane := range w.lanes {
		w.dropLaneProducer(lane)
	}
}

// endTransaction commits the batch's transaction when every record it
// produced was acknowledged, and aborts it otherwise (or when the commit
// fails), each within its own bound whatever ctx's deadline. It reports
// whether the records are committed. A producer that cannot end its
// transaction is dropped.
func (w *Relay) endTransaction(ctx context.Context, lane int, p TxProducer, b *batch) (committed bool, err error) {
	all := true
	for _, o := range b.outs {
		if o.parkErr == "" && !o.held && o.acked.IsZero() {
			all = false
		}
		if errFenced(o.err) {
			// Another publisher's producer of the lane took over: this one
			// can do nothing more; the next batch makes a new one.
			w.dropLaneProducer(lane)
			return false, nil
		}
	}
	if all {
		// A commit whose answer is cut short has an unknowable outcome
		// (franz-go can then only abort, and the rows would be published
		// again though they may be committed): so it gets as long as the
		// claim is held for records without an outcome.
		cctx, cancel := context.WithTimeout(ctx, w.cfg.ProduceTimeout+w.cfg.ResolveTimeout)
		err := p.EndTransaction(cctx, kgo.TryCommit)
		cancel()
		if err == nil {
			return true, nil
		}
		w.log.Warn("outbox: Kafka transaction not committed; aborting it, its rows are published again", "lane", lane, "error", err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ProduceTimeout)
	defer cancel()
	if err := p.AbortBufferedRecords(ctx); err != nil {
		w.dropLaneProducer(lane)
		return false, fmt.Errorf("abort buffered records: %w", err)
	}
	if err := p.EndTransaction(ctx, kgo.TryAbort); err != nil {
		w.dropLaneProducer(lane)
		return false, fmt.Errorf("abort transaction: %w", err)
	}
	return false, nil
}

// errFenced reports whether err says the producer was fenced by a newer
// one of its transactional id, or otherwise can no longer be used.
func errFenced(err error) bool {
	for _, e := range []error{kgo.ErrClientClosed, kerr.ProducerFenced, kerr.InvalidProducerEpoch,
		kerr.TransactionalIDAuthorizationFailed, kerr.InvalidProducerIDMapping} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
