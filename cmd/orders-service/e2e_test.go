package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/buildinfo"
	"github.com/acme/orders-service/internal/kafkatest"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres/pgtest"
)

// These tests run whole orders-service instances (run() in-process, with
// their own ports) against a fresh PostgreSQL database and a Kafka-protocol
// broker on TCP: an embedded broker of the test's own, or the real cluster of
// KAFKA_TEST_BROKERS (see testKafka).

func startBroker(t *testing.T, addr string, opts ...kafka.EmbeddedOption) *kafka.Embedded {
	t.Helper()
	b, err := kafka.StartEmbedded(addr, append([]kafka.EmbeddedOption{kafka.WithDefaultPartitions(3)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// testKafka is the Kafka of one test and the names the service uses on it.
type testKafka struct {
	brokers                                      string // KAFKA_BROKER
	topic, inboxTopic, dlqTopic, group, simGroup string
}

// newKafka returns the test's Kafka: the real cluster of KAFKA_TEST_BROKERS
// with topics and groups unique to the test (its topics deleted when it
// ends), or else an embedded broker of its own with the default names.
func newKafka(t *testing.T) *testKafka {
	t.Helper()
	if !kafkatest.Real() {
		return &testKafka{brokers: startBroker(t, "127.0.0.1:0").Addr(), topic: "orders.events", inboxTopic: "payments.events",
			dlqTopic: "payments.events.dlq", group: "orders-service", simGroup: "payments-sim"}
	}
	c := kafkatest.New(t)
	k := &testKafka{brokers: strings.Join(c.Brokers, ","), topic: c.Name("orders.events"), inboxTopic: c.Name("payments.events"),
		dlqTopic: c.Name("payments.events.dlq"), group: c.Name("orders-service"), simGroup: c.Name("payments-sim")}
	c.DeleteAtEnd(k.topic, k.inboxTopic, k.dlqTopic)
	return k
}

// env returns the service's environment for k and the database dsn.
func (k *testKafka) env(dsn string) map[string]string {
	return map[string]string{"POSTGRES_DSN": dsn, "KAFKA_BROKER": k.brokers, "KAFKA_TOPIC": k.topic,
		"KAFKA_INBOX_TOPIC": k.inboxTopic, "KAFKA_DLQ_TOPIC": k.dlqTopic, "KAFKA_GROUP_ID": k.group}
}

// syncBuffer collects a service's log for failure reports.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type instance struct {
	grpcAddr, httpAddr string
	client             orderspb.OrderServiceClient
	logs               *syncBuffer
	signal             context.CancelFunc // what SIGTERM does
	stop               func()             // signal, then wait for a clean exit
	exited             func()             // fails the test when the instance has exited
}

// startInstance runs orders-service with env on top of defaults for tests and
// waits until /readyz answers 200. The instance listens on ports of its own
// choosing (GRPC_PORT=0, HTTP_PORT=0), read from its log, and is a static
// group member with an id of its own, as with the default
// KAFKA_GROUP_INSTANCE_ID on a fixed port.
func startInstance(t *testing.T, args []string, env map[string]string) *instance {
	t.Helper()
	in := launchInstance(t, args, env)
	poll.Eventually(t, 30*time.Second, "instance ready", func() bool {
		in.exited()
		resp, err := http.Get("http://" + in.httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	in.connect(t)
	return in
}

// launchInstance is startInstance without waiting for /readyz: it returns
// once the instance's HTTP server listens (in.httpAddr); in.connect dials
// its gRPC server.
func launchInstance(t *testing.T, args []string, env map[string]string) *instance {
	t.Helper()
	full := map[string]string{
		"GRPC_PORT": "0", "HTTP_PORT": "0", "LOG_LEVEL": "info",
		"KAFKA_GROUP_INSTANCE_ID": uniqueInstanceID("instance"),
		"KAFKA_TOPIC_PARTITIONS":  "3", "OUTBOX_POLL_INTERVAL": "100ms",
	}
	if !slices.Contains(args, "-dev") {
		full["AUTH_MODE"] = "none" // required outside -dev
	}
	for k, v := range env {
		full[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(k string) string { return full[k] }, logs) }()
	in := &instance{logs: logs, signal: cancel}
	stopped := false
	in.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("instance stopped with %v\n%s", err, logs)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("instance did not stop within 30s\n%s", logs)
		}
	}
	t.Cleanup(in.stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of instance %s:\n%s", in.grpcAddr, logs)
		}
	})
	exited := func() {
		select {
		case err := <-done:
			t.Fatalf("instance exited: %v\n%s", err, logs)
		default:
		}
	}
	in.exited = exited
	poll.Eventually(t, 60*time.Second, "the service to log its HTTP address", func() bool {
		exited()
		for line := range strings.Lines(logs.String()) {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "HTTP server listening" {
				in.httpAddr = dialable(t, l.Addr)
			}
		}
		return in.httpAddr != ""
	})
	return in
}

// connect waits for the instance's gRPC address and dials it (in.client).
func (in *instance) connect(t *testing.T) {
	t.Helper()
	in.grpcAddr, _ = listenAddrs(t, in.logs.String, in.exited)
	conn, err := grpc.NewClient(in.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	in.client = orderspb.NewOrderServiceClient(conn)
}

// listenAddrs waits until a service's log (so far: logs()) has its "gRPC
// server listening" and "HTTP server listening" lines, and returns the
// addresses they name ready to dial: an unspecified host (every interface)
// becomes 127.0.0.1. It needs LOG_LEVEL info or lower. exited, called on
// every poll, fails the test when the service has stopped.
func listenAddrs(t *testing.T, logs func() string, exited func()) (grpcAddr, httpAddr string) {
	t.Helper()
	poll.Eventually(t, 60*time.Second, "the service to log its gRPC and HTTP addresses", func() bool {
		exited()
		for line := range strings.Lines(logs()) {
			var l struct{ Msg, Addr string }
			if !strings.Contains(line, " server listening") || json.Unmarshal([]byte(line), &l) != nil {
				continue
			}
			switch l.Msg {
			case "gRPC server listening":
				grpcAddr = dialable(t, l.Addr)
			case "HTTP server listening":
				httpAddr = dialable(t, l.Addr)
			}
		}
		return grpcAddr != "" && httpAddr != ""
	})
	return grpcAddr, httpAddr
}

// dialable returns a listener's address with an unspecified host replaced by
// 127.0.0.1.
func dialable(t *testing.T, addr string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("logged address %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// uniqueInstanceID returns a static group instance id no other process of
// the test run has, like the default one of a replica on a fixed GRPC_PORT.
func uniqueInstanceID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), instanceSeq.Add(1))
}

var instanceSeq atomic.Int64

// event is one record read back from a topic.
type event struct {
	key, typ, id string
	headers      map[string]string
	value        []byte
}

// readTopic returns every record of topic (up to want, waiting up to
// timeout for them), in partition order; brokers is a comma-separated list.
// It reads as the service's consumers must (read_committed): records of
// aborted Kafka transactions, which the relay publishes again, are not
// events.
func readTopic(t *testing.T, brokers, topic string, want int, timeout time.Duration) []event {
	t.Helper()
	return readTopicUntil(t, brokers, topic, timeout, func(events []event) bool { return len(events) >= want })
}

// readTopicKeys reads topic (read_committed) until every key in keys has a
// record, or timeout passes, and returns what it read. Unlike a count, it
// is not fooled by duplicates: delivery is at least once, so a record may
// be there twice.
func readTopicKeys(t *testing.T, brokers, topic string, keys []string, timeout time.Duration) []event {
	t.Helper()
	missing := map[string]bool{}
	for _, k := range keys {
		missing[k] = true
	}
	seen := 0
	return readTopicUntil(t, brokers, topic, timeout, func(events []event) bool {
		for _, e := range events[seen:] {
			delete(missing, e.key)
		}
		seen = len(events)
		return len(missing) == 0
	})
}

// readTopicUntil reads topic from the start with a read_committed consumer
// until done says so, after each poll, or timeout passes.
func readTopicUntil(t *testing.T, brokers, topic string, timeout time.Duration, done func([]event) bool) []event {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []event
	deadline := time.Now().Add(timeout)
	for !done(out) && time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			e := event{key: string(r.Key), value: r.Value, headers: map[string]string{}}
			for _, h := range r.Headers {
				e.headers[h.Key] = string(h.Value)
			}
			e.typ, e.id = e.headers["ce_type"], e.headers["ce_id"]
			out = append(out, e)
		})
	}
	return out
}

