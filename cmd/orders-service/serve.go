package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/internal/buildinfo"
	"github.com/acme/orders-service/internal/peerlimit"
	"github.com/acme/orders-service/internal/settings"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/ratelimit"
	"github.com/acme/orders-service/telemetry"
	"github.com/acme/orders-service/tlsconfig"
)

// serve runs the service until ctx is cancelled, then shuts down gracefully:
// health turns NOT_SERVING, in-flight calls finish within the shutdown
// timeout, then the workers stop. A non-nil welcome gets a short greeting
// for a person once the service listens.
func serve(ctx context.Context, cfg config, log *slog.Logger, dev bool, welcome io.Writer) error {
	setGCPercent(cfg.getenv)
	build := buildinfo.Read()
	log.Info("starting orders-service", "version", build.Version, "revision", build.Revision, "config", cfg, "dev", dev)
	stopTracing, err := telemetry.SetupTracing(ctx, cfg.getenv, "orders-service", log)
	if err != nil {
		return err
	}
	defer stopTracing(context.WithoutCancel(ctx))

	// The HTTP server answers from the start: alive, and not ready until
	// PostgreSQL answers and everything else is set up.
	httpLn, err := net.Listen("tcp", cfg.httpAddr())
	if err != nil {
		return fmt.Errorf("listen HTTP_HOST/HTTP_PORT %s: %w", cfg.httpAddr(), err)
	}
	reg := telemetry.NewRegistry()
	starting := telemetry.NewReadiness(
		telemetry.Check{Name: "postgres", Required: true, Run: func(context.Context) error { return errStarting }},
		telemetry.Check{Name: "migrations", Required: true, Run: func(context.Context) error { return errStarting }})
	starting.Update(ctx, time.Second)
	var handler swapHandler
	handler.set(telemetry.Handler(reg, starting))
	httpServer := &http.Server{Handler: &handler, ReadHeaderTimeout: 5 * time.Second}
	httpDone := make(chan error, 1)
	log.Info("HTTP server listening", "addr", httpLn.Addr().String())
	go func() {
		err := httpServer.Serve(httpLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else {
			err = fmt.Errorf("serve HTTP: %w", err)
		}
		httpDone <- err
	}()
	started := false
	defer func() {
		if !started {
			httpServer.Close()
			<-httpDone
		}
	}()

	// Set once shutdown begins: what is still closing then gets until the
	// deadline, no longer.
	var deadline, workersBy stopBy
	db, err := waitForDatabase(ctx, cfg, log, dev)
	if err != nil {
		return err
	}
	defer deadline.within(db.Close)
	pageKey, err := db.PageTokenKey(ctx)
	if err != nil {
		return err
	}

	if cfg.EmbeddedKafka {
		broker, err := startEmbeddedKafka(cfg, log)
		if err != nil {
			return err
		}
		defer broker.Close()
	}
	// Readiness shows Kafka unavailable when produced records are not
	// acknowledged, which a ping to one live broker does not reveal.
	produced := &kafka.ProduceHealth{}
	producer, err := kafka.NewClient(cfg.Kafka, kgo.WithHooks(produced))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer deadline.within(producer.Close)

	telemetry.RegisterPool(reg, db.Pool)
	telemetry.RegisterBuildInfo(reg, build)
	grpcMetrics := telemetry.NewGRPCMetrics(reg)

	writer := postgres.NewOrderWriter(cfg.KafkaTopic, cloudevents.Encoder[postgres.Header]{Source: "orders-service", TraceParent: telemetry.TraceParent})
	svc := postgres.NewOrderService(db, writer, cfg.DefaultCurrency)
	hs := health.NewServer()
	opts, err := grpcOptions(cfg, log)
	if err != nil {
		return err
	}
	if telemetry.TracesExported(cfg.getenv) {
		opts.ServerOptions = append(opts.ServerOptions, grpc.StatsHandler(telemetry.GRPCStatsHandler()))
	} else {
		opts.Observers = append(opts.Observers, telemetry.ContinueTrace)
	}
	opts.Observers = append(opts.Observers, grpcMetrics.UnaryServerInterceptor())
	grpcServer := grpcapi.NewServer(grpcapi.NewHandler(svc, pageKey, log), hs, opts)
	grpcMetrics.InitializeMetrics(grpcServer)

	// A topic that is missing and may not be created keeps the service
	// unready: the inbox cannot consume, and the fault needs a person.
	topics := &topicsCheck{}
	ready := telemetry.NewReadiness(append(readinessChecks(db, func(ctx context.Context) error {
		if err := producer.Ping(ctx); err != nil {
			return err
		}
		return produced.Err(time.Now())
	}), telemetry.Check{Name: "kafka_topics", Required: true, Run: topics.Run})...)
	ready.Log = log

	grpcLn, err := grpcListener(cfg)
	if err != nil {
		return err
	}
	serving := telemetry.Handler(reg, ready)
	if cfg.HTTPPprof {
		serving = withPprof(serving)
		log.Warn("HTTP_PPROF=true: profiles are served under /debug/pprof/ on HTTP_PORT; keep that port private")
	}
	handler.set(serving)
	started = true

	// Workers outlive the gRPC server at shutdown, so in-flight calls'
	// events are still relayed; they stop once it has stopped.
	workersCtx, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	w := workers{cfg: cfg, log: log, db: db, orders: svc, producer: producer, produced: produced, topics: topics, stopBy: &workersBy, reg: reg, dev: dev}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.run(workersCtx) })
	g.Go(func() error {
		ready.Run(gctx, cfg.ReadinessInterval, func(ok bool) {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if ok {
				st = healthpb.HealthCheckResponse_SERVING
			}
			// "" stays SERVING while the process lives (liveness); the
			// service's own name follows readiness.
			hs.SetServingStatus(orderspb.OrderService_ServiceDesc.ServiceName, st)
			log.Info("readiness changed", "ready", ok)
		})
		return nil
	})
	if welcome != nil {
		writeWelcome(welcome, cfg, grpcLn.Addr(), httpLn.Addr())
	}
	g.Go(func() error { return <-httpDone })
	g.Go(func() error {
		log.Info("gRPC server listening", "addr", grpcLn.Addr().String())
		if err := grpcServer.Serve(grpcLn); err != nil {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		plan := planShutdown(time.Now(), cfg.ShutdownTimeout)
		deadline.set(plan.deadline)
		workersBy.set(plan.workersBy)
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout, "grpc_drain", time.Until(plan.grpcBy).Round(time.Millisecond),
			"relay_drain", relayDrain(cfg.ShutdownTimeout))
		hs.Shutdown()
		stopped := make(chan struct{})
		go func() { grpcServer.GracefulStop(); close(stopped) }()
		grpcBy := time.NewTimer(time.Until(plan.grpcBy))
		defer grpcBy.Stop()
		select {
		case <-stopped:
		case <-grpcBy.C:
			log.Warn("shutdown: cancelling in-flight calls after half of SHUTDOWN_TIMEOUT")
			grpcServer.Stop()
		}
		stopWorkers()
		shutdownCtx, cancel := context.WithDeadline(context.Background(), plan.deadline)
		defer cancel()
		return httpServer.Shutdown(shutdownCtx)
	})
	err = g.Wait()
	log.Info("orders-service stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// errStarting is the readiness of PostgreSQL before the service has
// connected to it.
var errStarting = errors.New("waiting for PostgreSQL at start")

// swapHandler serves the handler set last: the HTTP server starts before
// the service is set up, so probes get answers from the first moment.
type swapHandler struct{ h atomic.Pointer[http.Handler] }

func (s *swapHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// waitForDatabase opens the database (openDatabase), waiting with capped
// backoff while PostgreSQL cannot be reached or is starting up, for at most
// POSTGRES_START_TIMEOUT: a replica started during a database outage comes
// up when the database does, instead of exiting into a crash loop. Each kind
// of failure is logged once. A failure no wait can fix (a bad DSN, wrong
// credentials, a missing database, a failed migration) returns at once.
func waitForDatabase(ctx context.Context, cfg config, log *slog.Logger, dev bool) (*postgres.DB, error) {
	waitCtx, cancel := context.WithTimeout(ctx, cfg.PostgresStartTimeout)
	defer cancel()
	delay, logged := 250*time.Millisecond, ""
	for {
		db, err := openDatabase(waitCtx, cfg, log, dev)
		if err == nil {
			if logged != "" {
				log.Info("PostgreSQL reachable; starting")
			}
			return db, nil
		}
		kind, transient := startFailure(err)
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case !transient:
			return nil, err
		case waitCtx.Err() != nil:
			return nil, fmt.Errorf("PostgreSQL not reachable within POSTGRES_START_TIMEOUT (%v): %w", cfg.PostgresStartTimeout, err)
		case kind != logged:
			log.Warn("PostgreSQL not reachable yet; waiting", "reason", kind, "error", err, "timeout", cfg.PostgresStartTimeout)
			logged = kind
		}
		select {
		case <-waitCtx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// startFailure tells what kind of failure err is and whether waiting may
// cure it: the server refusing or dropping connections, timing out, or
// answering that it is starting up, shutting down or full.
func startFailure(err error) (kind string, transient bool) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgerrcode.CannotConnectNow:
			return "the database system is starting up or shutting down (" + pgErr.Code + ")", true
		case pgerrcode.TooManyConnections, pgerrcode.AdminShutdown, pgerrcode.CrashShutdown:
			return pgErr.Code, true
		}
		return pgErr.Code, strings.HasPrefix(pgErr.Code, "08") // connection exceptions
	}
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", true
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "no answer in time", true
	case pgconn.SafeToRetry(err), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &netErr):
		return "connection lost", true
	}
	return "", false
}

