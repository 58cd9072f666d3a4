package outbox

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

func createOrder(t *testing.T, svc *postgres.OrderService, user string) *orders.Order {
	t.Helper()
	o, err := svc.CreateOrder(context.Background(), orders.NewOrder{UserID: user, Amount: 1250, Description: "two books"})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestPublishesCreatedOrderPromptly: a committed OrderCreated reaches Kafka
// with key, headers and payload exactly as in its row, is marked sent, and the
// worker wakes on the commit rather than on its (10s) poll interval.
func TestPublishesCreatedOrderPromptly(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	k := newKafka(t)
	svc := newService(db, k.topic)
	addr := k.Addr()
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 10 * time.Second})
	start(t, w)
	c := collect(t, addr, k.topic)

	// The first order may be published by the worker's first batch; the
	// later ones are committed while it waits on its 10s poll interval.
	var slowest time.Duration
	for i := range 4 {
		o := createOrder(t, svc, fmt.Sprintf("user-%d", i))
		committed := time.Now()
		rows := outboxRows(t, db, "key = $1", o.ID)
		if len(rows) != 1 {
			t.Fatalf("outbox rows for %s = %d, want 1", o.ID, len(rows))
		}
		row := rows[0]
		poll.Eventually(t, 5*time.Second, "record of "+o.ID, func() bool { return len(c.byEventID(row.EventID)) > 0 })
		if d := time.Since(committed); i > 0 {
			slowest = max(slowest, d)
		}

		recs := c.byEventID(row.EventID)
		if len(recs) != 1 {
			t.Fatalf("%d records with ce_id %s, want 1", len(recs), row.EventID)
		}
		r := recs[0]
		if r.Topic != k.topic || string(r.Key) != o.ID || !bytes.Equal(r.Value, row.Payload) {
			t.Errorf("record topic=%q key=%q value=%s; want %q, %q, %s", r.Topic, r.Key, r.Value, k.topic, o.ID, row.Payload)
		}
		if len(r.Headers) != len(row.Headers) {
			t.Fatalf("record has %d headers, row %d", len(r.Headers), len(row.Headers))
		}
		for j, h := range row.Headers {
			if r.Headers[j].Key != h.Key || !bytes.Equal(r.Headers[j].Value, h.Value) {
				t.Errorf("header %d = %s:%q, want %s:%q", j, r.Headers[j].Key, r.Headers[j].Value, h.Key, h.Value)
			}
		}
		for k, want := range map[string]string{
			"ce_specversion": "1.0", "ce_id": row.EventID, "ce_type": orders.TypeOrderCreated,
			"ce_source": "orders-service/test", "content-type": "application/json",
		} {
			if got := header(r, k); got != want {
				t.Errorf("header %s = %q, want %q", k, got, want)
			}
		}
		if _, err := time.Parse(time.RFC3339, header(r, "ce_time")); err != nil {
			t.Errorf("ce_time: %v", err)
		}
		poll.Eventually(t, 5*time.Second, "row marked sent", func() bool { return outboxRows(t, db, "key = $1", o.ID)[0].Sent })
	}
	t.Logf("slowest commit-to-consumer delivery: %s", slowest)
	if slowest > time.Second {
		t.Errorf("delivery took %s with a 10s poll interval: the worker did not wake on the commit", slowest)
	}
}

