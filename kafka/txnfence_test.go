package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/acme/orders-service/internal/kafkatest"
)

// TestFenceAbortsTheOpenTransaction: a new transactional client of an id
// fences the producer that has a transaction open: that producer can no
// longer commit, and a read_committed consumer never sees its record,
// while the new client's committed record is visible.
func TestFenceAbortsTheOpenTransaction(t *testing.T) {
	b := startKfake(t, kfake.SeedTopics(1, "fenced"))
	cfg := Config{Brokers: []string{b.Addr()}}
	ctx := testContext(t, 30*time.Second)

	old := newClient(t, cfg, kgo.TransactionalID("tx-fence"), kgo.TransactionTimeout(time.Minute))
	if err := old.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := old.ProduceSync(ctx, &kgo.Record{Topic: "fenced", Value: []byte("zombie")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	cl, err := NewTransactionalClient(ctx, cfg, "tx-fence", time.Minute)
	if err != nil {
		t.Fatalf("NewTransactionalClient: %v", err)
	}
	t.Cleanup(cl.Close)
	if err := old.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Fatal("the fenced producer committed its transaction")
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "fenced", Value: []byte("live")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit of the new producer: %v", err)
	}

	if got := readCommittedValues(t, ctx, cfg, "fenced"); len(got) != 1 || got[0] != "live" {
		t.Fatalf("read_committed got %q, want only the new producer's record", got)
	}
}

// readCommittedValues reads topic from the start read_committed until a
// poll returns records, and returns their values.
func readCommittedValues(t *testing.T, ctx context.Context, cfg Config, topic string) []string {
	t.Helper()
	rc := newClient(t, cfg, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []string
	for len(got) == 0 {
		fs := rc.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("reading the committed records of %s: %v", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

// TestFenceReportsAStuckTransaction: an id whose transaction is prepared
// and wrote a partition without a leader is reported stuck at once (after
// the first description); one whose prepared transaction's partitions all
// have leaders only after stuckAfter; one whose coordinator keeps answering
// CONCURRENT_TRANSACTIONS for a transaction still in progress never (only
// the caller's deadline ends the wait). Another id of the same coordinator
// is served throughout.
func TestFenceReportsAStuckTransaction(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, state, topic string
		after              time.Duration // reported stuck after about this long; 0: not stuck
	}{
		{"prepared, partition without a leader", "PrepareAbort", "gone", describeEvery},
		{"commit prepared, partition without a leader", "PrepareCommit", "gone", describeEvery},
		{"fence prepared, partition without a leader", "PrepareEpochFence", "gone", describeEvery},
		{"prepared, partitions with leaders", "PrepareCommit", "here", stuckAfter},
		{"in progress", "Ongoing", "gone", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startKfake(t, kfake.SeedTopics(1, "here"))
			cfg := Config{Brokers: []string{b.Addr()}}
			kafkatest.StuckTransaction(b.Cluster, "tx-stuck", tc.state, tc.topic)
			ctx, cancel := context.WithTimeout(context.Background(), stuckAfter+2*time.Second)
			defer cancel()
			start := time.Now()
			cl, err := NewTransactionalClient(ctx, cfg, "tx-stuck", time.Minute)
			took := time.Since(start)
			if cl != nil {
				cl.Close()
				t.Fatal("NewTransactionalClient returned a client of an id it could not initialise")
			}
			if got := errors.Is(err, ErrTransactionStuck); got != (tc.after > 0) {
				t.Fatalf("NewTransactionalClient = %v after %s; stuck %v, want %v", err, took, got, tc.after > 0)
			}
			if tc.after > 0 && (took < tc.after || took > tc.after+time.Second) {
				t.Errorf("reported stuck after %s, want about %s", took, tc.after)
			}
			if tc.after == 0 && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("NewTransactionalClient = %v, want the deadline's error", err)
			}

			other, err := NewTransactionalClient(testContext(t, 10*time.Second), cfg, "tx-other", time.Minute)
			if err != nil {
				t.Fatalf("another id of the coordinator: %v", err)
			}
			other.Close()
		})
	}
}

// TestCommitReportsAnUnfinishedCommit: a commit the coordinator wrote but
// cannot finish (a partition of the transaction lost its leader, so every
// EndTxn retry is answered CONCURRENT_TRANSACTIONS) ends Commit's wait
// after the first description, long before its deadline, with
// ErrCommitUnfinished; the transaction's record is then visible to a
// read_committed consumer. The id is stuck afterwards: a new client of it
// is refused with ErrTransactionStuck.
func TestCommitReportsAnUnfinishedCommit(t *testing.T) {
	t.Parallel()
	b := startKfake(t, kfake.SeedTopics(2, "unfinished"))
	cfg := Config{Brokers: []string{b.Addr()}}
	ctx := testContext(t, 30*time.Second)
	cl, err := NewTransactionalClient(ctx, cfg, "tx-unfinished", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	written := kafkatest.UnfinishedCommit(b.Cluster, "tx-unfinished", "unfinished", 2)
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "unfinished", Value: []byte("committed")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = cl.Commit(ctx)
	took := time.Since(start)
	if !errors.Is(err, ErrCommitUnfinished) {
		t.Fatalf("Commit = %v after %s, want ErrCommitUnfinished", err, took)
	}
	if took > describeEvery+2*time.Second {
		t.Errorf("Commit gave up after %s, want about %s", took, describeEvery)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}

	if got := readCommittedValues(t, ctx, cfg, "unfinished"); len(got) != 1 || got[0] != "committed" {
		t.Fatalf("read_committed got %q, want the committed record", got)
	}

	if _, err := NewTransactionalClient(ctx, cfg, "tx-unfinished", time.Minute); !errors.Is(err, ErrTransactionStuck) {
		t.Fatalf("a new client of the id: %v, want ErrTransactionStuck", err)
	}
}

// TestCommitWaitsForACommitInProgress: while the coordinator answers
// CONCURRENT_TRANSACTIONS for a transaction it does not describe as stuck
// (still in progress), Commit waits until its context ends.
func TestCommitWaitsForACommitInProgress(t *testing.T) {
	t.Parallel()
	b := startKfake(t, kfake.SeedTopics(1, "slow"))
	cfg := Config{Brokers: []string{b.Addr()}}
	cl, err := NewTransactionalClient(testContext(t, 10*time.Second), cfg, "tx-slow", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(testContext(t, 10*time.Second), &kgo.Record{Topic: "slow", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	kafkatest.StuckTransaction(b.Cluster, "tx-slow", "Ongoing", "gone")
	b.ControlKey(int16(kmsg.EndTxn), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		b.KeepControl()
		resp := kr.(*kmsg.EndTxnRequest).ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.ConcurrentTransactions.Code
		return resp, nil, true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*describeEvery)
	defer cancel()
	start := time.Now()
	err = cl.Commit(ctx)
	if took := time.Since(start); errors.Is(err, ErrCommitUnfinished) || errors.Is(err, ErrTransactionStuck) || took < 4*describeEvery {
		t.Fatalf("Commit = %v after %s, want an error at its deadline, %s", err, took, 4*describeEvery)
	}
}
