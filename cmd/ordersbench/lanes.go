package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/internal/settings"
	"github.com/acme/orders-service/internal/tcpproxy"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/outbox"
	"github.com/acme/orders-service/postgres"
)

// drainLanes drains the same n rows again with 1, 2 and 4 publishers, with
// and without Kafka transactions, each beside the one-publisher drain
// without transactions of the same run. The rows are marked unsent again
// before each drain (the topic receives them once more each time).
func (b *bench) drainLanes(ctx context.Context, db *postgres.DB, kcfg kafka.Config, n int) error {
	type variant struct {
		publishers int
		tx         bool
	}
	var base float64
	details := map[string]float64{}
	for _, v := range []variant{{1, false}, {2, false}, {4, false}, {1, true}, {2, true}, {4, true}} {
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
	return b.drainLanesFar(ctx, db, kcfg, n)
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
	prefix := ""
	if tx {
		prefix = fmt.Sprintf("ordersbench.%d.lane-", time.Now().UnixNano())
	}
	opts := relayOptions(kcfg, db.OutboxWritten(), publishers, prefix, extra...)
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
