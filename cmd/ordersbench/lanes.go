package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/internal/settings"
	"github.com/acme/orders-service/internal/tcpproxy"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/outbox"
	"github.com/acme/orders-service/postgres"
)

// laneVariant is one relay setting the drain phase compares.
type laneVariant struct {
	publishers int
	tx         bool
}

// laneVariants are the settings the drain phase measures, in order; the
// first (one publisher, no transactions: the relay before lanes) is the
// baseline.
var laneVariants = []laneVariant{{1, false}, {2, false}, {4, false}, {1, true}, {2, true}, {4, true}}

// drainLanes drains the same n rows again with 1, 2 and 4 publishers, with
// and without Kafka transactions, each beside the one-publisher drain
// without transactions of the same run. The rows are marked unsent again
// before each drain (the topic receives them once more each time).
func (b *bench) drainLanes(ctx context.Context, db *postgres.DB, kcfg kafka.Config, n int) error {
	var base float64
	details := map[string]float64{}
	for _, v := range laneVariants {
		if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET sent = false, sent_at = NULL`); err != nil {
			return err
		}
		if _, err := db.Pool.Exec(ctx, `VACUUM ANALYZE outbox`); err != nil {
			return err
		}
		rate, err := b.drainWith(ctx, db, kcfg, n, v.publishers, v.tx)
		if err != nil {
			return fmt.Errorf("drain with %d publishers, transactions %v: %w", v.publishers, v.tx, err)
		}
		name := fmt.Sprintf("Outbox drain, %s rows, %d publisher(s), transactions %v", human(n), v.publishers, v.tx)
		b.say("%s: %.0f rows/s", name, rate)
		details[fmt.Sprintf("publishers_%d_tx_%v", v.publishers, v.tx)] = rate
		if base == 0 {
			base = rate
			b.add(name, "/s", rate)
			continue
		}
		b.add(name, "/s", rate).vs("1 publisher, no transactions", base)
	}
	b.res.Details["outbox_drain_lanes"] = details
	if err := b.drainLanesFar(ctx, db, kcfg, n); err != nil {
		return err
	}
	return b.ackLanes(ctx, db, kcfg)
}

// ackLanes measures the relay's commit→ack (the publish latency histogram:
// from a row's commit to Kafka's acknowledgement) with 1, 2 and 4
// publishers, with and without Kafka transactions, while rows are committed
// one order per transaction at b.sizes.SteadyRate, each beside one publisher
// without transactions of the same run. The relay alone runs, so the
// figures are the relay's, not the gRPC service's.
func (b *bench) ackLanes(ctx context.Context, db *postgres.DB, kcfg kafka.Config) error {
	topic := b.topic("bench.drain.relay")
	var base float64
	details := map[string]map[string]float64{}
	for _, v := range laneVariants {
		p50, p99, err := b.ackWith(ctx, db, kcfg, topic, v.publishers, v.tx)
		if err != nil {
			return fmt.Errorf("commit→ack with %d publishers, transactions %v: %w", v.publishers, v.tx, err)
		}
		name := fmt.Sprintf("Relay commit→ack p99 at %d/s, %d publisher(s), transactions %v", b.sizes.SteadyRate, v.publishers, v.tx)
		b.say("%s: p50 %.2fms p99 %.2fms", name, p50, p99)
		details[fmt.Sprintf("publishers_%d_tx_%v", v.publishers, v.tx)] = map[string]float64{"p50_ms": p50, "p99_ms": p99}
		if base == 0 {
			base = p99
			b.add(name, "ms", p99)
			continue
		}
		b.add(name, "ms", p99).vs("1 publisher, no transactions", base)
	}
	b.res.Details["relay_commit_to_ack"] = details
	return nil
}

// ackWith runs a Relay with publishers publishers over db's outbox while
// orders whose events go to topic are created at b.sizes.SteadyRate
// (after a warm-up of b.sizes.Warmup) for half of b.sizes.SteadyPhase, and
// returns the p50 and p99 of the relay's commit→ack over them.
func (b *bench) ackWith(ctx context.Context, db *postgres.DB, kcfg kafka.Config, topic string, publishers int, tx bool) (p50, p99 float64, err error) {
	opts := relayOptions(kcfg, db.OutboxWritten(), publishers, txPrefix(tx))
	producer, err := opts.NewProducer()
	if err != nil {
		return 0, 0, err
	}
	reg, stop, err := b.startRelay(ctx, db, producer, opts)
	if err != nil {
		return 0, 0, err
	}
	defer stop()

	// Orders written as the service writes them, so the relay is woken by
	// each commit as it is in the service.
	svc := postgres.NewOrderService(db, postgres.NewOrderWriter(topic, cloudevents.Encoder[postgres.Header]{Source: "orders-service"}), "USD")
	var committed atomic.Int64
	commit := func(ctx context.Context, n int64) error {
		_, err := svc.CreateOrder(ctx, newOrder(n))
		if err == nil {
			committed.Add(1)
		}
		return err
	}
	if _, _, err := openLoop(ctx, b.sizes.SteadyRate, b.sizes.Warmup, 16, commit); err != nil {
		return 0, 0, fmt.Errorf("warm-up: %w", err)
	}
	if err := waitCounter(ctx, reg, "orders_outbox_published_total", float64(committed.Load()), time.Minute); err != nil {
		return 0, 0, err
	}
	before, err := histogram(gathered(reg), publishLatencyMetric)
	if err != nil {
		return 0, 0, err
	}
	if _, _, err := openLoop(ctx, b.sizes.SteadyRate, b.sizes.SteadyPhase/2, 16, commit); err != nil {
		return 0, 0, err
	}
	if err := waitCounter(ctx, reg, "orders_outbox_published_total", float64(committed.Load()), time.Minute); err != nil {
		return 0, 0, err
	}
	after, err := histogram(gathered(reg), publishLatencyMetric)
	if err != nil {
		return 0, 0, err
	}
	p50, _ = histQuantile(before, after, 0.50)
	p99, _ = histQuantile(before, after, 0.99)
	return p50, p99, nil
}

// gathered returns reg's metric families by name (as scrape does for a
// process's /metrics).
func gathered(reg *prometheus.Registry) map[string]*dto.MetricFamily {
	mfs, _ := reg.Gather()
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// drainLanesFar drains the same n rows with 1, 2 and 4 publishers,
// transactions on, with the relay reaching the broker through a proxy that
// delays each direction by b.kafkaLatency, each beside the one-publisher
// drain behind the same proxy. There one publisher is bound by round trips.
func (b *bench) drainLanesFar(ctx context.Context, db *postgres.DB, kcfg kafka.Config, n int) error {
	if b.kafkaLatency <= 0 {
		return nil
	}
	far := newDelayDialer(b.kafkaLatency)
	defer far.close()
	var base float64
	details := map[string]float64{}
	for _, publishers := range []int{1, 2, 4} {
		if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET sent = false, sent_at = NULL`); err != nil {
			return err
		}
		if _, err := db.Pool.Exec(ctx, `VACUUM ANALYZE outbox`); err != nil {
			return err
		}
		rate, err := b.drainWith(ctx, db, kcfg, n, publishers, true, kgo.Dialer(far.dial))
		if err != nil {
			return fmt.Errorf("drain %s from the broker with %d publishers: %w", b.kafkaLatency, publishers, err)
		}
		name := fmt.Sprintf("Outbox drain, %s rows, broker %s away each way, %d publisher(s), transactions on", human(n), b.kafkaLatency, publishers)
		b.say("%s: %.0f rows/s", name, rate)
		details[fmt.Sprintf("publishers_%d", publishers)] = rate
		if base == 0 {
			base = rate
			b.add(name, "/s", rate)
			continue
		}
		r := b.add(name, "/s", rate).vs("1 publisher", base)
		if publishers == 4 {
			r.target("≥ 2× 1 publisher", *r.Ratio >= 2)
		}
	}
	b.res.Details["outbox_drain_lanes_far"] = map[string]any{"latency_each_way_ms": b.kafkaLatency.Seconds() * 1000, "rows_per_s": details}
	return nil
}

