package kafkatest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var clusterScript = filepath.Join("..", "..", "scripts", "kafka-cluster.sh")

// clusterEnv runs the script on run folder dir with a java that fails at
// once, so no command can start a node: what the script does before that
// is all a test sees.
func clusterEnv(t *testing.T, dir string) []string {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "java"), []byte("#!/bin/sh\necho fake java >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	libs := t.TempDir()
	os.WriteFile(filepath.Join(libs, ".complete"), nil, 0o644)
	return append(os.Environ(), "KAFKA_CLUSTER_DIR="+dir, "KAFKA_LIBS_DIR="+libs,
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "KAFKA_CLUSTER_PORT=29092")
}

func runScript(env []string, args ...string) (string, error) {
	cmd := exec.Command(clusterScript, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestClusterScriptRefusesPlantedSymlink: a run folder that is a symlink
// (planted in a shared /tmp by another user) is refused by every command,
// and down deletes nothing through it.
func TestClusterScriptRefusesPlantedSymlink(t *testing.T) {
	victim := t.TempDir()
	keep := filepath.Join(victim, "precious")
	if err := os.WriteFile(keep, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "orders-service-kafka")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	env := clusterEnv(t, link)
	for _, cmd := range [][]string{{"up"}, {"down"}, {"stop", "1"}, {"kill", "2"}, {"start", "3"}, {"status"}} {
		out, err := runScript(env, cmd...)
		if err == nil || !strings.Contains(out, "symlink") {
			t.Errorf("%v on a symlinked run folder: err=%v, want a refusal naming the symlink; output:\n%s", cmd, err, out)
		}
		if b, err := os.ReadFile(keep); err != nil || string(b) != "keep me" {
			t.Fatalf("after %v the symlink's target lost its file: %q, %v", cmd, b, err)
		}
		if ents, _ := os.ReadDir(victim); len(ents) != 1 {
			t.Errorf("after %v the symlink's target holds %d entries, want only its own file", cmd, len(ents))
		}
	}
}

// TestClusterScriptRunFolderPrivate: up creates the run folder 0700, and the
// secure listener's keys and SCRAM password are readable by their owner
// only; a run folder owned by another user is refused.
func TestClusterScriptRunFolderPrivate(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is needed")
		}
		t.Skip("no openssl")
	}
	dir := filepath.Join(t.TempDir(), "run")
	env := append(clusterEnv(t, dir), "KAFKA_CLUSTER_SECURE=true")
	out, err := runScript(env, "up")
	if err == nil || !strings.Contains(out, "fake java") {
		t.Fatalf("up with a failing java: err=%v, want it to stop at java; output:\n%s", err, out)
	}
	mode := func(p string) os.FileMode {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	if m := mode(dir); m != 0o700 {
		t.Errorf("run folder mode %o, want 700", m)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "pki"))
	if len(ents) == 0 {
		t.Fatalf("no PKI in %s/pki; output:\n%s", dir, out)
	}
	for _, e := range ents {
		if m := mode(filepath.Join(dir, "pki", e.Name())); m&0o077 != 0 {
			t.Errorf("pki/%s mode %o: readable by others", e.Name(), m)
		}
	}

	if os.Geteuid() != 0 {
		return // only root can give a folder to another user
	}
	other := filepath.Join(t.TempDir(), "other")
	os.Mkdir(other, 0o700)
	os.WriteFile(filepath.Join(other, "precious"), []byte("keep me"), 0o600)
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	env = clusterEnv(t, other)
	for _, cmd := range [][]string{{"up"}, {"down"}} {
		out, err := runScript(env, cmd...)
		if err == nil || !strings.Contains(out, "owned by") {
			t.Errorf("%v on a run folder owned by uid 65534: err=%v, want a refusal; output:\n%s", cmd, err, out)
		}
		if b, err := os.ReadFile(filepath.Join(other, "precious")); err != nil || string(b) != "keep me" {
			t.Fatalf("after %v the other user's folder lost its file: %v", cmd, err)
		}
	}
}

// TestNodePIDChecksCommandLine: a pid file naming a process that is not
// that node's Kafka (here: this test) yields no pid, so nothing is signalled.
func TestNodePIDChecksCommandLine(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "node1"), 0o700)
	os.WriteFile(filepath.Join(dir, "node1", "kafka.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	if pid := NodePID(dir, 1); pid != 0 {
		t.Errorf("NodePID = %d for a pid file naming the test itself, want 0", pid)
	}
	// A process whose command line is node 1's Kafka is found.
	cmd := exec.Command("sh", "-c", "sleep 30; exit 0", "kafka.Kafka", filepath.Join(dir, "node1", "server.properties"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	os.WriteFile(filepath.Join(dir, "node1", "kafka.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600)
	if pid := NodePID(dir, 1); pid != cmd.Process.Pid {
		t.Errorf("NodePID = %d, want %d (its command line runs node 1)", pid, cmd.Process.Pid)
	}
	if pid := NodePID(dir, 2); pid != 0 {
		t.Errorf("NodePID of node 2 = %d, want 0 (no pid file)", pid)
	}
}