// TestKafkaDownThenBack: while the broker is unreachable (its connections
// cut, new ones refused) orders are still accepted and their rows stay
// unsent; once it is back every event is delivered and marked sent.
// kfake in both modes: the test cuts the broker's listener.
func TestKafkaDownThenBack(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	svc := newService(db, topic)
	ln := &switchListener{conns: map[net.Conn]struct{}{}}
	cluster := newFakeCluster(t, kfake.ListenFn(ln.listen))
	addr := cluster.ListenAddrs()[0]
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 100 * time.Millisecond, ProduceTimeout: 300 * time.Millisecond, ResolveTimeout: 30 * time.Second})
	w.maxBackoff = 300 * time.Millisecond
	start(t, w)
	c := collect(t, addr, topic)

	before := createOrder(t, svc, "before")
	poll.Eventually(t, 5*time.Second, "first order sent", func() bool { return countUnsent(t, db) == 0 })

	ln.setDown(true)
	errsBefore := testutil.ToFloat64(w.m.errors)
	var during []*orders.Order
	for i := range 5 {
		during = append(during, createOrder(t, svc, fmt.Sprintf("during-%d", i)))
	}
	// A request the client wrote before noticing the cut stays pending
	// (the worker then keeps its claim until it resolves); otherwise
	// attempts fail one by one.
	poll.Eventually(t, 10*time.Second, "failed publish attempts", func() bool {
		return testutil.ToFloat64(w.m.errors)-errsBefore >= 3 || w.awaiting.Load()
	})
	if n := countUnsent(t, db); n != 5 {
		t.Fatalf("unsent rows while Kafka is down = %d, want 5", n)
	}

	ln.setDown(false)
	poll.Eventually(t, 15*time.Second, "backlog sent", func() bool { return countUnsent(t, db) == 0 })
	for _, o := range append(during, before) {
		row := outboxRows(t, db, "key = $1", o.ID)[0]
		poll.Eventually(t, 5*time.Second, "record of "+o.ID, func() bool { return len(c.byEventID(row.EventID)) > 0 })
	}
	t.Logf("publish errors while down: %v", testutil.ToFloat64(w.m.errors)-errsBefore)
}

// switchListener is the broker's listener with a switch: down closes every
// connection and refuses new ones, as a crashed or unreachable broker would.
type switchListener struct {
	net.Listener
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

func (l *switchListener) listen(network, address string) (net.Listener, error) {
	inner, err := net.Listen(network, address)
	l.Listener = inner
	return l, err
}

func (l *switchListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		down := l.down
		if !down {
			l.conns[c] = struct{}{}
		}
		l.mu.Unlock()
		if !down {
			return c, nil
		}
		c.Close()
	}
}

func (l *switchListener) setDown(down bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = down
	if down {
		for c := range l.conns {
			c.Close()
		}
		clear(l.conns)
	}
}

// TestUnansweredBatchKeepsItsClaim: when Kafka does not answer a produce
// request within ProduceTimeout, the worker keeps its claim and the rows
// unsent, produces nothing more, and once Kafka answers marks the row sent:
// one copy in Kafka, and one publish error for the missed deadline.
// kfake in both modes: the test holds a produce request (ControlKey).
func TestUnansweredBatchKeepsItsClaim(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	svc := newService(db, topic)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	// A cold producer connects, loads metadata and its producer id before
	// it sends; on a loaded machine that can outlast the 200ms
	// ProduceTimeout, failing the batch before its request reaches the
	// broker (a second publish error). Warmed up, the held produce is the
	// batch's request and its missed deadline the only error.
	producer := newProducer(t, addr)
	warmUp(t, producer, topic)
	held, release := holdFirstProduce(t, cluster)
	w, _ := newWorker(t, db, producer, Options{PollInterval: 100 * time.Millisecond, ProduceTimeout: 200 * time.Millisecond, ResolveTimeout: 30 * time.Second})
	c := collect(t, addr, topic)
	o := createOrder(t, svc, "stalled")
	row := outboxRows(t, db, "key = $1", o.ID)[0]
	start(t, w)

	<-held
	poll.Eventually(t, 5*time.Second, "the worker past its ProduceTimeout", w.awaiting.Load)
	if n := countUnsent(t, db); n != 1 {
		t.Fatalf("unsent rows while Kafka does not answer = %d, want 1", n)
	}
	release()
	poll.Eventually(t, 10*time.Second, "row marked sent", func() bool { return outboxRows(t, db, "key = $1", o.ID)[0].Sent })
	poll.Eventually(t, 5*time.Second, "the record", func() bool { return len(c.byEventID(row.EventID)) >= 1 })
	sentinel := createOrder(t, svc, "sentinel")
	ev := outboxRows(t, db, "key = $1", sentinel.ID)[0].EventID
	poll.Eventually(t, 10*time.Second, "the sentinel consumed", func() bool { return len(c.byEventID(ev)) > 0 })
	if n := len(c.byEventID(row.EventID)); n != 1 {
		t.Errorf("%d copies of the event in Kafka, want 1", n)
	}
	if got := testutil.ToFloat64(w.m.errors); got != 1 {
		t.Errorf("publish errors = %v, want 1 (the missed deadline)", got)
	}
}

