package kafkatest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// NodePID is the pid of node n (1-3) of the cluster scripts/kafka-cluster.sh
// runs in dir, or 0 when it is stopped. Like the script, it trusts the pid
// file only when that process's command line ends in the node's
// "kafka.Kafka <dir>/nodeN/server.properties": a stale file, or one someone
// else rewrote, never gets an unrelated process signalled.
func NodePID(dir string, n int) int {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0
	}
	node := filepath.Join(abs, fmt.Sprintf("node%d", n))
	b, err := os.ReadFile(filepath.Join(node, "kafka.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0
	}
	args := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
	if len(args) < 2 || args[len(args)-2] != "kafka.Kafka" || args[len(args)-1] != filepath.Join(node, "server.properties") {
		return 0
	}
	return pid
}
