package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/postgres"
)

// clockTicks is USER_HZ, the unit of CPU times in /proc; 100 on every Linux
// this runs on (reading sysconf would need cgo).
const clockTicks = 100

// rssBytes returns the resident set size of process pid.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("unexpected VmRSS line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// procCPU returns the user plus system CPU seconds process pid has used,
// and its command name.
func procCPU(pid int) (secs float64, comm string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", err
	}
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || close < open {
		return 0, "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	comm = string(b[open+1 : close])
	f := strings.Fields(string(b[close+1:]))
	// After the command: state(0) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0, "", fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, "", fmt.Errorf("unexpected /proc/%d/stat times", pid)
	}
	return (ut + st) / clockTicks, comm, nil
}

// postgresCPU returns the CPU seconds of each given process that is still
// running, by pid.
func postgresCPU(pids []int) map[int]float64 {
	out := make(map[int]float64, len(pids))
	for _, pid := range pids {
		if secs, _, err := procCPU(pid); err == nil {
			out[pid] = secs
		}
	}
	return out
}

// machineBusy returns the busy CPU seconds of the whole machine from
// /proc/stat.
func machineBusy() float64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, v := range fields[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		if i < 8 && i != 3 && i != 4 { // user nice system (idle iowait) irq softirq steal; guest is inside user
			busy += n
		}
	}
	return busy / clockTicks
}

// cpuSnap is where one measured stretch of a phase starts or ends: the CPU
// time each process group has used so far and the WAL position. PostgreSQL's
// group is the backends connected to the phase's database (client sessions
// and the autovacuum workers vacuuming it), and its WAL is the records of
// that database, so other databases on a shared server do not count.
type cpuSnap struct {
	db                    *postgres.DB
	at                    time.Time
	service, broker, load float64
	loadPids              []int
	postgres              map[int]float64
	wal                   string // pg_current_wal_flush_lsn()
	machineBusy           float64
}

// Usage is the cost of one measured stretch of a phase, per operation:
// CPU microseconds of each process group and bytes of WAL. Service is the
// orders-service processes; Postgres the backends of the phase's database;
// Broker the benchmark's kfake broker (zero against a cluster); Bench the
// benchmark process (the load generator, and the workers of the phases that
// run them in-process) with pgbench when it runs. Other is the rest of the
// machine's load in cores: when it is high, the figures are noisy.
type Usage struct {
	Phase      string  `json:"phase"`
	Seconds    float64 `json:"seconds"`
	Ops        int     `json:"ops"`
	ServiceUS  float64 `json:"service_us_per_op"`
	PostgresUS float64 `json:"postgres_us_per_op"`
	BrokerUS   float64 `json:"broker_us_per_op"`
	BenchUS    float64 `json:"bench_us_per_op"`
	WALBytes   float64 `json:"wal_bytes_per_op"`
	FPIBytes   float64 `json:"wal_fpi_bytes_per_op"` // of WALBytes, full-page images: they follow the checkpoints, not the code
	// WALScope is "database" when the WAL is that of the phase's database
	// (pg_walinspect), "server" when it is the whole server's LSN delta
	// (no full-page images known), "none" when it is unknown.
	WALScope   string  `json:"wal_scope"`
	OtherCores float64 `json:"other_cores"`
}

// cpuSnap takes a snapshot for the phase on db (nil: a phase without
// PostgreSQL, whose WAL is then unknown); loadPids are extra
// load-generating processes (pgbench), counted with the benchmark.
func (b *bench) cpuSnap(ctx context.Context, db *postgres.DB, loadPids ...int) cpuSnap {
	s := cpuSnap{db: db, at: time.Now(), loadPids: loadPids}
	if db != nil {
		var pids []int
		if rows, err := db.Pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`); err == nil {
			pids, _ = pgx.CollectRows(rows, pgx.RowTo[int])
		}
		s.postgres = postgresCPU(pids)
		db.Pool.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text`).Scan(&s.wal)
	}
	s.service, _, _ = procCPU(b.service.pid())
	for _, p := range b.replicas {
		secs, _, _ := procCPU(p.pid())
		s.service += secs
	}
	s.broker, _, _ = procCPU(b.broker.pid())
	s.load, _, _ = procCPU(os.Getpid())
	for _, pid := range loadPids {
		secs, _, _ := procCPU(pid)
		s.load += secs
	}
	s.machineBusy = machineBusy()
	return s
}

// account records the cost of ops operations done between s and now.
func (b *bench) account(ctx context.Context, phase string, s cpuSnap, ops int) Usage {
	return b.accountBetween(ctx, phase, s, b.cpuSnap(ctx, s.db, s.loadPids...), ops)
}

