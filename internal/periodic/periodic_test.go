package periodic_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acme/orders-service/internal/periodic"
)

// TestRun: the job runs at once and again on every tick, its errors reach
// onErr, and Run returns when ctx ends.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls, errs atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		periodic.Run(ctx, time.Millisecond, func(context.Context) error {
			if calls.Add(1)%2 == 0 {
				return errors.New("even call")
			}
			return nil
		}, func(error) { errs.Add(1) })
	}()
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("job ran %d times in 10s, want at least 5", calls.Load())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if n, e := calls.Load(), errs.Load(); e < 2 || e > n/2 {
		t.Errorf("%d errors reported of %d calls, want every second call's", e, n)
	}
}

// TestRunFirstCallAtOnce: the first call does not wait for the interval.
func TestRunFirstCallAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	called := make(chan struct{}, 1)
	go periodic.Run(ctx, time.Hour, func(context.Context) error {
		select {
		case called <- struct{}{}:
		default:
		}
		return nil
	}, nil)
	defer cancel()
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("the first call waited for the interval")
	}
}

// TestDeleteInBatches: calls go on while each deletes a full batch and stop
// at the first short one, or at an error.
func TestDeleteInBatches(t *testing.T) {
	left := int64(25)
	deleted, calls, err := periodic.DeleteInBatches(context.Background(), 10, func(_ context.Context, batch int) (int64, error) {
		n := min(left, int64(batch))
		left -= n
		return n, nil
	})
	if err != nil || deleted != 25 || calls != 3 {
		t.Errorf("DeleteInBatches = %d rows, %d calls, %v; want 25, 3, nil", deleted, calls, err)
	}
	boom := errors.New("boom")
	deleted, calls, err = periodic.DeleteInBatches(context.Background(), 10, func(context.Context, int) (int64, error) { return 10, boom })
	if !errors.Is(err, boom) || deleted != 10 || calls != 1 {
		t.Errorf("DeleteInBatches with a failing call = %d rows, %d calls, %v; want 10, 1, boom", deleted, calls, err)
	}
}
