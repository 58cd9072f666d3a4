package outbox

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestRelayNoticesReturningBroker: after an outage long enough for every
// backoff to have grown, the relay sends the first row of its backlog
// within a second (plus what one batch took before the outage) of the
// broker accepting connections again, whether the broker returns while the
// relay waits for a batch's acknowledgements (franz-go's own retries must
// not have backed off for seconds) or while the relay backs off after
// failed batches (its backoff, up to 5 s, must end when the broker answers).
// The producer has the service's client options (kafka.NewClient). kfake in
// both modes: the test cuts the broker's listener.
func TestRelayNoticesReturningBroker(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  Options
		// until reports, once the broker is down, when the outage has
		// lasted long enough.
		until func(w *Relay, downFor time.Duration) bool
	}{{
		// The batch's ProduceTimeout (10 s) outlasts the outage: the
		// records wait in the client, whose retries would by now wait
		// 4 to 5 s with franz-go's defaults.
		name: "waiting for acknowledgements",
		until: func(_ *Relay, downFor time.Duration) bool {
			return downFor >= 8*time.Second
		},
	}, {
		// Batches fail after 300 ms (or 1.2 s when a record was written
		// before the cut); the relay's backoff doubles from 100 ms with
		// each failure.
		name: "backing off after failed batches",
		cfg:  Options{ProduceTimeout: 300 * time.Millisecond},
		until: func(w *Relay, _ time.Duration) bool {
			return w.backingOff.Load() >= int64(3*time.Second)
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			svc := newService(db, topic)
			ln := &switchListener{conns: map[net.Conn]struct{}{}}
			cluster := newFakeCluster(t, kfake.ListenFn(ln.listen))
			addr := cluster.ListenAddrs()[0]
			newProducer := func() (Producer, error) { return kafka.NewClient(kafka.Config{Brokers: []string{addr}}) }
			producer, err := newProducer()
			if err != nil {
				t.Fatal(err)
			}
			cfg := tc.cfg
			cfg.NewProducer = newProducer // as the service does; the worker closes its producers
			w, _ := newWorker(t, db, producer, cfg)
			start(t, w)

			createOrder(t, svc, "before")
			committed := time.Now()
			poll.Eventually(t, 10*time.Second, "first order sent", func() bool { return countUnsent(t, db) == 0 })
			baseline := time.Since(committed)

			ln.setDown(true)
			down := time.Now()
			for i := range 20 {
				createOrder(t, svc, fmt.Sprintf("during-%d", i))
			}
			poll.Eventually(t, 60*time.Second, "a long outage", func() bool { return tc.until(w, time.Since(down)) })
			if n := countUnsent(t, db); n != 20 {
				t.Fatalf("unsent rows while Kafka is down = %d, want 20", n)
			}

			ln.setDown(false)
			back := time.Now()
			poll.Eventually(t, 30*time.Second, "a row of the backlog sent", func() bool { return countUnsent(t, db) < 20 })
			noticed := time.Since(back)
			poll.Eventually(t, 30*time.Second, "backlog sent", func() bool { return countUnsent(t, db) == 0 })
			took := time.Since(back)
			t.Logf("outage of %s; after the broker accepted connections again, the first row of the backlog was sent in %s, all in %s (the first order, before the outage: %s)",
				back.Sub(down).Round(time.Millisecond), noticed.Round(time.Millisecond), took.Round(time.Millisecond), baseline.Round(time.Millisecond))
			// The relay's (and its client's) waiting is what this test is
			// about: one that sat out its backoff or franz-go's default
			// retry backoff would send nothing for seconds. Noticing takes
			// a probe or a retry (100ms each), then one lane's batch
			// sends the first row; the bound adds what a batch on a fresh
			// connection took before the outage in this same run. The
			// rest of the backlog takes one batch per lane, milliseconds
			// each on an idle machine but over a second in all on a loaded
			// one (two cores, several race-enabled test binaries): its
			// time measures the machine, and is only logged.
			if limit := time.Second + baseline; noticed > limit {
				t.Errorf("first row of the backlog sent %s after the broker returned, want within %s (1s + the first order's %s)",
					noticed.Round(time.Millisecond), limit.Round(time.Millisecond), baseline.Round(time.Millisecond))
			}
		})
	}
}

// TestBackOffEndsOnlyWhenKafkaReturns: the relay's backoff ends early when
// the broker answers after a batch Kafka did not answer, or answers again
// after a probe found it unreachable; after a failure elsewhere (here with
// the broker answering throughout) it waits the whole backoff, so a fault
// that is not an outage never makes the relay retry at once.
func TestBackOffEndsOnlyWhenKafkaReturns(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ln := &switchListener{conns: map[net.Conn]struct{}{}}
	cluster := newFakeCluster(t, kfake.ListenFn(ln.listen))
	producer, err := kafka.NewClient(kafka.Config{Brokers: []string{cluster.ListenAddrs()[0]}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	w, _ := newWorker(t, db, producer, Options{})
	const d = 1500 * time.Millisecond
	timed := func(noAnswer bool) time.Duration {
		start := time.Now()
		w.backOff(t.Context(), w.pubs[0], d, noAnswer)
		return time.Since(start)
	}

	if took := timed(false); took < d {
		t.Errorf("failure elsewhere, broker up: backoff ended after %s, want the whole %s", took, d)
	}
	if took := timed(true); took >= d/2 {
		t.Errorf("Kafka did not answer, broker up: backoff took %s, want it to end at the first probe", took)
	}
	ln.setDown(true)
	back := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond) // the outage this case is about
		ln.setDown(false)
		back <- time.Now()
	}()
	start := time.Now()
	w.backOff(t.Context(), w.pubs[0], 5*time.Second, false)
	end := time.Now()
	up := <-back
	if end.Before(up) || end.Sub(up) > time.Second {
		t.Errorf("broker down, back after %s: backoff ended %s after its start, want within 1s of the broker's return", up.Sub(start), end.Sub(start))
	}
}
