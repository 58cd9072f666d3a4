package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/periodic"
	"github.com/acme/orders-service/postgres"
)

// LoadResult is one closed-loop load: conc callers each calling op back to
// back for the phase, after a warm-up that is not counted.
type LoadResult struct {
	Concurrency int     `json:"concurrency"`
	Ops         int     `json:"ops"`
	Throughput  float64 `json:"throughput_per_s"`
	P50         float64 `json:"p50_ms"`
	P99         float64 `json:"p99_ms"`
	Cost        Usage   `json:"cost"`
}

// closedLoop runs op from conc goroutines for the warm-up plus the phase and
// measures the calls that end within the phase. Their cost is measured on db
// from the end of the warm-up until settle (nil: none) returns after the
// phase, so work the calls leave behind (the relay's) is counted too.
func (b *bench) closedLoop(ctx context.Context, label string, db *postgres.DB, conc int, op func(ctx context.Context, n int64) error, settle func(context.Context) error) (LoadResult, error) {
	var counter atomic.Int64
	start := time.Now()
	from := start.Add(b.sizes.Warmup)
	end := from.Add(b.sizes.Phase)
	lats := make([][]time.Duration, conc)
	g, gctx := errgroup.WithContext(ctx)
	for w := range conc {
		g.Go(func() error {
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					return nil
				}
				if err := op(gctx, counter.Add(1)); err != nil {
					return err
				}
				if t1 := time.Now(); !t1.Before(from) && !t1.After(end) {
					lats[w] = append(lats[w], t1.Sub(t0))
				}
			}
		})
	}
	res := LoadResult{Concurrency: conc}
	var snap cpuSnap
	if sleepUntil(gctx, from) {
		snap = b.cpuSnap(ctx, db)
		b.rss.setLabel("load")
		if b.profile != "" && conc == b.headlineConcurrency() {
			go b.profileService(ctx, label, b.sizes.Phase)
		}
		sleepUntil(gctx, end)
		b.rss.setLabel("")
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	if settle != nil {
		if err := settle(ctx); err != nil {
			return res, err
		}
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	res.Ops = len(all)
	res.Throughput = float64(len(all)) / b.sizes.Phase.Seconds()
	res.P50, res.P99 = quantile(all, 0.50), quantile(all, 0.99)
	res.Cost = b.account(ctx, label, snap, res.Ops)
	return res, nil
}

// sleepUntil waits until t and reports whether ctx is still alive.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// profileService saves a CPU profile of the service process over d.
func (b *bench) profileService(ctx context.Context, name string, d time.Duration) {
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", b.httpPort, int(d.Seconds()))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.log.Warn("service profile failed", "error", err)
		return
	}
	defer resp.Body.Close()
	path := filepath.Join(b.profile, "service-"+safeName(name)+".pprof")
	f, err := os.Create(path)
	if err != nil {
		b.log.Warn("service profile failed", "error", err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}

func safeName(s string) string {
	out := []byte(s)
	for i, c := range out {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			out[i] = '-'
		}
	}
	return string(out)
}

// newOrder is the n-th order the load creates: 1000 users, varied amounts
// and descriptions of typical length.
func newOrder(n int64) orders.NewOrder {
	return orders.NewOrder{
		UserID:      fmt.Sprintf("bench-user-%d", n%1000),
		Amount:      100 + n%10000,
		Description: fmt.Sprintf("bench order #%d", n),
	}
}

func orderRequest(n int64) *orderspb.CreateOrderRequest {
	o := newOrder(n)
	return &orderspb.CreateOrderRequest{UserId: o.UserID, Amount: o.Amount, Description: o.Description}
}

// baselineWriter executes CreateOrder's SQL transaction directly through
// pgx: the same order row and outbox row, written by the same statements,
// with no gRPC, no service process and no relay.
type baselineWriter struct {
	db    *postgres.DB
	topic string
}

// insertOrderSQL is the statement postgres.OrderService.CreateOrder runs.
const insertOrderSQL = `
			INSERT INTO orders (id, user_id, amount, currency, description, status, request_id, request_hash, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
			ON CONFLICT (user_id, request_id) WHERE request_id IS NOT NULL DO NOTHING`

func (w baselineWriter) create(ctx context.Context, n int64) error {
	no := newOrder(n)
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	now := w.db.Now()
	o := &orders.Order{ID: id.String(), UserID: no.UserID, Amount: no.Amount, Currency: "USD",
		Description: no.Description, Status: orders.StatusNew, CreatedAt: now, UpdatedAt: now}
	h := sha256.New()
	var amount [8]byte
	binary.BigEndian.PutUint64(amount[:], uint64(o.Amount))
	h.Write(amount[:])
	h.Write([]byte(o.Currency + "\x00" + o.Description))
	payload, err := json.Marshal(o.Created())
	if err != nil {
		return err
	}
	eventID, err := uuid.NewV7()
	if err != nil {
		return err
	}
	var requestID *string
	return w.db.InTx(ctx, false, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, insertOrderSQL, o.ID, o.UserID, o.Amount, o.Currency, o.Description, o.Status,
			requestID, h.Sum(nil), now); err != nil {
			return err
		}
		return postgres.InsertOutbox(ctx, tx, postgres.OutboxMessage{
			EventID:   eventID.String(),
			EventType: orders.TypeOrderCreated,
			Topic:     w.topic,
			Key:       []byte(o.ID),
			Headers:   cloudevents.AppendHeaders([]postgres.Header(nil), cloudevents.Event{ID: eventID.String(), Type: orders.TypeOrderCreated, Source: "orders-service", Time: time.Now()}),
			Payload:   payload,
		})
	})
}

