package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

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

	rc := newClient(t, cfg, kgo.ConsumeTopics("fenced"), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []string
	for len(got) == 0 {
		fs := rc.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("reading the committed record: %v", err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != 1 || got[0] != "live" {
		t.Fatalf("read_committed got %q, want only the new producer's record", got)
	}
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
