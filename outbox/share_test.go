package outbox

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// ownedLanes is how many lanes w holds as its share.
func ownedLanes(w *Relay) int {
	n := 0
	for lane := range w.owned {
		if w.owned[lane].Load() {
			n++
		}
	}
	return n
}

// TestRelaysKeepTheirLanes: two relays with Kafka transactions share the
// lanes, half each, and keep them while rows keep coming in every lane: a
// lane's producer is made once and never fenced by the other relay's, so
// sixteen producers serve every batch. Lanes that moved between relays
// would make a new producer (fencing the other's) on each move.
func TestRelaysKeepTheirLanes(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDSN(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	var made atomic.Int64
	lanes := laneProducers(addr, "tx-share-")
	cfg := Options{PollInterval: 50 * time.Millisecond, Publishers: 4, NewLaneProducer: func(ctx context.Context, lane, generation int) (TxProducer, error) {
		made.Add(1)
		return lanes(ctx, lane, generation)
	}}
	db1, db2 := pgtest.Open(t, dsn), pgtest.Open(t, dsn)
	w1, _ := newWorker(t, db1, newProducer(t, addr), cfg)
	w2, _ := newWorker(t, db2, newProducer(t, addr), cfg)
	start(t, w1)
	start(t, w2)
	poll.Eventually(t, 10*time.Second, "each relay holding half the lanes", func() bool {
		return ownedLanes(w1) == postgres.OutboxLanes/2 && ownedLanes(w2) == postgres.OutboxLanes/2
	})
	for lane := range postgres.OutboxLanes {
		if w1.owned[lane].Load() == w2.owned[lane].Load() {
			t.Fatalf("lane %d held by both relays or neither", lane)
		}
	}
	for round := range 10 {
		for i := range 64 {
			insertRows(t, db1, topic, fmt.Sprintf("order-%d-%d", round, i), 1)
		}
		poll.Eventually(t, 15*time.Second, "the round's rows sent", func() bool { return countUnsent(t, db1) == 0 })
	}
	if n := made.Load(); n != postgres.OutboxLanes {
		t.Errorf("%d lane producers made for 640 rows in every lane, want %d: one per lane", n, postgres.OutboxLanes)
	}
}

// TestSharedLanesPolledPromptly: a commit wakes only its own relay, so once
// a second relay joined, the rows one commits in the other's share are
// found by the other's short poll, not after PollInterval (here a minute; the rows are
// written with no wake at all).
func TestSharedLanesPolledPromptly(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDSN(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	cfg := Options{PollInterval: time.Minute}
	db1, db2 := pgtest.Open(t, dsn), pgtest.Open(t, dsn)
	w1, _ := newWorker(t, db1, newProducer(t, addr), cfg)
	w2, _ := newWorker(t, db2, newProducer(t, addr), cfg)
	start(t, w1)
	poll.Eventually(t, 10*time.Second, "the first relay alone with every lane", func() bool { return ownedLanes(w1) == postgres.OutboxLanes })
	start(t, w2)
	poll.Eventually(t, 10*time.Second, "each relay holding half the lanes", func() bool {
		return ownedLanes(w1) == postgres.OutboxLanes/2 && ownedLanes(w2) == postgres.OutboxLanes/2
	})
	for i := range 32 {
		insertRows(t, db1, topic, fmt.Sprintf("order-%d", i), 1)
	}
	poll.Eventually(t, 20*time.Second, "every row sent without a wake", func() bool { return countUnsent(t, db1) == 0 })
}

// TestActiveLanesQueryShared: publishers woken together share one query of
// the active lanes, but a publisher never takes an answer from a query that
// started before it asked (it could miss a commit).
func TestActiveLanesQueryShared(t *testing.T) {
	var a activeLanes
	var calls atomic.Int64
	release := make(chan struct{})
	query := func(context.Context) ([]int, error) {
		calls.Add(1)
		<-release
		return []int{int(calls.Load())}, nil
	}
	before := time.Now()
	first := make(chan []int)
	go func() {
		lanes, _ := a.get(context.Background(), before, query)
		first <- lanes
	}()
	poll.Eventually(t, 5*time.Second, "the first query under way", func() bool { return calls.Load() == 1 })
	second := make(chan []int)
	go func() {
		lanes, _ := a.get(context.Background(), before, query)
		second <- lanes
	}()
	late := make(chan []int)
	go func() {
		lanes, _ := a.get(context.Background(), time.Now(), query)
		late <- lanes
	}()
	release <- struct{}{}
	if got := <-first; fmt.Sprint(got) != "[1]" {
		t.Fatalf("first = %v", got)
	}
	if got := <-second; fmt.Sprint(got) != "[1]" {
		t.Errorf("a caller that asked before the query started got %v, want its answer [1]", got)
	}
	release <- struct{}{}
	if got := <-late; fmt.Sprint(got) != "[2]" {
		t.Errorf("a caller that asked after the query started got %v, want a query of its own, [2]", got)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d queries, want 2", n)
	}
}
