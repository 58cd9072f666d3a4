package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/outbox"
	"github.com/acme/orders-service/postgres"
)

// scaleOutReplicas are the numbers of relays (and of service replicas)
// the scale-out phase compares, in this order; the first is the baseline.
var scaleOutReplicas = []int{1, 2, 3}

// eventsPerKey is how many outbox rows of the scale-out drain share a key.
const eventsPerKey = 4

// scaleOutPhase measures the relay's drain and commit→ack with one, two and
// three relays on the same outbox (see scaleOutDrain and scaleOutAck).
func (b *bench) scaleOutPhase(ctx context.Context) error {
	db, dsn, err := b.openDatabase(ctx, "scaleout")
	if err != nil {
		return err
	}
	defer db.Close()
	n := b.sizes.DrainRows
	drain := map[int]float64{}
	details := map[string]any{}
	for _, k := range scaleOutReplicas {
		d, err := b.scaleOutDrain(ctx, db, dsn, n, k)
		if err != nil {
			return fmt.Errorf("drain with %d relays: %w", k, err)
		}
		drain[k] = d.Rate
		details[fmt.Sprintf("drain_k%d", k)] = d
		b.say("scale-out drain, %d relay(s) of %d publishers, transactions on: %.0f rows/s, published per relay %v; per-key order: %d keys out of order, %d missing, %d duplicates",
			k, d.Publishers, d.Rate, d.PerRelay, d.Order.KeysOutOfOrder, d.Order.Missing, d.Order.Duplicates)
		r := b.add(fmt.Sprintf("Scale-out drain, %s rows, %d relay(s)", human(n), k), "/s", d.Rate)
		if k != scaleOutReplicas[0] {
			r.vs(fmt.Sprintf("%d relay", scaleOutReplicas[0]), drain[scaleOutReplicas[0]])
		}
		b.add(fmt.Sprintf("Scale-out drain, %d relay(s): keys out of order / missing events", k), "", float64(d.Order.KeysOutOfOrder+d.Order.Missing)).
			target("0", d.Order.KeysOutOfOrder+d.Order.Missing == 0)
		b.add(fmt.Sprintf("Scale-out drain, %d relay(s): duplicate events", k), "", float64(d.Order.Duplicates))
	}
	var base *scaleOutAckResult
	for _, k := range scaleOutReplicas {
		a, err := b.scaleOutAck(ctx, k)
		if err != nil {
			return fmt.Errorf("commit→ack with %d replicas: %w", k, err)
		}
		details[fmt.Sprintf("ack_k%d", k)] = a
		b.say("scale-out %d/s over %d replica(s): achieved %.0f/s, commit→ack p50 %.2fms p99 %.2fms (%d events), CreateOrder p99 %.2fms",
			b.sizes.SteadyRate, k, a.Achieved, a.P50, a.P99, a.Events, a.CreateP99)
		p50 := b.add(fmt.Sprintf("Scale-out commit→ack p50, %d replica(s)", k), "ms", a.P50)
		p99 := b.add(fmt.Sprintf("Scale-out commit→ack p99, %d replica(s)", k), "ms", a.P99)
		if base == nil {
			base = &a
		} else {
			name := fmt.Sprintf("%d replica", scaleOutReplicas[0])
			p50.vs(name, base.P50)
			p99.vs(name, base.P99)
		}
		if k == scaleOutReplicas[len(scaleOutReplicas)-1] {
			p99.target("≤ 25 ms and ≤ 1 replica's", a.P99 <= 25 && a.P99 <= base.P99)
		} else {
			p99.target("≤ 25 ms", a.P99 <= 25)
		}
	}
	b.res.Details["scale_out"] = details
	return nil
}

// scaleOutDrainResult is one drain of the scale-out phase.
type scaleOutDrainResult struct {
	Relays     int         `json:"relays"`
	Publishers int         `json:"publishers_per_relay"`
	Rows       int         `json:"rows"`
	Seconds    float64     `json:"seconds"`
	Rate       float64     `json:"rows_per_s"`
	PerRelay   []float64   `json:"published_per_relay"`
	Order      orderResult `json:"per_key_order"`
}

