//go:build kafkacluster

package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/paymentsim"
	"github.com/acme/orders-service/postgres/pgtest"
)

const (
	typeCreated   = "orders.v1.OrderCreated"
	typeFinished  = "orders.v1.OrderFinished"
	typeCancelled = "orders.v1.OrderCancelled"
)

// startSimulator answers the OrderCreated events of names' topic with
// payments, on the cluster, until the test ends.
func startSimulator(t *testing.T, c *cluster, names map[string]string) {
	t.Helper()
	cl, err := kafka.NewClient(kafka.Config{Brokers: c.brokers},
		paymentsim.ClientOptions(names["KAFKA_GROUP_ID"]+".payments-sim", names["KAFKA_TOPIC"])...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(paymentsim.Config{InTopic: names["KAFKA_TOPIC"], OutTopic: names["KAFKA_INBOX_TOPIC"]}).Run(ctx, cl)
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
}

// load creates orders through the replicas with a few concurrent callers
// until stop is closed and at least min were acknowledged. finish also marks
// each order finished right after creating it. It fails the test on the
// first refused call: orders must be accepted whatever Kafka does.
type load struct {
	mu    sync.Mutex
	ids   []string
	acked atomic.Int64
	errs  atomic.Int64
	first atomic.Value // first error
	done  chan struct{}
}

func startLoad(t *testing.T, min int, finish bool, stop <-chan struct{}, rs ...*replica) *load {
	t.Helper()
	l := &load{done: make(chan struct{})}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					if l.acked.Load() >= int64(min) {
						return
					}
				default:
				}
				r := rs[(w+i)%len(rs)]
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				o, err := r.client.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: fmt.Sprintf("failover-%d", w), Amount: int64(i + 1)})
				if err == nil && finish {
					_, err = r.client.MarkOrderFinished(ctx, &orderspb.MarkOrderFinishedRequest{OrderId: o.GetOrder().GetId()})
				}
				cancel()
				if err != nil {
					l.errs.Add(1)
					l.first.CompareAndSwap(nil, fmt.Errorf("%s: %w", r.name, err))
					return
				}
				l.mu.Lock()
				l.ids = append(l.ids, o.GetOrder().GetId())
				l.mu.Unlock()
				l.acked.Add(1)
			}
		}()
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

// wait waits for the callers to stop and fails the test if any call failed.
func (l *load) wait(t *testing.T) []string {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(5 * time.Minute):
		t.Fatal("load did not stop")
	}
	if err, _ := l.first.Load().(error); err != nil {
		t.Fatalf("a call failed (%d failures, %d acknowledged): %v", l.errs.Load(), l.acked.Load(), err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ids...)
}

func (l *load) failed() bool { return l.first.Load() != nil }

// eventStats is what checkOrderEvents found in the events topic.
type eventStats struct {
	records    int // records read
	events     int // distinct ce_ids
	duplicates int // records whose ce_id was seen before
}

// checkOrderEvents asserts that each order in ids has exactly the events
// want (distinct ce_ids, in that order) in one partition, that no copy of an
// earlier event lands after a later one (the latest record per key is the
// latest event), and that no record belongs to an unknown order.
func checkOrderEvents(t *testing.T, recs []record, ids []string, want ...string) eventStats {
	t.Helper()
	var st eventStats
	seen := map[string]bool{}
	type keyState struct {
		partition int32
		types     []string // distinct events in offset order
		last      string   // type of the last record
	}
	keys := map[string]*keyState{}
	for _, r := range recs {
		st.records++
		k := keys[r.key]
		if k == nil {
			k = &keyState{partition: r.partition}
			keys[r.key] = k
		}
		if k.partition != r.partition {
			t.Errorf("order %s has records in partitions %d and %d", r.key, k.partition, r.partition)
		}
		if seen[r.id] {
			st.duplicates++
		} else {
			seen[r.id] = true
			st.events++
			k.types = append(k.types, r.typ)
		}
		k.last = r.typ
	}
	wantTypes := strings.Join(want, ",")
	known := map[string]bool{}
	bad := 0
	for _, id := range ids {
		known[id] = true
		k := keys[id]
		switch {
		case k == nil:
			t.Errorf("acknowledged order %s has no event in Kafka", id)
		case strings.Join(k.types, ",") != wantTypes:
			t.Errorf("order %s has events [%s], want [%s]", id, strings.Join(k.types, ","), wantTypes)
		case k.last != want[len(want)-1]:
			t.Errorf("order %s: the last record is a stale %s after its %s", id, k.last, want[len(want)-1])
		default:
			continue
		}
		if bad++; bad > 10 {
			t.Fatalf("more than 10 orders with wrong events")
		}
	}
	for key := range keys {
		if !known[key] {
			t.Errorf("record for an order the test did not create: %s", key)
		}
	}
	return st
}

