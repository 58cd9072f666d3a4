package grpcapi_test

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// sendUntilClosed sends msg on stream until n sends succeeded in total or
// the stream ends; it returns the number of successful sends.
func sendUntilClosed(stream grpc.ClientStream, msg rawMessage, n int) int {
	sent := 0
	for sent < n {
		if err := stream.SendMsg(msg); err != nil {
			break
		}
		sent++
	}
	return sent
}

// TestBadUTF8StreamsKeepHeapFlat sends a million tiny messages with invalid
// UTF-8 over server reflection streams, and bad Health/Watch requests, with
// no token: nothing of them may stay on the heap, and no stream handler may
// see a half-decoded message (the stream ends with an error instead).
func TestBadUTF8StreamsKeepHeapFlat(t *testing.T) {
	_, conn := serveWith(t, nil, grpcapi.Options{Log: quiet, Reflection: true})
	ctx := context.Background()
	reflectionDesc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
	watchDesc := &grpc.StreamDesc{ServerStreams: true}
	raw := grpc.ForceCodecV2(rawCodec{})

	// A warm-up round, so connection buffers and pools count in the baseline.
	stream, err := conn.NewStream(ctx, reflectionDesc, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", raw)
	if err != nil {
		t.Fatal(err)
	}
	stream.SendMsg(rawMessage{0x3a, 0x00})
	stream.CloseSend()
	for stream.RecvMsg(new(reflectionpb.ServerReflectionResponse)) == nil {
	}
	before := heapInUse()

	// ServerReflectionRequest{list_services: "", host: "\xff"}.
	badReflection := rawMessage{0x3a, 0x00, 0x0a, 0x01, 0xff}
	const messages = 1_000_000
	sent, streams, handlerSaw := 0, 0, 0
	for sent < messages {
		sctx, cancel := context.WithCancel(ctx)
		stream, err := conn.NewStream(sctx, reflectionDesc, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", raw)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		streams++
		answers := make(chan int, 1)
		go func() {
			n := 0
			for stream.RecvMsg(new(reflectionpb.ServerReflectionResponse)) == nil {
				n++
			}
			answers <- n
		}()
		sent += sendUntilClosed(stream, badReflection, messages-sent)
		stream.CloseSend()
		handlerSaw += <-answers
		cancel()
	}
	grown := int64(heapInUse()) - int64(before)
	t.Logf("reflection: %d bad messages on %d streams, %d answered by the handler; heap grew %d bytes", sent, streams, handlerSaw, grown)
	if handlerSaw > 0 {
		t.Errorf("the reflection handler answered %d messages that failed to decode", handlerSaw)
	}
	const bound = 8 << 20
	if grown > bound {
		t.Errorf("heap grew %d bytes after %d bad reflection messages, want at most %d", grown, sent, bound)
	}

	// HealthCheckRequest{service: "\xff"}: each Watch call is its own stream.
	before = heapInUse()
	badWatch := rawMessage{0x0a, 0x01, 0xff}
	const watches = 50_000
	for i := range watches {
		sctx, cancel := context.WithCancel(ctx)
		stream, err := conn.NewStream(sctx, watchDesc, "/grpc.health.v1.Health/Watch", raw)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		stream.SendMsg(badWatch)
		stream.CloseSend()
		err = stream.RecvMsg(new(healthpb.HealthCheckResponse))
		cancel()
		if err == nil && i == 0 {
			t.Error("Health/Watch answered a request that failed to decode")
		}
	}
	grown = int64(heapInUse()) - int64(before)
	t.Logf("health: %d bad Watch calls; heap grew %d bytes", watches, grown)
	if grown > bound {
		t.Errorf("heap grew %d bytes after %d bad Watch calls, want at most %d", grown, watches, bound)
	}
}

// TestUnauthenticatedBeforeValidation: without a token every request is
// UNAUTHENTICATED, whatever its body (invalid UTF-8, bad fields); with one,
// the same bodies are INVALID_ARGUMENT naming the fields.
func TestUnauthenticatedBeforeValidation(t *testing.T) {
	_, conn := jwtClient(t)
	raw := protowire.AppendTag(nil, 1, protowire.BytesType)
	raw = protowire.AppendString(raw, "u\xff")
	raw = protowire.AppendTag(raw, 2, protowire.VarintType)
	raw = protowire.AppendVarint(raw, 5)
	raw = protowire.AppendTag(raw, 3, protowire.BytesType)
	raw = protowire.AppendString(raw, "caf\xe9")
	invoke := func(ctx context.Context, method string, body rawMessage) error {
		return conn.Invoke(ctx, method, body, new(orderspb.CreateOrderResponse), grpc.ForceCodecV2(rawCodec{}))
	}
	badOrderID := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "\xff not a uuid")
	emptyUser := protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 0)

	for name, tc := range map[string]struct {
		method string
		body   rawMessage
		fields string
	}{
		"CreateOrder invalid UTF-8":  {"/orders.v1.OrderService/CreateOrder", raw, "description,user_id"},
		"GetOrderStatus bad id":      {"/orders.v1.OrderService/GetOrderStatus", badOrderID, "order_id"},
		"MarkOrderFinished bad id":   {"/orders.v1.OrderService/MarkOrderFinished", badOrderID, "order_id"},
		"CreateOrder invalid amount": {"/orders.v1.OrderService/CreateOrder", emptyUser, "amount"},
	} {
		err := invoke(context.Background(), tc.method, tc.body)
		wantCodeNamed(t, name+" without a token", err, codes.Unauthenticated)
		err = invoke(withToken(t, "svc", "orders.service"), tc.method, tc.body)
		st := wantCodeNamed(t, name+" with a token", err, codes.InvalidArgument)
		if got := strings.Join(badFields(st), ","); got != tc.fields {
			t.Errorf("%s with a token: bad fields %q, want %q", name, got, tc.fields)
		}
	}
}

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestHugeFieldsDoNotFloodTheLog: request fields reach the log cut to the
// contract's lengths, so huge values cost the caller, not the log.
func TestHugeFieldsDoNotFloodTheLog(t *testing.T) {
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	db := pgtest.Open(t, testDSN)
	c, _ := serveWith(t, postgres.NewOrderService(db, postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "test"}), "USD"), grpcapi.Options{Log: log})
	huge := strings.Repeat("u", 900_000)
	ctx := context.Background()
	for range 5 {
		_, err := c.GetOrders(ctx, &orderspb.GetOrdersRequest{UserId: huge})
		wantCode(t, err, codes.InvalidArgument)
	}
	_, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: huge, Amount: 1})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.GetOrderStatus(ctx, &orderspb.GetOrderStatusRequest{OrderId: huge})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.MarkOrderFinished(ctx, &orderspb.MarkOrderFinishedRequest{OrderId: huge})
	wantCode(t, err, codes.InvalidArgument)
	out := logs.String()
	if n := len(out); n > 8<<10 || n == 0 {
		t.Fatalf("8 calls with 900,000-character fields wrote %d bytes of log, want 1 to %d:\n%.2000s", n, 8<<10, out)
	}
	if !strings.Contains(out, `"user_id":"`+strings.Repeat("u", 128)) {
		t.Errorf("log lacks the user_id cut to 128 characters:\n%.2000s", out)
	}
	t.Logf("%d bytes of log", len(out))
}