func scrape(t *testing.T, in *instance) string {
	t.Helper()
	resp, err := http.Get("http://" + in.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metric returns the value of the sample whose line starts with name.
func metric(t *testing.T, text, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return v
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestEndToEndOrderIsPaidThroughKafka(t *testing.T) {
	dsn := pgtest.NewEmptyDSN(t)
	k := newKafka(t)
	// -dev adds the payments simulator (its group is payments-sim in both
	// modes); the broker is the test's.
	in := startInstance(t, []string{"-dev"}, k.env(dsn))

	// The caller's trace continues into the event's traceparent header.
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	created, err := in.client.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: "e2e", Amount: 4200, Description: "end to end"})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetOrder().GetId()
	poll.Eventually(t, 15*time.Second, "order finished by the simulated payment", func() bool {
		st, err := in.client.GetOrderStatus(context.Background(), &orderspb.GetOrderStatusRequest{OrderId: id})
		return err == nil && st.GetStatus() == orderspb.OrderStatus_ORDER_STATUS_FINISHED
	})

	events := readTopic(t, k.brokers, k.topic, 2, 10*time.Second)
	if len(events) != 2 || events[0].typ != "orders.v1.OrderCreated" || events[1].typ != "orders.v1.OrderFinished" {
		t.Fatalf("events = %+v, want OrderCreated then OrderFinished", events)
	}
	c := events[0]
	if c.key != id || c.headers["ce_specversion"] != "1.0" || c.headers["ce_source"] == "" ||
		c.headers["content-type"] != "application/json" || c.id == "" || c.headers["ce_time"] == "" {
		t.Fatalf("OrderCreated record key=%q headers=%v", c.key, c.headers)
	}
	if _, err := time.Parse(time.RFC3339, c.headers["ce_time"]); err != nil {
		t.Fatalf("ce_time %q is not RFC 3339: %v", c.headers["ce_time"], err)
	}
	if tp := c.headers["traceparent"]; !strings.HasPrefix(tp, "00-"+traceID+"-") {
		t.Fatalf("traceparent = %q, want trace %s from the gRPC call", tp, traceID)
	}
	var data map[string]any
	if err := json.Unmarshal(c.value, &data); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"order_id", "user_id", "amount", "currency", "description", "status", "created_at"} {
		if _, ok := data[k]; !ok {
			t.Errorf("OrderCreated data lacks %s: %s", k, c.value)
		}
	}
	if data["order_id"] != id || data["amount"] != float64(4200) || data["status"] != "new" {
		t.Errorf("OrderCreated data = %s", c.value)
	}
	if err := json.Unmarshal(events[1].value, &data); err != nil || data["status"] != "finished" || data["order_id"] != id {
		t.Errorf("OrderFinished data = %s (%v)", events[1].value, err)
	}
	// The payment is there (the order finished by it); the bound is only
	// for a new client on a loaded machine.
	payments := readTopic(t, k.brokers, k.inboxTopic, 1, 20*time.Second)
	if len(payments) != 1 || payments[0].typ != "payments.v1.PaymentSucceeded" || payments[0].key != id {
		t.Fatalf("payments = %+v", payments)
	}

	// A redelivered payment, a poison record and a payment for an order that
	// does not exist (yet) move the inbox metrics.
	producer, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(k.brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	dup := &kgo.Record{Topic: k.inboxTopic, Key: []byte(id), Value: payments[0].value}
	for k, v := range payments[0].headers {
		dup.Headers = append(dup.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	poison := &kgo.Record{Topic: k.inboxTopic, Key: []byte("poison"), Value: []byte("{not json"),
		Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte("poison-1")}, {Key: "ce_type", Value: []byte("payments.v1.PaymentSucceeded")}}}
	unknown := &kgo.Record{Topic: k.inboxTopic, Value: []byte(`{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab"}`),
		Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte("unknown-1")}, {Key: "ce_type", Value: []byte("payments.v1.PaymentSucceeded")}}}
	if err := producer.ProduceSync(context.Background(), dup, poison, unknown).FirstErr(); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 20*time.Second, "duplicate, dead and unprocessed counted", func() bool {
		text := scrape(t, in)
		return metric(t, text, "orders_inbox_duplicates_total") >= 1 && metric(t, text, "orders_inbox_dead_total") >= 1 &&
			metric(t, text, "orders_inbox_unprocessed") >= 1
	})
	dlq := readTopic(t, k.brokers, k.dlqTopic, 1, 10*time.Second)
	if len(dlq) != 1 || dlq[0].key != "poison" || dlq[0].headers["dlq_original_topic"] != k.inboxTopic ||
		dlq[0].headers["dlq_error"] == "" || dlq[0].headers["dlq_original_offset"] == "" || dlq[0].headers["dlq_original_partition"] == "" ||
		dlq[0].id != "poison-1" || string(dlq[0].value) != "{not json" {
		t.Fatalf("dead letter = %+v", dlq)
	}
	if n := metric(t, scrape(t, in), `grpc_server_handled_total{grpc_code="OK",grpc_method="GetOrderStatus",grpc_service="orders.v1.OrderService",grpc_type="unary"}`); n < 1 {
		t.Fatalf("GetOrderStatus calls counted: %v", n)
	}
	bi := buildinfo.Read()
	if n := metric(t, scrape(t, in), fmt.Sprintf(`orders_build_info{goversion=%q,revision=%q,version=%q}`, bi.GoVersion, bi.Revision, bi.Version)); n != 1 {
		t.Fatalf("orders_build_info = %v, want 1", n)
	}
	if want := `"msg":"starting orders-service","version":"` + bi.Version + `"`; !strings.Contains(in.logs.String(), want) {
		t.Fatalf("the start-up log line lacks %s", want)
	}

	// redrive re-queues the dead row; it is poison still, so it dies again.
	var out syncBuffer
	if err := run(context.Background(), []string{"redrive", "poison-1"}, envOf(map[string]string{"POSTGRES_DSN": dsn}), &out); err != nil {
		t.Fatalf("redrive: %v", err)
	}
	if !strings.Contains(out.String(), "re-queued 1 dead inbox message(s)") {
		t.Fatalf("redrive printed %q", out.String())
	}
	poll.Eventually(t, 10*time.Second, "the re-driven poison record dead again", func() bool {
		return metric(t, scrape(t, in), "orders_inbox_dead_total") >= 2
	})

	poll.Eventually(t, 5*time.Second, "both events counted as published", func() bool {
		return metric(t, scrape(t, in), "orders_outbox_published_total") >= 2
	})
	text := scrape(t, in)
	for name, min := range map[string]float64{
		"orders_outbox_published_total":               2,
		"orders_outbox_publish_latency_seconds_count": 2,
		"orders_inbox_received_total":                 1,
		"orders_inbox_processed_total":                1,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="CreateOrder",grpc_service="orders.v1.OrderService",grpc_type="unary"}`: 1,
	} {
		if got := metric(t, text, name); got < min {
			t.Errorf("%s = %v, want at least %v", name, got, min)
		}
	}
}

func TestShutdownLetsInFlightCallsFinish(t *testing.T) {
	dsn := pgtest.NewEmptyDSN(t)
	in := startInstance(t, nil, newKafka(t).env(dsn))
	o, err := in.client.CreateOrder(context.Background(), &orderspb.CreateOrderRequest{UserId: "shutdown", Amount: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Hold the order's row lock so MarkOrderFinished stays in flight.
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), `SELECT 1 FROM orders WHERE id = $1 FOR UPDATE`, o.GetOrder().GetId()); err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	go func() {
		resp, err := in.client.MarkOrderFinished(context.Background(), &orderspb.MarkOrderFinishedRequest{OrderId: o.GetOrder().GetId()})
		if err == nil && resp.GetOrder().GetStatus() != orderspb.OrderStatus_ORDER_STATUS_FINISHED {
			err = fmt.Errorf("status %v", resp.GetOrder().GetStatus())
		}
		result <- err
	}()
	poll.Eventually(t, 10*time.Second, "the call waiting for the row lock", func() bool {
		var waiting bool
		conn2, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			return false
		}
		defer conn2.Close(context.Background())
		conn2.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database())`).Scan(&waiting)
		return waiting
	})
	in.signal()
	poll.Eventually(t, 10*time.Second, "shutdown to begin", func() bool { return strings.Contains(in.logs.String(), "shutting down") })
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("in-flight call during shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("in-flight call did not finish")
	}
	in.stop()
	var events int
	conn.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'orders.v1.OrderFinished'`, o.GetOrder().GetId()).Scan(&events)
	if events != 1 {
		t.Fatalf("OrderFinished rows = %d, want 1", events)
	}
}
