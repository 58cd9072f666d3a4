package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/paymentsim"
	"github.com/acme/orders-service/postgres/pgtest"
)

// runSimulator answers OrderCreated events on k until the test ends.
func runSimulator(t *testing.T, k *testKafka) {
	t.Helper()
	cl, err := kafka.NewClient(kafka.Config{Brokers: strings.Split(k.brokers, ",")}, paymentsim.ClientOptions(k.simGroup, k.topic)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(paymentsim.Config{InTopic: k.topic, OutTopic: k.inboxTopic}).Run(ctx, cl)
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
}

func countStatus(t *testing.T, dsn, status string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM orders WHERE status = $1`, status).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// createOrders creates n orders spread over the instances with a few
// concurrent callers and returns their ids.
func createOrders(t *testing.T, n int, ins ...*instance) []string {
	t.Helper()
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				o, err := ins[(w+i)%len(ins)].client.CreateOrder(context.Background(),
					&orderspb.CreateOrderRequest{UserId: "replicas", Amount: int64(i + 1)})
				if err != nil {
					errs <- err
					return
				}
				ids[i] = o.GetOrder().GetId()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

// checkEvents asserts each order has exactly want events in Kafka, in order.
func checkEvents(t *testing.T, events []event, ids []string, want ...string) {
	t.Helper()
	byKey := map[string][]string{}
	for _, e := range events {
		byKey[e.key] = append(byKey[e.key], e.typ)
	}
	for _, id := range ids {
		if got := strings.Join(byKey[id], ","); got != strings.Join(want, ",") {
			t.Fatalf("order %s has events [%s], want [%s]", id, got, strings.Join(want, ","))
		}
	}
}

func TestThreeReplicasThousandOrdersEachPaid(t *testing.T) {
	const n = 1000
	dsn := pgtest.NewEmptyDSN(t)
	k := newKafka(t)
	env := k.env(dsn)
	ins := []*instance{startInstance(t, nil, env), startInstance(t, nil, env), startInstance(t, nil, env)}
	runSimulator(t, k)

	ids := createOrders(t, n, ins...)
	poll.Eventually(t, 90*time.Second, "every order paid", func() bool { return countStatus(t, dsn, "finished") == n })

	events := readTopic(t, k.brokers, k.topic, 2*n, 30*time.Second)
	if len(events) != 2*n {
		t.Fatalf("%d events in Kafka, want %d", len(events), 2*n)
	}
	checkEvents(t, events, ids, "orders.v1.OrderCreated", "orders.v1.OrderFinished")
}

// TestBrokerRestartMidStreamDeliversEverything runs on an embedded broker in
// both modes: the test stops and restarts it (the failover suite does this
// to a real cluster's nodes).
func TestBrokerRestartMidStreamDeliversEverything(t *testing.T) {
	dsn := pgtest.NewEmptyDSN(t)
	dir := t.TempDir()
	broker := startBroker(t, "127.0.0.1:0", kafka.WithDataDir(dir))
	addr := broker.Addr()
	in := startInstance(t, nil, map[string]string{"POSTGRES_DSN": dsn, "KAFKA_BROKER": addr})

	before := createOrders(t, 50, in)
	broker.Close()
	// Orders are still accepted while Kafka is down; their events wait.
	during := createOrders(t, 50, in)
	poll.Eventually(t, 20*time.Second, "the outage seen in the metrics", func() bool {
		text := scrape(t, in)
		return metric(t, text, "orders_outbox_unsent") > 0 && metric(t, text, "orders_outbox_oldest_unsent_age_seconds") > 0 &&
			metric(t, text, "orders_outbox_publish_errors_total") > 0
	})
	startBroker(t, addr, kafka.WithDataDir(dir))
	after := createOrders(t, 50, in)

	// Read until every order's event is there, not until as many records
	// as orders: delivery is at least once, so one may be there twice.
	ids := append(append(before, during...), after...)
	events := readTopicKeys(t, addr, "orders.events", ids, 60*time.Second)
	seen := map[string]bool{}
	copies := map[string]int{}
	for _, e := range events {
		seen[e.key] = true
		copies[e.id]++
	}
	for _, id := range ids {
		if !seen[id] {
			t.Fatalf("order %s has no event in Kafka after the broker came back (%d records, %d distinct events)", id, len(events), len(copies))
		}
	}
	poll.Eventually(t, 20*time.Second, "every outbox row marked sent", func() bool {
		return metric(t, scrape(t, in), "orders_outbox_unsent") == 0
	})
}

// TestKcatReadsEvents proves the wire format to a Kafka client we did not
// write: kcat (librdkafka) reads an event with its CloudEvents headers.
func TestKcatReadsEvents(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kcat is required in CI (.ci/run installs it)")
		}
		t.Skip("kcat not installed")
	}
	dsn := pgtest.NewEmptyDSN(t)
	k := newKafka(t)
	in := startInstance(t, nil, k.env(dsn))
	o, err := in.client.CreateOrder(context.Background(), &orderspb.CreateOrderRequest{UserId: "kcat", Amount: 99, Description: "read by kcat"})
	if err != nil {
		t.Fatal(err)
	}
	readTopic(t, k.brokers, k.topic, 1, 10*time.Second) // published

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-b", k.brokers, "-C", "-t", k.topic, "-o", "beginning", "-e", "-q", "-J").Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	var msg struct {
		Key     string   `json:"key"`
		Payload string   `json:"payload"`
		Headers []string `json:"headers"`
	}
	line := strings.TrimSpace(string(out))
	if err := json.Unmarshal([]byte(line), &msg); err != nil {
		t.Fatalf("kcat output %q: %v", out, err)
	}
	headers := map[string]string{}
	for i := 0; i+1 < len(msg.Headers); i += 2 {
		headers[msg.Headers[i]] = msg.Headers[i+1]
	}
	if msg.Key != o.GetOrder().GetId() || headers["ce_type"] != "orders.v1.OrderCreated" || headers["ce_specversion"] != "1.0" ||
		headers["content-type"] != "application/json" || headers["ce_id"] == "" {
		t.Fatalf("kcat saw key=%q headers=%v", msg.Key, headers)
	}
	var data struct {
		OrderID     string `json:"order_id"`
		Description string `json:"description"`
	}
	if err := json.Unmarshal([]byte(msg.Payload), &data); err != nil || data.OrderID != msg.Key || data.Description != "read by kcat" {
		t.Fatalf("kcat payload %q: %v", msg.Payload, err)
	}
}
