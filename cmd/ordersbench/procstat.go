package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
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

// postgresCPU returns the CPU seconds of every process named postgres, by pid.
func postgresCPU() map[int]float64 {
	out := map[int]float64{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		secs, comm, err := procCPU(pid)
		if err == nil && comm == "postgres" {
			out[pid] = secs
		}
	}
	return out
}

// machineBusy returns the busy and total CPU seconds of the whole machine
// from /proc/stat.
func machineBusy() (busy, total float64) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0
	}
	var idle float64
	for i, v := range fields[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		if i < 8 { // user nice system idle iowait irq softirq steal; guest is inside user
			total += n
		}
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return (total - idle) / clockTicks, total / clockTicks
}

// cpuSnap is the CPU time used so far by each party of the benchmark.
type cpuSnap struct {
	at                      time.Time
	service, broker, bench  float64
	postgres                map[int]float64
	machineBusy, machineAll float64
}

// CPUUse is how many cores each party used on average over a phase. Other
// is what the rest of the machine used (other helpers' tests, the kernel):
// when it is high, the phase's figures are noisy.
type CPUUse struct {
	Seconds  float64 `json:"seconds"`
	Service  float64 `json:"service_cores"`
	Broker   float64 `json:"broker_cores"`
	Postgres float64 `json:"postgres_cores"`
	Bench    float64 `json:"bench_cores"`
	Other    float64 `json:"other_cores"`
}

func (b *bench) cpuSnap() cpuSnap {
	s := cpuSnap{at: time.Now(), postgres: postgresCPU()}
	s.service, _, _ = procCPU(b.service.pid())
	for _, p := range b.replicas {
		secs, _, _ := procCPU(p.pid())
		s.service += secs
	}
	s.broker, _, _ = procCPU(b.broker.pid())
	s.bench, _, _ = procCPU(os.Getpid())
	s.machineBusy, s.machineAll = machineBusy()
	return s
}

// cpuSince returns the cores used by each party since s.
func (b *bench) cpuSince(s cpuSnap) CPUUse { return cpuBetween(s, b.cpuSnap()) }

// cpuBetween returns the cores used by each party from s to e.
func cpuBetween(s, e cpuSnap) CPUUse {
	wall := e.at.Sub(s.at).Seconds()
	if wall <= 0 {
		return CPUUse{}
	}
	var pg float64
	for pid, secs := range e.postgres {
		pg += secs - s.postgres[pid] // a new backend counts from zero
	}
	u := CPUUse{
		Seconds:  wall,
		Service:  (e.service - s.service) / wall,
		Broker:   (e.broker - s.broker) / wall,
		Postgres: pg / wall,
		Bench:    (e.bench - s.bench) / wall,
	}
	if e.machineAll > s.machineAll {
		u.Other = max(0, (e.machineBusy-s.machineBusy)/wall-u.Service-u.Broker-u.Postgres-u.Bench)
	}
	return u
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
