package outbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres/pgtest"
)

// portSwitch is a broker's listener that can be switched off: while
// off, the port is closed (connections are refused) and the connections it
// accepted are closed, as when the broker's process died; switched on, it
// listens on the same port again.
type portSwitch struct {
	addr string

	mu     sync.Mutex
	ln     net.Listener // nil while off
	conns  []net.Conn
	on     chan struct{} // closed when switched on again
	closed bool
}

func newPortSwitch(network, address string) (*portSwitch, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return &portSwitch{addr: ln.Addr().String(), ln: ln}, nil
}

func (l *portSwitch) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		ln, on, closed := l.ln, l.on, l.closed
		l.mu.Unlock()
		switch {
		case closed:
			return nil, net.ErrClosed
		case ln == nil:
			<-on
			continue
		}
		c, err := ln.Accept()
		l.mu.Lock()
		switch {
		case err == nil && l.ln == ln:
			l.conns = append(l.conns, c)
			l.mu.Unlock()
			return c, nil
		case err == nil:
			c.Close()
		case l.ln == ln || l.closed:
			l.mu.Unlock()
			return nil, err
		}
		l.mu.Unlock() // switched off meanwhile: wait to be on again
	}
}

// set switches the listener off (false) or on again (true).
func (l *portSwitch) set(t *testing.T, up bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if up == (l.ln != nil) || l.closed {
		return
	}
	if !up {
		l.ln.Close()
		l.ln = nil
		for _, c := range l.conns {
			c.Close()
		}
		l.conns = nil
		l.on = make(chan struct{})
		return
	}
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	l.ln = ln
	close(l.on)
}

func (l *portSwitch) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.on != nil && l.ln == nil {
		close(l.on)
	}
	if l.ln != nil {
		return l.ln.Close()
	}
	return nil
}

func (l *portSwitch) Addr() net.Addr {
	a, _ := net.ResolveTCPAddr("tcp", l.addr)
	return a
}

// coordinatedLaneProducers returns a NewLaneProducer for the broker at addr
// whose transactional ids all have their coordinator on node: a dead other
// node then holds back no lane's transactions.
func coordinatedLaneProducers(t *testing.T, cluster *kfake.Cluster, node int32) func(context.Context, int, int) (TxProducer, error) {
	t.Helper()
	addr := cluster.ListenAddrs()[0]
	ids := map[int]string{}
	for lane := range 16 {
		for j := 0; ; j++ {
			id := fmt.Sprintf("tx-stuck-%d-%d", lane, j)
			if cluster.CoordinatorFor(id) == node {
				ids[lane] = id
				break
			}
		}
	}
	return func(ctx context.Context, lane, _ int) (TxProducer, error) {
		cl, err := kafka.NewTransactionalClient(ctx, kafka.Config{Brokers: []string{addr}}, ids[lane], time.Minute)
		if err != nil {
			return nil, err
		}
		return cl, nil
	}
}