// grpcListener listens on GRPC_PORT, accepting at most GRPC_MAX_CONNECTIONS
// connections at once, further ones waiting in the kernel's backlog, and at
// most GRPC_MAX_CONNECTIONS_PER_PEER of one IP address, further ones closed
// at once (so they give their slot back).
func grpcListener(cfg config) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.GRPCHost, strconv.Itoa(cfg.GRPCPort)))
	if err != nil {
		return nil, fmt.Errorf("listen GRPC_HOST/GRPC_PORT %s: %w", net.JoinHostPort(cfg.GRPCHost, strconv.Itoa(cfg.GRPCPort)), err)
	}
	return peerlimit.Listener(netutil.LimitListener(ln, cfg.GRPCMaxConnections), cfg.GRPCMaxPeerConns), nil
}

// readinessChecks are the checks behind /readyz and the gRPC health status
// of the order service: PostgreSQL reachable and migrations applied are
// required; Kafka (kafkaPing) only shows in the body, since orders are still
// accepted into the outbox while it is down.
//
// One round of the postgres check reads both: it pings and asks whether
// migrations are pending, and the migrations check (which runs after it,
// as telemetry.Readiness runs checks in order) reports what that round
// found. So one snapshot never shows PostgreSQL ok and migrations
// unavailable because the database went away between two checks: when it
// cannot be reached, both are unavailable.
func readinessChecks(db *postgres.DB, kafkaPing func(context.Context) error) []telemetry.Check {
	var (
		mu      sync.Mutex
		pgErr   error
		pending bool
	)
	return []telemetry.Check{
		{Name: "postgres", Required: true, Run: func(ctx context.Context) error {
			err := db.Pool.Ping(ctx)
			p := false
			if err == nil {
				p, err = db.MigrationsPending(ctx)
			}
			mu.Lock()
			pgErr, pending = err, p
			mu.Unlock()
			return err
		}},
		{Name: "migrations", Required: true, Run: func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case pgErr != nil:
				return fmt.Errorf("migrations unknown: PostgreSQL unavailable: %w", pgErr)
			case pending:
				return errors.New("migrations pending")
			}
			return nil
		}},
		{Name: "kafka", Run: kafkaPing},
	}
}

