package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestShutdownUnderLoadPublishesAcknowledgedOrders: SIGTERM while clients
// keep creating orders, Kafka up. Every order the service acknowledged has
// its OrderCreated committed in Kafka (as a read_committed consumer sees
// it) when the service has exited.
func TestShutdownUnderLoadPublishesAcknowledgedOrders(t *testing.T) {
	k := newKafka(t)
	env := k.env(pgtest.NewEmptyDSN(t))
	env["SHUTDOWN_TIMEOUT"] = "10s"
	in := startInstance(t, nil, env)

	var mu sync.Mutex
	acked := map[string]bool{}
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				o, err := in.client.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: "load", Amount: 1})
				if err != nil {
					continue // refused once shutdown began; only acknowledged orders count
				}
				mu.Lock()
				acked[o.GetOrder().GetId()] = true
				mu.Unlock()
			}
		})
	}
	poll.Eventually(t, 20*time.Second, "orders acknowledged under load", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 200
	})
	start := time.Now()
	in.stop() // SIGTERM, then wait for the exit
	stopLoad()
	wg.Wait()
	t.Logf("%d orders acknowledged; exit %v after SIGTERM", len(acked), time.Since(start).Round(time.Millisecond))

	published := committedOrderKeys(t, k.brokers, k.topic, acked, 20*time.Second)
	var missing []string
	for id := range acked {
		if !published[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged orders have no OrderCreated in Kafka after the exit, such as %s",
			len(missing), len(acked), missing[0])
	}
}

// committedOrderKeys reads topic as a read_committed consumer until every
// id of want has an OrderCreated record or timeout passes, and returns the
// keys of the OrderCreated records it saw.
func committedOrderKeys(t *testing.T, brokers, topic string, want map[string]bool, timeout time.Duration) map[string]bool {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]bool{}
	covered := 0
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for covered < len(want) && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "ce_type" && string(h.Value) == "orders.v1.OrderCreated" && !seen[string(r.Key)] {
					seen[string(r.Key)] = true
					if want[string(r.Key)] {
						covered++
					}
				}
			}
		})
	}
	return seen
}

// TestShutdownWithKafkaDownKeepsTheDeadline: SIGTERM while Kafka is down
// and the relay has rows to publish: the service exits within
// SHUTDOWN_TIMEOUT + 1s, whatever the relay and the consumer wait for. The
// rows stay in the outbox for the next start.
func TestShutdownWithKafkaDownKeepsTheDeadline(t *testing.T) {
	broker := startBroker(t, "127.0.0.1:0")
	env := map[string]string{"POSTGRES_DSN": pgtest.NewEmptyDSN(t), "KAFKA_BROKER": broker.Addr(), "SHUTDOWN_TIMEOUT": "4s"}
	in := startInstance(t, nil, env)
	if _, err := in.client.CreateOrder(context.Background(), &orderspb.CreateOrderRequest{UserId: "before", Amount: 1}); err != nil {
		t.Fatal(err)
	}
	broker.Close()
	for i := range 20 {
		if _, err := in.client.CreateOrder(context.Background(), &orderspb.CreateOrderRequest{UserId: "during", Amount: int64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	in.stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("exit %v after SIGTERM with Kafka down, want within SHUTDOWN_TIMEOUT (4s) + 1s", d.Round(time.Millisecond))
	} else {
		t.Logf("exit %v after SIGTERM with Kafka down", d.Round(time.Millisecond))
	}
}
