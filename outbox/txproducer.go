package outbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/kafka"
)

// TxProducer is a lane's transactional producer (*kafka.TxClient): each
// batch is one Kafka transaction.
type TxProducer interface {
	Producer
	BeginTransaction() error
	EndTransaction(ctx context.Context, commit kgo.TransactionEndTry) error
	AbortBufferedRecords(ctx context.Context) error
	// Commit commits the transaction; an error wrapping
	// kafka.ErrCommitUnfinished says the commit stands but cannot finish
	// until a partition returns (kafka.TxClient.Commit).
	Commit(ctx context.Context) error
	// TransactionStuck reports whether the producer's transactional id's
	// last transaction has ended but cannot finish, which holds back the
	// next one; waited is how long the caller has been held up
	// (kafka.TxClient.TransactionStuck).
	TransactionStuck(ctx context.Context, waited time.Duration) (bool, error)
}

// TransactionalID is the transactional id of a lane's producers in
// generation: prefix and the lane, then ".g" and the generation above 0.
// An access control list allowing the prefix covers every lane and
// generation.
func TransactionalID(prefix string, lane, generation int) string {
	id := prefix + strconv.Itoa(lane)
	if generation > 0 {
		id += ".g" + strconv.Itoa(generation)
	}
	return id
}

// laneProducer returns lane's transactional producer of generation (the
// lane's, read under its lock), making it with NewLaneProducer on first
// use, after the last one was given up, or when the lane moved to another
// generation meanwhile. The caller is the publisher in the lane
// (Relay.taken), so no other goroutine uses the lane's producer meanwhile.
//
// A new producer first fences every older producer of its transactional
// id, in this replica or another: their transaction in progress is
// aborted, and records they still send are refused. A relay that lost its
// PostgreSQL session (and so its lane) while its records were in flight
// thus never lands them for read_committed consumers once another
// publisher has published in the lane.
//
// When the id's last transaction has ended but cannot finish (a partition
// it wrote lost its only replica), its producers are fenced but no new one
// can produce until the partition returns. laneProducer then returns
// kafka.ErrTransactionStuck, and the batch moves the lane to its next
// generation: a new transactional id, which every later holder of the lane
// uses and so fences. The fence holds across the move: every producer of
// an older generation was fenced before it.
func (w *Relay) laneProducer(ctx context.Context, lane, generation int) (TxProducer, error) {
	if p := w.lanes[lane]; p != nil && w.laneGens[lane] == generation {
		return p, nil
	}
	w.dropLaneProducer(lane)
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ProduceTimeout)
	defer cancel()
	p, err := w.cfg.NewLaneProducer(ctx, lane, generation)
	if err != nil {
		return nil, fmt.Errorf("transactional producer of lane %d generation %d: %w", lane, generation, err)
	}
	w.lanes[lane], w.laneGens[lane] = p, generation
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
// fails), by the batch's deadline or within endFloor each, whichever is
// later, whatever ctx's. It reports whether the records are committed. A
// producer that cannot end its transaction is dropped.
//
// A commit the coordinator wrote but cannot finish (a partition of the
// transaction lost its leader) stands: endTransaction reports it committed,
// with an error wrapping kafka.ErrCommitUnfinished, and drops the producer,
// whose transactional id cannot be used until the partition returns.
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
		// batch may take.
		cctx, cancel := b.endContext(ctx)
		err := p.Commit(cctx)
		cancel()
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, kafka.ErrCommitUnfinished):
			w.dropLaneProducer(lane)
			return true, err
		case errors.Is(err, kafka.ErrTransactionStuck):
			// Aborted, and the abort cannot finish: nothing to end.
			w.dropLaneProducer(lane)
			return false, nil
		}
		w.log.Warn("outbox: Kafka transaction not committed; aborting it, its rows are published again", "lane", lane, "error", err)
	}
	ctx, cancel := b.endContext(ctx)
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
