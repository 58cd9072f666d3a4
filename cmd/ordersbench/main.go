// Command ordersbench measures orders-service on this machine. Each figure
// is measured beside a baseline measured the same way in the same run, so a
// run on a noisy or slow machine still compares like with like. It prints a
// table and writes the figures with a description of the machine to a JSON
// file.
//
//	go run ./cmd/ordersbench           full run (a few minutes), writes bench/results.json
//	go run ./cmd/ordersbench -short    smoke run with tiny sizes (CI), under a minute
//
// The service runs as its own process (built from ./cmd/orders-service),
// against a fresh database on the local PostgreSQL and a kfake broker that
// also runs as its own process (./cmd/kfake-broker), so its resident memory
// and CPU are its own. The outbox drain and the inbox run the Relay,
// the inbox Consumer and Processor inside this process on databases of their
// own, against the same broker; the scale-out phase runs one to three
// OutboxWorkers on one outbox, and one to three service processes on the
// service's database. CreateOrder is also compared with pgbench running the
// same transaction, when pgbench is installed. See docs/performance.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/buildinfo"
	"github.com/acme/orders-service/postgres"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ordersbench:", err)
		os.Exit(1)
	}
}

// sizes are the amounts of work of one run.
type sizes struct {
	Warmup        time.Duration `json:"warmup"`
	Phase         time.Duration `json:"phase"`
	Concurrencies []int         `json:"concurrencies"`
	SteadyRate    int           `json:"steady_rate"`
	SteadyPhase   time.Duration `json:"steady_phase"`
	GetSmall      int           `json:"get_small_rows"`
	GetLarge      int           `json:"get_large_rows"`
	LightOrders   int           `json:"light_user_orders"`
	HeavySmall    int           `json:"heavy_user_orders_small"`
	HeavyLarge    int           `json:"heavy_user_orders_large"`
	GetRequests   int           `json:"get_requests"`
	PlanRows      int           `json:"plan_rows"`
	DrainRows     int           `json:"drain_rows"`
	InboxRecords  int           `json:"inbox_records"`
	// RecoveryRows pile up in the outbox during a broker outage of
	// RecoveryOutage.
	RecoveryRows   int           `json:"recovery_rows"`
	RecoveryOutage time.Duration `json:"recovery_outage"`
}

var fullSizes = sizes{
	Warmup: 2 * time.Second, Phase: 10 * time.Second, Concurrencies: []int{8, 32, 64},
	SteadyRate: 1000, SteadyPhase: 20 * time.Second,
	GetSmall: 10_000, GetLarge: 1_000_000, LightOrders: 10, HeavySmall: 5_000, HeavyLarge: 100_000, GetRequests: 2000,
	PlanRows:  1_000_000,
	DrainRows: 100_000, InboxRecords: 100_000,
	RecoveryRows: 20_000, RecoveryOutage: 8 * time.Second,
}

var shortSizes = sizes{
	Warmup: 200 * time.Millisecond, Phase: time.Second, Concurrencies: []int{8, 32, 64},
	SteadyRate: 1000, SteadyPhase: 2 * time.Second,
	GetSmall: 1_000, GetLarge: 20_000, LightOrders: 10, HeavySmall: 500, HeavyLarge: 2_000, GetRequests: 100,
	PlanRows:  20_000,
	DrainRows: 2_000, InboxRecords: 2_000,
	RecoveryRows: 2_000, RecoveryOutage: time.Second,
}

// allPhases run in this order; soak runs only when asked for.
var allPhases = []string{"create", "ack", "get", "plans", "drain", "recovery", "inbox", "scaleout", "soak"}

// bench is one run: the processes, databases and clients it set up, and
// what it measured.
type bench struct {
	sizes    sizes
	short    bool
	adminDSN string
	tmp      string
	profile  string // directory for CPU profiles; "" for none
	poolMax  int    // pool_max_conns for every pool; 0 for the default

	vacuumNoted  bool
	autovacuumOn bool // the soak turned autovacuum on (or found it on): no vacuuming of our own

	serviceEnv []string      // extra NAME=value settings of the service
	soak       time.Duration // length of the soak phase
	log        *slog.Logger
	progress   io.Writer

	dbs      []string // to drop at the end
	broker   *proc    // the kfake broker this run started; nil with -brokers
	brokerAt string
	// topicSuffix makes this run's topic names its own on a cluster that
	// outlives the run (-brokers); "" on the run's own kfake broker.
	topicSuffix string
	compression string // KAFKA_COMPRESSION of the service and the benchmark's producers
	// kafkaLatency is the delay each way of the drain phase's relays that
	// reach the broker through a proxy; 0 skips those drains.
	kafkaLatency time.Duration
	service      *proc
	svcEnv       []string // the service's settings beyond startService's
	replicas     []*proc  // more service processes on svcDSN, while the scale-out phase runs them
	svcDSN       string
	svcDB        *postgres.DB // the benchmark's own pool on the service's database
	httpPort     int
	grpcConn     *grpc.ClientConn
	client       orderspb.OrderServiceClient
	rss          *rssSampler
	walSlot      *pgx.Conn // holds the temporary replication slot that keeps the measured WAL until it is read

	res *Results
}

