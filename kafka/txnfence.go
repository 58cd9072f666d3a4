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
// has no leader to take the transaction's marker: until that partition's
// broker returns, the coordinator refuses every producer of the id with
// CONCURRENT_TRANSACTIONS.
var ErrTransactionStuck = errors.New("the transactional id's last transaction cannot finish: a partition it wrote has no leader")

// stuckAfter is how long a transactional id may keep answering
// CONCURRENT_TRANSACTIONS before FenceTransactionalID asks why. Markers of
// an ended transaction are normally written within milliseconds; taking a
// slow one for a stuck one costs only a new transactional id.
const stuckAfter = 500 * time.Millisecond

// fenceRetry is the wait between InitProducerId attempts.
const fenceRetry = 25 * time.Millisecond

// TxClient is a client producing with a transactional id.
type TxClient struct {
	*kgo.Client
	id string
}

// NewTransactionalClient returns a client producing with transactional id
// id and transaction timeout txnTimeout, once FenceTransactionalID fenced
// every older producer of id. It returns an error wrapping
// ErrTransactionStuck, and no client, when id's last transaction cannot
// finish.
func NewTransactionalClient(ctx context.Context, c Config, id string, txnTimeout time.Duration, extra ...kgo.Opt) (*TxClient, error) {
	cl, err := NewClient(c, append([]kgo.Opt{kgo.TransactionalID(id), kgo.TransactionTimeout(txnTimeout)}, extra...)...)
	if err != nil {
		return nil, err
	}
	if err := FenceTransactionalID(ctx, cl, id, txnTimeout); err != nil {
		cl.Close()
		return nil, err
	}
	return &TxClient{Client: cl, id: id}, nil
}

// TransactionEnding reports whether the client's transactional id's last
// transaction has ended without being finished: its end is in the
// coordinator's log, a marker is still to be written. Meanwhile the
// coordinator refuses a new transaction of the id (CONCURRENT_TRANSACTIONS)
// and franz-go retries without end: normally for milliseconds, but for as
// long as a partition the transaction wrote has no leader.
func (c *TxClient) TransactionEnding(ctx context.Context) (bool, error) {
	state, err := transactionState(ctx, c.Client, c.id)
	if err != nil {
		return false, fmt.Errorf("describe transactional id %q: %w", c.id, err)
	}
	return prepared(state), nil
}

// FenceTransactionalID initialises transactional id id through cl (any
// client: the request is its own, apart from cl's producer state), which
// gives it a producer epoch newer than every producer's of it: a
// transaction in progress is aborted, and every older producer's records,
// sent or still to be sent, are refused or aborted, never visible to a
// read_committed consumer. It returns nil once the coordinator answered
// the initialisation, so that the caller's own producer of id initialises
// at once.
//
// While id's last transaction is ending the coordinator answers
// CONCURRENT_TRANSACTIONS, and FenceTransactionalID asks again. When that
// lasts over stuckAfter and the coordinator describes the transaction as
// prepared (PrepareAbort, PrepareCommit or PrepareEpochFence: ended, its
// end in the coordinator's log, only its markers missing), it returns an
// error wrapping ErrTransactionStuck: id is fenced, but nothing can be
// produced with it until the markers are written.
func FenceTransactionalID(ctx context.Context, cl *kgo.Client, id string, txnTimeout time.Duration) error {
	start := time.Now()
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
		case errors.Is(err, kerr.ConcurrentTransactions) && time.Since(start) >= stuckAfter:
			state, derr := transactionState(ctx, cl, id)
			if derr == nil && prepared(state) {
				return fmt.Errorf("fence transactional id %q: its transaction stays %s: %w", id, state, ErrTransactionStuck)
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

// transactionState returns the coordinator's state of id's transaction.
func transactionState(ctx context.Context, cl *kgo.Client, id string) (string, error) {
	described, err := kadm.NewClient(cl).DescribeTransactions(ctx, id)
	if err != nil {
		return "", err
	}
	t, ok := described[id]
	if !ok {
		return "", fmt.Errorf("transactional id %q not described", id)
	}
	if t.Err != nil {
		return "", t.Err
	}
	return t.State, nil
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
