package outbox

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// failingKey is a producer that fails every record of one key with a
// retriable error, as Kafka does for a partition without a leader, while
// failing is set, and produces the rest.
type failingKey struct {
	Producer
	key      string
	failing  atomic.Bool
	attempts atomic.Int64 // records of the key failed
}

func (f *failingKey) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	if string(r.Key) == f.key && f.failing.Load() {
		f.attempts.Add(1)
		promise(r, kerr.NotLeaderForPartition)
		return
	}
	f.Producer.Produce(ctx, r, promise)
}

// insertRows writes n rows of key, in id order, and returns their event ids.
func insertRows(t *testing.T, db *postgres.DB, topic, key string, n int) []string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `
		WITH e AS (SELECT i, gen_random_uuid() AS id FROM generate_series(1, $3) AS i)
		INSERT INTO outbox (event_id, event_type, topic, key, headers, payload)
		SELECT e.id, 'test', $1, $2, jsonb_build_array(jsonb_build_object('key', 'ce_id', 'value', e.id::text)), '\x7b7d'
		FROM e ORDER BY e.i
		RETURNING event_id::text`, topic, key, n)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestStuckKeyHoldsOnlyItself: 1,200 rows of one key sit at the head of
// the outbox and Kafka fails every record of that key with
// NOT_LEADER_FOR_PARTITION. Every other key's rows are published anyway (the
// claim leaves the waiting key out instead of returning only its rows), and
// once the key recovers its rows are published in order, once each.
func TestStuckKeyHoldsOnlyItself(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	c := collect(t, addr, topic)
	p := &failingKey{Producer: newProducer(t, addr), key: "stuck"}
	p.failing.Store(true)
	stuck := insertRows(t, db, topic, "stuck", 1200)
	for i := range 50 {
		insertRows(t, db, topic, fmt.Sprintf("order-%d", i), 2)
	}
	w, _ := newWorker(t, db, p, Options{PollInterval: 50 * time.Millisecond})
	start(t, w)

	poll.Eventually(t, 15*time.Second, "every other key's rows sent", func() bool {
		return len(outboxRows(t, db, "key <> 'stuck' AND NOT sent")) == 0
	})
	if n := len(outboxRows(t, db, "key = 'stuck' AND sent")); n != 0 {
		t.Fatalf("%d rows of the failing key marked sent, want 0", n)
	}
	if p.attempts.Load() == 0 {
		t.Fatal("the stuck key was never produced")
	}

	p.failing.Store(false)
	poll.Eventually(t, 20*time.Second, "the stuck key's rows sent once it recovers", func() bool { return countUnsent(t, db) == 0 })
	poll.Eventually(t, 10*time.Second, "the stuck key's records consumed", func() bool {
		n := 0
		for _, r := range c.records() {
			if string(r.Key) == "stuck" {
				n++
			}
		}
		return n >= len(stuck)
	})
	var got []string
	for _, r := range c.records() {
		if string(r.Key) == "stuck" {
			got = append(got, header(r, "ce_id"))
		}
	}
	if len(got) != len(stuck) {
		t.Fatalf("%d records of the stuck key, want %d (once each)", len(got), len(stuck))
	}
	for i := range stuck {
		if got[i] != stuck[i] {
			t.Fatalf("record %d of the stuck key is %s, want %s: out of order", i, got[i], stuck[i])
		}
	}
}

// TestEarlierRowNotParkedBehindLaterOne: an order's first event fails
// retriably while its second, too large for Kafka, is parked in the same
// batch. When the first is retried it is published, not parked "behind" the
// later parked row.
func TestEarlierRowNotParkedBehindLaterOne(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	p := &failingKey{Producer: newProducer(t, addr), key: "order-x"}
	p.failing.Store(true)
	firstID, _ := insertOutboxRow(t, db, topic, "order-x", []byte(`{"n":1}`))
	bigID, _ := insertOutboxRow(t, db, topic, "order-x", bytes.Repeat([]byte("x"), 5000))
	w, _ := newWorker(t, db, p, Options{PollInterval: 50 * time.Millisecond, MaxRecordBytes: 4000})
	start(t, w)

	poll.Eventually(t, 10*time.Second, "the later, oversize row parked", func() bool { return parkState(t, db, bigID).Parked })
	poll.Eventually(t, 10*time.Second, "the first row tried", func() bool { return p.attempts.Load() > 0 })
	p.failing.Store(false)
	poll.Eventually(t, 10*time.Second, "the first row settled", func() bool {
		s := parkState(t, db, firstID)
		return s.Sent || s.Parked
	})
	if s := parkState(t, db, firstID); !s.Sent || s.Parked {
		t.Fatalf("the earlier row: %+v; want sent, not parked behind the later row", s)
	}
}

