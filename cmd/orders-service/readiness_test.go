package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/internal/tcpproxy"
	"github.com/acme/orders-service/postgres/pgtest"
	"github.com/acme/orders-service/telemetry"
)

// readyBody is the JSON of /readyz.
type readyBody struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

// readyz runs r's checks once and asks its /readyz.
func readyz(t *testing.T, r *telemetry.Readiness) (int, readyBody) {
	t.Helper()
	r.Update(context.Background(), 2*time.Second)
	rec := httptest.NewRecorder()
	telemetry.Handler(prometheus.NewRegistry(), r).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var body readyBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("/readyz body %q: %v", rec.Body, err)
	}
	return rec.Code, body
}

func kafkaOK(context.Context) error { return nil }

// proxiedDSN starts a TCP proxy in front of dsn's server and returns the DSN
// through it.
func proxiedDSN(t *testing.T, dsn string) (string, *tcpproxy.Proxy) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	u.Host = p.Addr()
	return u.String(), p
}

func TestReadinessWaitsForMigrations(t *testing.T) {
	db := pgtest.Open(t, pgtest.NewEmptyDSN(t))
	r := telemetry.NewReadiness(readinessChecks(db, kafkaOK)...)

	code, body := readyz(t, r)
	if code != http.StatusServiceUnavailable || body.Ready || body.Checks["migrations"] != "unavailable" {
		t.Fatalf("unmigrated database: /readyz %d %+v, want 503 naming migrations", code, body)
	}
	if body.Checks["postgres"] != "ok" {
		t.Errorf("postgres check = %q, want ok", body.Checks["postgres"])
	}
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body = readyz(t, r); code != http.StatusOK || !body.Ready || body.Checks["migrations"] != "ok" {
		t.Fatalf("migrated database: /readyz %d %+v, want 200", code, body)
	}
}

func TestReadinessFollowsPostgresOutage(t *testing.T) {
	dsn, proxy := proxiedDSN(t, pgtest.NewEmptyDSN(t))
	db := pgtest.Open(t, dsn)
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := telemetry.NewReadiness(readinessChecks(db, kafkaOK)...)
	if code, body := readyz(t, r); code != http.StatusOK {
		t.Fatalf("before the outage: /readyz %d %+v, want 200", code, body)
	}

	proxy.SetCut(true)
	code, body := readyz(t, r)
	if code != http.StatusServiceUnavailable || body.Ready || body.Checks["postgres"] != "unavailable" {
		t.Fatalf("PostgreSQL cut off: /readyz %d %+v, want 503 with postgres unavailable", code, body)
	}

	if body.Checks["migrations"] != "unavailable" {
		t.Errorf("migrations check while PostgreSQL is cut off = %q, want unavailable (unknown)", body.Checks["migrations"])
	}

	proxy.SetCut(false)
	// The pool may hand out a connection the cut broke before it notices.
	poll.Eventually(t, 5*time.Second, "ready again after the restore", func() bool {
		code, _ := readyz(t, r)
		return code == http.StatusOK
	})
	if _, body := readyz(t, r); body.Checks["postgres"] != "ok" || body.Checks["migrations"] != "ok" {
		t.Fatalf("after the restore: %+v", body)
	}
}

// TestReadinessIgnoresKafkaOutageButShowsIt runs on an embedded broker in
// both modes: the test stops it.
func TestReadinessIgnoresKafkaOutageButShowsIt(t *testing.T) {
	db := pgtest.NewDB(t)
	broker := startBroker(t, "127.0.0.1:0")
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	r := telemetry.NewReadiness(readinessChecks(db, cl.Ping)...)
	if code, body := readyz(t, r); code != http.StatusOK || body.Checks["kafka"] != "ok" {
		t.Fatalf("Kafka up: /readyz %d %+v, want 200 with kafka ok", code, body)
	}

	broker.Close()
	code, body := readyz(t, r)
	if code != http.StatusOK || !body.Ready || body.Checks["kafka"] != "unavailable" {
		t.Fatalf("Kafka down: /readyz %d %+v, want 200 with kafka unavailable", code, body)
	}
}

