package outbox

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/acme/orders-service/postgres"
)

// Lane sharing. With Kafka transactions a lane's producer fences every
// older producer of its lane, so a lane that moved between relays on every
// batch would cost each relay a fenced batch and a new producer each time.
// So each relay holds a share of the lanes, ceil(lanes / relays), through a
// PostgreSQL session of its own (postgres.LaneOwner), and publishes only in
// those: lanes move only when relays come or go. A relay that dies frees
// its share with its session, and the others take it within shareInterval.
// Sharing is affinity only: each batch still takes its lane's lock, so a
// relay that lost its session while publishing is kept out as before.
// While a relay has no session (PostgreSQL unreachable), it tries every
// lane, as without sharing. Another relay's commit in this relay's share
// wakes nobody here, so while there are other relays one publisher looks
// for such rows every sharedPoll.

// shareInterval is how often a relay looks at its share (at most
// PollInterval): how long a relay's lanes wait for another after it died,
// or a joining relay for its share.
const shareInterval = time.Second

// sharedPoll is how often, with other relays about, one publisher looks
// for rows they committed in this relay's share (at most PollInterval):
// their commits wake only their own relay.
const sharedPoll = 50 * time.Millisecond

// sharing reports whether this relay publishes only in its share.
func (w *Relay) sharing() bool { return w.ownerOK.Load() }

// shareLanes makes this relay's share of the lanes what the number of
// relays calls for: it takes free lanes up to its share and gives back
// those above it that no publisher of it is in. Failures are logged; the
// relay then tries every lane until a later call succeeds.
func (w *Relay) shareLanes(ctx context.Context) {
	err := w.reshare(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		if !w.shareFailing {
			w.log.Warn("outbox lane sharing unavailable, trying every lane until it is back", "error", err)
		}
		w.shareFailing = true
		w.closeOwner()
	case err == nil && w.shareFailing:
		w.log.Info("outbox lane sharing back")
		w.shareFailing = false
	}
}

func (w *Relay) reshare(ctx context.Context) error {
	if w.owner == nil {
		o, err := w.db.NewLaneOwner(ctx)
		if err != nil {
			return err
		}
		w.owner = o
	}
	n, err := w.owner.Members(ctx)
	if err != nil {
		return err
	}
	if w.members.Swap(int64(n)) != int64(n) {
		w.kick.kick() // a publisher's next wait depends on whether it is alone
	}
	share := (postgres.OutboxLanes + max(n, 1) - 1) / max(n, 1)
	var held []int
	for lane := range w.owned {
		if w.owned[lane].Load() {
			held = append(held, lane)
		}
	}
	switch {
	case len(held) > share:
		for _, lane := range held[share:] {
			if !w.taken[lane].CompareAndSwap(false, true) {
				continue // a publisher is in it: next time
			}
			err := w.owner.Release(ctx, lane)
			if err == nil {
				w.owned[lane].Store(false)
				w.dropLaneProducer(lane) // the lane's next relay fences it anyway
			}
			w.taken[lane].Store(false)
			if err != nil {
				return err
			}
		}
	case len(held) < share:
		got, err := w.owner.Take(ctx, share-len(held), rand.IntN(postgres.OutboxLanes), held)
		if err != nil {
			return err
		}
		for _, lane := range got {
			w.owned[lane].Store(true)
		}
		if len(got) > 0 {
			w.kick.kick()
		}
	}
	w.ownerOK.Store(true)
	return nil
}

// closeOwner ends the lane-sharing session, which frees this relay's share.
func (w *Relay) closeOwner() {
	w.ownerOK.Store(false)
	w.members.Store(0)
	if w.owner == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.owner.Close(ctx)
	w.owner = nil
	for lane := range w.owned {
		w.owned[lane].Store(false)
	}
}