// TestMarkFailureRedelivers: when marking fails after Kafka acknowledged the
// batch (as if the process died in between), the transaction rolls back and
// the event is published again with the same ce_id, then marked sent.
func TestMarkFailureRedelivers(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	_, err := db.Pool.Exec(context.Background(), `
		CREATE SEQUENCE mark_attempts;
		CREATE FUNCTION fail_first_mark() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('mark_attempts') = 1 THEN
				RAISE EXCEPTION 'simulated crash between produce and mark';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER fail_first_mark BEFORE UPDATE ON outbox FOR EACH ROW EXECUTE FUNCTION fail_first_mark();`)
	if err != nil {
		t.Fatal(err)
	}
	k := newKafka(t)
	svc := newService(db, k.topic)
	addr := k.Addr()
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 100 * time.Millisecond})
	c := collect(t, addr, k.topic)

	o := createOrder(t, svc, "crash")
	start(t, w)
	row := outboxRows(t, db, "key = $1", o.ID)[0]
	poll.Eventually(t, 10*time.Second, "row marked sent", func() bool { return outboxRows(t, db, "key = $1", o.ID)[0].Sent })
	poll.Eventually(t, 5*time.Second, "two deliveries", func() bool { return len(c.byEventID(row.EventID)) == 2 })
	for _, r := range c.byEventID(row.EventID) {
		if string(r.Key) != o.ID || !bytes.Equal(r.Value, row.Payload) {
			t.Errorf("redelivered record key=%q value=%s differs from the row", r.Key, r.Value)
		}
	}
	if got := testutil.ToFloat64(w.m.errors); got != 1 {
		t.Errorf("publish errors = %v, want 1", got)
	}
	// The counter moves just after the mark commits: poll, then check it
	// stays at one.
	poll.Eventually(t, 5*time.Second, "the publish counted", func() bool { return testutil.ToFloat64(w.m.published) >= 1 })
	if got := testutil.ToFloat64(w.m.published); got != 1 {
		t.Errorf("published = %v, want 1 (counted once, when marked)", got)
	}
}

type replica struct {
	db   *postgres.DB
	svc  *postgres.OrderService
	w    *Relay
	stop func()
}

