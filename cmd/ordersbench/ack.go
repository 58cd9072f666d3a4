package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/acme/orders-service/kafka"
)

const publishLatencyMetric = "orders_outbox_publish_latency_seconds"

// openLoop starts op rate times a second for d, whatever the previous calls
// are doing (workers goroutines run them), and returns each call's latency
// from the moment it was due, so that a stall shows in the figures instead
// of slowing the load down.
func openLoop(ctx context.Context, rate int, d time.Duration, workers int, op func(ctx context.Context, n int64) error) (lat []time.Duration, elapsed time.Duration, err error) {
	type job struct {
		n   int64
		due time.Time
	}
	total := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	jobs := make(chan job, total)
	lats := make([][]time.Duration, workers)
	g, gctx := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			for j := range jobs {
				if err := op(gctx, j.n); err != nil {
					return err
				}
				lats[w] = append(lats[w], time.Since(j.due))
			}
			return nil
		})
	}
	start := time.Now()
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		if !sleepUntil(gctx, due) {
			break
		}
		jobs <- job{n: int64(i), due: due}
	}
	close(jobs)
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	elapsed = time.Since(start)
	for _, l := range lats {
		lat = append(lat, l...)
	}
	return lat, elapsed, nil
}

// ackPhase creates orders at a steady rate and measures how long their
// events take to reach Kafka: from the service's own histogram (commit to
// acknowledgement) and from a consumer of the topic (response to fetch).
func (b *bench) ackPhase(ctx context.Context) error {
	topic := b.topic("orders.events")
	if err := waitDrained(ctx, b.svcDB, 2*time.Minute); err != nil {
		return err
	}
	b.vacuum(ctx, b.svcDB)
	admin, err := kafka.NewClient(b.kafkaConfig())
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := kafka.EnsureTopics(ctx, admin, 6, -1, topic); err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ends, err := endOffsets(lctx, kadm.NewClient(admin), topic, 6)
	cancel()
	if err != nil {
		return err
	}
	start := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { start[o.Partition] = kgo.NewOffset().At(o.Offset) })
	consumer, err := kafka.NewClient(b.kafkaConfig(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer consumer.Close()

	var mu sync.Mutex
	responded := map[string]time.Time{}
	fetched := map[string]time.Time{}
	var template *kgo.Record // one of the service's records, for the Kafka-alone baseline
	cctx, stopConsumer := context.WithCancel(ctx)
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for cctx.Err() == nil {
			fs := consumer.PollFetches(cctx)
			now := time.Now()
			mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				fetched[string(r.Key)] = now
				if template == nil {
					template = r
				}
			})
			mu.Unlock()
		}
	}()
	defer func() { stopConsumer(); <-consumed }()

	// A warm-up that is not counted: a topic just created (a cluster's
	// leaders and replicas settling) and cold connections are not the
	// steady state this phase measures.
	if _, _, err := openLoop(ctx, b.sizes.SteadyRate, b.sizes.Warmup, 64, func(ctx context.Context, n int64) error {
		_, err := b.client.CreateOrder(ctx, orderRequest(900_000_000+n))
		return err
	}); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := waitDrained(ctx, b.svcDB, time.Minute); err != nil {
		return err
	}
	before, err := scrape(ctx, b.metricsURL())
	if err != nil {
		return err
	}
	hBefore, err := histogram(before, publishLatencyMetric)
	if err != nil {
		return err
	}
	snap := b.cpuSnap(ctx, b.svcDB)
	b.rss.setLabel("load")
	if b.profile != "" {
		go b.profileService(ctx, "steady", b.sizes.SteadyPhase)
	}
	lat, elapsed, err := openLoop(ctx, b.sizes.SteadyRate, b.sizes.SteadyPhase, 64, func(ctx context.Context, n int64) error {
		resp, err := b.client.CreateOrder(ctx, orderRequest(1_000_000_000+n))
		if err != nil {
			return err
		}
		now := time.Now()
		mu.Lock()
		responded[resp.GetOrder().GetId()] = now
		mu.Unlock()
		return nil
	})
	b.rss.setLabel("")
	if err != nil {
		return err
	}
	if err := waitDrained(ctx, b.svcDB, time.Minute); err != nil {
		return err
	}
	steady := b.account(ctx, fmt.Sprintf("CreateOrder at %d/s", b.sizes.SteadyRate), snap, len(lat))
	var e2e []time.Duration
	missing := 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		e2e, missing = e2e[:0], 0
		for id, t := range responded {
			if f, ok := fetched[id]; ok {
				e2e = append(e2e, f.Sub(t))
			} else {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if missing > 0 {
		return fmt.Errorf("%d of %d events never reached the consumer", missing, len(responded))
	}
	after, err := scrape(ctx, b.metricsURL())
	if err != nil {
		return err
	}
	hAfter, err := histogram(after, publishLatencyMetric)
	if err != nil {
		return err
	}
	p50, count := histQuantile(hBefore, hAfter, 0.50)
	p99, _ := histQuantile(hBefore, hAfter, 0.99)
	mu.Lock()
	tmpl := template
	mu.Unlock()
	raw, alone, err := b.produceAlone(ctx, tmpl, b.sizes.SteadyRate, b.sizes.SteadyPhase)
	if err != nil {
		return fmt.Errorf("baseline of Kafka alone: %w", err)
	}
	achieved := float64(len(lat)) / elapsed.Seconds()
	rate := formatCount(b.sizes.SteadyRate)
	b.say("steady %s/s: achieved %.0f/s, service histogram p50 %.2fms p99 %.2fms (%d events), client p50 %.2fms p99 %.2fms",
		rate, achieved, p50, p99, count, quantile(e2e, 0.5), quantile(e2e, 0.99))
	b.add("Steady load: achieved CreateOrder rate", "/s", achieved)
	b.add(fmt.Sprintf("CreateOrder p99 at %s/s (from due time)", rate), "ms", quantile(lat, 0.99))
	rawP50, rawP99 := quantile(raw, 0.5), quantile(raw, 0.99)
	b.say("Kafka alone at %s/s: produce→ack p50 %.2fms p99 %.2fms", rate, rawP50, rawP99)
	b.add("Commit→ack p50 (service histogram)", "ms", p50).vs("Kafka alone", rawP50)
	b.add("Commit→ack p99 (service histogram)", "ms", p99).vs("Kafka alone", rawP99).target("≤ 25 ms", p99 <= 25)
	b.add(fmt.Sprintf("Broker CPU per order at %s/s", rate), "µs", steady.BrokerUS).vs("Kafka alone", alone.BrokerUS)
	b.add("Response→consumer fetch p50 (client side)", "ms", quantile(e2e, 0.5))
	b.add("Response→consumer fetch p99 (client side)", "ms", quantile(e2e, 0.99))
	b.res.Details["commit_to_ack"] = map[string]any{
		"rate": b.sizes.SteadyRate, "achieved_rate": achieved, "events": len(responded),
		"histogram_observations": count, "histogram_p50_ms": p50, "histogram_p99_ms": p99,
		"client_p50_ms": quantile(e2e, 0.5), "client_p90_ms": quantile(e2e, 0.9), "client_p99_ms": quantile(e2e, 0.99),
		"create_p50_ms": quantile(lat, 0.5), "create_p99_ms": quantile(lat, 0.99),
		"kafka_alone_p50_ms": rawP50, "kafka_alone_p90_ms": quantile(raw, 0.9), "kafka_alone_p99_ms": rawP99,
	}
	return nil
}

// endOffsets lists the end offsets of topic's partitions. A topic just
// created may not be known yet to the broker asked (kadm then lists it as
// partition -1 with an error), so it asks again every 100 ms until it has
// all partitions without an error, or ctx ends.
func endOffsets(ctx context.Context, adm *kadm.Client, topic string, partitions int) (kadm.ListedOffsets, error) {
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			n := 0
			ends.Each(func(kadm.ListedOffset) { n++ })
			if n == partitions {
				return ends, nil
			}
			err = fmt.Errorf("%d of %d partitions listed", n, partitions)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// produceAlone is the commit→ack baseline: copies of rec (one of the
// service's records: its size and headers) produced on a topic of their own
// at rate a second for d after an uncounted warm-up, open loop, through a
// client made by kafka.NewClient as the relay's is, with no service and no
// PostgreSQL in the way. It returns each record's time from when it was due
// to its acknowledgement.
func (b *bench) produceAlone(ctx context.Context, rec *kgo.Record, rate int, d time.Duration) ([]time.Duration, Usage, error) {
	if rec == nil {
		return nil, Usage{}, fmt.Errorf("no record of the service's was fetched to copy")
	}
	topic := b.topic("ack.baseline")
	cl, err := kafka.NewClient(b.kafkaConfig())
	if err != nil {
		return nil, Usage{}, err
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(ctx, cl, 6, -1, topic); err != nil {
		return nil, Usage{}, err
	}
	produce := func(ctx context.Context, n int64) error {
		r := &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "baseline-%d", n), Value: rec.Value, Headers: rec.Headers}
		return cl.ProduceSync(ctx, r).FirstErr()
	}
	if _, _, err := openLoop(ctx, rate, b.sizes.Warmup, 64, produce); err != nil { // as the service's: not counted
		return nil, Usage{}, fmt.Errorf("warm-up: %w", err)
	}
	snap := b.cpuSnap(ctx, nil) // no PostgreSQL in it
	lat, _, err := openLoop(ctx, rate, d, 64, produce)
	return lat, b.account(ctx, fmt.Sprintf("Kafka alone at %d/s", rate), snap, len(lat)), err
}
