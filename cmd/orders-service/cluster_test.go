//go:build kafkacluster

package main

// Harness of the failover tests: a three-node Apache Kafka cluster started by
// scripts/kafka-cluster.sh (make kafka-up), whose brokers can be SIGKILLed
// by pid, as can the orders-service replicas (process_test.go).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/internal/kafkatest"
	"github.com/acme/orders-service/internal/poll"
)

// cluster is the real Kafka cluster named by KAFKA_TEST_BROKERS, its nodes
// controlled through scripts/kafka-cluster.sh (pid files in
// KAFKA_CLUSTER_DIR; node N has node.id N).
type cluster struct {
	brokers []string
	dir     string
	adm     *kadm.Client
	cl      *kgo.Client
}

// needCluster returns the cluster, failing (never skipping) when it is not
// configured or does not answer with three brokers. At the end of the test
// every node runs again and every partition of topics has a full ISR.
func needCluster(t *testing.T) *cluster {
	t.Helper()
	env := os.Getenv("KAFKA_TEST_BROKERS")
	if env == "" {
		t.Fatal("KAFKA_TEST_BROKERS is not set: the kafkacluster tests need the cluster of make kafka-up (make test-kafka starts it)")
	}
	c := &cluster{brokers: strings.Split(env, ","), dir: os.Getenv("KAFKA_CLUSTER_DIR")}
	if c.dir == "" {
		c.dir = filepath.Join(os.TempDir(), "orders-service-kafka")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.RetryTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	c.cl, c.adm = cl, kadm.NewClient(cl)
	t.Cleanup(cl.Close)
	for n := 1; n <= 3; n++ {
		if c.pid(n) == 0 {
			t.Fatalf("node %d of the cluster in %s is not running (pid file); KAFKA_CLUSTER_DIR must name the cluster of KAFKA_TEST_BROKERS", n, c.dir)
		}
	}
	poll.Eventually(t, 60*time.Second, "three brokers in the cluster of KAFKA_TEST_BROKERS="+env, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		bs, err := c.adm.ListBrokers(ctx)
		return err == nil && len(bs) == 3
	})
	t.Cleanup(func() { c.restore(t) })
	return c
}

// script runs scripts/kafka-cluster.sh with args.
func (c *cluster) script(t *testing.T, args ...string) {
	t.Helper()
	if err := c.run(args...); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) run(args ...string) error {
	cmd := exec.Command(filepath.Join("..", "..", "scripts", "kafka-cluster.sh"), args...)
	cmd.Env = append(os.Environ(), "KAFKA_CLUSTER_DIR="+c.dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kafka-cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// startAsync starts node n again in the background; the channel yields the
// outcome once its port accepts connections.
func (c *cluster) startAsync(n int) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.run("start", strconv.Itoa(n)) }()
	return done
}

// pid is node n's pid from its pid file, 0 when it is stopped; as the
// script does, it checks that the pid runs that node's Kafka.
func (c *cluster) pid(n int) int { return kafkatest.NodePID(c.dir, n) }

// kill SIGKILLs node n by its pid and waits until it is gone.
func (c *cluster) kill(t *testing.T, n int) { t.Helper(); c.script(t, "kill", strconv.Itoa(n)) }

// start starts node n again; it returns once its port accepts connections.
func (c *cluster) start(t *testing.T, n int) { t.Helper(); c.script(t, "start", strconv.Itoa(n)) }

// signal sends sig to node n's process by its pid.
func (c *cluster) signal(t *testing.T, n int, sig syscall.Signal) {
	t.Helper()
	pid := c.pid(n)
	if pid == 0 {
		t.Fatalf("node %d is not running", n)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("signal %v to node %d (pid %d): %v", sig, n, pid, err)
	}
}

