package grpcapi_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/internal/tcpproxy"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

var testDSN string

func TestMain(m *testing.M) { pgtest.Main(m, func(dsn string) { testDSN = dsn }) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// serve starts the API over svc on a real listener and returns a client.
func serve(t *testing.T, svc grpcapi.OrderService) (orderspb.OrderServiceClient, *grpc.ClientConn) {
	return serveWith(t, svc, grpcapi.Options{Log: quiet, Reflection: true})
}

func serveWith(t *testing.T, svc grpcapi.OrderService, opts grpcapi.Options) (orderspb.OrderServiceClient, *grpc.ClientConn) {
	t.Helper()
	api := grpcapi.NewHandler(svc, []byte("test page key"), quiet)
	srv := grpcapi.NewServer(api, health.NewServer(), opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return orderspb.NewOrderServiceClient(conn), conn
}

func newClient(t *testing.T, dsn string) (orderspb.OrderServiceClient, *postgres.DB) {
	db := pgtest.Open(t, dsn)
	svc := postgres.NewOrderService(db, postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "test"}), "USD")
	c, _ := serve(t, svc)
	return c, db
}

func user(t *testing.T) string {
	return strings.ReplaceAll(t.Name(), "/", "-") + time.Now().Format("150405.000000")
}

func wantCode(t *testing.T, err error, want codes.Code) *status.Status {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != want {
		t.Fatalf("code = %v (%v), want %v", st.Code(), err, want)
	}
	return st
}

func wantCodeNamed(t *testing.T, name string, err error, want codes.Code) *status.Status {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != want {
		t.Errorf("%s: code = %v (%v), want %v", name, st.Code(), err, want)
	}
	return st
}

func badFields(st *status.Status) []string {
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	sort.Strings(fields)
	return fields
}

func TestHappyPath(t *testing.T) {
	ctx := context.Background()
	c, _ := newClient(t, testDSN)
	u := user(t)
	created, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: u, Amount: 4200, Description: "coffee beans", Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	o := created.GetOrder()
	if o.GetStatus() != orderspb.OrderStatus_ORDER_STATUS_NEW || o.GetAmount() != 4200 || o.GetCurrency() != "EUR" ||
		o.GetUserId() != u || o.GetDescription() != "coffee beans" || o.GetCreatedAt() == nil || o.GetUpdatedAt() == nil {
		t.Fatalf("created %v", o)
	}
	st, err := c.GetOrderStatus(ctx, &orderspb.GetOrderStatusRequest{OrderId: o.GetId()})
	if err != nil || st.GetStatus() != orderspb.OrderStatus_ORDER_STATUS_NEW || st.GetOrderId() != o.GetId() {
		t.Fatalf("status %v, %v", st, err)
	}
	list, err := c.GetOrders(ctx, &orderspb.GetOrdersRequest{UserId: u})
	if err != nil || len(list.GetOrders()) != 1 || list.GetNextPageToken() != "" || list.GetOrders()[0].GetId() != o.GetId() {
		t.Fatalf("list %v, %v", list, err)
	}
	fin, err := c.MarkOrderFinished(ctx, &orderspb.MarkOrderFinishedRequest{OrderId: o.GetId()})
	if err != nil || fin.GetOrder().GetStatus() != orderspb.OrderStatus_ORDER_STATUS_FINISHED {
		t.Fatalf("finish %v, %v", fin, err)
	}
	again, err := c.MarkOrderFinished(ctx, &orderspb.MarkOrderFinishedRequest{OrderId: o.GetId()})
	if err != nil || !again.GetOrder().GetUpdatedAt().AsTime().Equal(fin.GetOrder().GetUpdatedAt().AsTime()) {
		t.Fatalf("finishing twice changed the order: %v, %v", again, err)
	}
}

