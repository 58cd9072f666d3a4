package grpcapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestCallLog: at the info level a successful call writes nothing, and a
// failed one writes one "finished call" line with its method, code, error
// and the user it was about.
func TestCallLog(t *testing.T) {
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	db := pgtest.Open(t, testDSN)
	c, _ := serveWith(t, postgres.NewOrderService(db, postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "test"}), "USD"), grpcapi.Options{Log: log})
	ctx := context.Background()
	if _, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: "log-user", Amount: 100}); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); out != "" {
		t.Fatalf("a successful call logged at the info level:\n%s", out)
	}
	_, err := c.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: "log-user", Amount: -1})
	wantCode(t, err, codes.InvalidArgument)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one log line for the failed call, got %d:\n%s", len(lines), logs.String())
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"level": "INFO", "msg": "finished call", "grpc.service": "orders.v1.OrderService",
		"grpc.method": "CreateOrder", "grpc.code": "InvalidArgument", "user_id": "log-user"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %v", k, line[k], v)
		}
	}
	for _, k := range []string{"grpc.error", "grpc.time_ms", "grpc.start_time", "peer.address"} {
		if _, ok := line[k]; !ok {
			t.Errorf("the line lacks %s: %s", k, lines[0])
		}
	}
}