// restore resumes stopped nodes, starts dead ones and waits until every
// broker is back and each partition of the cluster has a full ISR, so that
// the next test begins on a healthy cluster.
func (c *cluster) restore(t *testing.T) {
	for n := 1; n <= 3; n++ {
		if pid := c.pid(n); pid != 0 {
			syscall.Kill(pid, syscall.SIGCONT)
			continue
		}
		c.start(t, n)
	}
	poll.Eventually(t, 120*time.Second, "the cluster healthy again (3 brokers, full ISRs)", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		bs, err := c.adm.ListBrokers(ctx)
		if err != nil || len(bs) != 3 {
			return false
		}
		td, err := c.adm.ListTopics(ctx)
		if err != nil {
			return false
		}
		for _, d := range td {
			for _, p := range d.Partitions {
				if p.Err != nil || p.Leader < 0 || len(p.ISR) < len(p.Replicas) {
					return false
				}
			}
		}
		return true
	})
}

// leaders maps each partition of topic to its leader's node id (-1: none).
func (c *cluster) leaders(t *testing.T, topic string) map[int32]int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.tryLeaders(ctx, topic)
	if err != nil {
		t.Fatalf("describe %s: %v", topic, err)
	}
	return out
}

func (c *cluster) tryLeaders(ctx context.Context, topic string) (map[int32]int32, error) {
	td, err := c.adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int32{}
	for p, d := range td[topic].Partitions {
		out[p] = d.Leader
	}
	return out, nil
}

// movedOff waits until no partition of any topic, the internal ones
// (__transaction_state, __consumer_offsets) included, is led by node, except
// those of keep: the cluster has moved what it can off a dead broker.
func (c *cluster) movedOff(t *testing.T, node int32, keep string) {
	t.Helper()
	poll.Eventually(t, 120*time.Second, fmt.Sprintf("partitions moved off node %d", node), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		td, err := c.adm.ListTopicsWithInternal(ctx)
		if err != nil {
			return false
		}
		for topic, d := range td {
			for _, p := range d.Partitions {
				if p.Leader == node && topic != keep {
					return false
				}
			}
		}
		return true
	})
}

// busiestLeader is the node leading the most partitions of topic, once the
// topic exists and every partition has a leader: orders are acknowledged
// before the replicas have created their topics (they wait in the outbox).
func (c *cluster) busiestLeader(t *testing.T, topic string) int {
	t.Helper()
	var count map[int32]int
	poll.Eventually(t, 60*time.Second, "a leader for every partition of "+topic, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		leaders, err := c.tryLeaders(ctx, topic)
		if err != nil || len(leaders) == 0 {
			return false
		}
		count = map[int32]int{}
		for _, l := range leaders {
			if l < 0 {
				return false
			}
			count[l]++
		}
		return true
	})
	best := int32(-1)
	for id, n := range count {
		if id >= 0 && (best < 0 || n > count[best] || n == count[best] && id < best) {
			best = id
		}
	}
	if best < 0 {
		t.Fatalf("no partition of %s has a leader", topic)
	}
	return int(best)
}

// endOffsets returns the end offset of each partition of topic.
func (c *cluster) endOffsets(ctx context.Context, topic string) (map[int32]int64, error) {
	lo, err := c.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	if err := lo.Error(); err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// committed returns group's committed offset per partition of topic.
func (c *cluster) committed(ctx context.Context, group, topic string) (map[int32]int64, error) {
	or, err := c.adm.FetchOffsets(ctx, group)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	for p, o := range or[topic] {
		if o.Err != nil {
			return nil, o.Err
		}
		out[p] = o.At
	}
	return out, nil
}

// describeGroup summarises group's state and members for failure reports.
func (c *cluster) describeGroup(group string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if dg, err := c.adm.DescribeGroups(ctx, group); err == nil && dg[group].Err == nil && dg[group].State != "Dead" {
		g := dg[group]
		var b strings.Builder
		fmt.Fprintf(&b, "classic group state %s, protocol %s, %d members:", g.State, g.Protocol, len(g.Members))
		for _, m := range g.Members {
			fmt.Fprintf(&b, " [%s instance %v]", m.ClientID, m.InstanceID)
		}
		return b.String()
	}
	cg, err := c.adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		return err.Error()
	}
	g := cg[group]
	var b strings.Builder
	fmt.Fprintf(&b, "consumer group state %s, epoch %d, %d members:", g.State, g.Epoch, len(g.Members))
	for _, m := range g.Members {
		fmt.Fprintf(&b, " [%s instance %v: %v]", m.MemberID, m.InstanceID, m.Assignment)
	}
	return b.String()
}