// withPprof adds the net/http/pprof handlers under /debug/pprof/ to h.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// startEmbeddedKafka runs the in-process development broker on
// cfg.EmbeddedAddr, where other clients (kcat) can reach it too.
func startEmbeddedKafka(cfg config, log *slog.Logger) (*kafka.Embedded, error) {
	opts := []kafka.EmbeddedOption{
		kafka.WithDefaultPartitions(cfg.TopicPartitions),
		kafka.WithLogger(log.With("component", "embedded-kafka")),
	}
	if cfg.EmbeddedDataDir != "" {
		opts = append(opts, kafka.WithDataDir(cfg.EmbeddedDataDir))
	}
	broker, err := kafka.StartEmbedded(cfg.EmbeddedAddr, opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded Kafka on %s (KAFKA_EMBEDDED_ADDR): %w", cfg.EmbeddedAddr, err)
	}
	log.Info("embedded Kafka broker listening", "addr", broker.Addr())
	return broker, nil
}

// openDatabase connects and applies migrations; in dev mode it first creates
// the database when it does not exist.
func openDatabase(ctx context.Context, cfg config, log *slog.Logger, dev bool) (*postgres.DB, error) {
	if dev {
		created, err := postgres.CreateDatabaseIfMissing(ctx, cfg.PostgresDSN)
		if err != nil {
			return nil, err
		}
		if created {
			log.Info("created database", "dsn", settings.RedactDSN(cfg.PostgresDSN))
		}
	}
	connectCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	db, err := postgres.Open(connectCtx, cfg.PostgresDSN)
	if err != nil {
		return nil, err
	}
	applied, err := db.Migrate(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	if len(applied) > 0 {
		log.Info("applied migrations", "migrations", applied)
	}
	return db, nil
}

// migrate applies migrations and exits.
func migrate(ctx context.Context, cfg config, log *slog.Logger, dev bool) error {
	db, err := openDatabase(ctx, cfg, log, dev)
	if err != nil {
		return err
	}
	db.Close()
	log.Info("migrations are up to date")
	return nil
}

// defaultGCPercent is the garbage collector's GOGC when the environment sets
// none. The live heap is small (tens of MB) and mostly per-call garbage, so
// Go's default of 100 collects often: at 200 the collector's CPU per
// CreateOrder falls by about 40%, for a peak heap about 1.5 times as large.
// GOMEMLIMIT, where set, still makes it collect harder near the limit.
const defaultGCPercent = 200

// setGCPercent applies defaultGCPercent unless GOGC is set.
func setGCPercent(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// grpcOptions turns the security and limit settings into server options.
func grpcOptions(cfg config, log *slog.Logger) (grpcapi.Options, error) {
	o := grpcapi.Options{
		Log:            log,
		Reflection:     cfg.GRPCReflection,
		MaxRecvMsgSize: cfg.MaxRecvMsgBytes,
		CallTimeout:    cfg.CallTimeout,

		StreamTimeout:     cfg.GRPCStreamTimeout,
		MaxConnectionIdle: cfg.GRPCMaxConnectionIdle,
		MaxConnectionAge:  cfg.GRPCMaxConnectionAge,
		KeepaliveMinTime:  cfg.GRPCKeepaliveMinTime,
		ConnectionTimeout: cfg.GRPCConnectionTimeout,
		MaxHeaderListSize: cfg.GRPCMaxHeaderBytes,
	}
	v, err := auth.NewVerifier(cfg.Auth)
	if err != nil {
		return o, err
	}
	if cfg.RateLimitPerPeer > 0 {
		o.Interceptors = append(o.Interceptors,
			grpcapi.PeerRateLimit(ratelimit.New(cfg.RateLimitPerPeer, cfg.RateLimitPeerBurst, ratelimit.DefaultMaxUsers), log))
	}
	if v.Enabled() {
		o.Interceptors = append(o.Interceptors, auth.UnaryServerInterceptor(v))
		o.Streams = append(o.Streams, auth.StreamServerInterceptor(v))
	} else {
		log.Warn("AUTH_MODE=none: every caller may act for any user; set AUTH_MODE=jwt in production")
	}
	if cfg.RateLimitPerUser > 0 {
		o.Interceptors = append(o.Interceptors,
			grpcapi.RateLimit(ratelimit.New(cfg.RateLimitPerUser, cfg.RateLimitBurst, ratelimit.DefaultMaxUsers), log))
	}
	if cfg.TLSCertFile != "" {
		tc, err := tlsconfig.ServerConfig(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile)
		if err != nil {
			return o, err
		}
		o.ServerOptions = append(o.ServerOptions, grpc.Creds(credentials.NewTLS(tc)))
	} else {
		log.Warn("gRPC is served in plaintext; set GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE to serve TLS")
	}
	return o, nil
}

// writeWelcome tells a person at a terminal where the service listens and
// how to try it: the README's walk-through with the real addresses.
func writeWelcome(w io.Writer, cfg config, grpcAddr, httpAddr net.Addr) {
	grpcPort := grpcAddr.(*net.TCPAddr).Port
	httpPort := httpAddr.(*net.TCPAddr).Port
	brokers := strings.Join(cfg.Kafka.Brokers, ",")
	kafkaNote := ""
	if cfg.EmbeddedKafka {
		kafkaNote = " (embedded)"
	}
	fmt.Fprintf(w, `
orders-service is running (-dev)
  gRPC      localhost:%[1]d   orders.v1.OrderService, health, reflection
  HTTP      localhost:%[2]d   /metrics /healthz /readyz
  Kafka     %[3]s%[4]s   topics %[5]s, %[6]s
  Database  %[7]s

Try it:
  grpcurl -plaintext -d '{"user_id":"alice","amount":1250}' localhost:%[1]d orders.v1.OrderService/CreateOrder
  grpcurl -plaintext -d '{"order_id":"<id from above>"}' localhost:%[1]d orders.v1.OrderService/GetOrderStatus
  kcat -b %[8]s -C -t %[5]s -f '%%k %%h\n%%s\n\n'

`, grpcPort, httpPort, brokers, kafkaNote, cfg.KafkaTopic, cfg.KafkaInboxTopic, settings.RedactDSN(cfg.PostgresDSN), cfg.Kafka.Brokers[0])
}