// headlineConcurrency is the CreateOrder concurrency whose costs per order
// are the headline figures: 32 when measured, else the highest.
func (b *bench) headlineConcurrency() int {
	if slices.Contains(b.sizes.Concurrencies, 32) {
		return 32
	}
	return slices.Max(b.sizes.Concurrencies)
}

// retention deletes every sent outbox row as the relay's retention does
// (periodic.DeleteInBatches), and returns its cost per row deleted: one order
// writes one row, so this is what its eventual retention costs.
func (b *bench) retention(ctx context.Context) (Usage, error) {
	snap := b.cpuSnap(ctx, b.svcDB)
	rows, _, err := periodic.DeleteInBatches(ctx, 1000, func(ctx context.Context, batch int) (int64, error) {
		return b.svcDB.DeleteSentOutbox(ctx, 0, batch)
	})
	if err != nil {
		return Usage{}, err
	}
	return b.account(ctx, "outbox retention, per row", snap, int(rows)), nil
}

// addCreateCosts adds the headline costs of one CreateOrder over gRPC, its
// relaying and its row's retention included, beside pgbench's transaction
// and raw pgx.
func (b *bench) addCreateCosts(conc int, svc, retention, pgx, pgb Usage, withPgbench bool) {
	// Each row is finished before the next is added: add's pointer is into
	// a slice that the next add may move.
	base, pgBase, walBase := "pgx", pgx.PostgresUS, pgx.WALBytes
	if withPgbench {
		base, pgBase, walBase = "pgbench", pgb.PostgresUS, pgb.WALBytes
	}
	b.add(fmt.Sprintf("PostgreSQL CPU per CreateOrder c=%d, relay included", conc), "µs", svc.PostgresUS).vs(base, pgBase)
	b.add(fmt.Sprintf("WAL per CreateOrder c=%d, relay included", conc), "B", svc.WALBytes).vs(base, walBase)
	pg := b.add(fmt.Sprintf("PostgreSQL CPU per CreateOrder c=%d, relay and retention included", conc), "µs",
		svc.PostgresUS+retention.PostgresUS).vs(base, pgBase)
	pg.target("≤ 1.15× "+base, pg.Ratio != nil && *pg.Ratio <= 1.15)
	wal := b.add(fmt.Sprintf("WAL per CreateOrder c=%d, relay and retention included", conc), "B",
		svc.WALBytes+retention.WALBytes).vs(base, walBase)
	wal.target("≤ 1.3× "+base, wal.Ratio != nil && *wal.Ratio <= 1.3)
	if withPgbench {
		b.add(fmt.Sprintf("PostgreSQL CPU per CreateOrder c=%d", conc), "µs", svc.PostgresUS).vs("pgx", pgx.PostgresUS)
	}
	b.add(fmt.Sprintf("Service CPU per CreateOrder c=%d, relay included", conc), "µs", svc.ServiceUS).
		target("≤ 90 µs", svc.ServiceUS <= 90)
	b.add(fmt.Sprintf("Load generator CPU per CreateOrder c=%d (gRPC client)", conc), "µs", svc.BenchUS).vs("pgx", pgx.BenchUS)
}

// waitDrained waits until db's outbox has no unsent row.
func waitDrained(ctx context.Context, db *postgres.DB, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := db.CountUnsentOutbox(ctx, 1)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("outbox not drained within %s", timeout)
		}
		if !sleepUntil(ctx, time.Now().Add(20*time.Millisecond)) {
			return ctx.Err()
		}
	}
}