// countEvents counts records, distinct events and duplicates, without
// checking them (a read_uncommitted reader also sees aborted records).
func countEvents(recs []record) eventStats {
	var st eventStats
	seen := map[string]bool{}
	for _, r := range recs {
		st.records++
		if seen[r.id] {
			st.duplicates++
			continue
		}
		seen[r.id] = true
		st.events++
	}
	return st
}

// checkIsolations checks the events of ids as a read_committed consumer
// sees them (checkOrderEvents) and counts what a read_uncommitted one sees.
func checkIsolations(t *testing.T, c *cluster, topic string, ids []string, want ...string) (committed, uncommitted eventStats) {
	t.Helper()
	committed = checkOrderEvents(t, c.readCommitted(t, topic), ids, want...)
	uncommitted = countEvents(c.readAll(t, topic))
	return committed, uncommitted
}

// waitPublishing waits until every partition of topic that node led before
// it was stopped has a leader again and a record appended after that, and
// returns the time from since to then.
func waitPublishing(t *testing.T, c *cluster, topic string, led []int32, node int, since time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	base := map[int32]int64{}
	poll.Eventually(t, timeout, fmt.Sprintf("records appended again to the partitions %v node %d led", led, node), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ls, err := c.tryLeaders(ctx, topic)
		if err != nil {
			return false
		}
		ends, err := c.endOffsets(ctx, topic)
		if err != nil {
			return false
		}
		for _, p := range led {
			if ls[p] < 0 || ls[p] == int32(node) {
				return false
			}
			if _, ok := base[p]; !ok {
				base[p] = ends[p]
			}
		}
		for _, p := range led {
			if ends[p] <= base[p] {
				return false
			}
		}
		return true
	})
	return time.Since(since)
}

