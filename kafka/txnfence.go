package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrTransactionStuck says a transactional id's last transaction has ended
// (its abort or commit is written in the coordinator's log, and no producer
// of the id can add to it) but cannot finish, because a partition it wrote
// has no leader to take the transaction's marker: until that partition
// returns, the coordinator refuses every producer of the id with
// CONCURRENT_TRANSACTIONS.
var ErrTransactionStuck = errors.New("the transactional id's last transaction cannot finish: a partition it wrote has no leader")

// ErrCommitUnfinished says the coordinator wrote a transaction's commit in
// its log but cannot finish it, because a partition the transaction wrote
// has no leader to take its marker (or the marker is overdue, see
// stuckAfter). The commit stands: the transaction's records become visible
// to read_committed consumers as its partitions take their markers, the
// last when that partition returns. Until then the transactional id is
// stuck as ErrTransactionStuck says.
var ErrCommitUnfinished = errors.New("the transaction's commit is written but cannot finish: a partition it wrote has no leader")

// stuckAfter is how long a prepared transaction may stay unfinished before
// it counts as stuck although every partition it wrote has a leader (the
// leader may be dead but not yet replaced). Markers of an ended transaction
// are normally written within a second (Kafka 4.1's coordinator finishes a
// commit only at its followers' next fetch, up to replica.fetch.wait.max.ms
// later); taking a slow one for a stuck one costs only a new transactional
// id.
const stuckAfter = 5 * time.Second

// fenceRetry is the wait between InitProducerId attempts; describeEvery,
// between the descriptions of a transaction that keeps them waiting.
const (
	fenceRetry    = 25 * time.Millisecond
	describeEvery = 250 * time.Millisecond
)

// TxClient is a client producing with a transactional id.
type TxClient struct {
	*kgo.Client
	id string
}

// NewTransactionalClient returns a client producing with transactional id
// id and transaction timeout txnTimeout, once fenceTransactionalID fenced
// every older producer of id. It returns an error wrapping
// ErrTransactionStuck, and no client, when id's last transaction cannot
// finish.
func NewTransactionalClient(ctx context.Context, c Config, id string, txnTimeout time.Duration, extra ...kgo.Opt) (*TxClient, error) {
	cl, err := NewClient(c, append([]kgo.Opt{kgo.TransactionalID(id), kgo.TransactionTimeout(txnTimeout)}, extra...)...)
	if err != nil {
		return nil, err
	}
	if err := fenceTransactionalID(ctx, cl, id, txnTimeout); err != nil {
		cl.Close()
		return nil, err
	}
	return &TxClient{Client: cl, id: id}, nil
}

// TransactionStuck reports whether the client's transactional id's last
// transaction has ended but cannot finish (see transactionStuck; waited is
// how long the caller has been held up so far). Meanwhile the coordinator refuses a new
// transaction of the id (CONCURRENT_TRANSACTIONS) and franz-go retries
// without end.
func (c *TxClient) TransactionStuck(ctx context.Context, waited time.Duration) (bool, error) {
	_, why, err := transactionStuck(ctx, c.Client, c.id, waited)
	if err != nil {
		return false, fmt.Errorf("transactional id %q: %w", c.id, err)
	}
	return why != "", nil
}

// Commit commits the client's transaction (EndTransaction with
// kgo.TryCommit). While the coordinator answers that the transaction is
// still ending (CONCURRENT_TRANSACTIONS, which franz-go retries until ctx
// ends), Commit asks it every describeEvery how the transaction stands, and
// stops waiting once it is stuck (transactionStuck): with an error wrapping
// ErrCommitUnfinished when its commit is written, or ErrTransactionStuck
// when it was aborted. Either way the client cannot begin another
// transaction until the partition returns; close it.
//
// Only a transaction that wrote a partition reaches the coordinator (an
// empty one ends in the client), and the id's previous transaction had
// finished before it could, so the transaction described is the client's.
func (c *TxClient) Commit(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.EndTransaction(ctx, kgo.TryCommit) }()
	start := time.Now()
	tick := time.NewTicker(describeEvery)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
		}
		state, why, err := transactionStuck(ctx, c.Client, c.id, time.Since(start))
		if err != nil || why == "" {
			continue
		}
		cancel()
		if err := <-done; err == nil {
			return nil // committed and finished just before
		}
		if state == "PrepareCommit" {
			return fmt.Errorf("commit transaction of %q: %s: %w", c.id, why, ErrCommitUnfinished)
		}
		return fmt.Errorf("commit transaction of %q: %s: %w", c.id, why, ErrTransactionStuck)
	}
}

