package poll_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/acme/orders-service/internal/poll"
)

func TestEventuallyReturnsOnceCondHolds(t *testing.T) {
	n := 0
	poll.Eventually(t, 10*time.Second, "the third call", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

// fatalT records Fatalf instead of stopping the test; Eventually then
// polls once more, and the test's cond ends the loop.
type fatalT struct {
	testing.TB
	msg string
}

func (f *fatalT) Helper() {}

func (f *fatalT) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

func TestEventuallyFailsNamingWhatAndTimeout(t *testing.T) {
	f := &fatalT{TB: t}
	start := time.Now()
	calls := 0
	poll.Eventually(f, 30*time.Millisecond, "the impossible", func() bool { calls++; return f.msg != "" })
	if want := "timed out after 30ms waiting for the impossible"; f.msg != want {
		t.Fatalf("message %q, want %q", f.msg, want)
	}
	if time.Since(start) < 30*time.Millisecond || calls < 2 {
		t.Errorf("gave up after %s and %d calls, want at least 30ms and 2 calls", time.Since(start), calls)
	}
}