// record is one record read back from a topic.
type record struct {
	partition int32
	offset    int64
	key, typ  string
	id        string // ce_id
	size      int
	headers   map[string]string
	value     []byte
}

// readAll reads every record of topic up to the end offsets it has when
// called, in offset order per partition, as a read_uncommitted consumer
// sees them: aborted transactions' records included.
func (c *cluster) readAll(t *testing.T, topic string) []record {
	t.Helper()
	return c.read(t, topic, kgo.ReadUncommitted())
}

// readCommitted is readAll for a read_committed consumer: records of
// aborted transactions are left out.
func (c *cluster) readCommitted(t *testing.T, topic string) []record {
	t.Helper()
	return c.read(t, topic, kgo.ReadCommitted())
}

// read reads topic up to its end offsets at the call with isolation level
// iso. A partition is read to its end when its last record was read, or
// when no record came for two seconds (with transactions the last offsets
// can be commit or abort markers, which no consumer is given).
func (c *cluster) read(t *testing.T, topic string, iso kgo.IsolationLevel) []record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var ends map[int32]int64
	var err error
	poll.Eventually(t, 60*time.Second, "end offsets of "+topic, func() bool {
		ends, err = c.endOffsets(ctx, topic)
		return err == nil
	})
	parts := map[string]map[int32]kgo.Offset{topic: {}}
	left := 0
	for p, end := range ends {
		if end > 0 {
			parts[topic][p] = kgo.NewOffset().AtStart()
			left++
		}
	}
	if left == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.ConsumePartitions(parts),
		kgo.FetchMaxPartitionBytes(8<<20), kgo.FetchMaxBytes(16<<20), kgo.FetchIsolationLevel(iso))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []record
	done := map[int32]bool{}
	for len(done) < left {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		if ctx.Err() == nil && pctx.Err() != nil && fs.NumRecords() == 0 {
			break // idle: the rest are markers
		}
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %d of %d partitions read to their end (%d records) before the deadline", topic, len(done), left, len(out))
		}
		fs.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Logf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= ends[r.Partition] {
				return
			}
			rec := record{partition: r.Partition, offset: r.Offset, key: string(r.Key), value: r.Value,
				size: len(r.Key) + len(r.Value), headers: map[string]string{}}
			for _, h := range r.Headers {
				rec.headers[h.Key] = string(h.Value)
				rec.size += len(h.Key) + len(h.Value)
			}
			rec.typ, rec.id = rec.headers["ce_type"], rec.headers["ce_id"]
			out = append(out, rec)
			if r.Offset == ends[r.Partition]-1 {
				done[r.Partition] = true
			}
		})
	}
	slices.SortStableFunc(out, func(a, b record) int {
		if a.partition != b.partition {
			return int(a.partition - b.partition)
		}
		return int(a.offset - b.offset)
	})
	return out
}

// uniqueNames gives a test its own topics and group, so that tests and
// reruns on one cluster do not see each other's records.
func uniqueNames(prefix string) map[string]string {
	p := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
	return map[string]string{
		"KAFKA_TOPIC":       p + ".orders",
		"KAFKA_INBOX_TOPIC": p + ".payments",
		"KAFKA_DLQ_TOPIC":   p + ".payments.dlq",
		"KAFKA_GROUP_ID":    p + ".orders-service",
	}
}

// replicaEnv is the environment of a replica on cluster c and database dsn
// with the test's names (see uniqueNames).
func (c *cluster) replicaEnv(dsn string, names map[string]string) map[string]string {
	env := map[string]string{"POSTGRES_DSN": dsn, "KAFKA_BROKER": strings.Join(c.brokers, ",")}
	for k, v := range names {
		env[k] = v
	}
	return env
}

// scrapeReplica returns the replica's /metrics text.
func scrapeReplica(t *testing.T, r *replica) string {
	t.Helper()
	return scrape(t, &instance{httpAddr: r.httpAddr})
}

// queryInt runs a query returning one integer on dsn.
func queryInt(t *testing.T, dsn, sql string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// queryStrings runs a query returning one text column on dsn.
func queryStrings(t *testing.T, dsn, sql string, args ...any) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}
