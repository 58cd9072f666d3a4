package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestReplicasKeepKeyOrderUnderKills: three replicas (processes) with four
// publishers each share the outbox lanes while orders are created and
// finished through the first; the other two are SIGKILLed at random once
// they publish, mid-batch or not, and started again, four times. Once the outbox is empty,
// a read_committed reader finds every event, each order's OrderCreated
// before its OrderFinished and no stale copy after it. Runs against an
// embedded broker, or the cluster of KAFKA_TEST_BROKERS (the failover
// suite's TestClusterReplicaKills kills more often on the real cluster).
func TestReplicasKeepKeyOrderUnderKills(t *testing.T) {
	dsn := pgtest.NewEmptyDSN(t)
	k := newKafka(t)
	env := k.env(dsn)
	env["OUTBOX_PUBLISHERS"] = "4"
	began := time.Now()
	rs := []*replica{startReplica(t, "replica-1", env), startReplica(t, "replica-2", env), startReplica(t, "replica-3", env)}
	t.Logf("%s: three replicas ready", time.Since(began).Round(time.Millisecond))

	// Callers create and finish orders through the first replica, which
	// is never killed, until stopped.
	var (
		mu    sync.Mutex
		ids   []string
		acked atomic.Int64
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	stopLoad := sync.OnceFunc(func() { close(stop) })
	t.Cleanup(func() { stopLoad(); wg.Wait() })
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				o, err := rs[0].client.CreateOrder(ctx, &orderspb.CreateOrderRequest{UserId: fmt.Sprintf("kills-%d", w), Amount: int64(i + 1)})
				if err == nil {
					_, err = rs[0].client.MarkOrderFinished(ctx, &orderspb.MarkOrderFinishedRequest{OrderId: o.GetOrder().GetId()})
				}
				cancel()
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				ids = append(ids, o.GetOrder().GetId())
				mu.Unlock()
				acked.Add(1)
			}
		})
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	const rounds = 4
	for round := range rounds {
		at := acked.Load()
		poll.Eventually(t, 60*time.Second, "orders flowing", func() bool { return acked.Load() >= at+int64(50+rng.IntN(100)) || len(errs) > 0 })
		i := 1 + rng.IntN(2)
		// The victim is one of the publishers: it holds lanes and has
		// published in them, so the kill may land mid-batch.
		var published float64
		poll.Eventually(t, 30*time.Second, rs[i].name+" publishing", func() bool {
			published = metric(t, scrape(t, &instance{httpAddr: rs[i].httpAddr}), "orders_outbox_published_total")
			return published > 0 || len(errs) > 0
		})
		rs[i].kill(t)
		t.Logf("%s: SIGKILLed %s after %d orders, %v rows published by it", time.Since(began).Round(time.Millisecond), rs[i].name, acked.Load(), published)
		rs[i] = startReplica(t, fmt.Sprintf("replica-%d.%d", i+1, round+1), env)
	}
	stopLoad()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a call failed: %v", err)
	}

	t.Logf("%s: load stopped", time.Since(began).Round(time.Millisecond))
	poll.Eventually(t, 60*time.Second, "the outbox empty", func() bool { return unsentRows(t, dsn) == 0 })
	t.Logf("%s: outbox empty", time.Since(began).Round(time.Millisecond))
	events := outboxEvents(t, dsn)
	if len(events) != 2*len(ids) {
		t.Fatalf("%d outbox rows for %d orders, want two each", len(events), len(ids))
	}
	recs := readTopicUntil(t, k.brokers, k.topic, 60*time.Second, func(read []event) bool {
		seen := map[string]bool{}
		for _, e := range read {
			seen[e.id] = true
		}
		for _, id := range events {
			if !seen[id] {
				return false
			}
		}
		return true
	})
	t.Logf("%s: every event read", time.Since(began).Round(time.Millisecond))
	dups := checkKeyOrder(t, recs, ids, "orders.v1.OrderCreated", "orders.v1.OrderFinished")
	// Killed, not stopped: a graceful stop would wait SHUTDOWN_TIMEOUT
	// (20s each) for the consumer group, which still counts the killed
	// replicas' static members; that is not what this test is about.
	for _, r := range rs {
		r.kill(t)
	}
	t.Logf("orders=%d events=%d records=%d duplicates=%d replicas=3 publishers_each=4 sigkills=%d", len(ids), len(events), len(recs), dups, rounds)
}

// checkKeyOrder asserts that each order in ids has exactly the events want
// (distinct ce_ids, in that order) among recs, that its last record is
// the last of want (no copy of an earlier event after a later one), and
// that no record belongs to another key; it returns the number of
// duplicate records (delivery is at least once).
func checkKeyOrder(t *testing.T, recs []event, ids []string, want ...string) (duplicates int) {
	t.Helper()
	seen := map[string]bool{}
	types := map[string][]string{} // distinct events per key, in order
	last := map[string]string{}    // type of each key's last record
	for _, r := range recs {
		if seen[r.id] {
			duplicates++
		} else {
			seen[r.id] = true
			types[r.key] = append(types[r.key], r.typ)
		}
		last[r.key] = r.typ
	}
	wantTypes := strings.Join(want, ",")
	known := map[string]bool{}
	for _, id := range ids {
		known[id] = true
		switch got := strings.Join(types[id], ","); {
		case got != wantTypes:
			t.Errorf("order %s has events [%s], want [%s]", id, got, wantTypes)
		case last[id] != want[len(want)-1]:
			t.Errorf("order %s: its last record is a stale %s after its %s", id, last[id], want[len(want)-1])
		}
	}
	for key := range types {
		if !known[key] {
			t.Errorf("record for an order the test did not create: %s", key)
		}
	}
	return duplicates
}

// unsentRows counts the outbox rows of dsn's database not yet sent.
func unsentRows(t *testing.T, dsn string) int {
	t.Helper()
	var n int
	queryRow(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`, &n)
	return n
}

// outboxEvents returns the event ids of every outbox row.
func outboxEvents(t *testing.T, dsn string) []string {
	t.Helper()
	var ids []string
	queryRow(t, dsn, `SELECT coalesce(array_agg(event_id::text), '{}') FROM outbox`, &ids)
	return ids
}

func queryRow(t *testing.T, dsn, sql string, dest ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		t.Fatal(err)
	}
}
