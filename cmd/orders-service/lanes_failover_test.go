//go:build kafkacluster

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres/pgtest"
)

// laneHoldersSQL selects the sessions of the current database holding an
// outbox lane's lock while idle in their transaction for over a second: a
// publisher waiting for Kafka.
const laneHoldersSQL = `
	SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
	WHERE l.locktype = 'advisory' AND l.classid = x'6f6c616e'::int::oid AND l.objsubid = 2 AND l.granted
	  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	  AND a.state = 'idle in transaction' AND now() - a.state_change > interval '1 second'`

// laneOwnersSQL selects the replicas' lane-sharing sessions of the current
// database (outbox/share.go).
const laneOwnersSQL = `
	SELECT DISTINCT pid FROM pg_locks
	WHERE locktype = 'advisory' AND classid = x'6f6f776e'::int::oid AND objsubid = 2 AND granted
	  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`

// TestClusterLostSession: the broker leading the most partitions of the
// events topic is frozen (SIGSTOP) while two replicas publish orders that
// are finished right after creation; once a publisher waits for it with its
// lane held, its PostgreSQL session is ended (pg_terminate_backend), so the
// lane's lock is lost while its records are in flight; the replicas'
// lane-sharing sessions are ended too, as in a PostgreSQL restart. Another
// publisher takes the lane and publishes the lane's rows again and newer
// ones; the broker resumes. A read_committed reader sees every event in order and no
// stale copy after a newer event: the first producer of the lane was fenced.
func TestClusterLostSession(t *testing.T) {
	c := needCluster(t)
	x := c.stopBusiestLeader(t, "lostsession", 1000)
	poll.Eventually(t, 30*time.Second, "a publisher holding its lane for records in flight", func() bool {
		return queryInt(t, x.dsn, `SELECT count(*) FROM (`+laneHoldersSQL+`) h`) > 0
	})
	terminated := queryInt(t, x.dsn, `SELECT count(pg_terminate_backend(pid)) FROM (`+laneHoldersSQL+`) h`)
	// As in a PostgreSQL restart, the replicas' lane-sharing sessions end
	// too, so the lanes are shared out again and may move to another replica.
	owners := queryInt(t, x.dsn, `SELECT count(pg_terminate_backend(pid)) FROM (`+laneOwnersSQL+`) o`)
	t.Logf("ended %d PostgreSQL sessions holding a lane with records in flight and %d lane-sharing sessions", terminated, owners)
	moved := waitPublishing(t, c, x.topic, x.led, x.node, x.stoppedAt, 90*time.Second)
	x.resume()
	t.Logf("partitions moved and written again %v after the stop; node %d resumed", moved.Round(time.Millisecond), x.node)
	x.endLoad()
	ids := x.load.wait(t)

	poll.Eventually(t, 120*time.Second, "the outbox empty", func() bool {
		return queryInt(t, x.dsn, `SELECT count(*) FROM outbox WHERE NOT sent`) == 0
	})
	st, su := checkIsolations(t, c, x.topic, ids, typeCreated, typeFinished)
	t.Logf("SUMMARY lost session: orders=%d events=%d records=%d duplicates_read_committed=%d duplicates_read_uncommitted=%d terminated_sessions=%d stopped_node=%d stop_to_publishing=%v",
		len(ids), st.events, st.records, st.duplicates, su.duplicates, terminated, x.node, moved.Round(time.Millisecond))
}

// createAssigned creates topic with an explicit replica assignment
// (partition i on the nodes of assign[i]; Kafka wants one replication
// factor for all) and min.insync.replicas 1.
func createAssigned(t *testing.T, c *cluster, topic string, assign [][]int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	for p, nodes := range assign {
		ra := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
		ra.Partition, ra.Replicas = int32(p), nodes
		rt.ReplicaAssignment = append(rt.ReplicaAssignment, ra)
	}
	cfg := kmsg.NewCreateTopicsRequestTopicConfig()
	cfg.Name, cfg.Value = "min.insync.replicas", kmsg.StringPtr("1")
	rt.Configs = append(rt.Configs, cfg)
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range resp.Topics {
		if rt.ErrorCode != 0 {
			t.Fatalf("create %s: error code %d", topic, rt.ErrorCode)
		}
	}
}

