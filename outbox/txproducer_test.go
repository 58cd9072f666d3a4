package outbox

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/internal/kafkatest"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// laneProducers returns a NewLaneProducer for the broker at addr whose
// transactional ids are TransactionalID(prefix, lane, generation), made as
// the service makes them.
func laneProducers(addr, prefix string) func(context.Context, int, int) (TxProducer, error) {
	return func(ctx context.Context, lane, generation int) (TxProducer, error) {
		cl, err := kafka.NewTransactionalClient(ctx, kafka.Config{Brokers: []string{addr}}, TransactionalID(prefix, lane, generation), time.Minute)
		if err != nil {
			return nil, err
		}
		return cl, nil
	}
}

// TestTransactionsPublishOnce: with transactions, a relay publishes every
// row once, visible to a read_committed consumer, and marks them sent.
func TestTransactionsPublishOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 50 * time.Millisecond, Publishers: 2,
		NewLaneProducer: laneProducers(addr, "tx-once-")})
	start(t, w)
	var events []string
	for i := range 30 {
		events = append(events, insertRows(t, db, topic, fmt.Sprintf("order-%d", i), 2)...)
	}
	// Each of up to 16 lanes gets a producer of its own (a connection,
	// FindCoordinator, InitProducerID, then one transaction per batch): a
	// few hundred round trips, under a second on an idle machine but
	// several on a loaded one. The bounds are about the machine; the
	// relay's own deadline is the default 10s ProduceTimeout per batch.
	began := time.Now()
	poll.Eventually(t, time.Minute, "every row sent", func() bool { return countUnsent(t, db) == 0 })
	t.Logf("%d rows sent in %s", len(events), time.Since(began).Round(time.Millisecond))
	c := readCommitted(t, addr, topic, 30*time.Second, events)
	for _, e := range events {
		if recs := c.byEventID(e); len(recs) != 1 {
			var at []string
			for _, r := range recs {
				at = append(at, fmt.Sprintf("%d/%d", r.Partition, r.Offset))
			}
			t.Errorf("event %s read %d times (partition/offset %v), want once", e, len(recs), at)
		}
	}
}

// TestStuckTransactionalIDMovesTheLane: a lane's transactional id whose
// last transaction ended but cannot finish (a partition it wrote lost its
// only replica, so the coordinator refuses every producer of the id) holds
// the lane back only until the relay moves the lane to its next
// generation, a new id: the lane's rows are then published through it,
// once each and in order, and the move is recorded for the lane's later
// holders. Without the move the lane's rows wait for the partition.
func TestStuckTransactionalIDMovesTheLane(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	const key = "order-stuck"
	lane := laneOf(t, db, key)
	kafkatest.StuckTransaction(cluster, TransactionalID("tx-move-", lane, 0), "PrepareAbort", "gone")
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 50 * time.Millisecond, Publishers: 2,
		NewLaneProducer: laneProducers(addr, "tx-move-")})
	start(t, w)
	events := insertRows(t, db, topic, key, 5)
	for i := range 10 {
		insertRows(t, db, topic, fmt.Sprintf("order-%d", i), 1)
	}

	poll.Eventually(t, 30*time.Second, "every row sent", func() bool { return countUnsent(t, db) == 0 })
	checkMovedOnce(t, db, addr, lane, key, events)
}

// TestUnfinishedCommitIsSent: a lane's transaction whose commit the
// coordinator wrote but cannot finish (a partition it wrote lost its
// leader, so every retry of the commit is answered CONCURRENT_TRANSACTIONS)
// counts as committed: its rows are marked sent about a description later,
// not published again when the batch's deadline (ProduceTimeout +
// ResolveTimeout, 40s) passes, and the lane moves to its next generation,
// through which its later rows are published. A read_committed consumer
// reads each event once, in order.
func TestUnfinishedCommitIsSent(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	const key = "order-unfinished"
	lane := laneOf(t, db, key)
	written := kafkatest.UnfinishedCommit(cluster, TransactionalID("tx-unfinished-", lane, 0), topic, 4)
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 50 * time.Millisecond,
		NewLaneProducer: laneProducers(addr, "tx-unfinished-")})
	start(t, w)

	events := insertRows(t, db, topic, key, 3)
	began := time.Now()
	poll.Eventually(t, 30*time.Second, "the committed rows marked sent", func() bool { return countUnsent(t, db) == 0 })
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("the committed rows were marked sent after %s, want about a second", took.Round(time.Millisecond))
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	events = append(events, insertRows(t, db, topic, key, 3)...)
	poll.Eventually(t, 30*time.Second, "every row sent", func() bool { return countUnsent(t, db) == 0 })
	checkMovedOnce(t, db, addr, lane, key, events)
}

