// Package poll waits in tests for a condition that becomes true on its own
// time, instead of sleeping for a guessed duration.
package poll

import (
	"testing"
	"time"
)

// Eventually calls cond until it returns true, and fails t with a message
// naming what and timeout if that has not happened within timeout. It polls
// every few milliseconds at first, backing off to every 20ms. Call it from
// the test's goroutine; cond may call t.Fatal.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}
