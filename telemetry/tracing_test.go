package telemetry_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/metadata"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/internal/kafkatest"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/outbox"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
	"github.com/acme/orders-service/telemetry"
)

// testKafka is a test's Kafka and the names it uses there.
type testKafka struct {
	brokers                                     []string
	ordersTopic, paymentsTopic, dlqTopic, group string
}

// newKafka returns an embedded broker of the test's own with the service's
// default names, or, when KAFKA_TEST_BROKERS is set, that real cluster with
// topics and a group unique to the test (its topics deleted when it ends).
func newKafka(t *testing.T) testKafka {
	t.Helper()
	if !kafkatest.Real() {
		broker, err := kafka.StartEmbedded("127.0.0.1:0", kafka.WithDefaultPartitions(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(broker.Close)
		return testKafka{brokers: []string{broker.Addr()}, ordersTopic: "orders.events", paymentsTopic: "payments.events",
			dlqTopic: "payments.events.dlq", group: "orders-service"}
	}
	c := kafkatest.New(t)
	k := testKafka{brokers: c.Brokers, ordersTopic: c.Name("orders.events"), paymentsTopic: c.Name("payments.events"),
		dlqTopic: c.Name("payments.events.dlq"), group: c.Name("orders-service")}
	c.DeleteAtEnd(k.ordersTopic, k.paymentsTopic, k.dlqTopic)
	return k
}

// recordSpans installs a tracer provider recording every ended span and the
// W3C trace-context propagator as the globals, restoring the previous ones
// when t ends.
func recordSpans(t *testing.T) *tracetest.SpanRecorder {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		tp.Shutdown(context.Background())
	})
	return sr
}