// laneOf returns the lane of text key key.
func laneOf(t *testing.T, db *postgres.DB, key string) int {
	t.Helper()
	var lane int
	if err := db.Pool.QueryRow(context.Background(), `SELECT hashtext($1) & 15`, key).Scan(&lane); err != nil {
		t.Fatal(err)
	}
	return lane
}

// TestRedriveDuringBatchStrandsNothing: an order's first row is parked and
// its second waits behind it; a batch holding the second (parked behind the
// first) is in flight when the operator re-drives the first. The redrive
// waits for the batch, so it un-parks both rows, and both are published in
// order; none is stranded parked.
func TestRedriveDuringBatchStrandsNothing(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	c := collect(t, addr, topic)
	held, release := holdFirstProduce(t, cluster)
	ctx := context.Background()

	// A key of the same lane, whose record the broker holds while the
	// batch is in flight.
	var other string
	for i := range 1000 {
		if k := fmt.Sprintf("other-%d", i); laneOf(t, db, k) == laneOf(t, db, "order-x") {
			other = k
			break
		}
	}
	firstID, firstEvent := insertOutboxRow(t, db, topic, "order-x", []byte(`{"n":1}`))
	if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET parked_at = now(), last_error = 'topic authorization failed' WHERE id = $1`, firstID); err != nil {
		t.Fatal(err)
	}
	insertOutboxRow(t, db, topic, other, []byte(`{}`))
	secondID, secondEvent := insertOutboxRow(t, db, topic, "order-x", []byte(`{"n":2}`))
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 50 * time.Millisecond})
	start(t, w)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no produce request reached the broker")
	}

	redriven := make(chan error, 1)
	go func() {
		_, err := db.RedriveOutbox(ctx, []int64{firstID})
		redriven <- err
	}()
	// Release once the redrive waits for the batch, or has committed.
	poll.Eventually(t, 10*time.Second, "the redrive waiting or done", func() bool {
		if len(redriven) > 0 {
			return true
		}
		var n int
		err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'`).Scan(&n)
		return err == nil && n > 0
	})
	release()
	if err := <-redriven; err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, "both rows sent", func() bool {
		return parkState(t, db, firstID).Sent && parkState(t, db, secondID).Sent
	})
	poll.Eventually(t, 10*time.Second, "both records consumed", func() bool {
		return len(c.byEventID(firstEvent)) > 0 && len(c.byEventID(secondEvent)) > 0
	})
	checkKeyOrder(t, c.records(), "order-x", []string{firstEvent, secondEvent})
}

// holdNode makes cluster hold the first produce request sent to node,
// unanswered and unapplied, until release.
func holdNode(t *testing.T, cluster *kfake.Cluster, node int32) (held <-chan struct{}, release func()) {
	t.Helper()
	heldCh, releaseCh := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	var taken atomic.Bool
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if cluster.CurrentNode() == node && taken.CompareAndSwap(false, true) {
			once.Do(func() { close(heldCh) })
			cluster.SleepControl(func() { <-releaseCh })
		}
		return nil, nil, false
	})
	release = func() { releaseOnce.Do(func() { close(releaseCh) }) }
	t.Cleanup(release)
	return heldCh, release
}

