package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
)

// proc is a child process of the benchmark.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// pid is the process's id, 0 for none.
func (p *proc) pid() int {
	if p == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// exited reports the process's exit when it has ended.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v (log: %s)", p.name, p.err, p.log)
	default:
		return nil
	}
}

// stop asks the process to shut down and kills it after a grace period.
func (p *proc) stop() {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// startProc runs bin with args and env, its stderr (and stdout unless
// stdout is given) going to a log file in dir.
func startProc(name, bin string, args, env []string, dir string, stdout io.Writer) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stderr = logFile
	cmd.Stdout = logFile
	if stdout != nil {
		cmd.Stdout = stdout
	}
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// buildBinaries builds orders-service and kfake-broker into dir.
func buildBinaries(ctx context.Context, dir string) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator), "./cmd/orders-service", "./cmd/kfake-broker")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w: %s", err, out)
	}
	return nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run ordersbench inside the orders-service module")
	}
	return filepath.Dir(mod), nil
}

// startBroker runs kfake-broker on a free loopback port and returns its
// address, the first line it prints.
func startBroker(bin, dir string, partitions int) (*proc, string, error) {
	return startBrokerAs("kfake-broker", bin, dir, "-addr", "127.0.0.1:0", "-partitions", strconv.Itoa(partitions))
}

// startBrokerAs runs kfake-broker with args, logging to name.log in dir, and
// returns its address, the first line it prints.
func startBrokerAs(name, bin, dir string, args ...string) (*proc, string, error) {
	pr, pw := io.Pipe()
	p, err := startProc(name, bin, args, baseEnv(), dir, pw)
	if err != nil {
		return nil, "", err
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, pr)
	}()
	select {
	case addr, ok := <-lines:
		if !ok || addr == "" {
			p.stop()
			return nil, "", fmt.Errorf("kfake-broker printed no address (log: %s)", p.log)
		}
		return p, addr, nil
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, "", fmt.Errorf("kfake-broker did not start (log: %s)", p.log)
	}
}

// baseEnv is the environment children start from: enough to run, nothing
// that configures the service behind the benchmark's back.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startService runs orders-service against dsn and the broker, waits until
// /readyz answers 200 and returns the process and its ports.
func startService(ctx context.Context, bin, dir, dsn, broker string, pprof bool, extraEnv []string, args ...string) (p *proc, grpcPort, httpPort int, err error) {
	name := "orders-service"
	if len(args) > 0 {
		name += "-soak"
	}
	return startServiceAs(ctx, name, bin, dir, dsn, broker, pprof, extraEnv, args...)
}

// startServiceAs is startService logging to name.log in dir.
func startServiceAs(ctx context.Context, name, bin, dir, dsn, broker string, pprof bool, extraEnv []string, args ...string) (p *proc, grpcPort, httpPort int, err error) {
	if grpcPort, err = freePort(); err != nil {
		return nil, 0, 0, err
	}
	if httpPort, err = freePort(); err != nil {
		return nil, 0, 0, err
	}
	env := append(baseEnv(),
		"POSTGRES_DSN="+dsn,
		"KAFKA_BROKER="+broker,
		"GRPC_PORT="+strconv.Itoa(grpcPort),
		"HTTP_PORT="+strconv.Itoa(httpPort),
		"LOG_LEVEL=warn",
		"HTTP_PPROF="+strconv.FormatBool(pprof),
		"AUTH_MODE=none", // required outside -dev; the benchmark measures the service without auth
	)
	env = append(env, extraEnv...)
	p, err = startProc(name, bin, args, env, dir, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := p.exited(); err != nil {
			return nil, 0, 0, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, readyz, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, grpcPort, httpPort, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, 0, 0, fmt.Errorf("orders-service not ready within 60s (log: %s)", p.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createDatabase creates a fresh database named ordersbench_<role>_<random>
// on the server of adminDSN, applies the migrations, and returns its DSN.
func createDatabase(ctx context.Context, adminDSN, role string) (string, error) {
	var rnd [4]byte
	rand.Read(rnd[:])
	name := "ordersbench_" + role + "_" + hex.EncodeToString(rnd[:])
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL (-postgres): %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(adminDSN)
	if err != nil {
		return "", fmt.Errorf("-postgres must be a URL: %w", err)
	}
	u.Path = "/" + name
	dsn := u.String()
	db, err := postgres.Open(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		return "", err
	}
	// WAL per operation is read with pg_walinspect (PostgreSQL 15+,
	// contrib); without it the benchmark falls back to the server's LSN.
	db.Pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_walinspect`)
	return dsn, nil
}

// dropDatabases drops the benchmark's databases.
func dropDatabases(adminDSN string, dsns []string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ordersbench: drop databases:", err)
		return
	}
	defer conn.Close(ctx)
	for _, dsn := range dsns {
		u, err := url.Parse(dsn)
		if err != nil {
			continue
		}
		name := strings.TrimPrefix(u.Path, "/")
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			fmt.Fprintln(os.Stderr, "ordersbench: drop database:", err)
		}
	}
}

// dial connects one gRPC client connection to the service.
func dial(port int) (*grpc.ClientConn, orderspb.OrderServiceClient, error) {
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return conn, orderspb.NewOrderServiceClient(conn), nil
}

// Machine describes where the benchmark ran, so runs can be compared.
type Machine struct {
	CPUModel            string            `json:"cpu_model"`
	Cores               int               `json:"cores"`
	MemoryBytes         int64             `json:"memory_bytes"`
	Kernel              string            `json:"kernel"`
	GoVersion           string            `json:"go_version"`
	GOMAXPROCS          int               `json:"gomaxprocs"`
	PostgresVersion     string            `json:"postgres_version"`
	PostgresSettings    map[string]string `json:"postgres_settings"`
	ServicePoolMaxConns int32             `json:"service_pool_max_conns"`
	Date                string            `json:"date"`
	LoadAvgStart        string            `json:"loadavg_start"`
	LoadAvgEnd          string            `json:"loadavg_end,omitempty"`
}

func describeMachine(ctx context.Context, db *postgres.DB) Machine {
	m := Machine{
		Cores:               runtime.NumCPU(),
		GoVersion:           runtime.Version(),
		GOMAXPROCS:          runtime.GOMAXPROCS(0),
		Date:                time.Now().UTC().Format(time.RFC3339),
		LoadAvgStart:        loadAvg(),
		ServicePoolMaxConns: db.Pool.Config().MaxConns,
		PostgresSettings:    map[string]string{},
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if f := strings.Fields(rest); len(f) == 2 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					m.MemoryBytes = kb * 1024
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	db.Pool.QueryRow(ctx, `SELECT version()`).Scan(&m.PostgresVersion)
	rows, err := db.Pool.Query(ctx, `
		SELECT name, current_setting(name) FROM pg_settings
		WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'max_connections', 'wal_level', 'work_mem',
			'random_page_cost', 'autovacuum', 'autovacuum_naptime', 'max_wal_size', 'checkpoint_timeout')`)
	if err == nil {
		for rows.Next() {
			var k, v string
			if rows.Scan(&k, &v) == nil {
				m.PostgresSettings[k] = v
			}
		}
		rows.Close()
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// kafkaConfig is the client configuration of the benchmark's own clients,
// the same as the service's apart from the client id.
func (b *bench) kafkaConfig() kafka.Config {
	return kafka.Config{Brokers: strings.Split(b.brokerAt, ","), ClientID: "ordersbench", Compression: b.compression}
}