// goUntilCleanup runs f in a goroutine and, when t ends, cancels its context
// and waits for it to return.
func goUntilCleanup(t *testing.T, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := f(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("worker: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// findSpan returns the first ended span with name that matches, if any.
func findSpan(sr *tracetest.SpanRecorder, name string, match func(sdktrace.ReadOnlySpan) bool) sdktrace.ReadOnlySpan {
	for _, s := range sr.Ended() {
		if s.Name() == name && match(s) {
			return s
		}
	}
	return nil
}

// TestTraceFlowsFromGRPCThroughKafkaAndBack wires the real parts by hand and
// follows one trace: the caller's traceparent on CreateOrder, the RPC server
// span, the outbox write under it, the relay's publish span linked to it,
// the traceparent header of the OrderCreated record, and the inbox span
// that applies the payment result carrying that header.
func TestTraceFlowsFromGRPCThroughKafkaAndBack(t *testing.T) {
	sr := recordSpans(t)
	db := pgtest.NewDB(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	k := newKafka(t)
	producer, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	if err := kafka.EnsureTopics(ctx, producer, 1, -1, k.ordersTopic, k.paymentsTopic, k.dlqTopic); err != nil {
		t.Fatal(err)
	}

	writer := postgres.NewOrderWriter(k.ordersTopic,
		cloudevents.Encoder[postgres.Header]{Source: "orders-service/test", TraceParent: telemetry.TraceParent})
	svc := postgres.NewOrderService(db, writer, "USD")
	pageKey, err := db.PageTokenKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcapi.NewServer(grpcapi.NewHandler(svc, pageKey, log), health.NewServer(), grpcapi.Options{
		Log:           log,
		ServerOptions: []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler())},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	relay := outbox.New(outbox.Deps{Store: db, Producer: producer, Logger: log},
		outbox.Options{Wake: db.OutboxWritten(), PollInterval: 50 * time.Millisecond})
	goUntilCleanup(t, relay.Run)
	consumerClient, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.brokers...)},
		inbox.ClientOptions(k.group, k.paymentsTopic)...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(consumerClient.Close) // registered first, so it runs after the consumer stopped
	m, err := inbox.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	consumer := inbox.NewConsumer(inbox.ConsumerDeps{Client: consumerClient, Store: db, Metrics: m, Logger: log}, inbox.ConsumerOptions{})
	processor := inbox.NewProcessor(inbox.ProcessorDeps{Store: db, Applier: svc, Metrics: m, Logger: log}, inbox.ProcessorOptions{
		DLQTopic: k.dlqTopic, Wake: consumer.Stored(), PollInterval: 50 * time.Millisecond,
	})
	goUntilCleanup(t, consumer.Run)
	goUntilCleanup(t, processor.Run)

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	callerSpan, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	callCtx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID.String()+"-"+callerSpan.String()+"-01")
	created, err := orderspb.NewOrderServiceClient(conn).CreateOrder(callCtx,
		&orderspb.CreateOrderRequest{UserId: "tracer", Amount: 1200, Description: "traced"})
	if err != nil {
		t.Fatal(err)
	}
	orderID := created.GetOrder().GetId()
	inTrace := func(s sdktrace.ReadOnlySpan) bool { return s.SpanContext().TraceID() == traceID }

	var rpc, write sdktrace.ReadOnlySpan
	poll.Eventually(t, 5*time.Second, "the CreateOrder server span", func() bool {
		rpc = findSpan(sr, "orders.v1.OrderService/CreateOrder", inTrace)
		return rpc != nil
	})
	if rpc.SpanKind() != trace.SpanKindServer || rpc.Parent().SpanID() != callerSpan || !rpc.Parent().IsRemote() {
		t.Errorf("RPC span kind %v parent %v (remote %v), want a server span under the caller's span %v",
			rpc.SpanKind(), rpc.Parent().SpanID(), rpc.Parent().IsRemote(), callerSpan)
	}
	if write = findSpan(sr, "outbox.write", inTrace); write == nil {
		t.Fatalf("no outbox.write span in trace %v; spans: %v", traceID, spanNames(sr))
	}
	if write.Parent().SpanID() != rpc.SpanContext().SpanID() {
		t.Errorf("outbox.write parent = %v, want the RPC span %v", write.Parent().SpanID(), rpc.SpanContext().SpanID())
	}
	wantAttrs := map[string]string{"orders.event_count": "1", "orders.order_id": created.GetOrder().GetId(), "cloudevents.event_type": "orders.v1.OrderCreated"}
	for _, a := range write.Attributes() {
		if want, ok := wantAttrs[string(a.Key)]; ok && a.Value.String() == want {
			delete(wantAttrs, string(a.Key))
		}
	}
	if len(wantAttrs) > 0 {
		t.Errorf("outbox.write attributes %v lack %v", write.Attributes(), wantAttrs)
	}

	// The event carries the outbox write's span as its traceparent.
	wantTP := "00-" + traceID.String() + "-" + write.SpanContext().SpanID().String() + "-01"
	var publish sdktrace.ReadOnlySpan
	poll.Eventually(t, 10*time.Second, "an outbox.publish span linked to the trace", func() bool {
		publish = findSpan(sr, "outbox.publish", func(s sdktrace.ReadOnlySpan) bool {
			for _, l := range s.Links() {
				if l.SpanContext.TraceID() == traceID {
					return true
				}
			}
			return false
		})
		return publish != nil
	})
	if l := publish.Links()[0].SpanContext; l.SpanID() != write.SpanContext().SpanID() {
		t.Errorf("outbox.publish links span %v, want the outbox.write span %v", l.SpanID(), write.SpanContext().SpanID())
	}
	if publish.SpanKind() != trace.SpanKindProducer {
		t.Errorf("outbox.publish kind = %v, want producer", publish.SpanKind())
	}

	created0 := readRecord(t, k.brokers, k.ordersTopic)
	if string(created0.Key) != orderID {
		t.Fatalf("record key = %q, want order %s", created0.Key, orderID)
	}
	tp, _ := cloudevents.Lookup(created0.Headers, cloudevents.HeaderTraceParent)
	if tp != wantTP {
		t.Fatalf("OrderCreated traceparent = %q, want %q", tp, wantTP)
	}

	data, _ := json.Marshal(map[string]string{"order_id": orderID, "payment_id": "pay-1"})
	payment := &kgo.Record{Topic: k.paymentsTopic, Key: []byte(orderID), Value: data, Headers: cloudevents.AppendHeaders([]kgo.RecordHeader(nil), cloudevents.Event{
		ID: uuid.NewString(), Type: "payments.v1.PaymentSucceeded", Source: "payments-service/test",
		Time: time.Now(), TraceParent: tp,
	})}
	if err := producer.ProduceSync(ctx, payment).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var apply sdktrace.ReadOnlySpan
	poll.Eventually(t, 10*time.Second, "an inbox.apply span in the trace", func() bool {
		apply = findSpan(sr, "inbox.apply", inTrace)
		return apply != nil
	})
	if apply.Parent().SpanID() != write.SpanContext().SpanID() || apply.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("inbox.apply kind %v parent %v, want a consumer span under the record's traceparent span %v",
			apply.SpanKind(), apply.Parent().SpanID(), write.SpanContext().SpanID())
	}
	// The span ends when the batch is applied, just before its transaction
	// commits: poll for the commit.
	poll.Eventually(t, 10*time.Second, "the order finished by the payment", func() bool {
		st, err := orderspb.NewOrderServiceClient(conn).GetOrderStatus(ctx, &orderspb.GetOrderStatusRequest{OrderId: orderID})
		return err == nil && st.GetStatus() == orderspb.OrderStatus_ORDER_STATUS_FINISHED
	})

	// The OrderFinished the payment caused continues the trace.
	var headers []postgres.Header
	if err := db.Pool.QueryRow(ctx, `SELECT headers FROM outbox WHERE key = $1 AND event_type = 'orders.v1.OrderFinished'`,
		orderID).Scan(&headers); err != nil {
		t.Fatal(err)
	}
	wantFinished := "00-" + apply.SpanContext().TraceID().String() + "-"
	var gotFinished string
	for _, h := range headers {
		if h.Key == cloudevents.HeaderTraceParent {
			gotFinished = string(h.Value)
		}
	}
	if !strings.HasPrefix(gotFinished, wantFinished) {
		t.Errorf("OrderFinished traceparent = %q, want one in the payment's trace (%s...)", gotFinished, wantFinished)
	}
}