// scaleOutDrain fills db's outbox with n rows, eventsPerKey to a key, and
// times k OutboxWorkers, each with a pool and a producer of its own as a
// replica has, from their start until no row is unsent; then it reads the
// topic back and checks each key's order.
func (b *bench) scaleOutDrain(ctx context.Context, db *postgres.DB, dsn string, n, k int) (scaleOutDrainResult, error) {
	res := scaleOutDrainResult{Relays: k, Publishers: defaultPublishers(), Rows: n}
	topic := b.topic(fmt.Sprintf("bench.scaleout.k%d", k))
	admin, err := kafka.NewClient(b.kafkaConfig())
	if err != nil {
		return res, err
	}
	defer admin.Close()
	if err := kafka.EnsureTopics(ctx, admin, 6, -1, topic); err != nil {
		return res, err
	}
	if err := fillKeyedOutbox(ctx, db, topic, n); err != nil {
		return res, err
	}
	type relay struct {
		db       *postgres.DB
		producer *kgo.Client
		w        *outbox.Relay
		reg      *prometheus.Registry
		done     chan struct{}
	}
	publishers := res.Publishers
	txPrefix := fmt.Sprintf("ordersbench.%d.scaleout-k%d.lane-", time.Now().UnixNano(), k)
	relays := make([]*relay, 0, k)
	defer func() {
		for _, r := range relays {
			r.producer.Close()
			r.db.Close()
		}
	}()
	for i := range k {
		r := &relay{reg: prometheus.NewRegistry(), done: make(chan struct{})}
		if r.db, err = postgres.Open(ctx, dsn); err != nil {
			return res, err
		}
		cfg := b.kafkaConfig()
		cfg.ClientID = fmt.Sprintf("ordersbench-relay-%d", i+1)
		if r.producer, err = kafka.NewClient(cfg); err != nil {
			r.db.Close()
			return res, err
		}
		relays = append(relays, r)
		if err := r.producer.Ping(ctx); err != nil {
			return res, err
		}
		m, err := outbox.NewMetrics(r.reg)
		if err != nil {
			return res, err
		}
		r.w = outbox.New(outbox.Deps{Store: r.db, Producer: r.producer, Metrics: m, Logger: b.log.With("relay", cfg.ClientID)},
			relayOptions(cfg, r.db.OutboxWritten(), publishers, txPrefix))
	}
	snap := b.cpuSnap(ctx, db)
	wctx, stop := context.WithCancel(ctx)
	start := time.Now()
	for _, r := range relays {
		go func() { r.w.Run(wctx); close(r.done) }()
	}
	err = waitDrained(ctx, db, 5*time.Minute)
	elapsed := time.Since(start)
	stop()
	for _, r := range relays {
		<-r.done
	}
	if err != nil {
		return res, err
	}
	b.account(ctx, fmt.Sprintf("scale-out drain, %d relay(s) (in bench)", k), snap, n)
	res.Seconds, res.Rate = elapsed.Seconds(), float64(n)/elapsed.Seconds()
	for _, r := range relays {
		res.PerRelay = append(res.PerRelay, publishedSoFar(r.reg))
	}
	res.Order, err = checkKeyOrder(ctx, b.kafkaConfig(), topic, n, true)
	return res, err
}

// fillKeyedOutbox fills the outbox as fillOutbox does, then gives every
// eventsPerKey consecutive rows the same key and a "bench_seq" field in the
// payload numbering them in id order, which is the order the relay must
// keep per key.
func fillKeyedOutbox(ctx context.Context, db *postgres.DB, topic string, n int) error {
	if err := fillOutbox(ctx, db, topic, n); err != nil {
		return err
	}
	_, err := db.Pool.Exec(ctx, `
		UPDATE outbox SET
			key = md5('scaleout-key' || ((id - 1) / $1))::uuid::text,
			payload = convert_to((convert_from(payload, 'UTF8')::jsonb || jsonb_build_object('bench_seq', (id - 1) % $1))::text, 'UTF8')`,
		eventsPerKey)
	if err != nil {
		return fmt.Errorf("key outbox rows: %w", err)
	}
	_, err = db.Pool.Exec(ctx, `VACUUM ANALYZE outbox`)
	return err
}

// orderResult is what reading a topic back found about per-key order.
type orderResult struct {
	Records        int `json:"records"`
	Keys           int `json:"keys"`
	KeysOutOfOrder int `json:"keys_out_of_order"`
	Missing        int `json:"missing"`
	Duplicates     int `json:"duplicates"`
}

