package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
)

// blockingOrders blocks every CreateOrder until its context ends and
// reports the deadline the handler saw.
type blockingOrders struct {
	OrderService
	deadlines chan time.Time
}

func (s blockingOrders) CreateOrder(ctx context.Context, _ orders.NewOrder) (*orders.Order, error) {
	d, _ := ctx.Deadline()
	s.deadlines <- d
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestCallTimeout: a call is bounded by CallTimeout whatever the client's
// deadline, and by the client's deadline when it is shorter.
func TestCallTimeout(t *testing.T) {
	svc := blockingOrders{deadlines: make(chan time.Time, 1)}
	client, _ := serveWith(t, svc, grpcapi.Options{Log: quiet, CallTimeout: 300 * time.Millisecond})
	req := &orderspb.CreateOrderRequest{UserId: "u", Amount: 1}
	for _, c := range []struct {
		name   string
		client time.Duration // 0: no client deadline
		want   time.Duration
	}{
		{"no client deadline", 0, 300 * time.Millisecond},
		{"longer client deadline", time.Minute, 300 * time.Millisecond},
		{"shorter client deadline", 100 * time.Millisecond, 100 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			if c.client > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, c.client)
				defer cancel()
			}
			start := time.Now()
			_, err := client.CreateOrder(ctx, req)
			wantCode(t, err, codes.DeadlineExceeded)
			// The server's deadline counts from when it got the call, the
			// client's from before it sent it.
			seen := (<-svc.deadlines).Sub(start)
			server := c.want == 300*time.Millisecond
			if server && (seen < c.want || seen > c.want+2*time.Second) || !server && (seen <= 0 || seen > c.want+10*time.Millisecond) {
				t.Fatalf("handler's deadline %v after the call started, want about %v", seen, c.want)
			}
		})
	}
}
