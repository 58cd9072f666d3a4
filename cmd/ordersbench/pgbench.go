package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/acme/orders-service/postgres"
)

// pgbenchScript is CreateOrder's transaction as baselineWriter.create runs
// it (BEGIN, the two INSERTs, COMMIT: four round trips), with rows of the
// same shape and size: an order of one of 1000 users with a 32-byte request
// hash, and an outbox row keyed by the order's id with the six CloudEvents
// headers and the OrderCreated JSON as the service encodes them. Ids come
// from gen_random_uuid(), the order's through RETURNING. No string literal
// may hold a colon before a letter: pgbench would take it for a variable.
const pgbenchScript = `\set n random(1, 1000000000)
\set user random(0, 999)
\set amount random(100, 10099)
BEGIN;
INSERT INTO orders (id, user_id, amount, currency, description, status, request_id, request_hash, created_at, updated_at)
	VALUES (gen_random_uuid(), 'bench-user-' || :user::text, :amount, 'USD', 'bench order #' || :n::text, 'new', NULL,
		sha256(convert_to('bench order #' || :n::text, 'UTF8')), now(), now())
	ON CONFLICT (user_id, request_id) WHERE request_id IS NOT NULL DO NOTHING
	RETURNING id \gset
INSERT INTO outbox (event_id, event_type, topic, key, headers, payload)
	SELECT e, 'orders.v1.OrderCreated', 'orders.events', :id,
		('[{"key":"ce_specversion","value":"1.0"},{"key":"ce_id","value":"' || e ||
		'"},{"key":"ce_type","value":"orders.v1.OrderCreated"},{"key":"ce_source","value":"orders-service"},{"key":"ce_time","value":' ||
		to_json(clock_timestamp() AT TIME ZONE 'UTC')::text ||
		'},{"key":"content-type","value":"application/json"}]')::jsonb,
		convert_to('{"order_id":"' || :id::text || '","user_id":"bench-user-' || :user::text || '","amount":' || :amount::text ||
		',"currency":"USD","description":"bench order #' || :n::text || '","status":"new","created_at":' ||
		to_json(now() AT TIME ZONE 'UTC')::text || '}', 'UTF8')
	FROM gen_random_uuid() AS e;
COMMIT;
`

// findPgbench returns the path of pgbench on PATH or, failing that, of the
// newest /usr/lib/postgresql/*/bin/pgbench; "" when there is none.
func findPgbench() string {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	slices.SortFunc(found, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
		return vb - va
	})
	if len(found) > 0 {
		return found[0]
	}
	return ""
}

// PgbenchResult is one pgbench run of pgbenchScript.
type PgbenchResult struct {
	Concurrency  int     `json:"concurrency"`
	Seconds      int     `json:"seconds"`
	Transactions int     `json:"transactions"`
	Throughput   float64 `json:"tps_without_connecting"`
	LatencyAvg   float64 `json:"latency_avg_ms"`
	Cost         Usage   `json:"cost"`
}

var (
	pgbenchTPS     = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	pgbenchTxns    = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	pgbenchFailed  = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
	pgbenchLatency = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
)

// runPgbench runs pgbench with pgbenchScript against db (at dsn) for the phase's
// length (whole seconds, at least two) with conc clients on two threads,
// in prepared mode, as pgx's default statement cache prepares each
// statement once per connection. pgbench's own CPU is counted as the
// benchmark's; the CPU window is the -T time, which leaves out pgbench's
// connecting and disconnecting.
func (b *bench) runPgbench(ctx context.Context, bin string, db *postgres.DB, dsn string, conc int) (PgbenchResult, error) {
	// At least 2s: its clients connect within its -T time, and the window
	// opens only once they have.
	secs := max(2, int(b.sizes.Phase.Round(time.Second).Seconds()))
	res := PgbenchResult{Concurrency: conc, Seconds: secs}
	script := filepath.Join(b.tmp, "createorder.pgbench")
	if err := os.WriteFile(script, []byte(pgbenchScript), 0o644); err != nil {
		return res, err
	}
	conninfo, err := libpqDSN(dsn)
	if err != nil {
		return res, err
	}
	cmd := exec.CommandContext(ctx, bin, "-n", "-T", strconv.Itoa(secs), "-c", strconv.Itoa(conc), "-j", strconv.Itoa(min(2, conc)),
		"-M", "prepared", "-f", script, conninfo)
	cmd.Env = baseEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("pgbench: %w", err)
	}
	// The window opens once pgbench's clients have connected and ends just
	// before its -T time (counted from its start) is up and they
	// disconnect: the CPU of a backend that has exited is no longer in /proc.
	if !waitBackends(ctx, db, conc, time.Duration(secs)*time.Second/2) {
		b.log.Warn("pgbench's clients did not all connect in the first half of its run")
	}
	snap := b.cpuSnap(ctx, db, cmd.Process.Pid)
	sleepUntil(ctx, started.Add(time.Duration(secs)*time.Second-150*time.Millisecond))
	end := b.cpuSnap(ctx, db, cmd.Process.Pid)
	err = cmd.Wait()
	if err != nil {
		return res, fmt.Errorf("pgbench -c %d: %w: %s", conc, err, out.Bytes())
	}
	if err := parsePgbench(out.Bytes(), &res); err != nil {
		return res, fmt.Errorf("pgbench -c %d: %w: %s", conc, err, out.Bytes())
	}
	// pgbench's transactions in the window, at its measured rate.
	res.Cost = b.accountBetween(ctx, fmt.Sprintf("CreateOrder pgbench c=%d", conc), snap, end,
		int(math.Round(res.Throughput*end.at.Sub(snap.at).Seconds())))
	return res, nil
}

// waitBackends waits until db has at least n client backends besides the
// benchmark's own pool, and reports whether it saw them.
func waitBackends(ctx context.Context, db *postgres.DB, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		var got int
		err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND backend_type = 'client backend' AND application_name = 'pgbench'`).Scan(&got)
		if err == nil && got >= n {
			return true
		}
		if time.Now().After(deadline) || !sleepUntil(ctx, time.Now().Add(10*time.Millisecond)) {
			return false
		}
	}
}

// parsePgbench reads pgbench's summary into res: the tps without initial
// connection time, the transactions and the average latency. A summary
// without tps, or with failed transactions, is an error.
func parsePgbench(out []byte, res *PgbenchResult) error {
	if m := pgbenchFailed.FindSubmatch(out); m != nil && string(m[1]) != "0" {
		return fmt.Errorf("%s failed transactions", m[1])
	}
	m := pgbenchTPS.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("no tps in pgbench's output")
	}
	var err error
	if res.Throughput, err = strconv.ParseFloat(string(m[1]), 64); err != nil {
		return fmt.Errorf("tps: %w", err)
	}
	if m := pgbenchTxns.FindSubmatch(out); m != nil {
		res.Transactions, _ = strconv.Atoi(string(m[1]))
	}
	if m := pgbenchLatency.FindSubmatch(out); m != nil {
		res.LatencyAvg, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	return nil
}

// libpqDSN drops the pgx-only settings of dsn, which libpq would reject.
func libpqDSN(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", err
	}
	q := u.Query()
	for k := range q {
		if strings.HasPrefix(k, "pool_") {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
