package outbox

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres/pgtest"
)

// holdFirstProduce makes cluster hold the first produce request it gets,
// unanswered and unapplied, until release is called (at the latest when the
// test ends); held is closed once it holds one. Other requests, other
// connections' produce requests included, are served meanwhile.
func holdFirstProduce(t *testing.T, cluster *kfake.Cluster) (held <-chan struct{}, release func()) {
	t.Helper()
	heldCh, releaseCh := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	var taken atomic.Bool
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if taken.CompareAndSwap(false, true) {
			once.Do(func() { close(heldCh) })
			cluster.SleepControl(func() { <-releaseCh })
		}
		return nil, nil, false
	})
	release = func() { releaseOnce.Do(func() { close(releaseCh) }) }
	t.Cleanup(release)
	return heldCh, release
}

// checkKeyOrder fails t when, in the records of one key (which share a
// partition and are in offset order), an event appears again after a later
// event of that key: a stale copy that would leave a compacted topic or a
// status projection at an old state.
func checkKeyOrder(t *testing.T, recs []*kgo.Record, key string, order []string) {
	t.Helper()
	rank := map[string]int{}
	for i, id := range order {
		rank[id] = i
	}
	highest := -1
	var seq []string
	for _, r := range recs {
		if string(r.Key) != key {
			continue
		}
		id := header(r, "ce_id")
		seq = append(seq, header(r, "ce_type"))
		if rank[id] < highest {
			t.Errorf("key %s: %s published again after a later event; sequence %v", key, header(r, "ce_type"), seq)
		}
		highest = max(highest, rank[id])
	}
}

// TestHeldProduceKeepsOtherRelaysOut: two relays on one database. Kafka
// holds the first relay's produce request past its ProduceTimeout; the first
// relay keeps its claim (transaction and advisory lock) until the record has
// an outcome, so the second relay publishes nothing meanwhile, even the
// order's next event. Once Kafka answers, both events are in the topic once,
// OrderCreated before OrderFinished, never OrderCreated again after it.
// kfake in both modes: the test holds a produce request (ControlKey).
func TestHeldProduceKeepsOtherRelaysOut(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDSN(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	held, release := holdFirstProduce(t, cluster)
	c := collect(t, addr, topic)
	cfg := Options{PollInterval: 50 * time.Millisecond, ProduceTimeout: 200 * time.Millisecond, ResolveTimeout: 30 * time.Second}

	db1, db2 := pgtest.Open(t, dsn), pgtest.Open(t, dsn)
	svc := newService(db1, topic)
	w1, _ := newWorker(t, db1, newProducer(t, addr), cfg)
	w2, _ := newWorker(t, db2, newProducer(t, addr), cfg)
	unshared(w1)
	unshared(w2)
	o := createOrder(t, svc, "held")
	start(t, w1)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the first relay's produce request never reached the broker")
	}
	start(t, w2)
	poll.Eventually(t, 10*time.Second, "the first relay past its ProduceTimeout", w1.awaiting.Load)
	if _, err := svc.MarkOrderFinished(context.Background(), o.ID); err != nil {
		t.Fatal(err)
	}
	from := w2.lockBusy.Load()
	poll.Eventually(t, 10*time.Second, "the second relay finding the outbox taken", func() bool { return w2.lockBusy.Load() >= from+5 })
	if recs := c.records(); len(recs) != 0 {
		t.Fatalf("%d record(s) published while the first relay's record had no outcome, want 0", len(recs))
	}

	release()
	poll.Eventually(t, 15*time.Second, "both events sent", func() bool { return countUnsent(t, db1) == 0 })
	rows := outboxRows(t, db1, "key = $1", o.ID)
	if len(rows) != 2 || rows[0].EventType != orders.TypeOrderCreated || rows[1].EventType != orders.TypeOrderFinished {
		t.Fatalf("outbox rows of the order: %+v", rows)
	}
	for _, r := range rows {
		poll.Eventually(t, 5*time.Second, "record of "+r.EventType, func() bool { return len(c.byEventID(r.EventID)) > 0 })
	}
	// The held request is applied before its answer resolves the first
	// relay's record; a sentinel published after that and consumed (one
	// broker: one fetch covers every partition) shows any stale copy.
	poll.Eventually(t, 10*time.Second, "the held record resolved", func() bool { return !w1.awaiting.Load() })
	sentinel := createOrder(t, svc, "sentinel")
	ev := outboxRows(t, db1, "key = $1", sentinel.ID)[0].EventID
	poll.Eventually(t, 10*time.Second, "the sentinel consumed", func() bool { return len(c.byEventID(ev)) > 0 })
	checkKeyOrder(t, c.records(), o.ID, []string{rows[0].EventID, rows[1].EventID})
	for _, r := range rows {
		if n := len(c.byEventID(r.EventID)); n != 1 {
			t.Errorf("%d copies of %s, want 1", n, r.EventType)
		}
	}
}

// TestUnresolvedPastResolveTimeout: when Kafka holds a produce request past
// ProduceTimeout + ResolveTimeout, the worker closes that producer (its
// records are never sent again), releases the claim and publishes with a
// new one from NewProducer; without NewProducer, Run returns ErrStalled.
// kfake in both modes: the test holds a produce request (ControlKey).
func TestUnresolvedPastResolveTimeout(t *testing.T) {
	t.Parallel()
	cfg := Options{PollInterval: 50 * time.Millisecond, ProduceTimeout: 200 * time.Millisecond, ResolveTimeout: 300 * time.Millisecond}
	t.Run("new producer", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDB(t)
		cluster := newFakeCluster(t)
		addr := cluster.ListenAddrs()[0]
		held, _ := holdFirstProduce(t, cluster)
		var made atomic.Int64
		cfg := cfg
		cfg.NewProducer = func() (Producer, error) {
			made.Add(1)
			return kgo.NewClient(kgo.SeedBrokers(addr))
		}
		first, err := cfg.NewProducer()
		if err != nil {
			t.Fatal(err)
		}
		w, _ := newWorker(t, db, first, cfg)
		o := createOrder(t, newService(db, topic), "replaced")
		start(t, w)
		<-held
		poll.Eventually(t, 10*time.Second, "row sent through a new producer", func() bool { return outboxRows(t, db, "key = $1", o.ID)[0].Sent })
		if made.Load() != 2 {
			t.Errorf("%d producers made, want 2 (the first and one replacement)", made.Load())
		}
	})
	t.Run("no new producer", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDB(t)
		cluster := newFakeCluster(t)
		held, _ := holdFirstProduce(t, cluster)
		w, _ := newWorker(t, db, newProducer(t, cluster.ListenAddrs()[0]), cfg)
		createOrder(t, newService(db, topic), "stalled")
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		<-held
		select {
		case err := <-done:
			if !errors.Is(err, ErrStalled) {
				t.Errorf("Run = %v, want ErrStalled", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not stop after ProduceTimeout + ResolveTimeout")
		}
		if n := countUnsent(t, db); n != 1 {
			t.Errorf("unsent rows = %d, want 1", n)
		}
	})
}
