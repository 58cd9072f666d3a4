// Package kafkatest gives tests a Kafka to talk to over TCP: the real
// cluster named by KAFKA_TEST_BROKERS (make test-kafka starts one with
// scripts/kafka-cluster.sh), or else an in-process kfake broker of the
// test's own. Topic and group names are made unique per test, because a real
// cluster keeps its topics between tests and runs.
package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// EnvBrokers names the real cluster's seed brokers, comma-separated.
const EnvBrokers = "KAFKA_TEST_BROKERS"

// Real reports whether tests run against the cluster of KAFKA_TEST_BROKERS.
func Real() bool { return strings.TrimSpace(os.Getenv(EnvBrokers)) != "" }

// Cluster is the Kafka of one test.
type Cluster struct {
	// Brokers are the seed brokers as host:port.
	Brokers []string
	// Fake is the test's kfake broker, nil on a real cluster.
	Fake *kfake.Cluster

	t      testing.TB
	suffix string
}

// New returns the Kafka of test t: the real cluster when KAFKA_TEST_BROKERS
// is set (kfake options are then ignored), else a one-broker kfake cluster on
// a loopback port, configured by opts and closed when the test ends. Topics
// the test creates through the Cluster are deleted from a real cluster when
// the test ends.
func New(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	if !Real() {
		return Fake(t, opts...)
	}
	c := &Cluster{t: t, suffix: uniqueSuffix(t)}
	for _, b := range strings.Split(os.Getenv(EnvBrokers), ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.Brokers = append(c.Brokers, b)
		}
	}
	return c
}

// Fake returns a one-broker kfake cluster on a loopback port, configured by
// opts and closed when the test ends, whether or not KAFKA_TEST_BROKERS is
// set. It is for tests that need what only kfake offers (holding or dropping
// requests with ControlKey, a ListenFn, kfake's users and ACLs, restarting
// the broker): a real cluster cannot be steered like that from a test.
func Fake(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	c := &Cluster{t: t, suffix: uniqueSuffix(t)}
	fake, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.Ports(0)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(fake.Close)
	c.Fake = fake
	c.Brokers = fake.ListenAddrs()
	return c
}

// Brokers returns the seed brokers of a new Cluster for t.
func Brokers(t testing.TB) []string {
	t.Helper()
	return New(t).Brokers
}

// Addr returns the first seed broker.
func (c *Cluster) Addr() string { return c.Brokers[0] }

// Real reports whether c is a real cluster.
func (c *Cluster) Real() bool { return c.Fake == nil }

// Name returns name made unique to the test on a real cluster
// (name.<test>.<random>); on the test's own kfake broker it is name itself.
// Use it for topics and consumer groups.
func (c *Cluster) Name(name string) string {
	if c.Real() {
		return name + "." + c.suffix
	}
	return name
}

// CreateTopics creates the topics with the given partitions and the
// cluster's default replication, waits until they can be produced to, and on
// a real cluster deletes them when the test ends.
func (c *Cluster) CreateTopics(partitions int32, topics ...string) {
	c.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		c.t.Fatalf("kafka client: %v", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resps, err := adm.CreateTopics(ctx, partitions, -1, nil, topics...)
	if err != nil {
		c.t.Fatalf("create topics %v: %v", topics, err)
	}
	for _, r := range resps.Sorted() {
		if r.Err != nil && r.Err != kerr.TopicAlreadyExists {
			c.t.Fatalf("create topic %s: %v", r.Topic, r.Err)
		}
	}
	if c.Real() {
		c.DeleteAtEnd(topics...)
	}
	c.waitLeaders(ctx, adm, partitions, topics)
}

// DeleteAtEnd deletes topics from a real cluster when the test ends, for
// topics the code under test created itself.
func (c *Cluster) DeleteAtEnd(topics ...string) {
	if !c.Real() {
		return
	}
	c.t.Cleanup(func() {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
		if err != nil {
			return
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := kadm.NewClient(cl).DeleteTopics(ctx, topics...); err != nil {
			c.t.Logf("delete test topics %v: %v", topics, err)
		}
	})
}

// waitLeaders polls the metadata until every partition of topics has a
// leader, so that a test's first produce does not race topic creation.
func (c *Cluster) waitLeaders(ctx context.Context, adm *kadm.Client, partitions int32, topics []string) {
	c.t.Helper()
	for {
		md, err := adm.Metadata(ctx, topics...)
		if err == nil && ready(md, partitions, topics) {
			return
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("topics %v have no leaders yet: %v", topics, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func ready(md kadm.Metadata, partitions int32, topics []string) bool {
	for _, name := range topics {
		td, ok := md.Topics[name]
		if !ok || td.Err != nil || (partitions > 0 && int32(len(td.Partitions)) != partitions) {
			return false
		}
		for _, p := range td.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return false
			}
		}
	}
	return true
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// uniqueSuffix is the test's name made safe for a topic name, and random
// bytes so that two runs of one test never share a topic.
func uniqueSuffix(t testing.TB) string {
	name := unsafeChars.ReplaceAllString(t.Name(), "_")
	if len(name) > 120 {
		name = name[:120]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return name + "." + hex.EncodeToString(b[:])
}
