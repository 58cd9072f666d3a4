package main

import (
	"sync/atomic"
	"time"
)

// shutdownPlan splits SHUTDOWN_TIMEOUT, one deadline for the whole shutdown,
// between its steps. The gRPC server's drain of in-flight calls gets the
// first half; then the relay's final drain and the inbox consumer's close
// (leaving the group) run at once, until a margin before the deadline for
// closing connections. Time a step does not use goes to the next.
type shutdownPlan struct {
	grpcBy    time.Time // in-flight calls still running are cancelled then
	workersBy time.Time // the relay and the consumer are left behind then
	deadline  time.Time // the process returns by then
}

func planShutdown(start time.Time, total time.Duration) shutdownPlan {
	margin := min(500*time.Millisecond, total/10)
	return shutdownPlan{grpcBy: start.Add(total / 2), workersBy: start.Add(total - margin), deadline: start.Add(total)}
}

// relayDrain is how long the relay may go on publishing what was committed
// before shutdown: from the end of the gRPC drain, at the latest, to
// workersBy.
func relayDrain(total time.Duration) time.Duration {
	return total/2 - min(500*time.Millisecond, total/10)
}

// stopBy is a time set once a shutdown begins.
type stopBy struct{ t atomic.Pointer[time.Time] }

func (s *stopBy) set(t time.Time) { s.t.Store(&t) }

// remaining is the time left until the time set, or fallback before one is.
func (s *stopBy) remaining(fallback time.Duration) time.Duration {
	if t := s.t.Load(); t != nil {
		return time.Until(*t)
	}
	return fallback
}

// within runs fn and waits for it while s leaves time (without a time set:
// until it returns). A close that would outlive the shutdown's deadline
// (a pool whose connection a left-behind worker holds) is not waited for.
func (s *stopBy) within(fn func()) {
	done := make(chan struct{})
	go func() { fn(); close(done) }()
	if s.t.Load() == nil {
		<-done
		return
	}
	t := time.NewTimer(max(s.remaining(0), 0))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