// percentile returns the q-quantile of ds (sorted in place); 0 for none.
func percentile(ds []float64, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// TestClusterLeaderlessPartition: partition 0 of the events topic lives on
// one broker only; that broker is SIGKILLed while orders keep coming and
// restarted later. Every other partition's events keep arriving: their
// commit-to-acknowledgement latency during the outage is reported beside
// the same before it, from the kill and from the moment the cluster has
// moved the dead broker's other partitions (the topic's other partitions
// have their single replicas on the two other brokers, but the transaction
// coordinators' __transaction_state partitions it led move). Partition 0's
// rows arrive in order once its broker returns.
func TestClusterLeaderlessPartition(t *testing.T) {
	c := needCluster(t)
	dsn := pgtest.NewEmptyDSN(t)
	names := uniqueNames("leaderless")
	topic := names["KAFKA_TOPIC"]
	const lonely = 3
	createAssigned(t, c, topic, [][]int32{{lonely}, {1}, {2}, {1}, {2}, {1}})
	env := c.replicaEnv(dsn, names)
	rs := []*replica{startReplica(t, "replica-1", env), startReplica(t, "replica-2", env)}

	// 100 orders a second, as an operator would meet it.
	var mu sync.Mutex
	var ids []string
	var failed atomic.Value
	stop := make(chan struct{})
	paced := make(chan struct{})
	go func() {
		defer close(paced)
		var wg sync.WaitGroup
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				wg.Wait()
				return
			case <-tick.C:
			}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				o, err := rs[i%len(rs)].client.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: "leaderless", Amount: int64(i + 1)})
				if err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				mu.Lock()
				ids = append(ids, o.GetOrder().GetId())
				mu.Unlock()
			})
		}
	}()
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-paced
	}
	defer stopLoad()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(ids) }
	nowMS := func() int { return queryInt(t, dsn, `SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint`) }
	poll.Eventually(t, 60*time.Second, "orders flowing", func() bool { return count() >= 1000 })
	killedAt := nowMS()
	c.kill(t, lonely)
	t.Logf("SIGKILLed node %d, partition 0's only replica, after %d orders", lonely, count())
	c.movedOff(t, lonely, topic)
	movedAt := nowMS()
	t.Logf("partitions moved off node %d %d ms after the kill", lonely, movedAt-killedAt)
	at := count()
	poll.Eventually(t, 120*time.Second, "orders during the outage", func() bool { return count() >= at+2000 })
	restartedAt := nowMS()
	stopLoad()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatalf("an order was refused: %v", err)
	}
	c.start(t, lonely)
	poll.Eventually(t, 120*time.Second, "the outbox empty", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`) == 0
	})
	recs := c.readCommitted(t, topic)
	st := checkOrderEvents(t, recs, ids, typeCreated)
	copies := map[string][]string{}
	for _, r := range recs {
		copies[r.id] = append(copies[r.id], fmt.Sprintf("%d/%d", r.partition, r.offset))
	}
	shown := 0
	for id, at := range copies {
		if len(at) > 1 && shown < 5 {
			shown++
			t.Logf("read_committed duplicate %s at partition/offset %v", id, at)
		}
	}
	su := countEvents(c.readAll(t, topic))
	partition := map[string]int32{}
	for _, r := range recs {
		partition[r.id] = r.partition
	}
	type row struct {
		id      string
		created int
		latency int
	}
	lat := queryStrings(t, dsn, `
		SELECT event_id::text || ' ' || (extract(epoch FROM created_at) * 1000)::bigint || ' ' || (extract(epoch FROM sent_at - created_at) * 1000)::bigint
		FROM outbox WHERE sent`)
	// Before the outage is the steady state: rows committed from 6 s to 1 s
	// before the kill, not the replicas' start (their lanes' first
	// transactions) nor the rows in flight when the broker died.
	const steadyWindow, steadyMargin = 5000, 1000
	var before, during, moved, stuck []float64
	for _, s := range lat {
		var r row
		if _, err := fmt.Sscanf(s, "%s %d %d", &r.id, &r.created, &r.latency); err != nil {
			t.Fatal(err)
		}
		switch p, in := partition[r.id], r.created >= killedAt && r.created < restartedAt; {
		case p == 0 && in:
			stuck = append(stuck, float64(r.latency))
		case p == 0:
		case in:
			during = append(during, float64(r.latency))
			if r.created >= movedAt {
				moved = append(moved, float64(r.latency))
			}
		case r.created < killedAt-steadyMargin && r.created >= killedAt-steadyMargin-steadyWindow:
			before = append(before, float64(r.latency))
		}
	}
	p99Before, p99During := percentile(before, 0.99), percentile(moved, 0.99)
	laneMoves := 0
	for _, r := range rs {
		laneMoves += strings.Count(r.log(), laneMoveLog)
	}
	t.Logf("SUMMARY leaderless partition: orders=%d events=%d records=%d duplicates_read_committed=%d duplicates_read_uncommitted=%d outage=%dms moved_after=%dms lane_moves=%d "+
		"other_partitions_before: n=%d p50=%.0fms p99=%.0fms; other_partitions_during, from the kill: n=%d p50=%.0fms p99=%.0fms; "+
		"from the move: n=%d p50=%.0fms p99=%.0fms; partition0_during: n=%d p50=%.0fms",
		len(ids), st.events, st.records, st.duplicates, su.duplicates, restartedAt-killedAt, movedAt-killedAt, laneMoves,
		len(before), percentile(before, 0.5), p99Before, len(during), percentile(during, 0.5), percentile(during, 0.99),
		len(moved), percentile(moved, 0.5), p99During, len(stuck), percentile(stuck, 0.5))
	// The target (at most 1s, and at most 10x before) is reported, not
	// asserted, as a benchmark's figure is: it depends on the machine's
	// load. The relay holds the stuck partition back as a whole
	// (docs/kafka.md, A stuck partition), and a lane whose last Kafka
	// transaction took in a record of the dead partition, so cannot finish,
	// moves to its next transactional id (lane_moves).
	met := p99During <= 1000 && p99During <= 10*max(p99Before, 1)
	t.Logf("target other partitions' p99 during the outage, from the move, <= 1s and <= 10x before: met=%v", met)
	if !met {
		for _, r := range rs {
			t.Logf("the relay's log in %s:\n%s", r.name, grepLines(r.log(), "outbox", "INFO", "WARN", "ERROR"))
		}
	}
}

// laneMoveLog is the relay's log line of a lane moving to its next
// generation (outbox/publisher.go).
const laneMoveLog = "the lane moves to a new one"

// grepLines returns the lines of log that contain sub and any of levels.
func grepLines(log, sub string, levels ...string) string {
	var out []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, sub) && slices.ContainsFunc(levels, func(l string) bool { return strings.Contains(line, l) }) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

// TestClusterReplicaKills: three replicas with four publishers each share
// the lanes while orders are created and finished through the first; the
// other two are SIGKILLed at random, mid-batch or not, and started again,
// six times. Each order's events arrive in order for a read_committed
// reader, none lost.
func TestClusterReplicaKills(t *testing.T) {
	c := needCluster(t)
	dsn := pgtest.NewEmptyDSN(t)
	names := uniqueNames("replicakills")
	env := c.replicaEnv(dsn, names)
	env["OUTBOX_PUBLISHERS"] = "4"
	rs := []*replica{startReplica(t, "replica-1", env), startReplica(t, "replica-2", env), startReplica(t, "replica-3", env)}
	topic := names["KAFKA_TOPIC"]

	stop := make(chan struct{})
	l := startLoad(t, 0, true, stop, rs[0])
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	kills := 0
	for round := range 6 {
		at := l.acked.Load()
		poll.Eventually(t, 60*time.Second, "orders flowing", func() bool { return l.acked.Load() >= at+int64(100+rng.IntN(300)) || l.failed() })
		i := 1 + rng.IntN(2)
		rs[i].kill(t)
		kills++
		rs[i] = startReplica(t, fmt.Sprintf("replica-%d.%d", i+1, round+1), env)
	}
	close(stop)
	ids := l.wait(t)
	poll.Eventually(t, 120*time.Second, "the outbox empty", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`) == 0
	})
	st, su := checkIsolations(t, c, topic, ids, typeCreated, typeFinished)
	if st.events != 2*len(ids) {
		t.Errorf("%d distinct events in Kafka, want %d", st.events, 2*len(ids))
	}
	t.Logf("SUMMARY replica kills: orders=%d events=%d records=%d duplicates_read_committed=%d duplicates_read_uncommitted=%d replicas=3 publishers_each=4 sigkills=%d",
		len(ids), st.events, st.records, st.duplicates, su.duplicates, kills)
}