// createOrderPhase measures CreateOrder over gRPC against the same
// transaction through pgx on a database of its own, at each concurrency.
// The two alternate which goes first, so that drift does not favour one.
func (b *bench) createOrderPhase(ctx context.Context) error {
	baseDSN, err := b.newDatabase(ctx, "baseline")
	if err != nil {
		return err
	}
	if b.poolMax == 0 {
		// The baseline is raw pgx: pgxpool's default size, not the
		// service's (postgres.BackgroundConns more).
		if baseDSN, err = withPoolMaxConns(baseDSN, max(4, runtime.NumCPU())); err != nil {
			return err
		}
	}
	baseDB, err := postgres.Open(ctx, baseDSN)
	if err != nil {
		return err
	}
	defer baseDB.Close()
	base := baselineWriter{db: baseDB, topic: "orders.events"}
	service := func(ctx context.Context, n int64) error {
		_, err := b.client.CreateOrder(ctx, orderRequest(n))
		return err
	}
	details := map[string]LoadResult{}
	pool := map[int]map[string]float64{}
	pgbenchBin := findPgbench()
	var pgbenchDSN string
	var pgbenchDB *postgres.DB
	if pgbenchBin == "" {
		b.say("pgbench not found (PATH, /usr/lib/postgresql/*/bin): no pgbench comparison")
		b.note("pgbench not found: CreateOrder is not compared with pgbench")
	} else {
		if pgbenchDB, pgbenchDSN, err = b.openDatabase(ctx, "pgbench"); err != nil {
			return err
		}
		defer pgbenchDB.Close()
	}
	pgbenchRuns := map[string]PgbenchResult{}
	for i, conc := range b.sizes.Concurrencies {
		var svc, pgx LoadResult
		var pgb PgbenchResult
		var retention Usage
		runs := []func() error{
			func() (err error) {
				b.vacuum(ctx, baseDB)
				pgx, err = b.closedLoop(ctx, fmt.Sprintf("CreateOrder pgx c=%d", conc), baseDB, conc, base.create, nil)
				return err
			},
			func() (err error) {
				if err := waitDrained(ctx, b.svcDB, 2*time.Minute); err != nil {
					return err
				}
				b.vacuum(ctx, b.svcDB)
				before, err := scrape(ctx, b.metricsURL())
				if err != nil {
					return err
				}
				drained := func(ctx context.Context) error { return waitDrained(ctx, b.svcDB, 2*time.Minute) }
				if svc, err = b.closedLoop(ctx, fmt.Sprintf("CreateOrder gRPC c=%d", conc), b.svcDB, conc, service, drained); err != nil {
					return err
				}
				after, err := scrape(ctx, b.metricsURL())
				if err != nil {
					return err
				}
				if conc == b.headlineConcurrency() {
					if retention, err = b.retention(ctx); err != nil {
						return err
					}
				}
				delta := func(name string) float64 { return gauge(after, name) - gauge(before, name) }
				acquires := delta("orders_pgxpool_acquire_total")
				pool[conc] = map[string]float64{
					"acquire_wait_avg_ms":  delta("orders_pgxpool_acquire_duration_seconds_total") / acquires * 1000,
					"acquires_that_waited": delta("orders_pgxpool_empty_acquire_total") / acquires,
				}
				return nil
			},
		}
		if pgbenchBin != "" {
			runs = append(runs, func() (err error) {
				b.vacuum(ctx, pgbenchDB)
				pgb, err = b.runPgbench(ctx, pgbenchBin, pgbenchDB, pgbenchDSN, conc)
				return err
			})
		}
		for j := range runs {
			if err := runs[(i+j)%len(runs)](); err != nil {
				return err
			}
		}
		b.say("CreateOrder c=%d: gRPC %.0f/s p50 %.2fms p99 %.2fms (service pool: %.0f%% of acquires waited, %.2fms on average); pgx %.0f/s p50 %.2fms p99 %.2fms",
			conc, svc.Throughput, svc.P50, svc.P99, 100*pool[conc]["acquires_that_waited"], pool[conc]["acquire_wait_avg_ms"],
			pgx.Throughput, pgx.P50, pgx.P99)
		details[fmt.Sprintf("grpc_c%d", conc)], details[fmt.Sprintf("pgx_c%d", conc)] = svc, pgx
		r := b.add(fmt.Sprintf("CreateOrder c=%d throughput", conc), "/s", svc.Throughput).vs("pgx", pgx.Throughput)
		r.target("≥ 0.85× pgx", *r.Ratio >= 0.85)
		if pgbenchBin != "" {
			b.say("CreateOrder c=%d: pgbench %.0f tps, latency average %.2fms", conc, pgb.Throughput, pgb.LatencyAvg)
			pgbenchRuns[fmt.Sprintf("c%d", conc)] = pgb
			r := b.add(fmt.Sprintf("CreateOrder c=%d vs pgbench", conc), "/s", svc.Throughput).vs("pgbench", pgb.Throughput)
			r.target("≥ 0.7× pgbench", *r.Ratio >= 0.7)
		}
		b.add(fmt.Sprintf("CreateOrder c=%d p50", conc), "ms", svc.P50).vs("pgx", pgx.P50)
		b.add(fmt.Sprintf("CreateOrder c=%d p99", conc), "ms", svc.P99).vs("pgx", pgx.P99)
		if conc == b.headlineConcurrency() {
			b.addCreateCosts(conc, svc.Cost, retention, pgx.Cost, pgb.Cost, pgbenchBin != "")
		}
	}
	b.res.Details["create_order"] = details
	b.res.Details["create_order_service_pool"] = pool
	if pgbenchBin != "" {
		b.res.Details["create_order_pgbench"] = map[string]any{"binary": pgbenchBin, "mode": "prepared", "threads": 2, "runs": pgbenchRuns}
	}
	return waitDrained(ctx, b.svcDB, 2*time.Minute)
}