// fenceTransactionalID initialises transactional id id through cl (any
// client: the request is its own, apart from cl's producer state), which
// gives it a producer epoch newer than every producer's of it: a
// transaction in progress is aborted, and every older producer's records,
// sent or still to be sent, are refused or aborted, never visible to a
// read_committed consumer. It returns nil once the coordinator answered
// the initialisation, so that the caller's own producer of id initialises
// at once.
//
// While id's last transaction is ending the coordinator answers
// CONCURRENT_TRANSACTIONS, and fenceTransactionalID asks again. When the
// transaction is Stuck it returns an error wrapping ErrTransactionStuck: id
// is fenced, but nothing can be produced with it until the transaction's
// partition returns.
func fenceTransactionalID(ctx context.Context, cl *kgo.Client, id string, txnTimeout time.Duration) error {
	start := time.Now()
	described := start
	for {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = &id
		req.TransactionTimeoutMillis = int32(txnTimeout.Milliseconds())
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return fmt.Errorf("fence transactional id %q: %w", id, err)
		}
		err = kerr.ErrorForCode(resp.ErrorCode)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, kerr.ConcurrentTransactions) && !kerr.IsRetriable(err):
			return fmt.Errorf("fence transactional id %q: %w", id, err)
		case errors.Is(err, kerr.ConcurrentTransactions) && time.Since(described) >= describeEvery:
			described = time.Now()
			if _, why, derr := transactionStuck(ctx, cl, id, time.Since(start)); derr == nil && why != "" {
				return fmt.Errorf("fence transactional id %q: %s: %w", id, why, ErrTransactionStuck)
			}
		}
		t := time.NewTimer(fenceRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("fence transactional id %q: %w (last answer: %w)", id, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// transactionStuck describes id's last transaction as the coordinator
// does: its state, and why, when not "", it is stuck: it has ended without
// being finished (PrepareCommit, PrepareAbort or PrepareEpochFence: its end
// is in the coordinator's log, markers are missing) and cannot finish
// soon, because a partition it wrote has no leader or the caller has
// waited for it stuckAfter already.
func transactionStuck(ctx context.Context, cl *kgo.Client, id string, waited time.Duration) (state, why string, err error) {
	adm := kadm.NewClient(cl)
	described, err := adm.DescribeTransactions(ctx, id)
	if err != nil {
		return "", "", fmt.Errorf("describe transaction: %w", err)
	}
	t, ok := described[id]
	switch {
	case !ok:
		return "", "", errors.New("describe transaction: not described")
	case t.Err != nil:
		return "", "", fmt.Errorf("describe transaction: %w", t.Err)
	case !prepared(t.State):
		return t.State, "", nil
	case waited >= stuckAfter:
		return t.State, fmt.Sprintf("its transaction stays %s after %s", t.State, waited.Round(time.Millisecond)), nil
	}
	if len(t.Topics) == 0 {
		return t.State, "", nil
	}
	md, err := adm.Metadata(ctx, t.Topics.Topics()...)
	if err != nil {
		return "", "", fmt.Errorf("metadata of the transaction's topics: %w", err)
	}
	t.Topics.Each(func(topic string, p int32) {
		if why != "" {
			return
		}
		if pd, ok := md.Topics[topic].Partitions[p]; !ok || pd.Leader < 0 {
			why = fmt.Sprintf("its transaction stays %s: partition %d of %s has no leader", t.State, p, topic)
		}
	})
	return t.State, why, nil
}

// prepared reports whether a transaction in state has ended, with its end
// in the coordinator's log, and waits only for its markers.
func prepared(state string) bool {
	switch state {
	case "PrepareAbort", "PrepareCommit", "PrepareEpochFence":
		return true
	}
	return false
}