// TestAbandonedBatchKeepsWhatKafkaAcknowledged: a batch's records go to two
// brokers; one holds its produce request past ProduceTimeout +
// ResolveTimeout. The relay gives up on those records, but marks sent the
// records the other broker acknowledged: once everything is published, each
// of them is in Kafka once, not republished with the abandoned ones.
func TestAbandonedBatchKeepsWhatKafkaAcknowledged(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.SeedTopics(4, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	addr := cluster.ListenAddrs()[0]
	for p := range int32(4) {
		if err := cluster.MoveTopicPartition(topic, p, p%2); err != nil {
			t.Fatal(err)
		}
	}
	held, release := holdNode(t, cluster, 0)
	c := collect(t, addr, topic)
	var events []string
	for i := range 40 {
		events = append(events, insertRows(t, db, topic, fmt.Sprintf("order-%d", i), 1)...)
	}
	newP := func() (Producer, error) { return kgo.NewClient(kgo.SeedBrokers(addr)) }
	first, err := newP()
	if err != nil {
		t.Fatal(err)
	}
	// One lane at a time, with every row in one batch or a few.
	w, _ := newWorker(t, db, first, Options{PollInterval: 50 * time.Millisecond, ProduceTimeout: 300 * time.Millisecond,
		ResolveTimeout: 500 * time.Millisecond, NewProducer: newP})
	start(t, w)
	<-held
	poll.Eventually(t, 20*time.Second, "every row sent", func() bool { return countUnsent(t, db) == 0 })
	release()
	// A sentinel on every partition, consumed, shows any late copy.
	sentinels := insertRows(t, db, topic, "sentinel", 1)
	for i := range 8 {
		sentinels = append(sentinels, insertRows(t, db, topic, fmt.Sprintf("sentinel-%d", i), 1)...)
	}
	for _, e := range append(sentinels, events...) {
		poll.Eventually(t, 10*time.Second, "record "+e+" consumed", func() bool { return len(c.byEventID(e)) > 0 })
	}
	once, twice := 0, 0
	for _, e := range events {
		recs := c.byEventID(e)
		switch {
		case recs[0].Partition%2 == 1 && len(recs) != 1:
			t.Errorf("event %s, acknowledged by the broker that answered, published %d times; want once", e, len(recs))
		case recs[0].Partition%2 == 1:
			once++
		default:
			twice += len(recs) - 1
		}
	}
	if once == 0 {
		t.Fatal("no record went to the broker that answered")
	}
	t.Logf("%d acknowledged records published once; %d extra copies of the %d abandoned ones", once, twice, len(events)-once)
}

// TestLostMarkIsRepublished: the publishing transaction commits with
// synchronous_commit off. A crash may lose that commit: its rows are then
// unsent again, as the UPDATE below leaves them, and are published again
// with the same ce_id; never lost.
func TestLostMarkIsRepublished(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, `
		CREATE TABLE mark_settings (synchronous_commit text);
		CREATE FUNCTION note_mark() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO mark_settings VALUES (current_setting('synchronous_commit'));
			RETURN NEW;
		END $$;
		CREATE TRIGGER note_mark BEFORE UPDATE OF sent ON outbox FOR EACH ROW EXECUTE FUNCTION note_mark();`)
	if err != nil {
		t.Fatal(err)
	}
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	c := collect(t, addr, topic)
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: 50 * time.Millisecond})
	start(t, w)
	id, event := insertOutboxRow(t, db, topic, "order-1", []byte(`{}`))
	poll.Eventually(t, 10*time.Second, "row sent", func() bool { return parkState(t, db, id).Sent })
	var setting string
	if err := db.Pool.QueryRow(ctx, `SELECT synchronous_commit FROM mark_settings LIMIT 1`).Scan(&setting); err != nil || setting != "off" {
		t.Errorf("synchronous_commit of the marking transaction = %q, %v; want off", setting, err)
	}

	if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET sent = false, sent_at = NULL WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, "row sent again", func() bool { return parkState(t, db, id).Sent })
	poll.Eventually(t, 10*time.Second, "two copies with the same ce_id", func() bool { return len(c.byEventID(event)) == 2 })
}

// TestShutdownDrainsCommittedRows: rows committed just before Run's ctx ends
// are published before Run returns, while Kafka takes them, though no wake
// or poll would come first.
func TestShutdownDrainsCommittedRows(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster := newFakeCluster(t)
	addr := cluster.ListenAddrs()[0]
	w, _ := newWorker(t, db, newProducer(t, addr), Options{PollInterval: time.Hour, Wake: make(chan struct{}), Publishers: 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	first, _ := insertOutboxRow(t, db, topic, "first", []byte(`{}`))
	go func() { done <- w.Run(ctx) }()
	// The relay's first pass sends this row; then it waits for an hour.
	poll.Eventually(t, 10*time.Second, "the first row sent", func() bool { return parkState(t, db, first).Sent })
	for i := range 20 {
		insertRows(t, db, topic, fmt.Sprintf("order-%d", i), 3)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	if n := countUnsent(t, db); n != 0 {
		t.Fatalf("%d rows committed before shutdown left unsent, want 0", n)
	}
}