// drainWith runs a Relay with publishers publishers, its producers made
// with extra options, until it published n rows and returns its rate.
func (b *bench) drainWith(ctx context.Context, db *postgres.DB, kcfg kafka.Config, n, publishers int, tx bool, extra ...kgo.Opt) (float64, error) {
	opts := relayOptions(kcfg, db.OutboxWritten(), publishers, txPrefix(tx), extra...)
	producer, err := opts.NewProducer()
	if err != nil {
		return 0, err
	}
	elapsed, err := b.runRelay(ctx, db, producer, opts, n)
	if err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}

// txPrefix is a transactional id prefix of its own for a relay with
// transactions (tx), or "" for one without.
func txPrefix(tx bool) string {
	if !tx {
		return ""
	}
	return fmt.Sprintf("ordersbench.%d.lane-", time.Now().UnixNano())
}

// delayDialer dials each broker through a proxy of its own (started at the
// first dial) that delays each direction, so that the advertised addresses
// the client learns from metadata are delayed as well as the seeds.
type delayDialer struct {
	delay   time.Duration
	mu      sync.Mutex
	proxies map[string]*tcpproxy.Proxy
}

func newDelayDialer(delay time.Duration) *delayDialer {
	return &delayDialer{delay: delay, proxies: map[string]*tcpproxy.Proxy{}}
}

func (d *delayDialer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	d.mu.Lock()
	p := d.proxies[host]
	if p == nil {
		var err error
		if p, err = tcpproxy.Start(host); err != nil {
			d.mu.Unlock()
			return nil, fmt.Errorf("proxy to %s: %w", host, err)
		}
		p.SetDelay(d.delay)
		d.proxies[host] = p
	}
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, p.Addr())
}

func (d *delayDialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.proxies {
		p.Close()
	}
}

// relayOptions are the options of a relay with publishers publishers as
// the service makes it: producers made from kcfg with extra options and,
// unless txPrefix is "", one transactional producer per lane with the
// transactional id outbox.TransactionalID(txPrefix, lane, generation).
func relayOptions(kcfg kafka.Config, wake <-chan struct{}, publishers int, txPrefix string, extra ...kgo.Opt) outbox.Options {
	opts := outbox.Options{Wake: wake, Publishers: publishers,
		NewProducer: func() (outbox.Producer, error) { return kafka.NewClient(kcfg, extra...) }}
	if txPrefix != "" {
		opts.NewLaneProducer = func(ctx context.Context, lane, generation int) (outbox.TxProducer, error) {
			cl, err := kafka.NewTransactionalClient(ctx, kcfg, outbox.TransactionalID(txPrefix, lane, generation), time.Minute, extra...)
			if err != nil {
				return nil, err
			}
			return cl, nil
		}
	}
	return opts
}

// defaultPublishers is the service's default OUTBOX_PUBLISHERS.
func defaultPublishers() int {
	for _, s := range settings.All() {
		if s.Name == "OUTBOX_PUBLISHERS" {
			if n, err := strconv.Atoi(s.Default); err == nil {
				return n
			}
		}
	}
	return 1
}
