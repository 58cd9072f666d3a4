package outbox

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres/pgtest"
)

// silentKey is a lane's transactional producer that never answers for the
// records of one key while silent is set, as for a partition without a
// leader: they stay without an outcome until the batch gives up on them
// (AbortBufferedRecords fails them, as the client does).
type silentKey struct {
	TxProducer
	key string

	mu     sync.Mutex
	silent bool
	held   []func()
}

func (s *silentKey) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.silent && string(r.Key) == s.key {
		s.held = append(s.held, func() { promise(r, kgo.ErrAborting) })
		return
	}
	s.TxProducer.Produce(ctx, r, promise)
}

func (s *silentKey) AbortBufferedRecords(ctx context.Context) error {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for _, fail := range held {
		fail()
	}
	return s.TxProducer.AbortBufferedRecords(ctx)
}

func (s *silentKey) setSilent(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.silent = on
}

// TestStalledRecordsCutTheBatch: with transactions, Kafka never answers for
// one key's records while it acknowledges the rest of their batch. The
// batch is cut after StallTimeout, far short of ProduceTimeout: the other
// keys of the same lane are published while the silent key waits, and the
// silent key's rows arrive in order, once each, when it answers again.
func TestStalledRecordsCutTheBatch(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	c := collectWith(t, addr, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	const stuckKey = "stuck"
	lane := laneOf(t, db, stuckKey)
	var others []string
	for i := 0; len(others) < 20; i++ {
		if k := fmt.Sprintf("order-%d", i); laneOf(t, db, k) == lane {
			others = append(others, k)
		}
	}
	stuck := insertRows(t, db, topic, stuckKey, 5)
	for _, k := range others {
		insertRows(t, db, topic, k, 2)
	}
	var mu sync.Mutex
	producers := map[int]*silentKey{}
	made := laneProducers(addr, "tx-stall-")
	silent := true
	newLane := func(ctx context.Context, l, generation int) (TxProducer, error) {
		p, err := made(ctx, l, generation)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		s := &silentKey{TxProducer: p, key: stuckKey, silent: silent}
		producers[l] = s
		return s, nil
	}
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 50 * time.Millisecond,
		ProduceTimeout: time.Minute, StallTimeout: 200 * time.Millisecond, NewLaneProducer: newLane})
	start(t, w)

	poll.Eventually(t, 15*time.Second, "the lane's other keys sent while one key is silent", func() bool {
		return len(outboxRows(t, db, "key <> $1 AND NOT sent", stuckKey)) == 0
	})
	if n := len(outboxRows(t, db, "key = $1 AND sent", stuckKey)); n != 0 {
		t.Fatalf("%d rows of the silent key marked sent, want 0", n)
	}

	mu.Lock()
	silent = false
	for _, p := range producers {
		p.setSilent(false)
	}
	mu.Unlock()
	poll.Eventually(t, 30*time.Second, "the silent key's rows sent once it answers", func() bool { return countUnsent(t, db) == 0 })
	var got []string
	poll.Eventually(t, 10*time.Second, "the silent key's records read committed", func() bool {
		got = got[:0]
		for _, r := range c.records() {
			if string(r.Key) == stuckKey {
				got = append(got, header(r, "ce_id"))
			}
		}
		return len(got) >= len(stuck)
	})
	if fmt.Sprint(got) != fmt.Sprint(stuck) {
		t.Fatalf("the silent key's records %v, want %v: once each, in order", got, stuck)
	}
}