func TestValidation(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Open(t, testDSN)
	c, conn := serve(t, postgres.NewOrderService(db, postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "test"}), "USD"))
	long := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		name   string
		req    *orderspb.CreateOrderRequest
		fields []string
	}{
		{"empty user", &orderspb.CreateOrderRequest{Amount: 1}, []string{"user_id"}},
		{"blank user", &orderspb.CreateOrderRequest{UserId: "   ", Amount: 1}, []string{"user_id"}},
		{"long user", &orderspb.CreateOrderRequest{UserId: long(129), Amount: 1}, []string{"user_id"}},
		{"zero amount", &orderspb.CreateOrderRequest{UserId: "u", Amount: 0}, []string{"amount"}},
		{"negative amount", &orderspb.CreateOrderRequest{UserId: "u", Amount: -5}, []string{"amount"}},
		{"huge amount", &orderspb.CreateOrderRequest{UserId: "u", Amount: orders.MaxAmount + 1}, []string{"amount"}},
		{"long description", &orderspb.CreateOrderRequest{UserId: "u", Amount: 1, Description: long(1001)}, []string{"description"}},
		{"nul byte", &orderspb.CreateOrderRequest{UserId: "u", Amount: 1, Description: "a\x00b"}, []string{"description"}},
		{"lower currency", &orderspb.CreateOrderRequest{UserId: "u", Amount: 1, Currency: "usd"}, []string{"currency"}},
		{"long currency", &orderspb.CreateOrderRequest{UserId: "u", Amount: 1, Currency: "EURO"}, []string{"currency"}},
		{"long request id", &orderspb.CreateOrderRequest{UserId: "u", Amount: 1, RequestId: long(129)}, []string{"request_id"}},
		{"everything", &orderspb.CreateOrderRequest{Amount: -1, Currency: "x", Description: long(2000)}, []string{"amount", "currency", "description", "user_id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateOrder(ctx, tc.req)
			st := wantCode(t, err, codes.InvalidArgument)
			if got := badFields(st); strings.Join(got, ",") != strings.Join(tc.fields, ",") {
				t.Fatalf("bad fields %v, want %v", got, tc.fields)
			}
		})
	}
	// A Go client refuses to encode invalid UTF-8, so send the raw bytes.
	raw := protowire.AppendTag(nil, 1, protowire.BytesType)
	raw = protowire.AppendString(raw, "u\xff")
	raw = protowire.AppendTag(raw, 2, protowire.VarintType)
	raw = protowire.AppendVarint(raw, 5)
	raw = protowire.AppendTag(raw, 3, protowire.BytesType)
	raw = protowire.AppendString(raw, "caf\xe9")
	err := conn.Invoke(ctx, "/orders.v1.OrderService/CreateOrder", rawMessage(raw), new(orderspb.CreateOrderResponse),
		grpc.ForceCodecV2(rawCodec{}))
	if got := badFields(wantCode(t, err, codes.InvalidArgument)); strings.Join(got, ",") != "description,user_id" {
		t.Fatalf("invalid UTF-8: bad fields %v", got)
	}

	// 1000 characters of multi-byte text are fine.
	if _, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: user(t), Amount: 1, Description: strings.Repeat("ж", 1000)}); err != nil {
		t.Fatalf("1000-character description: %v", err)
	}

	for name, tc := range map[string]struct {
		req   *orderspb.GetOrdersRequest
		field string
	}{
		"no user":        {&orderspb.GetOrdersRequest{}, "user_id"},
		"negative page":  {&orderspb.GetOrdersRequest{UserId: "u", PageSize: -1}, "page_size"},
		"garbage token":  {&orderspb.GetOrdersRequest{UserId: "u", PageToken: "garbage"}, "page_token"},
		"very long user": {&orderspb.GetOrdersRequest{UserId: long(500)}, "user_id"},
	} {
		_, err := c.GetOrders(ctx, tc.req)
		st := wantCode(t, err, codes.InvalidArgument)
		if got := badFields(st); len(got) != 1 || got[0] != tc.field {
			t.Errorf("%s: bad fields %v, want %s", name, got, tc.field)
		}
	}
	for _, id := range []string{"", "42", "not-a-uuid", "0190f5e4-8c1a-7b3e-9f00-1234567890ab'; DROP TABLE orders;--"} {
		_, err := c.GetOrderStatus(ctx, &orderspb.GetOrderStatusRequest{OrderId: id})
		if got := badFields(wantCode(t, err, codes.InvalidArgument)); len(got) != 1 || got[0] != "order_id" {
			t.Errorf("GetOrderStatus(%q): bad fields %v", id, got)
		}
		_, err = c.MarkOrderFinished(ctx, &orderspb.MarkOrderFinishedRequest{OrderId: id})
		wantCode(t, err, codes.InvalidArgument)
	}
}