// TestUnfinishedTransactionHoldsBackBriefly: a lane's producer has
// published; then the lane's last transaction stays unfinished (its end is
// written, a marker cannot be), so the cluster refuses the next
// transaction's records with CONCURRENT_TRANSACTIONS, which franz-go
// retries without end. The relay notices within about StallTimeout, gives
// the batch up and publishes through the lane's next generation: the
// lane's later rows are sent, once each and in order, long before the
// minute of ProduceTimeout that held the lane before.
func TestUnfinishedTransactionHoldsBackBriefly(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	const key = "order-ending"
	lane := laneOf(t, db, key)
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 50 * time.Millisecond, ProduceTimeout: time.Minute,
		NewLaneProducer: laneProducers(addr, "tx-ending-")})
	start(t, w)
	events := insertRows(t, db, topic, key, 1)
	poll.Eventually(t, 30*time.Second, "the first row sent", func() bool { return countUnsent(t, db) == 0 })

	kafkatest.StuckTransaction(cluster, TransactionalID("tx-ending-", lane, 0), "PrepareCommit", "gone")
	began := time.Now()
	events = append(events, insertRows(t, db, topic, key, 3)...)
	poll.Eventually(t, 20*time.Second, "the later rows sent", func() bool { return countUnsent(t, db) == 0 })
	t.Logf("later rows sent %s after the lane's transaction stayed unfinished", time.Since(began).Round(time.Millisecond))
	checkMovedOnce(t, db, addr, lane, key, events)
}

// checkMovedOnce checks that lane is in generation 1 and that a
// read_committed consumer reads key's events once each, in order.
func checkMovedOnce(t *testing.T, db *postgres.DB, addr string, lane int, key string, events []string) {
	t.Helper()
	var generation int
	if err := db.Pool.QueryRow(context.Background(), `SELECT generation FROM outbox_lanes WHERE lane = $1`, lane).Scan(&generation); err != nil {
		t.Fatalf("lane %d's generation: %v", lane, err)
	}
	if generation != 1 {
		t.Errorf("lane %d's generation = %d, want 1", lane, generation)
	}
	var got []string
	for _, r := range readCommitted(t, addr, topic, 30*time.Second, events).records() {
		if string(r.Key) == key {
			got = append(got, header(r, "ce_id"))
		}
	}
	if !slices.Equal(got, events) {
		t.Fatalf("key %s read as %v, want each event once in order %v", key, got, events)
	}
}

// TestLostSessionIsFencedInKafka: a relay's produce is held by the broker
// when its PostgreSQL session, and with it the lane's lock, is lost. Another
// relay takes the lane and publishes the order's events; its producer of the
// lane fences the first one. When the broker lets the first relay's request
// through, a read_committed consumer never sees that stale record: each
// event once, OrderCreated before OrderFinished.
func TestLostSessionIsFencedInKafka(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDSN(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	held, release := holdFirstProduce(t, cluster)
	c := collectWith(t, addr, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ctx := context.Background()
	defer release() // before the relays stop, whatever fails

	db1, db2 := pgtest.Open(t, dsn), pgtest.Open(t, dsn)
	svc := newService(db1, topic)
	cfg := Options{PollInterval: 50 * time.Millisecond, ProduceTimeout: 200 * time.Millisecond, ResolveTimeout: 30 * time.Second,
		NewLaneProducer: laneProducers(addr, "tx-fence-")}
	w1, _ := newWorker(t, db1, newProducer(t, addr), cfg)
	unshared(w1)
	o := createOrder(t, svc, "fenced")
	start(t, w1)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the first relay's produce request never reached the broker")
	}
	poll.Eventually(t, 10*time.Second, "the first relay past its ProduceTimeout", w1.awaiting.Load)
	if _, err := svc.MarkOrderFinished(ctx, o.ID); err != nil {
		t.Fatal(err)
	}
	// The first relay's session is lost while it holds the lane.
	var killed int
	err := db2.Pool.QueryRow(ctx, `
		SELECT count(pg_terminate_backend(pid)) FROM (
			SELECT DISTINCT pid FROM pg_locks
			WHERE locktype = 'advisory' AND classid = x'6f6c616e'::int::oid AND objsubid = 2 AND granted
			  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS holders`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminated %d sessions holding a lane, %v; want 1", killed, err)
	}
	// The second relay needs no short ProduceTimeout. With 200ms, a loaded
	// machine can make its EndTxn outlast that deadline: the relay then
	// takes the commit for failed and publishes the rows again, though the
	// commit may have gone through (two copies of each event).
	cfg2 := cfg
	cfg2.ProduceTimeout, cfg2.ResolveTimeout = 0, 0 // the defaults
	w2, _ := newWorker(t, db2, newProducer(t, addr), cfg2)
	unshared(w2)
	start(t, w2)
	rows := outboxRows(t, db2, "key = $1", o.ID)
	if len(rows) != 2 || rows[0].EventType != orders.TypeOrderCreated || rows[1].EventType != orders.TypeOrderFinished {
		t.Fatalf("outbox rows of the order: %+v", rows)
	}
	poll.Eventually(t, 15*time.Second, "both events sent by the second relay", func() bool { return countUnsent(t, db2) == 0 })
	for _, r := range rows {
		poll.Eventually(t, 10*time.Second, "record of "+r.EventType, func() bool { return len(c.byEventID(r.EventID)) > 0 })
	}

	release()
	poll.Eventually(t, 15*time.Second, "the first relay's held record resolved", func() bool { return !w1.awaiting.Load() })
	sentinel := createOrder(t, newService(db2, topic), "sentinel")
	ev := outboxRows(t, db2, "key = $1", sentinel.ID)[0].EventID
	poll.Eventually(t, 10*time.Second, "the sentinel consumed", func() bool { return len(c.byEventID(ev)) > 0 })
	checkKeyOrder(t, c.records(), o.ID, []string{rows[0].EventID, rows[1].EventID})
	for _, r := range rows {
		if n := len(c.byEventID(r.EventID)); n != 1 {
			t.Errorf("%d copies of %s read committed, want 1", n, r.EventType)
		}
	}
}