// TestReplicasPublishInOrder: three workers on one database and broker. A
// held outbox lock stops all of them; while orders are created and finished
// through all replicas, two workers are stopped mid-stream and the last one
// delivers everything: each event at least once (exactly once here, since
// nothing failed), OrderCreated before OrderFinished for every order.
func TestReplicasPublishInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.NewDSN(t)
	k := newKafka(t)
	addr := k.Addr()
	c := collect(t, addr, k.topic)
	reps := make([]*replica, 3)
	for i := range reps {
		db := pgtest.Open(t, dsn)
		w, _ := newWorker(t, db, newProducer(t, addr), Options{BatchSize: 4, PollInterval: 200 * time.Millisecond})
		reps[i] = &replica{db: db, svc: newService(db, k.topic), w: w}
		reps[i].stop = start(t, w)
	}

	// Another session holding the lock, as a replica mid-batch would.
	tx, err := reps[0].db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, postgres.OutboxLockKey); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		createOrder(t, reps[i].svc, "locked")
	}
	busy := func() (n int64) {
		for _, r := range reps {
			n += r.w.lockBusy.Load()
		}
		return n
	}
	from := busy()
	poll.Eventually(t, 5*time.Second, "workers finding the lock taken", func() bool { return busy() >= from+9 })
	if n, recs := countUnsent(t, reps[0].db), len(c.records()); n != 3 || recs != 0 {
		t.Fatalf("while the lock was held: %d unsent rows (want 3), %d records published (want 0)", n, recs)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 5*time.Second, "locked orders published", func() bool { return len(c.records()) == 3 })

	const perCreator = 30
	var wg sync.WaitGroup
	half := make(chan struct{}, 2)
	for creator := range 2 {
		wg.Go(func() {
			for i := range perCreator {
				o, err := reps[creator].svc.CreateOrder(ctx, orders.NewOrder{UserID: fmt.Sprintf("c%d", creator), Amount: int64(i + 1), Description: "d"})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := reps[(creator+1+i)%3].svc.MarkOrderFinished(ctx, o.ID); err != nil {
					t.Error(err)
					return
				}
				if i == perCreator/2 {
					half <- struct{}{}
				}
			}
		})
	}
	<-half
	<-half
	reps[0].stop()
	reps[1].stop()
	wg.Wait()
	if t.Failed() {
		return
	}

	events := outboxRows(t, reps[2].db, "true")
	if want := 3 + 2*2*perCreator; len(events) != want {
		t.Fatalf("outbox has %d events, want %d", len(events), want)
	}
	poll.Eventually(t, 15*time.Second, "all events sent", func() bool { return countUnsent(t, reps[2].db) == 0 })
	poll.Eventually(t, 5*time.Second, "all events consumed", func() bool {
		seen := map[string]bool{}
		for _, r := range c.records() {
			seen[header(r, "ce_id")] = true
		}
		for _, e := range events {
			if !seen[e.EventID] {
				return false
			}
		}
		return true
	})

	// Records of one key share a partition; the collector holds each
	// partition's records in offset order.
	firstPos := map[string]int{}
	dups := 0
	for i, r := range c.records() {
		id := header(r, "ce_id")
		if _, ok := firstPos[id]; ok {
			dups++
			continue
		}
		firstPos[id] = i
	}
	created := map[string]string{}
	for _, e := range events {
		if e.EventType == orders.TypeOrderCreated {
			created[e.Key] = e.EventID
		}
	}
	finished := 0
	for _, e := range events {
		if e.EventType != orders.TypeOrderFinished {
			continue
		}
		finished++
		if firstPos[created[e.Key]] > firstPos[e.EventID] {
			t.Errorf("order %s: OrderFinished published before OrderCreated", e.Key)
		}
	}
	if finished != 2*perCreator {
		t.Fatalf("%d OrderFinished events, want %d", finished, 2*perCreator)
	}
	var errs, published float64
	for _, r := range reps {
		errs += testutil.ToFloat64(r.w.m.errors)
		published += testutil.ToFloat64(r.w.m.published)
	}
	t.Logf("events %d, records %d, duplicates %d, publish errors %d, lock busy %d; published by worker: %v %v %v",
		len(events), len(c.records()), dups, int(errs), busy(),
		testutil.ToFloat64(reps[0].w.m.published), testutil.ToFloat64(reps[1].w.m.published), testutil.ToFloat64(reps[2].w.m.published))
	if errs == 0 && (dups != 0 || int(published) != len(events)) {
		t.Errorf("no publish failed, yet %d duplicate records and %v rows counted published of %d: two workers published the same rows",
			dups, published, len(events))
	}
}