// TestClusterLeaderDeathUnderLoad (issue 9, 3a): three replicas under continuous
// CreateOrder and payments; the broker leading the most partitions of the
// events topic is SIGKILLed mid-run and restarted later. Every acknowledged
// order has its OrderCreated, every payment applies once, each order's
// events keep their order in one partition.
func TestClusterLeaderDeathUnderLoad(t *testing.T) {
	const orders = 5000
	c := needCluster(t)
	dsn := pgtest.NewEmptyDSN(t)
	names := uniqueNames("leaderdeath")
	env := c.replicaEnv(dsn, names)
	rs := []*replica{startReplica(t, "replica-1", env), startReplica(t, "replica-2", env), startReplica(t, "replica-3", env)}
	startSimulator(t, c, names)
	topic := names["KAFKA_TOPIC"]

	stop := make(chan struct{})
	l := startLoad(t, orders, false, stop, rs...)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()
	poll.Eventually(t, 120*time.Second, "a third of the orders acknowledged", func() bool { return l.acked.Load() >= orders/3 || l.failed() })

	node := c.busiestLeader(t, topic)
	var led []int32
	for p, leader := range c.leaders(t, topic) {
		if leader == int32(node) {
			led = append(led, p)
		}
	}
	killedAt := time.Now()
	ackedAtKill := l.acked.Load()
	c.kill(t, node)
	t.Logf("SIGKILLed node %d, leader of partitions %v of %s, after %d orders", node, led, topic, ackedAtKill)
	resumed := waitPublishing(t, c, topic, led, node, killedAt, 90*time.Second)
	t.Logf("kill to the relay publishing again to every partition node %d led: %v", node, resumed.Round(time.Millisecond))

	poll.Eventually(t, 120*time.Second, "two thirds of the orders acknowledged", func() bool { return l.acked.Load() >= 2*orders/3 || l.failed() })
	restartAt := time.Since(killedAt)
	restarted := c.startAsync(node)
	close(stop)
	ids := l.wait(t)
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d orders acknowledged; node %d restarted %v after the kill, listening again after %v", len(ids), node,
		restartAt.Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))

	start := time.Now()
	poll.Eventually(t, 180*time.Second, "every order paid", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM orders WHERE status = 'finished'`) == len(ids)
	})
	poll.Eventually(t, 60*time.Second, "the outbox empty", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`) == 0
	})
	drained := time.Since(start)
	if n := queryInt(t, dsn, `SELECT count(*) FROM orders`); n != len(ids) {
		t.Fatalf("%d orders in the database, %d acknowledged", n, len(ids))
	}
	if n := queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE event_type = $1`, typeFinished); n != len(ids) {
		t.Fatalf("%d OrderFinished outbox rows for %d orders: a payment applied twice or not at all", n, len(ids))
	}

	st, su := checkIsolations(t, c, topic, ids, typeCreated, typeFinished)
	if st.events != 2*len(ids) {
		t.Errorf("%d distinct events in Kafka, want %d", st.events, 2*len(ids))
	}
	t.Logf("SUMMARY leader death: orders=%d events=%d records=%d duplicates_read_committed=%d duplicates_read_uncommitted=%d killed_node=%d partitions_led=%d kill_to_publishing=%v restart_after=%v paid_and_drained_after_load=%v",
		len(ids), st.events, st.records, st.duplicates, su.duplicates, node, len(led), resumed.Round(time.Millisecond),
		restartAt.Round(time.Millisecond), drained.Round(time.Millisecond))
}

// TestClusterBelowMinISR (issue 9, 3b): with two of three brokers down no write
// can reach min.insync.replicas=2. Orders are still accepted, the backlog
// shows in /readyz and the metrics, nothing is marked sent; with one broker
// back the backlog drains completely, in order per key.
func TestClusterBelowMinISR(t *testing.T) {
	const during = 600
	c := needCluster(t)
	dsn := pgtest.NewEmptyDSN(t)
	names := uniqueNames("belowisr")
	env := c.replicaEnv(dsn, names)
	rs := []*replica{startReplica(t, "replica-1", env), startReplica(t, "replica-2", env)}
	topic := names["KAFKA_TOPIC"]

	stop := make(chan struct{})
	close(stop)
	before := startLoad(t, 100, true, stop, rs...).wait(t)
	poll.Eventually(t, 60*time.Second, "the first orders published", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`) == 0
	})

	c.kill(t, 2)
	c.kill(t, 3)
	downAt := time.Now()
	sentBefore := queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE sent`)
	outage := startLoad(t, during, true, stop, rs...).wait(t)
	backlog := queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`)
	if backlog < 2*during {
		t.Fatalf("outbox backlog %d after %d orders with two brokers down, want at least %d", backlog, during, 2*during)
	}
	for _, r := range rs {
		var body string
		func() {
			defer func() {
				if t.Failed() {
					t.Logf("%s /readyz with two brokers down: %s", r.name, body)
				}
			}()
			poll.Eventually(t, 60*time.Second, r.name+" showing Kafka unavailable and the backlog", func() bool {
				var code int
				code, body = r.readyz()
				text := scrapeReplica(t, r)
				return code == 200 && !strings.Contains(body, `"kafka":"ok"`) &&
					metric(t, text, "orders_outbox_unsent") >= float64(2*during)
			})
		}()
		t.Logf("%s /readyz with two brokers down: %s", r.name, body)
	}
	// Held well past the producer's retries: still nothing acknowledged.
	poll.Eventually(t, 60*time.Second, "publish errors counted", func() bool {
		var errs float64
		for _, r := range rs {
			errs += metric(t, scrapeReplica(t, r), "orders_outbox_publish_errors_total")
		}
		return errs > 0
	})
	if n := queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE sent`); n != sentBefore {
		t.Fatalf("%d outbox rows marked sent while no write could reach min.insync.replicas", n-sentBefore)
	}
	backlog = queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`)

	c.start(t, 2)
	upAt := time.Now()
	poll.Eventually(t, 180*time.Second, "the backlog drained", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`) == 0
	})
	drain := time.Since(upAt)
	for _, r := range rs {
		poll.Eventually(t, 30*time.Second, r.name+" showing the backlog gone", func() bool {
			return metric(t, scrapeReplica(t, r), "orders_outbox_unsent") == 0
		})
	}

	ids := append(before, outage...)
	recs := c.readCommitted(t, topic)
	st := checkOrderEvents(t, recs, ids, typeCreated, typeFinished)
	su := countEvents(c.readAll(t, topic))
	inTopic := map[string]bool{}
	for _, r := range recs {
		inTopic[r.id] = true
	}
	sent := queryStrings(t, dsn, `SELECT event_id::text FROM outbox WHERE sent`)
	for _, id := range sent {
		if !inTopic[id] {
			t.Errorf("outbox row %s is marked sent but is not in %s", id, topic)
		}
	}
	t.Logf("SUMMARY below min ISR: orders=%d events=%d records=%d duplicates_read_committed=%d duplicates_read_uncommitted=%d backlog=%d outage=%v drain_after_one_broker_back=%v",
		len(ids), st.events, st.records, st.duplicates, su.duplicates, backlog, upAt.Sub(downAt).Round(time.Millisecond), drain.Round(time.Millisecond))
}

// TestClusterLeaderCutOffMidProduce (issue 11, point 2 on the real cluster): the
// leader of the most partitions is frozen (SIGSTOP) while replicas publish
// orders that are finished right after creation, and resumed once its
// partitions moved. No copy of an OrderCreated may land after the order's
// OrderFinished.
func TestClusterLeaderCutOffMidProduce(t *testing.T) {
	c := needCluster(t)
	x := c.stopBusiestLeader(t, "cutoff", 1500)
	moved := waitPublishing(t, c, x.topic, x.led, x.node, x.stoppedAt, 90*time.Second)
	x.resume()
	t.Logf("partitions moved and written again %v after the stop; node %d resumed", moved.Round(time.Millisecond), x.node)
	x.endLoad()
	ids := x.load.wait(t)

	poll.Eventually(t, 120*time.Second, "the outbox empty", func() bool {
		return queryInt(t, x.dsn, `SELECT count(*) FROM outbox WHERE NOT sent`) == 0
	})
	st, su := checkIsolations(t, c, x.topic, ids, typeCreated, typeFinished)
	t.Logf("SUMMARY leader cut off: orders=%d events=%d records=%d duplicates_read_committed=%d duplicates_read_uncommitted=%d stopped_node=%d stop_to_publishing=%v",
		len(ids), st.events, st.records, st.duplicates, su.duplicates, x.node, moved.Round(time.Millisecond))
}

// cutOff is a run whose busiest leader was frozen under load
// (stopBusiestLeader).
type cutOff struct {
	dsn, topic string
	load       *load
	node       int       // the frozen broker
	led        []int32   // the partitions it led when frozen
	stoppedAt  time.Time // when it was frozen
	endLoad    func()    // lets the load stop once it has its minimum
	resume     func()    // SIGCONTs the node (once)
}

// stopBusiestLeader starts two replicas on a fresh database (names
// prefixed prefix) and a load of at least min orders through them, each
// finished right after creation; once 200 are acknowledged, it freezes
// (SIGSTOP) the broker leading the most partitions of the events topic.
// The load is ended and the broker resumed when the test ends, if the test
// has not done so.
func (c *cluster) stopBusiestLeader(t *testing.T, prefix string, min int) *cutOff {
	t.Helper()
	x := &cutOff{dsn: pgtest.NewEmptyDSN(t)}
	names := uniqueNames(prefix)
	env := c.replicaEnv(x.dsn, names)
	rs := []*replica{startReplica(t, "replica-1", env), startReplica(t, "replica-2", env)}
	x.topic = names["KAFKA_TOPIC"]

	stop := make(chan struct{})
	x.endLoad = sync.OnceFunc(func() { close(stop) })
	x.load = startLoad(t, min, true, stop, rs...)
	t.Cleanup(x.endLoad)
	poll.Eventually(t, 60*time.Second, "orders flowing", func() bool { return x.load.acked.Load() >= 200 || x.load.failed() })
	x.node = c.busiestLeader(t, x.topic)
	for p, leader := range c.leaders(t, x.topic) {
		if leader == int32(x.node) {
			x.led = append(x.led, p)
		}
	}
	slices.Sort(x.led)
	x.stoppedAt = time.Now()
	c.signal(t, x.node, syscall.SIGSTOP)
	x.resume = sync.OnceFunc(func() { c.signal(t, x.node, syscall.SIGCONT) })
	t.Cleanup(x.resume)
	t.Logf("SIGSTOPped node %d, leader of partitions %v", x.node, x.led)
	return x
}
