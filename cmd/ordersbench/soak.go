package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/postgres"
)

// SoakSample is the state of the soak service at one moment.
type SoakSample struct {
	Seconds    float64 `json:"seconds"`
	OutboxRows int64   `json:"outbox_rows"`
	Unsent     int64   `json:"outbox_unsent"`
	InboxRows  int64   `json:"inbox_rows"`
	Pending    int64   `json:"inbox_pending"`
	RSSBytes   int64   `json:"rss_bytes"`
	// Total sizes (heap, indexes, TOAST) of the tables in bytes.
	OrdersBytes int64   `json:"orders_bytes"`
	OutboxBytes int64   `json:"outbox_bytes"`
	InboxBytes  int64   `json:"inbox_bytes"`
	Goroutines  float64 `json:"goroutines"`
}

// soakRetention is the outbox and inbox retention of the soak service;
// retention runs every minute, so at most about two minutes of rows stay.
const soakRetention = time.Minute

// soakPhase runs a second service in -dev mode (with the payments simulator,
// so every order also goes through the inbox) on a database of its own with
// a one-minute retention, at a steady rate for the soak duration, and
// samples its table sizes, memory and goroutines every ten seconds.
func (b *bench) soakPhase(ctx context.Context) error {
	d, rate := b.soak, b.sizes.SteadyRate
	restore, err := b.ensureAutovacuum(ctx)
	if err != nil {
		return err
	}
	defer restore()
	db, dsn, err := b.openDatabase(ctx, "soak")
	if err != nil {
		return err
	}
	defer db.Close()
	env := append([]string{
		"KAFKA_TOPIC=" + b.topic("soak.orders.events"), "KAFKA_INBOX_TOPIC=" + b.topic("soak.payments.events"),
		"KAFKA_DLQ_TOPIC=" + b.topic("soak.payments.dlq"), "KAFKA_GROUP_ID=" + b.topic("soak-orders-service"),
		"OUTBOX_RETENTION=" + soakRetention.String(), "INBOX_RETENTION=" + soakRetention.String(),
	}, b.serviceEnv...)
	svc, grpcPort, httpPort, err := startService(ctx, filepath.Join(b.tmp, "orders-service"), b.tmp, dsn, b.brokerAt,
		false, env, "-dev")
	if err != nil {
		return err
	}
	defer svc.stop()
	main := b.service // CPU use is the soak service's for this phase
	b.service = svc
	defer func() { b.service = main }()
	conn, client, err := dial(grpcPort)
	if err != nil {
		return err
	}
	defer conn.Close()
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort)
	b.say("soak: %s at %d/s against a second service (pid %d, retention %s)", d, rate, svc.pid(), soakRetention)

	var mu sync.Mutex
	var samples []SoakSample
	start := time.Now()
	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	sample := func(ctx context.Context) (SoakSample, error) {
		s := SoakSample{Seconds: time.Since(start).Seconds()}
		err := db.Pool.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM outbox WHERE NOT sent),
				(SELECT count(*) FROM inbox), (SELECT count(*) FROM inbox WHERE NOT processed),
				pg_total_relation_size('orders'), pg_total_relation_size('outbox'), pg_total_relation_size('inbox')`).
			Scan(&s.OutboxRows, &s.Unsent, &s.InboxRows, &s.Pending, &s.OrdersBytes, &s.OutboxBytes, &s.InboxBytes)
		if err != nil {
			return s, fmt.Errorf("sample the tables: %w", err)
		}
		s.RSSBytes, _ = rssBytes(svc.pid())
		if mfs, err := scrape(ctx, metrics); err == nil {
			s.Goroutines = gauge(mfs, "go_goroutines")
		}
		return s, nil
	}
	go func() {
		defer close(sampled)
		for {
			s, err := sample(sctx)
			if sctx.Err() != nil {
				return // the run ended: its last sample is taken below
			}
			if err != nil {
				b.say("soak: %v", err)
			} else {
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
			if !sleepUntil(sctx, time.Now().Add(10*time.Second)) {
				return
			}
		}
	}()
	vacuumed := make(chan struct{})
	go func() {
		defer close(vacuumed)
		for sleepUntil(sctx, time.Now().Add(30*time.Second)) {
			b.vacuum(sctx, db)
		}
	}()
	snap := b.cpuSnap(ctx, db)
	lat, elapsed, err := openLoop(ctx, rate, d, 64, func(ctx context.Context, n int64) error {
		_, err := client.CreateOrder(ctx, orderRequest(2_000_000_000+n))
		return err
	})
	stopSampling()
	<-sampled
	<-vacuumed
	if err != nil {
		return err
	}
	last, err := sample(ctx) // "at the end": after the load, never a sample cut short by its end
	if err != nil {
		return err
	}
	samples = append(samples, last)
	b.account(ctx, fmt.Sprintf("soak at %d/s", rate), snap, len(lat))
	if err := svc.exited(); err != nil {
		return err
	}

	// Warm-up ends after the first retention run that had rows to delete;
	// the end is the last third of the run.
	warmFrom := min(2*soakRetention+30*time.Second, d/3)
	warm, end := summarize(samples, warmFrom, 2*d/3), summarize(samples, 2*d/3, d+time.Minute)
	maxRows := int64(0)
	for _, s := range samples {
		maxRows = max(maxRows, s.OutboxRows)
	}
	// Each order is created and then finished by the simulator: two events,
	// one payment result. Retention runs every minute, so rows stay up to
	// two minutes (and the last delete may take a while).
	bound := float64(rate) * (2*soakRetention + 30*time.Second).Seconds()
	b.say("soak: achieved %.0f/s, outbox rows at most %d, RSS %.1f MB after warm-up, %.1f MB at the end, goroutines %.0f -> %.0f",
		float64(len(lat))/elapsed.Seconds(), maxRows, float64(warm.RSSBytes)/1e6, float64(end.RSSBytes)/1e6, warm.Goroutines, end.Goroutines)
	label := fmt.Sprintf("Soak %s at %s/s", d, formatCount(rate))
	b.add(label+": achieved rate", "/s", float64(len(lat))/elapsed.Seconds())
	p99 := quantile(lat, 0.99)
	b.add(label+": CreateOrder p99 (from due time)", "ms", p99).target("≤ 50 ms", p99 <= 50)
	b.add(label+": outbox rows, max", "", float64(maxRows)).
		target(fmt.Sprintf("≤ %s (2 events an order, %s retention + 1m interval + 30s)", formatCount(int(2*bound)), soakRetention),
			float64(maxRows) <= 2*bound)
	b.add(label+": inbox rows at the end", "", float64(last.InboxRows)).
		target(fmt.Sprintf("≤ %s", formatCount(int(bound))), float64(last.InboxRows) <= bound)
	b.add(label+": inbox rows pending at the end", "", float64(last.Pending)).
		target(fmt.Sprintf("≤ %s (10s of payments)", formatCount(10*rate)), last.Pending <= int64(10*rate))
	rss := b.add(label+": service RSS, last third max", "MB", float64(end.RSSBytes)/1e6).vs("after warm-up", float64(warm.RSSBytes)/1e6)
	rss.target("≤ 1.25×", rss.Ratio != nil && *rss.Ratio <= 1.25)
	g := b.add(label+": service goroutines, last third max", "", end.Goroutines).vs("after warm-up", warm.Goroutines)
	g.target("≤ 1.25×", g.Ratio != nil && *g.Ratio <= 1.25)
	b.res.Details["soak"] = map[string]any{"duration": d.String(), "rate": rate, "retention": soakRetention.String(),
		"autovacuum": b.autovacuumOn, "samples": samples, "tables_at_end": tableStats(ctx, db)}
	b.say("soak: tables at the end %v", b.res.Details["soak"].(map[string]any)["tables_at_end"])
	return nil
}

// tableStats returns, per table, its size in MB, live and dead tuples and
// how often it was vacuumed and analyzed, by autovacuum and otherwise.
func tableStats(ctx context.Context, db *postgres.DB) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	rows, err := db.Pool.Query(ctx, `
		SELECT relname, pg_total_relation_size(relid) / 1e6, n_live_tup, n_dead_tup,
			autovacuum_count, vacuum_count, autoanalyze_count
		FROM pg_stat_user_tables WHERE relname IN ('orders', 'outbox', 'inbox')`)
	if err != nil {
		return out
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var mb float64
		var live, dead, autovac, vac, autoanalyze int64
		if rows.Scan(&name, &mb, &live, &dead, &autovac, &vac, &autoanalyze) == nil {
			out[name] = map[string]float64{"total_mb": mb, "live": float64(live), "dead": float64(dead),
				"autovacuum_count": float64(autovac), "vacuum_count": float64(vac), "autoanalyze_count": float64(autoanalyze)}
		}
	}
	return out
}

// ensureAutovacuum makes sure the soak runs with autovacuum on, as
// production does: when the server has it off, it turns it on (ALTER SYSTEM
// and a configuration reload, which needs a superuser) and returns the
// function that puts the server's setting back as it was.
func (b *bench) ensureAutovacuum(ctx context.Context) (restore func(), err error) {
	conn, err := pgx.Connect(ctx, b.adminDSN)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL (-postgres): %w", err)
	}
	defer conn.Close(ctx)
	var setting, source, file string
	err = conn.QueryRow(ctx, `SELECT setting, source, coalesce(sourcefile, '') FROM pg_settings WHERE name = 'autovacuum'`).
		Scan(&setting, &source, &file)
	if err != nil {
		return nil, fmt.Errorf("read autovacuum setting: %w", err)
	}
	if setting == "on" {
		b.autovacuumOn = true
		b.say("soak: the server runs autovacuum")
		return func() {}, nil
	}
	// Off through an earlier ALTER SYSTEM: put that back; otherwise remove ours.
	undo := `ALTER SYSTEM RESET autovacuum`
	if source == "configuration file" && strings.HasSuffix(file, "postgresql.auto.conf") {
		undo = `ALTER SYSTEM SET autovacuum = off`
	}
	if err := setAutovacuum(ctx, conn, `ALTER SYSTEM SET autovacuum = on`, "on"); err != nil {
		return nil, fmt.Errorf("turn autovacuum on for the soak (needs a superuser): %w", err)
	}
	b.autovacuumOn = true
	b.say("soak: the server had autovacuum off; turned it on for the soak (ALTER SYSTEM), restored afterwards")
	b.note("the PostgreSQL server runs with autovacuum off: the soak turned it on for its run (ALTER SYSTEM SET autovacuum = on, pg_reload_conf()) and restored the setting after it")
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, b.adminDSN)
		if err == nil {
			defer conn.Close(ctx)
			err = setAutovacuum(ctx, conn, undo, "off")
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "ordersbench: restore autovacuum (run %q and SELECT pg_reload_conf()): %v\n", undo, err)
		}
	}, nil
}

// setAutovacuum runs an ALTER SYSTEM statement, reloads the configuration
// and waits until new sessions see autovacuum as want.
func setAutovacuum(ctx context.Context, conn *pgx.Conn, stmt, want string) error {
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got string
		if err := conn.QueryRow(ctx, `SELECT setting FROM pg_settings WHERE name = 'autovacuum'`).Scan(&got); err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("autovacuum still %s 10s after %s and a reload", got, stmt)
		}
		if !sleepUntil(ctx, time.Now().Add(50*time.Millisecond)) {
			return ctx.Err()
		}
	}
}

// summarize returns the largest RSS and goroutine count of the samples taken
// from from until to.
func summarize(samples []SoakSample, from, to time.Duration) SoakSample {
	var out SoakSample
	for _, s := range samples {
		if s.Seconds >= from.Seconds() && s.Seconds < to.Seconds() {
			out.RSSBytes = max(out.RSSBytes, s.RSSBytes)
			out.Goroutines = max(out.Goroutines, s.Goroutines)
		}
	}
	return out
}