// accountBetween records the cost of ops operations done from s to e.
func (b *bench) accountBetween(ctx context.Context, phase string, s, e cpuSnap, ops int) Usage {
	u := Usage{Phase: phase, Seconds: e.at.Sub(s.at).Seconds(), Ops: ops}
	var pg float64
	for pid, secs := range e.postgres {
		pg += secs - s.postgres[pid] // a backend that started in between counts from zero
	}
	perOp := func(secs float64) float64 { return secs * 1e6 / float64(max(ops, 1)) }
	u.ServiceUS, u.PostgresUS = perOp(e.service-s.service), perOp(pg)
	u.BrokerUS, u.BenchUS = perOp(e.broker-s.broker), perOp(e.load-s.load)
	if u.Seconds > 0 {
		own := (e.service - s.service) + pg + (e.broker - s.broker) + (e.load - s.load)
		u.OtherCores = max(0, (e.machineBusy-s.machineBusy-own)/u.Seconds)
	}
	wal, fpi, scope, err := walBytes(ctx, s.db, s.wal, e.wal)
	if err != nil {
		b.log.Warn("WAL of the phase's database unknown: the server's LSN delta is reported", "phase", phase, "error", err)
	}
	releaseWAL(ctx, b.walSlot, e.wal, b.log)
	u.WALBytes, u.FPIBytes, u.WALScope = wal/float64(max(ops, 1)), fpi/float64(max(ops, 1)), scope
	b.res.CPU = append(b.res.CPU, u)
	return u
}

// walSlotName is the temporary replication slot of this run.
var walSlotName = fmt.Sprintf("ordersbench_%d", os.Getpid())

// holdWAL opens a session holding a temporary physical replication slot
// that reserves the WAL from now on, so that a checkpoint on a busy server
// cannot recycle a phase's WAL before walBytes has read it. It returns nil,
// after a warning, when the server has no slot to spare; closing the
// session drops the slot.
func holdWAL(ctx context.Context, adminDSN string, log *slog.Logger) *pgx.Conn {
	conn, err := pgx.Connect(ctx, adminDSN)
	if err == nil {
		_, err = conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true, true)`, walSlotName)
		if err != nil {
			conn.Close(ctx)
		}
	}
	if err != nil {
		log.Warn("no replication slot to hold the measured WAL: a checkpoint may recycle it before it is read", "error", err)
		return nil
	}
	return conn
}

// releaseWAL lets the server recycle the WAL before lsn, which has been read.
func releaseWAL(ctx context.Context, conn *pgx.Conn, lsn string, log *slog.Logger) {
	if conn == nil || lsn == "" {
		return
	}
	_, err := conn.Exec(ctx, `SELECT pg_replication_slot_advance($1, greatest($2::pg_lsn, restart_lsn))
		FROM pg_replication_slots WHERE slot_name = $1`, walSlotName, lsn)
	if err != nil {
		log.Warn("advance the replication slot", "error", err)
	}
}

// walBytes returns the WAL written for db's database between two LSNs:
// with pg_walinspect, the records that touch its relations and those of the
// transactions that did (their commits), each padded to 8 bytes as in the
// WAL; without it, or when the WAL has been recycled, the LSN delta of the
// whole server. fpi is the full-page images among them (0 without
// pg_walinspect). scope says which ("database", "server", or "none" for a
// phase without PostgreSQL or when even the LSNs could not be read).
func walBytes(ctx context.Context, db *postgres.DB, from, to string) (n, fpi float64, scope string, err error) {
	if from == "" || to == "" {
		return 0, 0, "none", nil
	}
	if from == to { // pg_walinspect refuses an empty range
		return 0, 0, "database", nil
	}
	err = db.Pool.QueryRow(ctx, `
		WITH r AS (
			SELECT xid, record_length, fpi_length, block_ref FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)
		), p AS (
			SELECT '% rel %/' || oid || '/%' AS rel FROM pg_database WHERE datname = current_database()
		), x AS (
			SELECT DISTINCT xid FROM r, p WHERE xid <> 0 AND block_ref LIKE p.rel
		)
		SELECT coalesce(sum((record_length + 7) / 8 * 8), 0)::float8, coalesce(sum(fpi_length), 0)::float8 FROM r, p
		WHERE block_ref LIKE p.rel OR xid IN (SELECT xid FROM x)`, from, to).Scan(&n, &fpi)
	if err == nil {
		return n, fpi, "database", nil
	}
	if err := db.Pool.QueryRow(ctx, `SELECT ($2::pg_lsn - $1::pg_lsn)::float8`, from, to).Scan(&n); err != nil {
		return 0, 0, "none", err
	}
	return n, 0, "server", err
}

// rssSampler samples the service's resident memory every 100ms and keeps
// the maximum of each labelled stretch of the run.
type rssSampler struct {
	mu    sync.Mutex
	label string
	max   map[string]int64
	stop  chan struct{}
	done  chan struct{}
}

func startRSSSampler(pid int) *rssSampler {
	s := &rssSampler{max: map[string]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, err := rssBytes(pid); err == nil {
				s.mu.Lock()
				if s.label != "" && rss > s.max[s.label] {
					s.max[s.label] = rss
				}
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// setLabel starts attributing samples to label ("" pauses).
func (s *rssSampler) setLabel(label string) {
	s.mu.Lock()
	s.label = label
	s.mu.Unlock()
}

func (s *rssSampler) maxOf(label string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max[label]
}

func (s *rssSampler) close() {
	close(s.stop)
	<-s.done
}