// Results is what a run writes to its JSON file.
type Results struct {
	Mode    string           `json:"mode"`
	Machine Machine          `json:"machine"`
	Sizes   sizes            `json:"sizes"`
	Rows    []Row            `json:"figures"`
	Plans   []PlanCheck      `json:"plans,omitempty"`
	CPU     []Usage          `json:"cost_per_op,omitempty"`
	Details map[string]any   `json:"details,omitempty"`
	Elapsed string           `json:"elapsed"`
	Notes   []string         `json:"notes,omitempty"`
	Extra   map[string]int64 `json:"service_goroutines,omitempty"`
}

// Row is one line of the table: a figure, its baseline and the target.
type Row struct {
	Figure       string   `json:"figure"`
	Unit         string   `json:"unit"`
	Value        float64  `json:"value"`
	Baseline     *float64 `json:"baseline,omitempty"`
	BaselineName string   `json:"baseline_name,omitempty"`
	Ratio        *float64 `json:"ratio,omitempty"`
	Target       string   `json:"target,omitempty"`
	Pass         *bool    `json:"pass,omitempty"`
}

// PlanCheck is the plan of one hot query and whether it is an index scan.
type PlanCheck struct {
	Query string `json:"query"`
	Mode  string `json:"mode"`
	Rows  int    `json:"table_rows"`
	Plan  string `json:"plan"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ordersbench", flag.ContinueOnError)
	short := fs.Bool("short", false, "smoke run with tiny sizes and 1s phases (CI)")
	out := fs.String("out", "", "results file (default bench/results.json for a full run; with -short or -phases, ordersbench-<phases or short>.json in the temp dir)")
	adminDSN := fs.String("postgres", envOr("BENCH_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"PostgreSQL server to create the benchmark's databases on (BENCH_POSTGRES_DSN)")
	profile := fs.String("profile", "", "write CPU profiles of the service and of the in-process workers to this directory")
	poolMax := fs.Int("pool-max-conns", 0, "set pool_max_conns on every database connection string (0: pgxpool's default)")
	concurrency := fs.String("concurrency", "", "comma-separated CreateOrder concurrencies (default 8,32,64)")
	var serviceEnv envList
	fs.Var(&serviceEnv, "service-env", "NAME=value added to the service's environment (repeatable), for experiments")
	phaseDur := fs.Duration("phase", 0, "length of each CreateOrder measurement (default 10s, with -short 1s)")
	fullRun := strings.Join(allPhases[:len(allPhases)-1], ",")
	phases := fs.String("phases", fullRun, "phases to run, comma-separated: "+strings.Join(allPhases, ", "))
	soak := fs.Duration("soak", 10*time.Minute, "length of the soak phase")
	brokers := fs.String("brokers", os.Getenv("BENCH_KAFKA_BROKERS"),
		"seed brokers of a running Kafka cluster to measure against, e.g. make kafka-up's 127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094 (BENCH_KAFKA_BROKERS); empty: a kfake broker of the run's own")
	compression := fs.String("compression", "none", "producer compression of the service and the in-process relay: none, gzip, snappy, lz4 or zstd")
	kafkaLatency := fs.Duration("kafka-latency", 10*time.Millisecond,
		"delay each way added by a proxy between the drain phase's relays and the broker, for 1, 2 and 4 publishers with transactions (0: skip those drains)")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		fmt.Fprintln(stdout, "ordersbench", buildinfo.Read())
		return nil
	}
	if *kafkaLatency < 0 {
		return fmt.Errorf("-kafka-latency: must not be negative, got %s", *kafkaLatency)
	}
	enabled := map[string]bool{}
	for p := range strings.SplitSeq(*phases, ",") {
		if !slices.Contains(allPhases, p) {
			return fmt.Errorf("-phases: unknown phase %q", p)
		}
		enabled[p] = true
	}
	b := &bench{sizes: fullSizes, short: *short, adminDSN: *adminDSN, profile: *profile, progress: stdout, poolMax: *poolMax,
		serviceEnv: serviceEnv, soak: *soak, brokerAt: *brokers, compression: *compression, kafkaLatency: *kafkaLatency,
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	mode := "full"
	if *short {
		b.sizes, mode = shortSizes, "short"
	}
	if *concurrency != "" {
		b.sizes.Concurrencies = nil
		for c := range strings.SplitSeq(*concurrency, ",") {
			n, err := strconv.Atoi(c)
			if err != nil || n < 1 {
				return fmt.Errorf("-concurrency: bad value %q", c)
			}
			b.sizes.Concurrencies = append(b.sizes.Concurrencies, n)
		}
	}
	if *phaseDur > 0 {
		b.sizes.Phase = *phaseDur
	}
	if *out == "" {
		switch {
		case *short:
			*out = filepath.Join(os.TempDir(), "ordersbench-short.json")
		case *phases != fullRun:
			// Some phases only: the committed full run's results stay.
			*out = filepath.Join(os.TempDir(), "ordersbench-"+strings.ReplaceAll(*phases, ",", "-")+".json")
		default:
			*out = filepath.Join("bench", "results.json")
		}
	}
	if b.profile != "" {
		if err := os.MkdirAll(b.profile, 0o755); err != nil {
			return err
		}
	}
	started := time.Now()
	b.res = &Results{Mode: mode, Sizes: b.sizes, Details: map[string]any{}, Extra: map[string]int64{}}
	if len(serviceEnv) > 0 || *poolMax > 0 {
		b.note("non-default settings: service environment %q, pool_max_conns %d", serviceEnv, *poolMax)
	}
	defer b.close()
	if err := b.setup(ctx); err != nil {
		return err
	}
	for _, p := range allPhases {
		if !enabled[p] {
			continue
		}
		if err := b.runPhase(ctx, p); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	b.res.Machine.LoadAvgEnd = loadAvg()
	if rss := b.rss.maxOf("load"); rss > 0 {
		mb := float64(rss) / 1e6
		b.add("Service RSS, max under CreateOrder load", "MB", mb).target("≤ 150 MB", mb <= 150)
	}
	if rss, err := rssBytes(b.service.pid()); err == nil {
		b.add("Service RSS at the end", "MB", float64(rss)/1e6)
	}
	if mfs, err := scrape(ctx, b.metricsURL()); err == nil {
		b.res.Extra["end"] = int64(gauge(mfs, "go_goroutines"))
		b.add("Service goroutines at the end (at start: "+fmt.Sprint(b.res.Extra["start"])+")", "", gauge(mfs, "go_goroutines"))
	}
	b.res.Elapsed = time.Since(started).Round(time.Second).String()
	b.printTable(stdout)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(b.res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nresults written to %s (%s)\n", *out, b.res.Elapsed)
	return nil
}

// envList collects repeated NAME=value flags.
type envList []string

func (l *envList) String() string { return strings.Join(*l, " ") }

func (l *envList) Set(v string) error {
	if name, _, ok := strings.Cut(v, "="); !ok || name == "" {
		return fmt.Errorf("want NAME=value, got %q", v)
	}
	*l = append(*l, v)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (b *bench) runPhase(ctx context.Context, name string) error {
	b.say("== %s", name)
	switch name {
	case "create":
		return b.createOrderPhase(ctx)
	case "ack":
		return b.ackPhase(ctx)
	case "get":
		return b.getOrdersPhase(ctx)
	case "plans":
		return b.plansPhase(ctx)
	case "drain":
		return b.drainPhase(ctx)
	case "recovery":
		return b.recoveryPhase(ctx)
	case "inbox":
		return b.inboxPhase(ctx)
	case "scaleout":
		return b.scaleOutPhase(ctx)
	case "soak":
		return b.soakPhase(ctx)
	}
	return fmt.Errorf("unknown phase %q", name)
}

// topic is the name of topic name in this run (see topicSuffix).
func (b *bench) topic(name string) string { return name + b.topicSuffix }

func (b *bench) say(format string, args ...any) {
	fmt.Fprintf(b.progress, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// setup builds the binaries, starts the broker and the service on a fresh
// database, and connects to both.
func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.tmp, err = os.MkdirTemp("", "ordersbench-"); err != nil {
		return err
	}
	b.say("building orders-service and kfake-broker into %s", b.tmp)
	if err := buildBinaries(ctx, b.tmp); err != nil {
		return err
	}
	if b.svcDSN, err = b.newDatabase(ctx, "service"); err != nil {
		return err
	}
	if b.svcDB, err = postgres.Open(ctx, b.svcDSN); err != nil {
		return err
	}
	b.res.Machine = describeMachine(ctx, b.svcDB)
	b.walSlot = holdWAL(ctx, b.adminDSN, b.log)
	if b.brokerAt == "" {
		if b.broker, b.brokerAt, err = startBroker(filepath.Join(b.tmp, "kfake-broker"), b.tmp, 6); err != nil {
			return err
		}
		b.res.Details["kafka"] = "kfake (own process)"
	} else {
		b.topicSuffix = "." + filepath.Base(b.tmp)
		b.res.Details["kafka"] = "cluster at " + b.brokerAt
	}
	env := append([]string{"KAFKA_TOPIC=" + b.topic("orders.events"), "KAFKA_INBOX_TOPIC=" + b.topic("payments.events"),
		"KAFKA_DLQ_TOPIC=" + b.topic("payments.events.dlq"), "KAFKA_GROUP_ID=" + b.topic("orders-service"),
		"KAFKA_COMPRESSION=" + b.compression}, b.serviceEnv...)
	b.svcEnv = env
	var grpcPort int
	b.service, grpcPort, b.httpPort, err = startService(ctx, filepath.Join(b.tmp, "orders-service"), b.tmp, b.svcDSN, b.brokerAt, b.profile != "", env)
	if err != nil {
		return err
	}
	if b.grpcConn, b.client, err = dial(grpcPort); err != nil {
		return err
	}
	b.rss = startRSSSampler(b.service.pid())
	b.say("service pid %d (gRPC :%d, HTTP :%d), Kafka: %s", b.service.pid(), grpcPort, b.httpPort, b.res.Details["kafka"])
	if mfs, err := scrape(ctx, b.metricsURL()); err == nil {
		b.res.Extra["start"] = int64(gauge(mfs, "go_goroutines"))
	}
	return nil
}

// openDatabase creates a fresh database for a phase (see newDatabase) and
// opens it; the caller closes it.
func (b *bench) openDatabase(ctx context.Context, role string) (*postgres.DB, string, error) {
	dsn, err := b.newDatabase(ctx, role)
	if err != nil {
		return nil, "", err
	}
	db, err := postgres.Open(ctx, dsn)
	if err != nil {
		return nil, "", err
	}
	return db, dsn, nil
}

func (b *bench) newDatabase(ctx context.Context, role string) (string, error) {
	dsn, err := createDatabase(ctx, b.adminDSN, role)
	if err != nil {
		return "", err
	}
	b.dbs = append(b.dbs, dsn)
	if b.poolMax > 0 {
		return withPoolMaxConns(dsn, b.poolMax)
	}
	return dsn, nil
}

// withPoolMaxConns returns the URL dsn with pool_max_conns set to n.
func withPoolMaxConns(dsn string, n int) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("pool_max_conns", fmt.Sprint(n))
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// close stops everything the run started and drops its databases.
func (b *bench) close() {
	if b.rss != nil {
		b.rss.close()
	}
	if b.grpcConn != nil {
		b.grpcConn.Close()
	}
	for _, p := range b.replicas {
		p.stop()
	}
	b.service.stop()
	b.broker.stop()
	if b.svcDB != nil {
		b.svcDB.Close()
	}
	if b.walSlot != nil {
		b.walSlot.Close(context.Background()) // drops the temporary slot
	}
	dropDatabases(b.adminDSN, b.dbs)
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

func (b *bench) metricsURL() string { return fmt.Sprintf("http://127.0.0.1:%d/metrics", b.httpPort) }

// vacuum vacuums and analyzes db's tables when the server runs without
// autovacuum (the test server may): without it, dead rows pile up in the
// queue tables as they do on no production server, and the relay's and the
// processor's claims slow down.
func (b *bench) vacuum(ctx context.Context, db *postgres.DB) {
	if b.autovacuumOn || b.res.Machine.PostgresSettings["autovacuum"] != "off" {
		return
	}
	if !b.vacuumNoted {
		b.vacuumNoted = true
		b.note("the PostgreSQL server runs with autovacuum off: the benchmark vacuums the service's tables between phases and every 30s of the soak, as autovacuum would")
	}
	if _, err := db.Pool.Exec(ctx, `VACUUM (ANALYZE) orders, outbox, inbox`); err != nil && ctx.Err() == nil {
		b.log.Warn("vacuum failed", "error", err)
	}
}

// add appends a figure without a target.
func (b *bench) add(figure, unit string, value float64) *Row {
	b.res.Rows = append(b.res.Rows, Row{Figure: figure, Unit: unit, Value: value})
	return &b.res.Rows[len(b.res.Rows)-1]
}

// vs sets the baseline of r and the ratio value/baseline.
func (r *Row) vs(name string, baseline float64) *Row {
	r.Baseline, r.BaselineName = &baseline, name
	if baseline != 0 && !math.IsNaN(baseline) && !math.IsNaN(r.Value) {
		ratio := r.Value / baseline
		r.Ratio = &ratio
	}
	return r
}

// target sets the target of r and whether it is met.
func (r *Row) target(text string, pass bool) *Row {
	r.Target, r.Pass = text, &pass
	return r
}

func (b *bench) note(format string, args ...any) {
	b.res.Notes = append(b.res.Notes, fmt.Sprintf(format, args...))
}

func (b *bench) printTable(w io.Writer) {
	m := b.res.Machine
	fmt.Fprintf(w, "\nordersbench (%s) on %s, %d cores, %.1f GiB, %s, %s, %s\n", b.res.Mode, m.CPUModel, m.Cores,
		float64(m.MemoryBytes)/(1<<30), m.GoVersion, firstWords(m.PostgresVersion, 2), m.Date)
	fmt.Fprintf(w, "load average at start %s, at end %s\n\n", m.LoadAvgStart, m.LoadAvgEnd)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tbaseline\tratio\ttarget\tresult")
	for _, r := range b.res.Rows {
		base, ratio, result := "—", "—", ""
		if r.Baseline != nil {
			base = formatValue(*r.Baseline, r.Unit) + " (" + r.BaselineName + ")"
		}
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *r.Ratio)
		}
		if r.Pass != nil {
			result = "MISS"
			if *r.Pass {
				result = "PASS"
			}
		}
		target := r.Target
		if target == "" {
			target = "—"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Figure, formatValue(r.Value, r.Unit), base, ratio, target, result)
	}
	tw.Flush()
	if len(b.res.Plans) > 0 {
		fmt.Fprintln(w, "\nquery plans")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, p := range b.res.Plans {
			result := "PASS"
			if !p.OK {
				result = "MISS: " + p.Error
			}
			fmt.Fprintf(tw, "%s (%s rows, %s)\t%s\t%s\n", p.Query, formatCount(p.Rows), strings.TrimPrefix(p.Mode, "force_"), p.Plan, result)
		}
		tw.Flush()
	}
	if len(b.res.CPU) > 0 {
		fmt.Fprintf(w, "\ncost per operation: CPU µs of each process group and WAL bytes (PostgreSQL: the phase database's backends and WAL records;\n"+
			"bench: the load generator with pgbench, or the in-process workers; other: cores used outside the benchmark, of %d)\n", m.Cores)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "phase\tops\tops/s\tservice\tpostgres\tbroker\tbench\tWAL B\tof it FPI\tother\t")
		for _, c := range b.res.CPU {
			wal, fpi := formatValue(c.WALBytes, ""), formatValue(c.FPIBytes, "")
			switch c.WALScope {
			case "server":
				wal, fpi = wal+" (server)", "n/a"
			case "none":
				wal, fpi = "n/a", "n/a"
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t%s\t%.2f\t\n", c.Phase, c.Ops, float64(c.Ops)/max(c.Seconds, 1e-9),
				c.ServiceUS, c.PostgresUS, c.BrokerUS, c.BenchUS, wal, fpi, c.OtherCores)
		}
		tw.Flush()
	}
	for _, n := range b.res.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	return strings.Join(f[:min(n, len(f))], " ")
}

func formatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch unit {
	case "ms":
		return fmt.Sprintf("%.2f ms", v)
	case "MB":
		return fmt.Sprintf("%.1f MB", v)
	case "/s":
		return formatCount(int(math.Round(v))) + "/s"
	case "", "B":
		return strings.TrimSpace(fmt.Sprintf("%.0f %s", v, unit))
	case "µs":
		return fmt.Sprintf("%.1f µs", v)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

// formatCount writes n with thousands separators.
func formatCount(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + formatCount(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
