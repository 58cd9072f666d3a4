package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/outbox"
	"github.com/acme/orders-service/postgres"
)

// fillOutbox empties the outbox and writes n unsent OrderCreated rows for
// topic, shaped like the service's (CloudEvents headers, the event's JSON),
// in one statement; then vacuums and analyzes it.
func fillOutbox(ctx context.Context, db *postgres.DB, topic string, n int) error {
	if _, err := db.Pool.Exec(ctx, `TRUNCATE outbox RESTART IDENTITY`); err != nil {
		return err
	}
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO outbox (event_id, event_type, topic, key, headers, payload)
		SELECT e.event_id, 'orders.v1.OrderCreated', $2, e.order_id::text,
			jsonb_build_array(
				jsonb_build_object('key', $3::text, 'value', $4::text),
				jsonb_build_object('key', $5::text, 'value', e.event_id::text),
				jsonb_build_object('key', $6::text, 'value', 'orders.v1.OrderCreated'),
				jsonb_build_object('key', $7::text, 'value', 'orders-service'),
				jsonb_build_object('key', $8::text, 'value', e.at),
				jsonb_build_object('key', $9::text, 'value', $10::text)),
			convert_to(json_build_object(
				'order_id', e.order_id, 'user_id', 'bench-user-' || (i % 1000), 'amount', 100 + i % 10000,
				'currency', 'USD', 'description', 'bench order #' || i, 'status', 'new', 'created_at', e.at)::text, 'UTF8')
		FROM generate_series(1, $1) AS i,
			LATERAL (SELECT md5('event' || i)::uuid AS event_id, md5('order' || i)::uuid AS order_id,
				to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at) e`, n, topic,
		cloudevents.HeaderSpecVersion, cloudevents.SpecVersion, cloudevents.HeaderID, cloudevents.HeaderType,
		cloudevents.HeaderSource, cloudevents.HeaderTime, cloudevents.HeaderContentType, cloudevents.ContentTypeJSON)
	if err != nil {
		return fmt.Errorf("fill outbox: %w", err)
	}
	_, err = db.Pool.Exec(ctx, `VACUUM ANALYZE outbox`)
	return err
}

// drainPhase times three ways of moving n outbox rows: the claim-and-mark
// SQL alone, a raw franz-go produce of the same records, and the Relay.
func (b *bench) drainPhase(ctx context.Context) error {
	relayTopic, rawTopic := b.topic("bench.drain.relay"), b.topic("bench.drain.raw")
	n := b.sizes.DrainRows
	db, _, err := b.openDatabase(ctx, "drain")
	if err != nil {
		return err
	}
	defer db.Close()
	kcfg := b.kafkaConfig()

	if err := fillOutbox(ctx, db, relayTopic, n); err != nil {
		return err
	}
	snap := b.cpuSnap(ctx, db)
	sqlRate, err := claimAndMark(ctx, db, n)
	if err != nil {
		return err
	}
	b.account(ctx, "outbox claim-and-mark SQL", snap, n)
	b.say("outbox claim-and-mark SQL alone: %.0f rows/s", sqlRate)

	if err := fillOutbox(ctx, db, relayTopic, n); err != nil {
		return err
	}
	recs, err := outboxRecords(ctx, db, rawTopic)
	if err != nil {
		return err
	}
	raw, err := kafka.NewClient(kcfg)
	if err != nil {
		return err
	}
	defer raw.Close()
	if err := kafka.EnsureTopics(ctx, raw, 6, -1, relayTopic, rawTopic); err != nil {
		return err
	}
	snap = b.cpuSnap(ctx, db)
	rawRate, err := produceAll(ctx, raw, recs)
	if err != nil {
		return err
	}
	b.account(ctx, "raw franz-go produce", snap, n)
	b.say("raw franz-go produce: %.0f records/s", rawRate)

	producer, err := kafka.NewClient(kcfg)
	if err != nil {
		return err
	}
	defer producer.Close()
	if err := producer.Ping(ctx); err != nil {
		return err
	}
	snap = b.cpuSnap(ctx, db)
	stopProfile := b.profileSelf("drain")
	elapsed, err := b.runRelay(ctx, db, producer, outbox.Options{Wake: db.OutboxWritten()}, n)
	stopProfile()
	if err != nil {
		return err
	}
	b.account(ctx, "Relay drain", snap, n)
	relayRate := float64(n) / elapsed.Seconds()
	b.say("Relay drain: %.0f rows/s", relayRate)

	if unsent, err := db.CountUnsentOutbox(ctx, n); err != nil || unsent != 0 {
		return fmt.Errorf("after the drain %d rows are unsent (%v)", unsent, err)
	}
	ends, err := kadm.NewClient(producer).ListEndOffsets(ctx, relayTopic)
	if err != nil {
		return err
	}
	var hw int64
	ends.Each(func(o kadm.ListedOffset) { hw += o.Offset })
	if hw != int64(n) {
		return fmt.Errorf("relay topic holds %d records, want %d", hw, n)
	}
	if size, err := topicBytes(ctx, producer, relayTopic); err != nil {
		b.say("size of %s not known: %v", relayTopic, err)
	} else {
		b.add(fmt.Sprintf("Outbox drain, %s rows: log bytes, all replicas (%s)", human(n), b.compression), "B", float64(size))
	}
	r := b.add(fmt.Sprintf("Outbox drain, %s rows", human(n)), "/s", relayRate).vs("SQL alone", sqlRate)
	r.target("≥ 20,000/s and ≥ 0.6× SQL", relayRate >= 20000 && *r.Ratio >= 0.6)
	b.add(fmt.Sprintf("Outbox drain, %s rows, vs Kafka alone", human(n)), "/s", relayRate).vs("raw produce", rawRate)
	b.res.Details["outbox_drain"] = map[string]any{"rows": n, "relay_per_s": relayRate, "sql_alone_per_s": sqlRate,
		"raw_produce_per_s": rawRate, "relay_seconds": elapsed.Seconds(), "batch_size": 1000}
	return b.drainLanes(ctx, db, kcfg, n)
}

// claimAndMark runs the relay's transactions without producing: lock,
// claim a batch of 1000, mark it sent, commit, until nothing is left.
func claimAndMark(ctx context.Context, db *postgres.DB, n int) (float64, error) {
	start := time.Now()
	total := 0
	for {
		var claimed int
		err := db.InTx(ctx, false, func(tx pgx.Tx) error {
			if err := postgres.SetIdleTimeout(ctx, tx, 20*time.Second); err != nil {
				return err
			}
			if ok, err := postgres.TryLockOutbox(ctx, tx); err != nil || !ok {
				return fmt.Errorf("outbox lock not taken: %v", err)
			}
			recs, err := postgres.ClaimOutbox(ctx, tx, 1000)
			if err != nil || len(recs) == 0 {
				return err
			}
			claimed = len(recs)
			ids := make([]int64, len(recs))
			for i, r := range recs {
				ids[i] = r.ID
			}
			return postgres.MarkOutboxSent(ctx, tx, ids)
		})
		if err != nil {
			return 0, err
		}
		if claimed == 0 {
			break
		}
		total += claimed
	}
	if total != n {
		return 0, fmt.Errorf("claimed %d rows, want %d", total, n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// outboxRecords reads the outbox as the Kafka records the relay would
// produce, addressed to topic.
func outboxRecords(ctx context.Context, db *postgres.DB, topic string) ([]*kgo.Record, error) {
	rows, err := db.Pool.Query(ctx, `SELECT key, headers, payload FROM outbox ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (*kgo.Record, error) {
		var key string
		var headers []postgres.Header
		var payload []byte
		if err := row.Scan(&key, &headers, &payload); err != nil {
			return nil, err
		}
		r := &kgo.Record{Topic: topic, Key: []byte(key), Value: payload}
		for _, h := range headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		return r, nil
	})
}

