package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/outbox"
	"github.com/acme/orders-service/postgres"
)

// recoveryPhase measures how fast the relay drains a backlog that built up
// while Kafka was down. On a kfake broker of its own, with a data directory
// and a fixed port, it first times an Relay draining n rows with the
// broker up (the baseline); then, with a new worker connected and idle, it
// stops the broker, writes n unsent rows, keeps the broker down for the
// outage, starts it again on the same port with its data, and times from
// the moment the broker accepts connections to the last row marked sent,
// reconnection included. With -brokers it is skipped: a cluster the run did
// not start cannot be stopped and started by it.
func (b *bench) recoveryPhase(ctx context.Context) error {
	if b.broker == nil {
		b.say("recovery: skipped, the run measures a cluster it did not start (-brokers)")
		b.note("recovery phase skipped: it stops and restarts a kfake broker of its own, which -brokers replaces")
		return nil
	}
	n, outage := b.sizes.RecoveryRows, b.sizes.RecoveryOutage
	relayTopic := b.topic("bench.recovery")
	db, _, err := b.openDatabase(ctx, "recovery")
	if err != nil {
		return err
	}
	defer db.Close()

	port, err := freePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	bin, dataDir := filepath.Join(b.tmp, "kfake-broker"), filepath.Join(b.tmp, "recovery-kafka")
	brokerArgs := []string{"-addr", addr, "-partitions", "6", "-data-dir", dataDir}
	broker, _, err := startBrokerAs("kfake-broker-recovery", bin, b.tmp, brokerArgs...)
	if err != nil {
		return err
	}
	defer func() { broker.stop() }()
	kcfg := kafka.Config{Brokers: []string{addr}, ClientID: "ordersbench", Compression: b.compression}
	admin, err := kafka.NewClient(kcfg)
	if err != nil {
		return err
	}
	err = kafka.EnsureTopics(ctx, admin, 6, -1, relayTopic)
	admin.Close()
	if err != nil {
		return err
	}

	// Baseline: the same rows drained with the broker up all along.
	if err := fillOutbox(ctx, db, relayTopic, n); err != nil {
		return err
	}
	relay, err := startRelay(ctx, db, kcfg, b)
	if err != nil {
		return err
	}
	start := time.Now()
	err = waitCounter(ctx, relay.reg, "orders_outbox_published_total", float64(n), 5*time.Minute)
	steady := time.Since(start)
	relay.stop()
	if err != nil {
		return err
	}
	steadyRate := float64(n) / steady.Seconds()
	b.say("recovery baseline: %d rows drained with the broker up in %s (%.0f rows/s)", n, steady.Round(time.Millisecond), steadyRate)

	// The outage: a connected, idle relay; the broker stops; rows pile up.
	relay, err = startRelay(ctx, db, kcfg, b)
	if err != nil {
		return err
	}
	defer relay.stop()
	broker.stop()
	down := time.Now()
	if err := fillOutbox(ctx, db, relayTopic, n); err != nil {
		return err
	}
	if !sleepUntil(ctx, down.Add(outage)) {
		return ctx.Err()
	}
	if got := publishedSoFar(relay.reg); got != 0 {
		return fmt.Errorf("%.0f rows published while the broker was down", got)
	}
	broker, _, err = startBrokerAs("kfake-broker-recovery-2", bin, b.tmp, brokerArgs...)
	if err != nil {
		return err
	}
	mainBroker := b.broker
	b.broker = broker // the CPU table's broker column: the restarted one
	defer func() { b.broker = mainBroker }()
	snap := b.cpuSnap(ctx, db)
	back, err := acceptsAt(ctx, addr, time.Now().Add(30*time.Second))
	if err != nil {
		return err
	}
	err = waitCounter(ctx, relay.reg, "orders_outbox_published_total", float64(n), 5*time.Minute)
	took := time.Since(back)
	if err != nil {
		return err
	}
	b.account(ctx, "recovery after outage", snap, n)
	rate := float64(n) / took.Seconds()
	b.say("recovery: %d rows sent %s after the broker accepted connections again (%.0f rows/s; outage %s)",
		n, took.Round(time.Millisecond), rate, back.Sub(down).Round(time.Millisecond))
	if unsent, err := db.CountUnsentOutbox(ctx, n); err != nil || unsent != 0 {
		return fmt.Errorf("after recovery %d rows are unsent (%v)", unsent, err)
	}
	r := b.add(fmt.Sprintf("Recovery after a %s outage, %s rows backlog", outage, human(n)), "/s", rate).vs("steady drain", steadyRate)
	r.target("≥ 20,000/s", rate >= 20000)
	b.res.Details["recovery"] = map[string]any{"rows": n, "outage_seconds": back.Sub(down).Seconds(),
		"broker_back_to_last_sent_seconds": took.Seconds(), "recovery_per_s": rate,
		"steady_drain_seconds": steady.Seconds(), "steady_drain_per_s": steadyRate}
	return nil
}

// runningRelay is a Relay running in this process with a registry
// of its own.
type runningRelay struct {
	reg  *prometheus.Registry
	stop func()
}

// startRelay runs a Relay on db with the service's defaults and a
// producer (and replacement producers) configured as the service's, once
// the producer reached the broker.
func startRelay(ctx context.Context, db *postgres.DB, kcfg kafka.Config, b *bench) (*runningRelay, error) {
	newProducer := func() (outbox.Producer, error) { return kafka.NewClient(kcfg) }
	producer, err := kafka.NewClient(kcfg)
	if err != nil {
		return nil, err
	}
	if err := producer.Ping(ctx); err != nil {
		producer.Close()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	om, err := outbox.NewMetrics(reg)
	if err != nil {
		producer.Close()
		return nil, err
	}
	w := outbox.New(outbox.Deps{Store: db, Producer: producer, Metrics: om, Logger: b.log},
		outbox.Options{Wake: db.OutboxWritten(), NewProducer: newProducer})
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { w.Run(wctx); close(done) }()
	stopped := false
	return &runningRelay{reg: reg, stop: func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}}, nil
}

// publishedSoFar reads orders_outbox_published_total from reg.
func publishedSoFar(reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "orders_outbox_published_total" && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// acceptsAt polls addr until a TCP connection to it succeeds and returns
// when that was.
func acceptsAt(ctx context.Context, addr string, deadline time.Time) (time.Time, error) {
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			at := time.Now()
			c.Close()
			return at, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("broker at %s does not accept connections: %w", addr, err)
		}
		if !sleepUntil(ctx, time.Now().Add(time.Millisecond)) {
			return time.Time{}, ctx.Err()
		}
	}
}
