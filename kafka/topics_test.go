package kafka

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/acme/orders-service/internal/kafkatest"
)

// partitionCounts returns the partition count of each of topics, waiting up
// to 10s until the metadata of each (just created on a real cluster, it
// reaches the brokers one by one) shows partitions.
func partitionCounts(t *testing.T, cl *kgo.Client, topics ...string) map[string]int {
	t.Helper()
	ctx := testContext(t, 10*time.Second)
	for {
		details, err := kadm.NewClient(cl).ListTopics(ctx, topics...)
		if err != nil {
			t.Fatalf("ListTopics: %v", err)
		}
		counts := make(map[string]int)
		for _, d := range details {
			if d.Err == nil && len(d.Partitions) > 0 {
				counts[d.Topic] = len(d.Partitions)
			}
		}
		if len(counts) == len(topics) {
			return counts
		}
		select {
		case <-ctx.Done():
			return counts
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestEnsureTopicsCreatesAndIsIdempotent(t *testing.T) {
	cluster := kafkatest.New(t)
	events, payments, dlq := cluster.Name("orders.events"), cluster.Name("payments.events"), cluster.Name("payments.events.dlq")
	cluster.DeleteAtEnd(events, payments, dlq)
	cl := newClient(t, Config{Brokers: cluster.Brokers})
	ctx := testContext(t, 10*time.Second)

	if err := EnsureTopics(ctx, cl, 3, -1, events, payments); err != nil {
		t.Fatalf("first EnsureTopics: %v", err)
	}
	got := partitionCounts(t, cl, events, payments)
	if got[events] != 3 || got[payments] != 3 {
		t.Fatalf("partition counts = %v, want 3 for both topics", got)
	}

	// Existing topics are success and are not altered; a new one is added.
	if err := EnsureTopics(ctx, cl, 5, -1, events, payments, dlq); err != nil {
		t.Fatalf("second EnsureTopics: %v", err)
	}
	got = partitionCounts(t, cl, events, payments, dlq)
	if got[events] != 3 || got[dlq] != 5 {
		t.Fatalf("partition counts = %v, want %s 3 and %s 5", got, events, dlq)
	}

	if err := EnsureTopics(ctx, cl, 1, -1); err != nil {
		t.Fatalf("EnsureTopics with no topics: %v", err)
	}
}

// TestEnsureTopicsBrokerDefaultPartitions runs on an embedded broker in both
// modes: it sets the broker's default partition count.
func TestEnsureTopicsBrokerDefaultPartitions(t *testing.T) {
	b := startBroker(t, WithDefaultPartitions(4))
	cl := newClient(t, Config{Brokers: []string{b.Addr()}})
	if err := EnsureTopics(testContext(t, 10*time.Second), cl, -1, -1, "defaulted"); err != nil {
		t.Fatalf("EnsureTopics: %v", err)
	}
	if got := partitionCounts(t, cl, "defaulted")["defaulted"]; got != 4 {
		t.Fatalf("partitions = %d, want the broker default 4", got)
	}
}

func TestEnsureTopicsRejectsBadCounts(t *testing.T) {
	cl := newClient(t, Config{Brokers: []string{"127.0.0.1:9"}})
	ctx := testContext(t, time.Second)
	if err := EnsureTopics(ctx, cl, 0, 1, "t"); err == nil || !strings.Contains(err.Error(), "partition count 0") {
		t.Errorf("partitions 0: got %v", err)
	}
	if err := EnsureTopics(ctx, cl, 1, 0, "t"); err == nil || !strings.Contains(err.Error(), "replication factor 0") {
		t.Errorf("replication factor 0: got %v", err)
	}
}

func TestEnsureTopicsUnreachableBroker(t *testing.T) {
	// A port that was free a moment ago: connections are refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	cl := newClient(t, Config{Brokers: []string{addr}})
	const timeout = 2 * time.Second
	start := time.Now()
	err = EnsureTopics(testContext(t, timeout), cl, 1, -1, "orders.events")
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("EnsureTopics against an unreachable broker succeeded")
	}
	if elapsed > timeout+2*time.Second {
		t.Errorf("EnsureTopics returned after %v, want about the %v context timeout", elapsed, timeout)
	}
	msg := err.Error()
	for _, want := range []string{`"orders.events"`, addr, "refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	t.Logf("error: %v", err)
}

func TestEnsureTopicsSilentBroker(t *testing.T) {
	// A listener that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
		}
	}()

	cl := newClient(t, Config{Brokers: []string{ln.Addr().String()}})
	const timeout = time.Second
	start := time.Now()
	err = EnsureTopics(testContext(t, timeout), cl, 1, -1, "orders.events")
	if elapsed := time.Since(start); elapsed > timeout+2*time.Second {
		t.Errorf("EnsureTopics returned after %v, want about the %v context timeout", elapsed, timeout)
	}
	if err == nil {
		t.Fatal("EnsureTopics against a silent broker succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v is not a deadline error", err)
	}
	for _, want := range []string{`"orders.events"`, ln.Addr().String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	t.Logf("error: %v", err)
}

// TestEnsureTopicsRefusedByBroker runs on an embedded broker in both modes:
// it needs kfake's users and ACLs.
func TestEnsureTopicsRefusedByBroker(t *testing.T) {
	// A user allowed to describe the cluster but not to create topics.
	b := startKfake(t,
		kfake.EnableSASL(),
		kfake.EnableACLs(),
		kfake.User(MechanismScramSHA256, "reader", "reader-pass", kfake.ACL{
			Resource: kmsg.ACLResourceTypeCluster, Name: "kafka-cluster",
			Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationDescribe, Allow: true,
		}),
	)
	cl := newClient(t, Config{
		Brokers: []string{b.Addr()},
		SASL:    SASLConfig{Mechanism: MechanismScramSHA256, User: "reader", Password: "reader-pass", AllowPlaintext: true},
	})
	err := EnsureTopics(testContext(t, 10*time.Second), cl, 1, -1, "orders.events", "payments.events")
	if err == nil {
		t.Fatal("EnsureTopics without CREATE permission succeeded")
	}
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Errorf("error %v is not TOPIC_AUTHORIZATION_FAILED", err)
	}
	msg := err.Error()
	for _, want := range []string{`"orders.events"`, `"payments.events"`, "TOPIC_AUTHORIZATION_FAILED"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error %q spans several lines, want one", msg)
	}
	t.Logf("error: %v", err)
}

// TestEnsureTopicsWithoutCreatePermission: a user allowed to read, write and
// describe topics but not to create them (the usual grant on managed Kafka)
// has every existing topic ensured, whatever CreateTopics would answer; a
// topic that is missing is reported as a MissingTopicsError naming it alone.
// kfake in both modes: it needs users and ACLs.
func TestEnsureTopicsWithoutCreatePermission(t *testing.T) {
	var acls []kfake.ACL
	for _, op := range []kmsg.ACLOperation{kmsg.ACLOperationRead, kmsg.ACLOperationWrite, kmsg.ACLOperationDescribe} {
		acls = append(acls, kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "*",
			Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true})
	}
	b := startKfake(t, kfake.SeedTopics(2, "orders.events", "payments.events"), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.User(MechanismScramSHA256, "svc", "svc-pass", acls...))
	cl := newClient(t, Config{
		Brokers: []string{b.Addr()},
		SASL:    SASLConfig{Mechanism: MechanismScramSHA256, User: "svc", Password: "svc-pass", AllowPlaintext: true},
	})
	if err := EnsureTopics(testContext(t, 10*time.Second), cl, 1, -1, "orders.events", "payments.events"); err != nil {
		t.Fatalf("existing topics without CREATE permission: %v", err)
	}
	err := EnsureTopics(testContext(t, 10*time.Second), cl, 1, -1, "orders.events", "payments.events.dlq", "payments.events")
	var missing *MissingTopicsError
	if !errors.As(err, &missing) || !slices.Equal(missing.Topics, []string{"payments.events.dlq"}) {
		t.Fatalf("a missing topic without CREATE permission: %v, want a MissingTopicsError naming payments.events.dlq alone", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"payments.events.dlq"`) || strings.Contains(msg, `"orders.events"`) ||
		!strings.Contains(msg, "TOPIC_AUTHORIZATION_FAILED") || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line naming the missing topic and the broker's reason", msg)
	}
	t.Logf("error: %v", err)
}
