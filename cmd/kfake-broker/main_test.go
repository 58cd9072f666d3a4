package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
)

// TestMain lets the test binary stand in for the command, so the tests run
// the broker as a real process without building it first.
func TestMain(m *testing.M) {
	if os.Getenv("KFAKE_BROKER_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startProcess runs the command with args and returns its printed address.
func startProcess(t *testing.T, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "KFAKE_BROKER_TEST_MAIN=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
	}()
	select {
	case addr, ok := <-line:
		if !ok {
			t.Fatal("broker exited without printing its address")
		}
		return cmd, addr
	case <-time.After(10 * time.Second):
		t.Fatal("broker printed no address within 10s")
	}
	return nil, ""
}

// stopProcess sends SIGTERM and expects a clean exit.
func stopProcess(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("broker exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("broker did not stop within 10s of SIGTERM")
	}
}

func TestBrokerProcessServesAndPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cmd, addr := startProcess(t, "-addr", "127.0.0.1:0", "-data-dir", dir, "-partitions", "3")

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cfg := kafka.Config{Brokers: []string{addr}}
	cl, err := kafka.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.EnsureTopics(ctx, cl, -1, -1, "demo"); err != nil {
		t.Fatalf("EnsureTopics: %v", err)
	}
	// The client may answer from metadata cached before the topic existed:
	// wait for the created topic to show.
	var n int
	poll.Eventually(t, 10*time.Second, "demo listed with its partitions", func() bool {
		topics, err := kadm.NewClient(cl).ListTopics(ctx, "demo")
		if err != nil {
			t.Fatalf("ListTopics: %v", err)
		}
		n = len(topics["demo"].Partitions)
		return n > 0
	})
	if n != 3 {
		t.Fatalf("demo has %d partitions, want the -partitions value 3", n)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "demo", Value: []byte("kept")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	cl.Close()
	stopProcess(t, cmd)

	cmd, again := startProcess(t, "-addr", addr, "-data-dir", dir)
	if again != addr {
		t.Fatalf("restarted broker printed %q, want %q", again, addr)
	}
	consumer, err := kafka.NewClient(cfg, kgo.ConsumeTopics("demo"))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	fs := consumer.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		t.Fatalf("poll: %v", err)
	}
	if recs := fs.Records(); len(recs) != 1 || string(recs[0].Value) != "kept" {
		t.Fatalf("after restart got %d records, want the one record %q", len(recs), "kept")
	}
	stopProcess(t, cmd)
}

func TestBrokerProcessRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-partitions", "-1"}, {"extra"}, {"-nope"}} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
	}
}