// TestRetentionDeletesOldSentRowsInBatches: only rows sent before the
// retention cutoff go, RetentionBatch per statement; unsent rows stay
// whatever their age.
func TestRetentionDeletesOldSentRowsInBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	// sentAgo 0 means unsent.
	insert := func(n int, sentAgo, createdAgo time.Duration) {
		_, err := db.Pool.Exec(ctx, `
			INSERT INTO outbox (event_id, event_type, topic, key, headers, payload, created_at, sent, sent_at)
			SELECT gen_random_uuid(), 'test', $1, 'k', '[]', '\x00',
				now() - make_interval(secs => $2),
				$3 > 0,
				CASE WHEN $3 > 0 THEN now() - make_interval(secs => $3) END
			FROM generate_series(1, $4)`,
			topic, createdAgo.Seconds(), sentAgo.Seconds(), n)
		if err != nil {
			t.Fatal(err)
		}
	}
	insert(5, 2*time.Hour, 3*time.Hour)  // expired
	insert(2, 10*time.Minute, time.Hour) // sent recently
	insert(3, 0, 5*time.Hour)            // old but unsent

	w, _ := newWorker(t, db, nil, Options{Retention: time.Hour, RetentionBatch: 2})
	deleted, statements, err := w.DeleteExpired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if deleted != 5 || statements != 3 {
		t.Errorf("deleted %d rows in %d statements, want 5 in 3 (2+2+1)", deleted, statements)
	}
	var sentLeft, unsentLeft int
	err = db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE sent), count(*) FILTER (WHERE NOT sent) FROM outbox`).Scan(&sentLeft, &unsentLeft)
	if err != nil {
		t.Fatal(err)
	}
	if sentLeft != 2 || unsentLeft != 3 {
		t.Errorf("left %d sent and %d unsent rows, want 2 and 3", sentLeft, unsentLeft)
	}
	if deleted, _, err := w.DeleteExpired(ctx); err != nil || deleted != 0 {
		t.Errorf("second run deleted %d, %v; want 0", deleted, err)
	}
}

// TestMetrics: the contract's metrics are registered, the gauges show the
// backlog and its age, and publishing moves the counter and the histogram.
func TestMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	k := newKafka(t)
	svc := newService(db, k.topic)
	w, reg := newWorker(t, db, newProducer(t, k.Addr()), Options{GaugeInterval: 20 * time.Millisecond})

	for i := range 3 {
		createOrder(t, svc, fmt.Sprintf("m%d", i))
	}
	if err := w.refreshGauges(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(w.m.unsent); got != 3 {
		t.Errorf("orders_outbox_unsent = %v, want 3", got)
	}
	if got := testutil.ToFloat64(w.m.oldestAge); got <= 0 || got > 60 {
		t.Errorf("orders_outbox_oldest_unsent_age_seconds = %v, want a small positive age", got)
	}

	start(t, w)
	poll.Eventually(t, 5*time.Second, "published_total = 3", func() bool { return testutil.ToFloat64(w.m.published) == 3 })
	poll.Eventually(t, 5*time.Second, "gauges back to 0", func() bool {
		return testutil.ToFloat64(w.m.unsent) == 0 && testutil.ToFloat64(w.m.oldestAge) == 0
	})
	if n := histogramCount(t, reg, "orders_outbox_publish_latency_seconds"); n != 3 {
		t.Errorf("latency histogram count = %d, want 3", n)
	}
	if n, err := testutil.GatherAndCount(reg,
		"orders_outbox_published_total", "orders_outbox_publish_latency_seconds", "orders_outbox_publish_errors_total",
		"orders_outbox_unsent", "orders_outbox_oldest_unsent_age_seconds"); err != nil || n != 5 {
		t.Errorf("contract metrics gathered: %d, %v; want 5", n, err)
	}
	if got := testutil.ToFloat64(w.m.errors); got != 0 {
		t.Errorf("publish errors = %v, want 0", got)
	}
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("metric %s not gathered", name)
	return 0
}

// TestBatchDoesNotWaitForLinger: with a producer that lingers for half a
// minute to fill its batches (the service's lingers 5ms), a committed event
// still reaches Kafka at once, because the worker flushes its complete
// batch. A relay that waited for the linger would hold its transaction and
// its connection open for that long on every batch; here its records would
// not even be acknowledged within the (10s) ProduceTimeout.
func TestBatchDoesNotWaitForLinger(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	k := newKafka(t)
	svc := newService(db, k.topic)
	const linger = 30 * time.Second
	producer, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.ProducerLinger(linger))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	w, _ := newWorker(t, db, producer, Options{PollInterval: 10 * time.Second})
	start(t, w)

	for i := range 3 {
		o := createOrder(t, svc, fmt.Sprintf("user-%d", i))
		committed := time.Now()
		poll.Eventually(t, 15*time.Second, "row of "+o.ID+" marked sent (not waiting for the linger)", func() bool {
			return outboxRows(t, db, "key = $1", o.ID)[0].Sent
		})
		// Unflushed, the record would wait the whole linger. Anything
		// well below it is the machine: a loaded one (two cores, several
		// race-enabled test binaries) takes over a second for the first
		// connection, metadata and producer id.
		d := time.Since(committed)
		t.Logf("event %d acknowledged and marked %s after its commit", i, d.Round(time.Millisecond))
		if d > linger/6 {
			t.Fatalf("event %d acknowledged %s after its commit: the batch waited for the %s linger", i, d, linger)
		}
	}
}
