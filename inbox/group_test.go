package inbox_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/internal/poll"
)

// groupState returns the consumer group's state and member count.
func (e *env) groupState(adm *kadm.Client) (string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gs, err := adm.DescribeGroups(ctx, e.group)
	if err != nil {
		return "", 0
	}
	g := gs[e.group]
	return g.State, len(g.Members)
}

// TestConsumerCloseDuringRebalanceIsBounded: a consumer stopped while its
// group waits for a member that does not rejoin (here one that holds its
// poll) closes within the given bound instead of waiting for the rebalance.
func TestConsumerCloseDuringRebalanceIsBounded(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	e.produce(succeeded(e.createOrder(100)))
	_, a := e.startConsumer(m, inbox.ConsumerOptions{}, nil)
	poll.Eventually(t, waitLong, "the first consumer stores a record", func() bool { return testutil.ToFloat64(m.Received) == 1 })

	consumerClient := a.cl
	adm := kadm.NewClient(consumerClient)
	newMember := func() *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.brokers...), kgo.FetchMaxWait(100 * time.Millisecond),
			kgo.RebalanceTimeout(10 * time.Second)},
			inbox.ClientOptions(e.group, e.inboxTopic)...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.AllowRebalance(); cl.Close() })
		return cl
	}
	holder := newMember()
	poll.Eventually(t, waitLong, "a stable group of two", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		holder.PollRecords(ctx, 1)
		holder.AllowRebalance()
		s, n := e.groupState(adm)
		return s == "Stable" && n == 2
	})
	done, cancel := context.WithCancel(context.Background())
	cancel()
	holder.PollRecords(done, 1) // holds rebalances until AllowRebalance
	newMember()
	t.Cleanup(holder.AllowRebalance) // runs before the members' Close, which would wait for it
	poll.Eventually(t, waitLong, "a rebalance waiting for the holder", func() bool {
		s, _ := e.groupState(adm)
		return s == "PreparingRebalance"
	})

	a.cl = nil // closed below, through the bounded close
	start := time.Now()
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("run stopped after %s", time.Since(start))
	inbox.CloseClient(consumerClient, e.group, "", 2*time.Second, e.log)
	t.Logf("closed after %s", time.Since(start))
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("closing the consumer took %s, want about the 2s bound", took)
	}
}

// startStaticConsumer runs an InboxConsumer that is a static group member.
func (e *env) startStaticConsumer(m *inbox.Metrics, instanceID string) *running {
	e.t.Helper()
	opts := append([]kgo.Opt{kgo.SeedBrokers(e.brokers...), kgo.FetchMaxWait(100 * time.Millisecond)},
		inbox.ClientOptions(e.group, e.inboxTopic)...)
	cl, err := kgo.NewClient(append(opts, kgo.InstanceID(instanceID))...)
	if err != nil {
		e.t.Fatal(err)
	}
	c := inbox.NewConsumer(inbox.ConsumerDeps{Client: cl, Store: e.db, Metrics: m, Logger: e.log}, inbox.ConsumerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), cl: cl}
	go func() { r.done <- c.Run(ctx) }()
	e.t.Cleanup(func() { r.stop() })
	return r
}

// TestStaticMembersRestartUnderLoad: static members killed and restarted
// with the same instance id, while payments keep arriving, take their
// places back (the group stays at three members) and, afterwards, every
// partition is consumed to its end.
func TestStaticMembersRestartUnderLoad(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	replicas := make([]*running, 3)
	for i := range replicas {
		replicas[i] = e.startStaticConsumer(m, fmt.Sprintf("orders-%d", i))
	}
	ctl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(e.inboxTopic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	adm := kadm.NewClient(ctl)
	poll.Eventually(t, waitLong, "a stable group of three", func() bool { s, n := e.groupState(adm); return s == "Stable" && n == 3 })

	ctx, stopLoad := context.WithCancel(context.Background())
	var produced atomic.Int64
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		for i := 0; ctx.Err() == nil; i++ {
			r := succeeded(uuid.NewString())
			r.Partition = int32(i % 3)
			if ctl.ProduceSync(ctx, r).FirstErr() == nil {
				produced.Add(1)
			}
			time.Sleep(2 * time.Millisecond) // a steady load, not a synchronisation
		}
	}()
	for round := range 6 {
		i := round % 3
		// A killed process sends no LeaveGroup; neither does a static
		// member's Close, so this is a kill as the group sees it.
		if err := replicas[i].stop(); err != nil {
			t.Fatal(err)
		}
		replicas[i] = e.startStaticConsumer(m, fmt.Sprintf("orders-%d", i))
		poll.Eventually(t, waitLong, "the restarted member back in a stable group of three", func() bool {
			s, n := e.groupState(adm)
			return s == "Stable" && n == 3
		})
		received := testutil.ToFloat64(m.Received)
		poll.Eventually(t, waitLong, "payments consumed after the restart", func() bool { return testutil.ToFloat64(m.Received) > received })
	}
	stopLoad()
	<-loaded
	poll.Eventually(t, 30*time.Second, "every payment stored", func() bool { return e.count(`SELECT count(*) FROM inbox`) == int(produced.Load()) })
	poll.Eventually(t, 30*time.Second, "every partition committed to its end", func() bool {
		ends, err := adm.ListEndOffsets(context.Background(), e.inboxTopic)
		if err != nil {
			return false
		}
		committed, err := adm.FetchOffsets(context.Background(), e.group)
		if err != nil {
			return false
		}
		for p := range int32(3) {
			end, _ := ends.Lookup(e.inboxTopic, p)
			c, _ := committed.Lookup(e.inboxTopic, p)
			if c.At != end.Offset {
				return false
			}
		}
		return true
	})
	t.Logf("%d payments over 6 restarts", produced.Load())
}
