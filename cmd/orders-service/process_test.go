package main

// orders-service replicas run as processes of the built binary, so that
// tests can SIGKILL them by pid: the failover suite (kafkacluster) and the
// replica kill test on an embedded broker.

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/poll"
)

// binDir holds the orders-service binary, built on first use
// (serviceBinary) and deleted after the tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "orders-service-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// serviceBinary returns the orders-service binary, building it on the first
// call of the test run.
func serviceBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "orders-service")
	buildOnce.Do(func() {
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build orders-service: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// replica is one orders-service process.
type replica struct {
	name               string
	grpcAddr, httpAddr string
	client             orderspb.OrderServiceClient
	cmd                *exec.Cmd
	logPath            string
	exited             chan struct{}
}

// startReplica runs the orders-service binary with env (on top of settings
// for tests) and waits until /readyz answers 200. Like startInstance, the
// replica chooses its ports (read from its log) and is a static group member
// with an id of its own unless env sets KAFKA_GROUP_INSTANCE_ID.
func startReplica(t *testing.T, name string, env map[string]string) *replica {
	t.Helper()
	r := &replica{name: name, exited: make(chan struct{})}
	full := map[string]string{
		"AUTH_MODE": "none", "GRPC_PORT": "0", "HTTP_PORT": "0", "KAFKA_GROUP_INSTANCE_ID": uniqueInstanceID("replica"),
		"LOG_LEVEL": "info", "KAFKA_TOPIC_PARTITIONS": "6", "OUTBOX_POLL_INTERVAL": "100ms",
		"READINESS_INTERVAL": "1s", "SHUTDOWN_TIMEOUT": "20s",
	}
	for k, v := range env {
		full[k] = v
	}
	r.cmd = exec.Command(serviceBinary(t))
	r.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range full {
		r.cmd.Env = append(r.cmd.Env, k+"="+v)
	}
	r.logPath = filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout, r.cmd.Stderr = f, f
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); f.Close(); close(r.exited) }()
	t.Cleanup(func() {
		r.terminate(t)
		if t.Failed() {
			t.Logf("log of %s (last lines):\n%s", r.name, r.tail(40))
		}
	})
	exited := func() {
		select {
		case <-r.exited:
			t.Fatalf("%s exited while starting:\n%s", name, r.tail(20))
		default:
		}
	}
	r.grpcAddr, r.httpAddr = listenAddrs(t, r.log, exited)
	poll.Eventually(t, 60*time.Second, name+" ready", func() bool {
		exited()
		code, _ := r.readyz()
		return code == http.StatusOK
	})
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r.client = orderspb.NewOrderServiceClient(conn)
	return r
}

func (r *replica) readyz() (int, string) {
	resp, err := http.Get("http://" + r.httpAddr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
	}
	return resp.StatusCode, b.String()
}

func (r *replica) running() bool {
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

// kill SIGKILLs the replica by its pid and waits until it has exited.
func (r *replica) kill(t *testing.T) {
	t.Helper()
	if !r.running() {
		return
	}
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL %s (pid %d): %v", r.name, r.cmd.Process.Pid, err)
	}
	<-r.exited
}

// terminate SIGTERMs the replica and waits for it, SIGKILLing it after 60s
// (a relay holding records without an outcome may take ProduceTimeout plus
// ResolveTimeout, 40s, to let go).
func (r *replica) terminate(t *testing.T) {
	t.Helper()
	if !r.running() {
		return
	}
	start := time.Now()
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
		if d := time.Since(start); d > 25*time.Second {
			t.Logf("%s took %v to exit after SIGTERM", r.name, d.Round(time.Millisecond))
		}
	case <-time.After(60 * time.Second):
		t.Errorf("%s did not exit within 60s of SIGTERM", r.name)
		r.kill(t)
	}
}

// log returns the replica's log so far.
func (r *replica) log() string {
	b, _ := os.ReadFile(r.logPath)
	return string(b)
}

// tail returns the last n lines of the replica's log above INFO (the
// replicas log at INFO only for listenAddrs; every call is an INFO line).
func (r *replica) tail(n int) string {
	var lines []string
	for line := range strings.Lines(r.log()) {
		if !strings.Contains(line, `"level":"INFO"`) {
			lines = append(lines, strings.TrimRight(line, "\n"))
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