// produceAll produces recs asynchronously and waits for every
// acknowledgement, returning records per second.
func produceAll(ctx context.Context, cl *kgo.Client, recs []*kgo.Record) (float64, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	wg.Add(len(recs))
	for _, r := range recs {
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				first = cmpOr(first, err)
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	if first != nil {
		return 0, fmt.Errorf("produce: %w", first)
	}
	return float64(len(recs)) / time.Since(start).Seconds(), nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// waitCounter polls the counter name in reg until it reaches want.
func waitCounter(ctx context.Context, reg *prometheus.Registry, name string, want float64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		mfs, err := reg.Gather()
		if err != nil {
			return err
		}
		var got float64
		for _, mf := range mfs {
			if mf.GetName() == name && len(mf.GetMetric()) == 1 {
				got = mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s reached %.0f of %.0f within %s", name, got, want, timeout)
		}
		if !sleepUntil(ctx, time.Now().Add(5*time.Millisecond)) {
			return ctx.Err()
		}
	}
}

// profileSelf starts a CPU profile of this process when profiling is on and
// returns the function that ends it.
func (b *bench) profileSelf(name string) func() {
	if b.profile == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(b.profile, "bench-"+name+".pprof"))
	if err != nil {
		b.log.Warn("profile failed", "error", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.log.Warn("profile failed", "error", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// topicBytes is the size of topic's log on the brokers, all replicas
// together: what compression saves on disk and on the wire.
func topicBytes(ctx context.Context, cl *kgo.Client, topic string) (int64, error) {
	dirs, err := kadm.NewClient(cl).DescribeAllLogDirs(ctx, nil)
	if err != nil {
		return 0, err
	}
	var size int64
	dirs.Each(func(d kadm.DescribedLogDir) {
		for _, p := range d.Topics[topic] {
			size += p.Size
		}
	})
	return size, nil
}

// runRelay runs a Relay over db's outbox with producer and opts until it
// has published n rows (for at most 5 minutes), stops it and returns how
// long the n rows took.
func (b *bench) runRelay(ctx context.Context, db *postgres.DB, producer outbox.Producer, opts outbox.Options, n int) (time.Duration, error) {
	start := time.Now()
	reg, stop, err := b.startRelay(ctx, db, producer, opts)
	if err != nil {
		return 0, err
	}
	err = waitCounter(ctx, reg, "orders_outbox_published_total", float64(n), 5*time.Minute)
	elapsed := time.Since(start)
	stop()
	return elapsed, err
}

// startRelay runs a Relay over db's outbox with producer and opts until
// the returned stop is called (stop returns once Run has), its metrics in
// reg.
func (b *bench) startRelay(ctx context.Context, db *postgres.DB, producer outbox.Producer, opts outbox.Options) (reg *prometheus.Registry, stop func(), err error) {
	reg = prometheus.NewRegistry()
	om, err := outbox.NewMetrics(reg)
	if err != nil {
		return nil, nil, err
	}
	w := outbox.New(outbox.Deps{Store: db, Producer: producer, Metrics: om, Logger: b.log}, opts)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { w.Run(wctx); close(done) }()
	return reg, func() { cancel(); <-done }, nil
}