// TestStuckPartitionHoldsOnlyItself: partition 0 of the events topic is led
// by a broker that is down (its port refuses connections), with
// transactions as the service runs them. 1,200 rows of keys on partition 0
// sit at the head of the outbox (more than a batch in every lane), and new
// orders come at 100 a second, a new key each. The relay's first batches
// wait out the produce timeout for partition 0; then it holds the
// partition back, and every other partition's rows committed after that
// arrive well within the produce timeout (p99; typically under 0.2s, a
// second or two under -race on a loaded machine; without the hold batches
// with a record of partition 0 keep waiting for it). Once the broker is
// back, the held rows all arrive, each key's in order.
//
// Not parallel: it measures latency.
func TestStuckPartitionHoldsOnlyItself(t *testing.T) {
	db := pgtest.NewDB(t)
	var lns []*portSwitch // the brokers' listeners, in node order
	var lnsMu sync.Mutex
	cluster, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.SeedTopics(4, topic),
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			l, err := newPortSwitch(network, address)
			if err == nil {
				lnsMu.Lock()
				lns = append(lns, l)
				lnsMu.Unlock()
			}
			return l, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	for p := range int32(4) {
		if err := cluster.MoveTopicPartition(topic, p, min(p, 1)^1); err != nil { // partition 0 on node 1, the rest on node 0
			t.Fatal(err)
		}
	}
	addr := cluster.ListenAddrs()[0] // node 0
	onStuck := func(key string) bool {
		return kgo.StickyKeyPartitioner(nil).ForTopic(topic).Partition(&kgo.Record{Key: []byte(key)}, 4) == 0
	}
	if len(lns) != 2 || cluster.ListenAddrs()[1] != lns[1].addr {
		t.Fatalf("listeners %v, brokers at %v", lns, cluster.ListenAddrs())
	}
	lns[1].set(t, false) // node 1, partition 0's leader, is dead
	c := collectWith(t, addr, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()))

	events := map[string][]string{} // key -> its event ids in id order
	stuckRows := 0
	for i := 0; stuckRows < 1200; i++ {
		key := fmt.Sprintf("stuck-%d", i)
		if onStuck(key) {
			events[key] = insertRows(t, db, topic, key, 2)
			stuckRows += 2
		}
	}
	const produceTimeout = 3 * time.Second
	w, reg := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 50 * time.Millisecond, BatchSize: 50,
		ProduceTimeout: produceTimeout, ResolveTimeout: time.Second, Publishers: 4,
		NewProducer:     func() (Producer, error) { return kgo.NewClient(kgo.SeedBrokers(addr)) },
		NewLaneProducer: coordinatedLaneProducers(t, cluster, 0)})
	started := time.Now()
	start(t, w)

	// 100 new keys a second for 12 seconds, two rows each.
	tick := time.NewTicker(10 * time.Millisecond)
	for i := range 1200 {
		<-tick.C
		key := fmt.Sprintf("order-%d", i)
		events[key] = insertRows(t, db, topic, key, 2)
	}
	tick.Stop()
	stuckKeys := 0
	for key := range events {
		if onStuck(key) {
			stuckKeys++
		}
	}
	poll.Eventually(t, 30*time.Second, "every row of the other partitions sent", func() bool {
		return countUnsent(t, db) == int64(2*stuckKeys)
	})
	rows, err := db.Pool.Query(context.Background(), `
		SELECT key, (extract(epoch FROM created_at) * 1000)::bigint, (extract(epoch FROM sent_at - created_at) * 1000)::bigint
		FROM outbox WHERE sent`)
	if err != nil {
		t.Fatal(err)
	}
	type lat struct {
		Key       string
		CreatedMS int64
		MS        int64
	}
	lats, err := pgx.CollectRows(rows, pgx.RowToStructByPos[lat])
	if err != nil {
		t.Fatal(err)
	}
	// The relay learns that partition 0 is stuck from its first batches,
	// which wait the produce timeout for it: rows committed after those
	// must flow as if nothing were wrong.
	learned := started.Add(produceTimeout + 2*time.Second).UnixMilli()
	var first, after []time.Duration
	for _, l := range lats {
		if onStuck(l.Key) {
			t.Errorf("key %s of the stuck partition sent while its broker is down", l.Key)
		}
		d := time.Duration(l.MS) * time.Millisecond
		if l.CreatedMS < learned {
			first = append(first, d)
		} else {
			after = append(after, d)
		}
	}
	q := func(ds []time.Duration, f float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		slices.Sort(ds)
		return ds[min(len(ds)-1, int(f*float64(len(ds))))]
	}
	t.Logf("rows of the other partitions committed while the relay's first batches wait: %d, p50 %v, p99 %v; after it: %d, p50 %v, p99 %v, slowest %v; rows of partition 0 held: %d",
		len(first), q(first, 0.5), q(first, 0.99), len(after), q(after, 0.5), q(after, 0.99), q(after, 1), 2*stuckKeys)
	if p99 := q(after, 0.99); p99 >= produceTimeout {
		t.Errorf("other partitions' rows: p99 %v after their commit, want well under the produce timeout (%v): the stuck partition held them back", p99, produceTimeout)
	}
	if g := gaugeValue(t, reg, "orders_outbox_held_partitions"); g != 1 {
		t.Errorf("orders_outbox_held_partitions = %v while partition 0 is down, want 1", g)
	}

	lns[1].set(t, true)
	poll.Eventually(t, 30*time.Second, "the held partition's rows sent once its broker is back", func() bool { return countUnsent(t, db) == 0 })
	poll.Eventually(t, 10*time.Second, "every event consumed", func() bool {
		seen := map[string]bool{}
		for _, r := range c.records() {
			seen[header(r, "ce_id")] = true
		}
		return len(seen) == 2*len(events)
	})
	recs := c.records()
	for key, want := range events {
		var got []string
		for _, r := range recs {
			if string(r.Key) == key && !slices.Contains(got, header(r, "ce_id")) {
				got = append(got, header(r, "ce_id"))
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("key %s: events %v, want %v in order", key, got, want)
		}
		checkKeyOrder(t, recs, key, want)
	}
	poll.Eventually(t, 10*time.Second, "no partition held", func() bool {
		return gaugeValue(t, reg, "orders_outbox_held_partitions") == 0
	})
}

// gaugeValue reads the gauge name from reg; it fails t when there is none.
func gaugeValue(t *testing.T, reg interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal(errors.New("no gauge " + name))
	return 0
}