// TestReadinessSnapshotAgreesWithItself: one readiness round never shows
// PostgreSQL ok and migrations unavailable on a migrated database, however
// the connection comes and goes during the round (the migrations check
// reports what the postgres check's round trip found, it does not ask
// again).
func TestReadinessSnapshotAgreesWithItself(t *testing.T) {
	dsn, proxy := proxiedDSN(t, pgtest.NewEmptyDSN(t))
	db := pgtest.Open(t, dsn)
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := telemetry.NewReadiness(readinessChecks(db, kafkaOK)...)
	stop := make(chan struct{})
	toggled := make(chan struct{})
	go func() { // cuts the connection for a millisecond every 30ms or so
		defer close(toggled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				proxy.SetCut(false)
				return
			case <-tick.C:
			}
			switch i % 30 {
			case 0:
				proxy.SetCut(true)
			case 1:
				proxy.SetCut(false)
			}
		}
	}()
	deadline := time.Now().Add(3 * time.Second)
	rounds, cut := 0, 0
	for time.Now().Before(deadline) || (rounds == cut || cut == 0) && time.Now().Before(deadline.Add(20*time.Second)) {
		r.Update(context.Background(), time.Second)
		_, checks := r.Ready()
		rounds++
		if checks["postgres"] != "ok" {
			cut++
		}
		if checks["postgres"] == "ok" && checks["migrations"] != "ok" {
			close(stop)
			<-toggled
			t.Fatalf("round %d: postgres ok but migrations %s on a migrated database", rounds, checks["migrations"])
		}
	}
	close(stop)
	<-toggled
	t.Logf("%d rounds, %d with PostgreSQL cut off", rounds, cut)
	if cut == 0 || cut == rounds {
		t.Fatalf("%d rounds, %d with PostgreSQL cut off: the test needs both", rounds, cut)
	}
}

// TestInstanceHealthFollowsPostgresOutage runs a whole instance whose
// PostgreSQL is behind a proxy: while it is cut off, /readyz answers 503 and
// the order service's gRPC health is NOT_SERVING, while the server's overall
// health ("") stays SERVING; both come back after the restore.
func TestInstanceHealthFollowsPostgresOutage(t *testing.T) {
	dsn, proxy := proxiedDSN(t, pgtest.NewEmptyDSN(t))
	env := newKafka(t).env(dsn)
	env["READINESS_INTERVAL"] = "200ms"
	in := startInstance(t, nil, env)
	conn, err := grpc.NewClient(in.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hc := healthpb.NewHealthClient(conn)
	healthOf := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health of %q: %v", service, err)
		}
		return resp.GetStatus()
	}
	readyzOf := func() (int, readyBody) {
		t.Helper()
		resp, err := http.Get("http://" + in.httpAddr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body readyBody
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	const svc = "orders.v1.OrderService"
	// Polled, not asserted once: with checks bounded by 200ms a slow
	// machine may see a check time out now and then.
	serving := func() bool {
		code, _ := readyzOf()
		return code == http.StatusOK && healthOf(svc) == healthpb.HealthCheckResponse_SERVING
	}
	poll.Eventually(t, 5*time.Second, "SERVING before the outage", serving)

	proxy.SetCut(true)
	poll.Eventually(t, 5*time.Second, "NOT_SERVING while PostgreSQL is cut off", func() bool {
		return healthOf(svc) == healthpb.HealthCheckResponse_NOT_SERVING
	})
	code, body := readyzOf()
	if code != http.StatusServiceUnavailable || body.Checks["postgres"] != "unavailable" {
		t.Errorf("/readyz while cut off = %d %+v, want 503 with postgres unavailable", code, body)
	}
	if st := healthOf(""); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("overall health while cut off = %v, want SERVING (the process is alive)", st)
	}

	proxy.SetCut(false)
	poll.Eventually(t, 5*time.Second, "SERVING and /readyz 200 after the restore", serving)
	if st := healthOf(""); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("overall health after the restore = %v, want SERVING", st)
	}
}

