package main

import (
	"math"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func TestKeyOrder(t *testing.T) {
	var o keyOrder
	for _, e := range []struct {
		key string
		seq int
	}{{"a", 0}, {"b", 0}, {"a", 1}, {"b", 2}, {"b", 1}, {"a", 1}, {"a", 2}, {"c", 0}} {
		o.add(e.key, e.seq)
	}
	got := o.result(10)
	want := orderResult{Keys: 3, KeysOutOfOrder: 1, Missing: 3, Duplicates: 1}
	if got != want {
		t.Fatalf("result = %+v, want %+v", got, want)
	}

	var inOrder keyOrder
	for k := range 3 {
		for s := range eventsPerKey {
			inOrder.add(string(rune('a'+k)), s)
		}
	}
	if got, want := inOrder.result(3*eventsPerKey), (orderResult{Keys: 3}); got != want {
		t.Fatalf("in order: result = %+v, want %+v", got, want)
	}
}

func histOf(bounds []float64, cum []uint64, count uint64, sum float64) *dto.Histogram {
	h := &dto.Histogram{SampleCount: &count, SampleSum: &sum}
	for i := range bounds {
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: &bounds[i], CumulativeCount: &cum[i]})
	}
	return h
}

func TestSumHistograms(t *testing.T) {
	bounds := []float64{0.001, 0.005, 0.025}
	a := histOf(bounds, []uint64{1, 5, 9}, 10, 0.1)
	b := histOf(bounds, []uint64{0, 2, 3}, 4, 0.05)
	s, err := sumHistograms([]*dto.Histogram{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if s.GetSampleCount() != 14 || math.Abs(s.GetSampleSum()-0.15) > 1e-12 {
		t.Fatalf("count %d sum %g, want 14 and 0.15", s.GetSampleCount(), s.GetSampleSum())
	}
	for i, want := range []uint64{1, 7, 12} {
		if got := s.GetBucket()[i].GetCumulativeCount(); got != want || s.GetBucket()[i].GetUpperBound() != bounds[i] {
			t.Fatalf("bucket %d: %d ≤ %g, want %d ≤ %g", i, got, s.GetBucket()[i].GetUpperBound(), want, bounds[i])
		}
	}
	if a.GetBucket()[1].GetCumulativeCount() != 5 {
		t.Fatal("sumHistograms changed its input")
	}
	other := histOf([]float64{0.001, 0.01, 0.025}, []uint64{1, 2, 3}, 3, 0)
	if _, err := sumHistograms([]*dto.Histogram{a, other}); err == nil || !strings.Contains(err.Error(), "bounds differ") {
		t.Fatalf("different bounds: err = %v", err)
	}
	if _, err := sumHistograms([]*dto.Histogram{a, histOf(bounds[:2], []uint64{1, 2}, 2, 0)}); err == nil {
		t.Fatal("different bucket counts: no error")
	}
}

const pgbenchOutput = `pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: createorder.pgbench
scaling factor: 1
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 2 s
number of transactions actually processed: 934
number of failed transactions: 0 (0.000%)
latency average = 4.223 ms
initial connection time = 31.160 ms
tps = 473.637557 (without initial connection time)
`

func TestParsePgbench(t *testing.T) {
	var r PgbenchResult
	if err := parsePgbench([]byte(pgbenchOutput), &r); err != nil {
		t.Fatal(err)
	}
	if r.Throughput != 473.637557 || r.Transactions != 934 || r.LatencyAvg != 4.223 {
		t.Fatalf("parsed %+v", r)
	}
	failed := strings.Replace(pgbenchOutput, "failed transactions: 0 (0.000%)", "failed transactions: 3 (0.321%)", 1)
	if err := parsePgbench([]byte(failed), &r); err == nil || !strings.Contains(err.Error(), "3 failed") {
		t.Fatalf("failed transactions: err = %v", err)
	}
	noTPS := strings.Replace(pgbenchOutput, "tps = 473.637557 (without initial connection time)", "", 1)
	if err := parsePgbench([]byte(noTPS), &r); err == nil {
		t.Fatal("no tps: no error")
	}
}

func TestLibpqDSN(t *testing.T) {
	got, err := libpqDSN("postgres://postgres@127.0.0.1:5432/db?pool_max_conns=8&sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	if want := "postgres://postgres@127.0.0.1:5432/db?sslmode=disable"; got != want {
		t.Fatalf("libpqDSN = %q, want %q", got, want)
	}
}
