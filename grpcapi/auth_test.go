package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
	"github.com/acme/orders-service/ratelimit"
)

var secret = []byte("a test secret that is at least 32 bytes long")

func withToken(t *testing.T, sub string, roles ...string) context.Context {
	t.Helper()
	tok, err := auth.MintHS256(secret, sub, roles, "", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func jwtClient(t *testing.T, extra ...grpc.UnaryServerInterceptor) (orderspb.OrderServiceClient, *grpc.ClientConn) {
	t.Helper()
	v, err := auth.NewVerifier(auth.Config{Mode: auth.ModeJWT, HS256Secret: string(secret)})
	if err != nil {
		t.Fatal(err)
	}
	db := pgtest.Open(t, testDSN)
	svc := postgres.NewOrderService(db, postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "test"}), "USD")
	return serveWith(t, svc, grpcapi.Options{
		Log:          quiet,
		Reflection:   true,
		Interceptors: append([]grpc.UnaryServerInterceptor{auth.UnaryServerInterceptor(v)}, extra...),
		Streams:      []grpc.StreamServerInterceptor{auth.StreamServerInterceptor(v)},
	})
}

func TestAuthorization(t *testing.T) {
	c, conn := jwtClient(t)
	alice, bob := user(t)+"-alice", user(t)+"-bob"
	asAlice, asBob := withToken(t, alice), withToken(t, bob)
	asAdmin, asService := withToken(t, "ops", auth.RoleAdmin), withToken(t, "billing", auth.RoleService)

	_, err := c.CreateOrder(context.Background(), &orderspb.CreateOrderRequest{UserId: alice, Amount: 1})
	wantCode(t, err, codes.Unauthenticated)
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check needs no token: %v", err)
	}

	// An omitted user_id means the token's subject.
	created, err := c.CreateOrder(asAlice, &orderspb.CreateOrderRequest{Amount: 100})
	if err != nil || created.GetOrder().GetUserId() != alice {
		t.Fatalf("create for self: %v, %v", created, err)
	}
	id := created.GetOrder().GetId()

	_, err = c.CreateOrder(asBob, &orderspb.CreateOrderRequest{UserId: alice, Amount: 1})
	wantCode(t, err, codes.PermissionDenied)
	_, err = c.GetOrders(asBob, &orderspb.GetOrdersRequest{UserId: alice})
	wantCode(t, err, codes.PermissionDenied)
	_, err = c.GetOrderStatus(asBob, &orderspb.GetOrderStatusRequest{OrderId: id})
	wantCode(t, err, codes.NotFound)
	_, err = c.MarkOrderFinished(asAlice, &orderspb.MarkOrderFinishedRequest{OrderId: id})
	wantCode(t, err, codes.PermissionDenied)

	mine, err := c.GetOrders(asAlice, &orderspb.GetOrdersRequest{})
	if err != nil || len(mine.GetOrders()) != 1 {
		t.Fatalf("own list: %v, %v", mine, err)
	}
	if _, err := c.GetOrderStatus(asAlice, &orderspb.GetOrderStatusRequest{OrderId: id}); err != nil {
		t.Fatalf("own status: %v", err)
	}
	// The privileged roles act for anyone.
	if _, err := c.CreateOrder(asService, &orderspb.CreateOrderRequest{UserId: alice, Amount: 5}); err != nil {
		t.Fatalf("service creates for alice: %v", err)
	}
	if _, err := c.GetOrders(asAdmin, &orderspb.GetOrdersRequest{UserId: alice}); err != nil {
		t.Fatalf("admin lists alice: %v", err)
	}
	fin, err := c.MarkOrderFinished(asService, &orderspb.MarkOrderFinishedRequest{OrderId: id})
	if err != nil || fin.GetOrder().GetStatus() != orderspb.OrderStatus_ORDER_STATUS_FINISHED {
		t.Fatalf("service finishes: %v, %v", fin, err)
	}
}

func TestHostileTextIsStoredVerbatim(t *testing.T) {
	c, _ := jwtClient(t)
	for _, s := range []string{
		"'; DROP TABLE orders; --",
		`" OR 1=1 --`,
		`Robert'); DELETE FROM outbox WHERE ('1'='1`,
		`\x00 not a nul, just text \' \\`,
		"$1 $$ :name ? %s %d {{.}}",
		"<script>alert(1)</script>",
	} {
		user := "u-" + s
		ctx := withToken(t, "svc", auth.RoleService)
		created, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: user, Amount: 1, Description: s, RequestId: s})
		if err != nil {
			t.Fatalf("create with %q: %v", s, err)
		}
		list, err := c.GetOrders(ctx, &orderspb.GetOrdersRequest{UserId: user})
		if err != nil || len(list.GetOrders()) != 1 {
			t.Fatalf("list for %q: %v, %v", user, list, err)
		}
		got := list.GetOrders()[0]
		if got.GetDescription() != s || got.GetUserId() != user || got.GetId() != created.GetOrder().GetId() {
			t.Fatalf("stored %q/%q, want %q/%q", got.GetUserId(), got.GetDescription(), user, s)
		}
	}
}

func TestRateLimitPerUser(t *testing.T) {
	c, conn := jwtClient(t, grpcapi.RateLimit(ratelimit.New(0.001, 3, 100), quiet))
	asCarol, asDave := withToken(t, user(t)+"-carol"), withToken(t, user(t)+"-dave")
	for i := range 3 {
		if _, err := c.GetOrders(asCarol, &orderspb.GetOrdersRequest{}); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	_, err := c.GetOrders(asCarol, &orderspb.GetOrdersRequest{})
	wantCode(t, err, codes.ResourceExhausted)
	if _, err := c.GetOrders(asDave, &orderspb.GetOrdersRequest{}); err != nil {
		t.Fatalf("another user is not limited: %v", err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health is never limited: %v", err)
	}
}