// TestHealthcheckNeedsThePort: with HTTP_PORT=0 the healthcheck subcommand
// cannot know the server's port and says so, instead of asking port 0.
func TestHealthcheckNeedsThePort(t *testing.T) {
	err := run(context.Background(), []string{"healthcheck"}, envOf(map[string]string{"HTTP_PORT": "0"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "HTTP_PORT=0") {
		t.Fatalf("healthcheck with HTTP_PORT=0: %v, want an error naming HTTP_PORT=0", err)
	}
}

// TestHTTPHostBindsTheSidePort: HTTP_HOST chooses the address of the
// metrics and health port (default: every interface); HTTP_PORT stays its
// port, and the healthcheck subcommand asks that address.
func TestHTTPHostBindsTheSidePort(t *testing.T) {
	c, err := loadConfig(envOf(nil))
	if err != nil || c.httpAddr() != ":8080" || c.healthcheckAddr() != "127.0.0.1:8080" {
		t.Fatalf("default: listen %q, healthcheck %q (%v), want :8080 and 127.0.0.1:8080", c.httpAddr(), c.healthcheckAddr(), err)
	}
	for host, want := range map[string][2]string{
		"127.0.0.1": {"127.0.0.1:8080", "127.0.0.1:8080"},
		"::1":       {"[::1]:8080", "[::1]:8080"},
		"0.0.0.0":   {"0.0.0.0:8080", "127.0.0.1:8080"},
		"::":        {"[::]:8080", "127.0.0.1:8080"},
		"pod.local": {"pod.local:8080", "pod.local:8080"},
	} {
		c, err := loadConfig(envOf(map[string]string{"HTTP_HOST": host}))
		if err != nil || c.httpAddr() != want[0] || c.healthcheckAddr() != want[1] {
			t.Errorf("HTTP_HOST=%s: listen %q, healthcheck %q (%v), want %q", host, c.httpAddr(), c.healthcheckAddr(), err, want)
		}
	}

	dsn := pgtest.NewEmptyDSN(t)
	broker := startBroker(t, "127.0.0.1:0")
	in := startInstance(t, nil, map[string]string{"POSTGRES_DSN": dsn, "KAFKA_BROKER": broker.Addr(), "HTTP_HOST": "127.0.0.1"})
	if want := regexp.MustCompile(`"msg":"HTTP server listening","addr":"127\.0\.0\.1:[1-9][0-9]*"`); !want.MatchString(in.logs.String()) {
		t.Fatalf("log lacks %s:\n%s", want, in.logs)
	}
}

// TestReadinessRecoversAfterAParkedRow: a broker's MESSAGE_TOO_LARGE is an
// answer about one record, not Kafka being unavailable. With an oversize row
// parked and nothing else to send, /readyz shows kafka ok again within the
// produce-health window, although no record is acknowledged after it.
// Embedded broker in both modes: the test needs a topic with a small
// max.message.bytes.
func TestReadinessRecoversAfterAParkedRow(t *testing.T) {
	const small = "orders.small"
	broker := startBroker(t, "127.0.0.1:0")
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	maxBytes := "2000"
	if _, err := adm.CreateTopic(context.Background(), 1, -1, map[string]*string{"max.message.bytes": &maxBytes}, small); err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.NewEmptyDSN(t)
	env := map[string]string{"POSTGRES_DSN": dsn, "KAFKA_BROKER": broker.Addr(), "READINESS_INTERVAL": "200ms"}
	in := startInstance(t, nil, env)
	db := pgtest.Open(t, dsn)
	var id int64
	if err := db.Pool.QueryRow(context.Background(), `
		INSERT INTO outbox (event_id, event_type, topic, key, headers, payload)
		VALUES (gen_random_uuid(), 'test', $1, 'order-big', '[]', $2) RETURNING id`,
		small, bytes.Repeat([]byte("x"), 5000)).Scan(&id); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, "the oversize row parked", func() bool {
		var parked bool
		db.Pool.QueryRow(context.Background(), `SELECT parked_at IS NOT NULL FROM outbox WHERE id = $1`, id).Scan(&parked)
		return parked
	})
	kafkaCheck := func() string {
		resp, err := http.Get("http://" + in.httpAddr + "/readyz")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		var body readyBody
		json.NewDecoder(resp.Body).Decode(&body)
		return body.Checks["kafka"]
	}
	// /readyz answers from the latest check (every 200ms): only an answer
	// from well after the row was parked counts. The window is
	// kafka.ProduceHealth's default Stall (10s).
	parked := time.Now()
	poll.Eventually(t, 10*time.Second, "kafka ok on /readyz after the parked row", func() bool {
		return time.Since(parked) > time.Second && kafkaCheck() == "ok"
	})
	t.Logf("kafka ok %v after the row was parked", time.Since(parked).Round(time.Millisecond))
}

// TestStartWaitsForPostgres: a replica started while PostgreSQL is down
// (a cut proxy) does not exit: it is alive (/healthz 200) and not ready
// (/readyz 503) during the outage, logs one line for its kind of failure,
// and becomes ready without a restart once PostgreSQL is back 5s later.
func TestStartWaitsForPostgres(t *testing.T) {
	dsn, proxy := proxiedDSN(t, pgtest.NewEmptyDSN(t))
	proxy.SetCut(true)
	env := newKafka(t).env(dsn)
	env["READINESS_INTERVAL"] = "200ms"
	start := time.Now()
	in := launchInstance(t, nil, env)
	status := func(path string) int {
		resp, err := http.Get("http://" + in.httpAddr + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for time.Since(start) < 5*time.Second {
		in.exited()
		if h, r := status("/healthz"), status("/readyz"); h != http.StatusOK || r != http.StatusServiceUnavailable {
			t.Fatalf("PostgreSQL down %v after the start: /healthz %d, /readyz %d; want 200 and 503", time.Since(start).Round(time.Millisecond), h, r)
		}
		time.Sleep(200 * time.Millisecond) // observing the outage, not waiting for an event
	}
	proxy.SetCut(false)
	restored := time.Now()
	poll.Eventually(t, 30*time.Second, "ready after PostgreSQL is back", func() bool {
		in.exited()
		return status("/readyz") == http.StatusOK
	})
	t.Logf("ready %v after PostgreSQL was back", time.Since(restored).Round(time.Millisecond))
	in.connect(t)
	if n := strings.Count(in.logs.String(), `"msg":"PostgreSQL not reachable yet; waiting"`); n != 1 {
		t.Errorf("%d waiting lines for one kind of failure, want 1\n%s", n, in.logs)
	}
	if _, err := in.client.CreateOrder(context.Background(), &orderspb.CreateOrderRequest{UserId: "late", Amount: 1}); err != nil {
		t.Errorf("CreateOrder after the wait: %v", err)
	}
}

// TestStartFailureKinds: at start the service waits out what a database
// outage looks like (refused or dropped connections, 57P03 "the database
// system is starting up", too many connections) and stops at once on what
// waiting cannot fix (wrong password, missing database).
func TestStartFailureKinds(t *testing.T) {
	for _, tc := range []struct {
		err       error
		transient bool
	}{
		{fmt.Errorf("connect: %w", syscall.ECONNREFUSED), true},
		{fmt.Errorf("connect: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("connect: %w", &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}), true},
		{&pgconn.PgError{Code: "53300"}, true},
		{&pgconn.PgError{Code: "08006"}, true},
		{fmt.Errorf("connect: %w", context.DeadlineExceeded), true},
		{&pgconn.PgError{Code: "28P01", Message: "password authentication failed"}, false},
		{&pgconn.PgError{Code: "3D000", Message: "database does not exist"}, false},
		{errors.New("migration 00009: syntax error"), false},
	} {
		if kind, transient := startFailure(tc.err); transient != tc.transient {
			t.Errorf("%v: transient %v (%q), want %v", tc.err, transient, kind, tc.transient)
		}
	}
}
