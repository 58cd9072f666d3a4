package ratelimit

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// frozen returns a limiter whose clock only moves when the test says so.
func frozen(perSecond float64, burst, maxUsers int) (*Limiter, *time.Time) {
	l := New(perSecond, burst, maxUsers)
	now := time.Unix(1_700_000_000, 0)
	l.now = func() time.Time { return now }
	return l, &now
}

func TestBurstThenRefused(t *testing.T) {
	l, now := frozen(2, 3, 10)
	for i := range 3 {
		if !l.Allow("alice") {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	if l.Allow("alice") {
		t.Fatal("request beyond the burst allowed")
	}
	if !l.Allow("bob") {
		t.Fatal("another user is refused because of alice")
	}
	*now = now.Add(500 * time.Millisecond) // one token at 2/s
	if !l.Allow("alice") {
		t.Fatal("refilled token refused")
	}
	if l.Allow("alice") {
		t.Fatal("second request after one refill allowed")
	}
}

func TestDisabled(t *testing.T) {
	for name, l := range map[string]*Limiter{"rate 0": New(0, 1, 1), "negative rate": New(-1, 1, 1), "nil": nil} {
		if l.Enabled() {
			t.Errorf("%s: Enabled", name)
		}
		for i := range 100 {
			if !l.Allow("alice" + strconv.Itoa(i%2)) {
				t.Fatalf("%s: request %d refused", name, i)
			}
		}
		if n := l.Len(); n != 0 {
			t.Errorf("%s: tracks %d users, want 0", name, n)
		}
	}
}

func TestMemoryBound(t *testing.T) {
	const maxUsers = 1000
	l, _ := frozen(1, 1, maxUsers)
	if !l.Allow("hot") || l.Allow("hot") {
		t.Fatal("hot user: want one request allowed, then refused")
	}
	for i := range 100_000 {
		if !l.Allow("user-" + strconv.Itoa(i)) {
			t.Fatalf("first request of new user %d refused", i)
		}
		if i%(maxUsers/2) == 0 && l.Allow("hot") {
			t.Fatalf("after %d new users the recently seen hot user got a fresh bucket", i)
		}
	}
	if n, m := l.Len(), l.lru.Len(); n != maxUsers || m != maxUsers {
		t.Fatalf("tracking %d users in the map and %d in the list, want %d", n, m, maxUsers)
	}
	if l.Allow("user-99999") {
		t.Fatal("the most recent user lost its spent bucket")
	}
	if !l.Allow("user-0") {
		t.Fatal("the least recent user was not dropped: its spent bucket is still refusing")
	}
}

func TestConcurrentUseHonoursBurst(t *testing.T) {
	l, _ := frozen(1, 50, 10)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if l.Allow("alice") {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 50 {
		t.Fatalf("%d requests allowed with a frozen clock, want the burst of 50", n)
	}
}