func TestErrorCodes(t *testing.T) {
	ctx := context.Background()
	c, db := newClient(t, testDSN)
	missing := "0190f5e4-8c1a-7b3e-9f00-1234567890ab"
	_, err := c.GetOrderStatus(ctx, &orderspb.GetOrderStatusRequest{OrderId: missing})
	wantCode(t, err, codes.NotFound)
	_, err = c.MarkOrderFinished(ctx, &orderspb.MarkOrderFinishedRequest{OrderId: missing})
	wantCode(t, err, codes.NotFound)

	o, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: user(t), Amount: 10, RequestId: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE orders SET status = 'cancelled' WHERE id = $1`, o.GetOrder().GetId()); err != nil {
		t.Fatal(err)
	}
	_, err = c.MarkOrderFinished(ctx, &orderspb.MarkOrderFinishedRequest{OrderId: o.GetOrder().GetId()})
	wantCode(t, err, codes.FailedPrecondition)

	again, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: o.GetOrder().GetUserId(), Amount: 10, RequestId: "k1"})
	if err != nil || again.GetOrder().GetId() != o.GetOrder().GetId() {
		t.Fatalf("retry: %v, %v", again, err)
	}
	_, err = c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: o.GetOrder().GetUserId(), Amount: 11, RequestId: "k1"})
	wantCode(t, err, codes.AlreadyExists)
}

func TestPagingThroughThreePages(t *testing.T) {
	ctx := context.Background()
	c, _ := newClient(t, testDSN)
	u := user(t)
	ids := map[string]bool{}
	for range 7 {
		o, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: u, Amount: 1})
		if err != nil {
			t.Fatal(err)
		}
		ids[o.GetOrder().GetId()] = true
	}
	token, pages := "", 0
	for {
		resp, err := c.GetOrders(ctx, &orderspb.GetOrdersRequest{UserId: u, PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range resp.GetOrders() {
			if !ids[o.GetId()] {
				t.Fatalf("unexpected or repeated order %s", o.GetId())
			}
			delete(ids, o.GetId())
		}
		if _, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: u, Amount: 2}); err != nil {
			t.Fatal(err)
		}
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
		// The token is bound to its user.
		_, err = c.GetOrders(ctx, &orderspb.GetOrdersRequest{UserId: u + "-other", PageToken: token})
		wantCode(t, err, codes.InvalidArgument)
	}
	if pages != 3 || len(ids) != 0 {
		t.Fatalf("pages = %d, missing = %v", pages, ids)
	}
	big, err := c.GetOrders(ctx, &orderspb.GetOrdersRequest{UserId: u, PageSize: 100000})
	if err != nil || len(big.GetOrders()) != 10 {
		t.Fatalf("page_size above the cap: %d orders, %v", len(big.GetOrders()), err)
	}
}

func TestHealthAndReflection(t *testing.T) {
	ctx := context.Background()
	_, conn := serve(t, nil)
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", resp, err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range r.GetListServicesResponse().GetService() {
		found = found || s.GetName() == "orders.v1.OrderService"
	}
	if !found {
		t.Fatalf("reflection does not list orders.v1.OrderService: %v", r)
	}
}

// panicking is an OrderService whose every call panics.
type panicking struct{ grpcapi.OrderService }

func (panicking) GetOrderStatus(context.Context, string) (orders.Status, string, error) {
	panic("boom")
}

func TestPanicAnswersInternalAndServerLives(t *testing.T) {
	c, conn := serve(t, panicking{})
	ctx := context.Background()
	for range 2 {
		_, err := c.GetOrderStatus(ctx, &orderspb.GetOrderStatusRequest{OrderId: "0190f5e4-8c1a-7b3e-9f00-1234567890ab"})
		wantCode(t, err, codes.Internal)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("server died after a panic: %v", err)
	}
}

func TestDatabaseDownAnswersUnavailable(t *testing.T) {
	ctx := context.Background()
	u, _ := url.Parse(testDSN)
	proxy, err := tcpproxy.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	u.Host = proxy.Addr()
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	c, db := newClient(t, u.String())
	user := user(t)
	if _, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: user, Amount: 1}); err != nil {
		t.Fatal(err)
	}
	proxy.SetCut(true)
	_, err = c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: user, Amount: 2})
	wantCode(t, err, codes.Unavailable)
	_, err = c.GetOrders(ctx, &orderspb.GetOrdersRequest{UserId: user})
	wantCode(t, err, codes.Unavailable)
	proxy.SetCut(false)
	resp, err := c.GetOrders(ctx, &orderspb.GetOrdersRequest{UserId: user})
	if err != nil {
		t.Fatalf("after the database came back: %v", err)
	}
	if len(resp.GetOrders()) != 1 || resp.GetOrders()[0].GetAmount() != 1 {
		t.Fatalf("orders after outage = %v, want only the first", resp.GetOrders())
	}
	var outbox int
	db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE key = $1`, resp.GetOrders()[0].GetId()).Scan(&outbox)
	if outbox != 1 {
		t.Fatalf("outbox rows = %d", outbox)
	}
}

type rawMessage []byte

// rawCodec sends rawMessage bytes as they are and decodes replies as protobuf.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(rawMessage))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}
