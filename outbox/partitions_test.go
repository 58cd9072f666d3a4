package outbox

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres/pgtest"
)

// failNode makes cluster answer every produce request sent to node with
// NOT_LEADER_FOR_PARTITION for each of its partitions, applying none, while
// failing is set: a partition whose leader is gone, as the client sees it.
func failNode(cluster *kfake.Cluster, node int32, failing *atomic.Bool) {
	cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if cluster.CurrentNode() != node || !failing.Load() {
			return nil, nil, false
		}
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.NotLeaderForPartition.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

// TestStuckPartitionHoldsOnlyItself: partition 0 of the events topic is on
// its own broker, which fails every produce with NOT_LEADER_FOR_PARTITION,
// while new orders (two rows each, a new key each) come at 100 a second.
// The relay holds the partition back as a whole instead of learning it key
// by key: every row of the other partitions is sent within a bound well
// under what a produce timeout per new key costs. Once the partition
// recovers, its rows are sent, each key's in order, once each.
func TestStuckPartitionHoldsOnlyItself(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.SeedTopics(4, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	addr := cluster.ListenAddrs()[0]
	for p := range int32(4) {
		if err := cluster.MoveTopicPartition(topic, p, min(p, 1)^1); err != nil { // partition 0 on node 1, the rest on node 0
			t.Fatal(err)
		}
	}
	var failing atomic.Bool
	failing.Store(true)
	failNode(cluster, 1, &failing)
	c := collect(t, addr, topic)

	const produceTimeout = time.Second
	newP := func() (Producer, error) { return kgo.NewClient(kgo.SeedBrokers(addr)) }
	first, err := newP()
	if err != nil {
		t.Fatal(err)
	}
	w, _ := newWorker(t, db, first, Options{PollInterval: 50 * time.Millisecond, ProduceTimeout: produceTimeout,
		ResolveTimeout: produceTimeout / 2, NewProducer: newP, Publishers: 4})
	start(t, w)

	// 100 new keys a second for 5 seconds.
	var mu sync.Mutex
	events := map[string][]string{} // key -> its event ids in id order
	tick := time.NewTicker(10 * time.Millisecond)
	for i := range 500 {
		<-tick.C
		key := fmt.Sprintf("order-%d", i)
		ids := insertRows(t, db, topic, key, 2)
		mu.Lock()
		events[key] = ids
		mu.Unlock()
	}
	tick.Stop()

	// Which keys are on partition 0: from the records consumed, once every
	// other key's rows are out (the mapping under test is not used here).
	poll.Eventually(t, 30*time.Second, "some rows of partition 0 held back, every other row sent", func() bool {
		return countUnsent(t, db) > 0 && int(countUnsent(t, db)) == 2*(len(events)-keysConsumed(c))
	})
	rows, err := db.Pool.Query(context.Background(),
		`SELECT key, (extract(epoch FROM sent_at - created_at) * 1000)::bigint FROM outbox WHERE sent`)
	if err != nil {
		t.Fatal(err)
	}
	type lat struct {
		Key string
		MS  int64
	}
	lats, err := pgx.CollectRows(rows, pgx.RowToStructByPos[lat])
	if err != nil {
		t.Fatal(err)
	}
	bound := 4 * produceTimeout // a probe of the partition holds its lane for ProduceTimeout + ResolveTimeout
	var worst time.Duration
	late := 0
	for _, l := range lats {
		d := time.Duration(l.MS) * time.Millisecond
		worst = max(worst, d)
		if d > bound {
			late++
		}
	}
	t.Logf("rows of the other partitions: %d sent, slowest after %v, %d later than %v; %d keys unsent", len(lats), worst, late, bound, len(events)-keysConsumed(c))
	if late > 0 {
		t.Errorf("%d of %d rows of partitions that answer were sent later than %v after their commit (slowest %v): the stuck partition held them back",
			late, len(lats), bound, worst)
	}
	if len(events)-keysConsumed(c) < 20 {
		t.Fatalf("only %d keys held back; want about a quarter of %d on partition 0", len(events)-keysConsumed(c), len(events))
	}

	failing.Store(false)
	poll.Eventually(t, 30*time.Second, "the held partition's rows sent once it recovers", func() bool { return countUnsent(t, db) == 0 })
	poll.Eventually(t, 10*time.Second, "every record consumed", func() bool { return len(c.records()) >= 2*len(events) })
	got := map[string][]string{}
	for _, r := range c.records() {
		got[string(r.Key)] = append(got[string(r.Key)], header(r, "ce_id"))
	}
	for key, want := range events {
		if fmt.Sprint(got[key]) != fmt.Sprint(want) {
			t.Errorf("key %s: records %v, want %v (in order, once each)", key, got[key], want)
		}
	}
}

// keysConsumed counts the keys with a record consumed.
func keysConsumed(c *collector) int {
	keys := map[string]bool{}
	for _, r := range c.records() {
		keys[string(r.Key)] = true
	}
	return len(keys)
}