// checkKeyOrder reads topic from the start to its end offsets and checks
// that each key's events arrive in bench_seq order: a key is out of order
// when an event first arrives after one with a higher sequence number; an
// event arriving again is a duplicate; want events are expected in all.
// It reads what was written, aborted transactions included; a partition is
// read to its end when its last record is read, or the one before the end
// when the topic was written in transactions (the last offset is then a
// transaction marker, which a consumer never sees), or once every event
// arrived and nothing more comes for a second.
func checkKeyOrder(ctx context.Context, cfg kafka.Config, topic string, want int, transactional bool) (orderResult, error) {
	var res orderResult
	admin, err := kafka.NewClient(cfg)
	if err != nil {
		return res, err
	}
	defer admin.Close()
	ends, err := kadm.NewClient(admin).ListEndOffsets(ctx, topic)
	if err != nil {
		return res, fmt.Errorf("list end offsets: %w", err)
	}
	last := map[int32]int64{} // the last offset to read of each partition
	ends.Each(func(o kadm.ListedOffset) {
		end := o.Offset - 1
		if transactional {
			end--
		}
		if end >= 0 {
			last[o.Partition] = end
		}
	})
	consumer, err := kafka.NewClient(cfg, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return res, err
	}
	defer consumer.Close()
	var order keyOrder
	deadline := time.Now().Add(2 * time.Minute)
	var decodeErr error
	for len(last) > 0 {
		// Once every event arrived, a second without records ends the
		// read too: transaction markers may close a partition in pairs.
		all := res.Records-order.duplicates >= want
		until := deadline
		if all {
			until = time.Now().Add(time.Second)
		}
		pctx, cancel := context.WithDeadline(ctx, until)
		fs := consumer.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if all && fs.NumRecords() == 0 {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("read %d records of %s; partitions not read to their end: %v", res.Records, topic, last)
		}
		fs.EachError(func(_ string, _ int32, err error) { decodeErr = cmpOr(decodeErr, err) })
		fs.EachRecord(func(r *kgo.Record) {
			res.Records++
			if end, ok := last[r.Partition]; ok && r.Offset >= end {
				delete(last, r.Partition)
			}
			var p struct {
				Seq *int `json:"bench_seq"`
			}
			if err := json.Unmarshal(r.Value, &p); err != nil || p.Seq == nil {
				decodeErr = cmpOr(decodeErr, fmt.Errorf("record at offset %d has no bench_seq: %v", r.Offset, err))
				return
			}
			order.add(string(r.Key), *p.Seq)
		})
		if decodeErr != nil {
			return res, decodeErr
		}
	}
	records := res.Records
	res = order.result(want)
	res.Records = records
	return res, nil
}

// keyOrder follows each key's sequence numbers in the order they arrive.
type keyOrder struct {
	keys       map[string]*keyState
	duplicates int
}

type keyState struct {
	seen map[int]bool
	max  int
	bad  bool // a sequence number arrived first after a higher one
}

// add records that key's event seq arrived.
func (o *keyOrder) add(key string, seq int) {
	if o.keys == nil {
		o.keys = map[string]*keyState{}
	}
	s := o.keys[key]
	if s == nil {
		s = &keyState{seen: map[int]bool{}, max: -1}
		o.keys[key] = s
	}
	switch {
	case s.seen[seq]:
		o.duplicates++
	case seq < s.max:
		s.bad = true
	}
	s.seen[seq] = true
	s.max = max(s.max, seq)
}

// result is what arrived, against want distinct events in all.
func (o *keyOrder) result(want int) orderResult {
	res := orderResult{Keys: len(o.keys), Duplicates: o.duplicates}
	distinct := 0
	for _, s := range o.keys {
		distinct += len(s.seen)
		if s.bad {
			res.KeysOutOfOrder++
		}
	}
	res.Missing = want - distinct
	return res
}

// scaleOutAckResult is one commit→ack measurement of the scale-out phase.
type scaleOutAckResult struct {
	Replicas  int     `json:"replicas"`
	Rate      int     `json:"rate"`
	Achieved  float64 `json:"achieved_rate"`
	Events    uint64  `json:"histogram_observations"`
	P50       float64 `json:"histogram_p50_ms"`
	P99       float64 `json:"histogram_p99_ms"`
	CreateP99 float64 `json:"create_p99_ms"`
}

