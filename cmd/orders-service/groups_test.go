//go:build kafkacluster

package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/paymentsim"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestClusterGroupChanges (issue 9, 3c; issue 11, point 7 on the real
// cluster): three replicas consume a stream of payments (a tenth of them
// sent twice) while one replica is SIGKILLed and another restarted. Every
// payment applies once, the group's committed offsets reach the end of every
// partition once it settles, and no offset is ever committed before the
// inbox rows of the records below it. Run with the classic group protocol
// and with KIP-848's consumer protocol.
func TestClusterGroupChanges(t *testing.T) {
	for _, protocol := range []string{"classic", "consumer"} {
		t.Run(protocol, func(t *testing.T) { testGroupChanges(t, protocol) })
	}
}

// offsetSample is the group's committed offsets and, read after them, the
// inbox's message ids.
type offsetSample struct {
	committed map[int32]int64
	stored    map[string]bool
}

func testGroupChanges(t *testing.T, protocol string) {
	const orders = 1500
	c := needCluster(t)
	dsn := pgtest.NewEmptyDSN(t)
	names := uniqueNames("groups-" + protocol)
	env := c.replicaEnv(dsn, names)
	env["KAFKA_GROUP_PROTOCOL"] = protocol
	replicaEnv := func(i int) map[string]string {
		e := map[string]string{"KAFKA_GROUP_INSTANCE_ID": fmt.Sprintf("%s-r%d", names["KAFKA_GROUP_ID"], i)}
		for k, v := range env {
			e[k] = v
		}
		return e
	}
	rs := []*replica{startReplica(t, "replica-1", replicaEnv(1)), startReplica(t, "replica-2", replicaEnv(2)), startReplica(t, "replica-3", replicaEnv(3))}
	group, payments := names["KAFKA_GROUP_ID"], names["KAFKA_INBOX_TOPIC"]

	stop := make(chan struct{})
	close(stop)
	ids := startLoad(t, orders, false, stop, rs...).wait(t)
	poll.Eventually(t, 120*time.Second, "every OrderCreated published", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`) == 0
	})
	sim := paymentsim.Config{OutTopic: payments}
	var answers []*kgo.Record
	for _, r := range c.readAll(t, names["KAFKA_TOPIC"]) {
		a, err := sim.Answer(&kgo.Record{Value: r.value}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		answers = append(answers, a)
	}
	if len(answers) < len(ids) {
		t.Fatalf("%d OrderCreated records for %d orders", len(answers), len(ids))
	}
	for i := 0; i < len(ids)/10; i++ { // redeliveries: the same ce_id again
		a := *answers[i*10]
		answers = append(answers, &a)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu      sync.Mutex
		samples []offsetSample
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		for ctx.Err() == nil {
			qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
			committed, err := c.committed(qctx, group, payments)
			qcancel()
			if err == nil && len(committed) > 0 {
				if stored, err := inboxIDs(ctx, dsn, payments); err == nil {
					mu.Lock()
					samples = append(samples, offsetSample{committed: committed, stored: stored})
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	})

	producer, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	produced := make(chan int, len(answers))
	var produceErr error
	wg.Go(func() {
		defer close(produced)
		const chunk = 20
		for i := 0; i < len(answers); i += chunk {
			if err := producer.ProduceSync(ctx, answers[i:min(i+chunk, len(answers))]...).FirstErr(); err != nil {
				produceErr = err
				return
			}
			produced <- min(i+chunk, len(answers))
			select {
			case <-ctx.Done():
				return
			case <-time.After(40 * time.Millisecond):
			}
		}
	})
	waitProduced := func(n int) {
		t.Helper()
		for got := range produced {
			if got >= n {
				return
			}
		}
		t.Fatalf("payments stream ended early: %v", produceErr)
	}

	waitProduced(len(answers) / 3)
	rs[0].kill(t)
	t.Logf("SIGKILLed replica-1 after a third of the payments")
	waitProduced(len(answers) / 2)
	rs[1].terminate(t)
	rs[1] = startReplica(t, "replica-2 (restarted)", replicaEnv(2))
	t.Logf("restarted replica-2 mid-stream")
	for range produced {
	}
	if produceErr != nil {
		t.Fatal(produceErr)
	}
	streamEnd := time.Now()

	poll.Eventually(t, 180*time.Second, "every order paid", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM orders WHERE status = 'finished'`) == len(ids)
	})
	var ends, committed map[int32]int64
	defer func() {
		if t.Failed() {
			t.Logf("end offsets %v, committed %v; group: %s", ends, committed, c.describeGroup(group))
		}
	}()
	poll.Eventually(t, 180*time.Second, "committed offsets at the end of every partition", func() bool {
		qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer qcancel()
		ends, err = c.endOffsets(qctx, payments)
		if err != nil {
			return false
		}
		committed, err = c.committed(qctx, group, payments)
		if err != nil {
			return false
		}
		for p, end := range ends {
			if committed[p] != end {
				return false
			}
		}
		return true
	})
	settled := time.Since(streamEnd)
	cancel()
	wg.Wait()

	if n := queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE event_type = $1`, typeFinished); n != len(ids) {
		t.Fatalf("%d OrderFinished outbox rows for %d orders: a payment applied twice or not at all", n, len(ids))
	}
	if n := queryInt(t, dsn, `SELECT count(*) FROM inbox WHERE topic = $1 AND processed`, payments); n != len(ids) {
		t.Fatalf("%d processed inbox rows for %d distinct payments", n, len(ids))
	}
	recs := c.readAll(t, payments)
	for _, s := range samples {
		for _, r := range recs {
			if r.offset < s.committed[r.partition] && !s.stored[r.id] {
				t.Fatalf("offset %d of partition %d was committed before the inbox row of the record at %d (ce_id %s) was",
					s.committed[r.partition], r.partition, r.offset, r.id)
			}
		}
	}
	poll.Eventually(t, 60*time.Second, "the outbox empty", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`) == 0
	})
	st := checkOrderEvents(t, c.readCommitted(t, names["KAFKA_TOPIC"]), ids, typeCreated, typeFinished)
	t.Logf("SUMMARY group changes (%s protocol): orders=%d payments=%d payment_records=%d (redelivered %d) events=%d duplicates=%d offset_samples=%d settled_after_stream=%v",
		protocol, len(ids), len(ids), len(recs), len(recs)-len(ids), st.events, st.duplicates, len(samples), settled.Round(time.Millisecond))
}

// inboxIDs returns the message ids of the inbox rows of topic.
func inboxIDs(ctx context.Context, dsn, topic string) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT message_id FROM inbox WHERE topic = $1`, topic)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}
