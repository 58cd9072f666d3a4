package outbox

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/acme/orders-service/postgres"
)

// kicker broadcasts local commits to every publisher: each waits on the
// channel of the moment and a kick closes it.
type kicker struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns the channel the next kick closes.
func (k *kicker) wait() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ch == nil {
		k.ch = make(chan struct{})
	}
	return k.ch
}

// kick wakes every publisher waiting, or about to wait, on wait's channel.
func (k *kicker) kick() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ch != nil {
		close(k.ch)
		k.ch = nil
	}
}

// publishLoop runs the publishers until ctx ends and they have drained
// (see Options.DrainTimeout). It returns ErrStalled when a publisher can no
// longer publish.
func (w *Relay) publishLoop(ctx context.Context) error {
	wctx, stopWake := context.WithCancel(ctx)
	defer stopWake()
	go func() {
		for {
			select {
			case <-wctx.Done():
				return
			case <-w.cfg.Wake:
				w.kick.kick()
			}
		}
	}()
	var drain context.Context
	if w.cfg.DrainTimeout > 0 {
		var cancel context.CancelFunc
		drain, cancel = context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		stop := context.AfterFunc(ctx, func() {
			time.AfterFunc(w.cfg.DrainTimeout, cancel)
		})
		defer stop()
	}
	errs := make([]error, len(w.pubs))
	var wg sync.WaitGroup
	for i, p := range w.pubs {
		wg.Go(func() {
			errs[i] = w.runPublisher(ctx, p)
			if errs[i] == nil && drain != nil {
				w.drain(drain, p)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pass is what one pass over the active lanes found.
type pass struct {
	rows     int  // rows claimed
	again    bool // a lane has more right away (a full batch, parked rows, an aborted transaction)
	busy     bool // a lane was taken by a publisher elsewhere
	err      error
	noAnswer bool // the failure was Kafka not answering
}

// runPublisher makes passes over the lanes with rows: back to back while
// they find more, shortly again while another replica's publisher holds a
// lane (it may have claimed before our latest commit), otherwise after a
// local commit, when a waiting key's backoff ends, or after PollInterval.
// A failed batch backs the publisher off (see backOff).
func (w *Relay) runPublisher(ctx context.Context, p *publisher) error {
	busyWait := min(max(w.cfg.PollInterval/50, time.Millisecond), 10*time.Millisecond)
	timer := time.NewTimer(w.cfg.PollInterval)
	defer timer.Stop()
	var backoff time.Duration
	for ctx.Err() == nil {
		kicked := w.kick.wait()
		res := w.pass(ctx, p)
		switch {
		case errors.Is(res.err, ErrStalled):
			w.m.errors.Inc()
			return res.err
		case res.err != nil && ctx.Err() != nil:
			return nil // stopping: the drain takes over
		case res.err != nil:
			w.m.errors.Inc()
			backoff = min(max(2*backoff, w.minBackoff), w.maxBackoff)
			w.log.Warn("outbox publish failed, will retry", "error", res.err, "rows", res.rows, "retry_in", backoff)
			w.backingOff.Store(int64(backoff))
			w.backOff(ctx, p, backoff, res.noAnswer)
			w.backingOff.Store(0)
			continue
		case res.again:
			backoff = 0
			continue
		}
		backoff = 0
		wait := w.cfg.PollInterval
		if p == w.pubs[0] && w.members.Load() > 1 {
			// Other relays' commits in this relay's share wake nobody here.
			wait = min(wait, sharedPoll)
		}
		if res.busy {
			wait = busyWait
		}
		if next := w.waits.next(time.Now()); !next.IsZero() {
			wait = min(wait, time.Until(next))
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
		case <-kicked:
			if res.rows > 0 {
				// Commits keep coming: let a few more join the next batch
				// rather than paying a transaction per commit.
				sleepCtx(ctx, w.cfg.BatchDelay)
			}
		case <-timer.C:
		}
	}
	return nil
}

// pass publishes one batch in each lane of this relay's share with rows
// that no publisher of this relay is in, starting at a random lane so that
// publishers spread over the lanes.
func (w *Relay) pass(ctx context.Context, p *publisher) pass {
	var res pass
	lanes, err := w.active.get(ctx, time.Now(), w.db.ActiveOutboxLanes)
	if err != nil {
		res.err = err
		return res
	}
	start := rand.IntN(postgres.OutboxLanes)
	sharing := w.sharing()
	for i := range lanes {
		lane := lanes[(start+i)%len(lanes)]
		if sharing && !w.owned[lane].Load() {
			continue // another relay's share
		}
		if !w.taken[lane].CompareAndSwap(false, true) {
			continue // another publisher of this relay is in it and will look again
		}
		b, err := p.publishBatch(ctx, lane)
		w.taken[lane].Store(false)
		res.rows += b.rows
		res.busy = res.busy || b.busy
		res.again = res.again || b.rows == w.cfg.BatchSize || b.parked > 0 || b.aborted || b.again
		if err != nil {
			res.err, res.noAnswer = err, b.noAnswer
			return res
		}
	}
	return res
}

// drain makes passes until one finds nothing to publish, a batch fails, or
// ctx ends: the final drain of what was committed before shutdown.
func (w *Relay) drain(ctx context.Context, p *publisher) {
	for ctx.Err() == nil {
		res := w.pass(ctx, p)
		if res.err != nil || (res.rows == 0 && !res.busy) {
			return
		}
		if res.rows == 0 {
			sleepCtx(ctx, time.Millisecond)
		}
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// activeLanes shares one ActiveOutboxLanes query among the publishers a
// commit woke together, instead of one each.
type activeLanes struct {
	mu      sync.Mutex
	at      time.Time // start of the query that found lanes
	lanes   []int
	running chan struct{} // closed when the query under way ends; nil: none
}

// get returns the lanes with rows to publish as found by a query that
// started at or after since, so that it sees every commit before since:
// the one under way if it started late enough, else a new one.
func (a *activeLanes) get(ctx context.Context, since time.Time, query func(context.Context) ([]int, error)) ([]int, error) {
	for {
		a.mu.Lock()
		if !a.at.Before(since) {
			lanes := a.lanes
			a.mu.Unlock()
			return lanes, nil
		}
		if a.running == nil {
			break // a.mu stays locked: this caller runs the query
		}
		running := a.running
		a.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	start, done := time.Now(), make(chan struct{})
	a.running = done
	a.mu.Unlock()
	lanes, err := query(ctx)
	a.mu.Lock()
	if err == nil && start.After(a.at) {
		a.at, a.lanes = start, lanes
	}
	a.running = nil
	close(done)
	a.mu.Unlock()
	return lanes, err
}