// scaleOutAck runs k service processes on the service's database and
// broker (the run's service and k-1 more, started here and stopped at the
// end), creates orders at the steady rate spread round-robin over them
// (after a warm-up that is not counted), and reads commit→ack from the sum
// of their histograms.
func (b *bench) scaleOutAck(ctx context.Context, k int) (scaleOutAckResult, error) {
	res := scaleOutAckResult{Replicas: k, Rate: b.sizes.SteadyRate}
	if err := waitDrained(ctx, b.svcDB, 2*time.Minute); err != nil {
		return res, err
	}
	b.vacuum(ctx, b.svcDB)
	metrics := []string{b.metricsURL()}
	clients := []orderspb.OrderServiceClient{b.client}
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		for _, p := range b.replicas {
			p.stop()
		}
		b.replicas = nil
	}()
	for i := 2; i <= k; i++ {
		p, grpcPort, httpPort, err := startServiceAs(ctx, fmt.Sprintf("orders-service-replica-%d", i),
			filepath.Join(b.tmp, "orders-service"), b.tmp, b.svcDSN, b.brokerAt, false, b.svcEnv)
		if err != nil {
			return res, err
		}
		b.replicas = append(b.replicas, p)
		conn, client, err := dial(grpcPort)
		if err != nil {
			return res, err
		}
		conns = append(conns, conn)
		clients = append(clients, client)
		metrics = append(metrics, fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort))
	}
	first := 2_000_000_000 + int64(k)*100_000_000
	create := func(ctx context.Context, n int64) error {
		_, err := clients[int(n)%len(clients)].CreateOrder(ctx, orderRequest(first+n))
		return err
	}
	if _, _, err := openLoop(ctx, b.sizes.SteadyRate, b.sizes.Warmup, 64, func(ctx context.Context, n int64) error {
		return create(ctx, 50_000_000+n)
	}); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	if err := waitDrained(ctx, b.svcDB, time.Minute); err != nil {
		return res, err
	}
	before, err := scrapeHistograms(ctx, metrics, publishLatencyMetric)
	if err != nil {
		return res, err
	}
	snap := b.cpuSnap(ctx, b.svcDB)
	lat, elapsed, err := openLoop(ctx, b.sizes.SteadyRate, b.sizes.SteadyPhase, 64, create)
	if err != nil {
		return res, err
	}
	b.account(ctx, fmt.Sprintf("scale-out %d/s over %d replica(s)", b.sizes.SteadyRate, k), snap, len(lat))
	if err := waitDrained(ctx, b.svcDB, time.Minute); err != nil {
		return res, err
	}
	after, err := scrapeHistograms(ctx, metrics, publishLatencyMetric)
	if err != nil {
		return res, err
	}
	res.Achieved = float64(len(lat)) / elapsed.Seconds()
	res.CreateP99 = quantile(lat, 0.99)
	res.P50, res.Events = histQuantile(before, after, 0.50)
	res.P99, _ = histQuantile(before, after, 0.99)
	return res, nil
}

// scrapeHistograms scrapes each of urls and returns the sum of their
// histograms name, which must have the same buckets.
func scrapeHistograms(ctx context.Context, urls []string, name string) (*dto.Histogram, error) {
	var hs []*dto.Histogram
	for _, u := range urls {
		mfs, err := scrape(ctx, u)
		if err != nil {
			return nil, err
		}
		h, err := histogram(mfs, name)
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return sumHistograms(hs)
}

// sumHistograms adds histograms with the same bucket bounds.
func sumHistograms(hs []*dto.Histogram) (*dto.Histogram, error) {
	if len(hs) == 0 {
		return nil, fmt.Errorf("no histograms to sum")
	}
	var count uint64
	var sum float64
	buckets := make([]*dto.Bucket, len(hs[0].GetBucket()))
	for i, bk := range hs[0].GetBucket() {
		buckets[i] = &dto.Bucket{UpperBound: new(bk.GetUpperBound()), CumulativeCount: new(uint64(0))}
	}
	for _, h := range hs {
		if len(h.GetBucket()) != len(buckets) {
			return nil, fmt.Errorf("histograms with %d and %d buckets", len(buckets), len(h.GetBucket()))
		}
		for i, bk := range h.GetBucket() {
			if bk.GetUpperBound() != buckets[i].GetUpperBound() {
				return nil, fmt.Errorf("histogram bucket %d bounds differ: %g and %g", i, buckets[i].GetUpperBound(), bk.GetUpperBound())
			}
			*buckets[i].CumulativeCount += bk.GetCumulativeCount()
		}
		count += h.GetSampleCount()
		sum += h.GetSampleSum()
	}
	return &dto.Histogram{SampleCount: &count, SampleSum: &sum, Bucket: buckets}, nil
}
