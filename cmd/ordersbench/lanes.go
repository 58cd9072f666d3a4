package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

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
	return nil
}

// drainWith runs a Relay with publishers publishers until it published n
// rows and returns its rate.
func (b *bench) drainWith(ctx context.Context, db *postgres.DB, kcfg kafka.Config, n, publishers int, tx bool) (float64, error) {
	newProducer := func() (outbox.Producer, error) { return kafka.NewClient(kcfg) }
	producer, err := newProducer()
	if err != nil {
		return 0, err
	}
	opts := outbox.Options{Wake: db.OutboxWritten(), Publishers: publishers, NewProducer: newProducer}
	if tx {
		prefix := fmt.Sprintf("ordersbench.%d.lane-", time.Now().UnixNano())
		opts.NewLaneProducer = func(lane int) (outbox.TxProducer, error) {
			return kafka.NewClient(kcfg, kgo.TransactionalID(prefix+strconv.Itoa(lane)), kgo.TransactionTimeout(time.Minute))
		}
	}
	reg := prometheus.NewRegistry()
	om, err := outbox.NewMetrics(reg)
	if err != nil {
		return 0, err
	}
	w := outbox.New(outbox.Deps{Store: db, Producer: producer, Metrics: om, Logger: b.log}, opts)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() { w.Run(wctx); close(done) }()
	err = waitCounter(ctx, reg, "orders_outbox_published_total", float64(n), 5*time.Minute)
	elapsed := time.Since(start)
	stop()
	<-done
	if err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}