// readRecord returns the first record of topic, waiting up to 10s for it.
func readRecord(t *testing.T, brokers []string, topic string) *kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		fs := cl.PollRecords(ctx, 1)
		if rs := fs.Records(); len(rs) > 0 {
			return rs[0]
		}
		if ctx.Err() != nil {
			t.Fatalf("no record on %s within 10s: %v", topic, fs.Err())
		}
	}
}

func spanNames(sr *tracetest.SpanRecorder) []string {
	var names []string
	for _, s := range sr.Ended() {
		names = append(names, s.Name()+"@"+s.SpanContext().TraceID().String())
	}
	return names
}

// Without an exporter nothing is recorded, yet a caller's trace continues:
// the span started under a remote parent carries the parent's trace.
func TestNoExporterRecordsNothingButTraceContinues(t *testing.T) {
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		if otel.GetTracerProvider() != prevTP {
			otel.SetTracerProvider(prevTP)
		}
		otel.SetTextMapPropagator(prevProp)
	})
	shutdown, err := telemetry.SetupTracing(context.Background(), func(string) string { return "" }, "test", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := telemetry.ContextWithTraceParent(context.Background(), tp)
	ctx, span := telemetry.Tracer().Start(ctx, "outbox.write")
	defer span.End()
	if span.IsRecording() {
		t.Error("span is recording without an exporter")
	}
	if got := telemetry.TraceParent(ctx); got != tp {
		t.Errorf("traceparent = %q, want the caller's %q", got, tp)
	}
	if _, span := telemetry.Tracer().Start(context.Background(), "root"); span.SpanContext().IsValid() {
		t.Error("a span without a parent has a trace: one was started for nobody")
	}
}
