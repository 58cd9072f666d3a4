package main

import (
	"math"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func hist(count uint64, buckets map[float64]uint64, bounds []float64) *dto.Histogram {
	h := &dto.Histogram{SampleCount: proto.Uint64(count)}
	for _, b := range bounds {
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(b), CumulativeCount: proto.Uint64(buckets[b])})
	}
	return h
}

func TestHistQuantileInterpolatesBucketDeltas(t *testing.T) {
	bounds := []float64{.001, .0025, .005, .01, .025}
	// Observations before the phase must not count.
	before := hist(1000, map[float64]uint64{.001: 0, .0025: 0, .005: 0, .01: 0, .025: 1000}, bounds)
	// During the phase: 50 at most 1ms, 40 in (1ms, 2.5ms], 10 in (5ms, 10ms].
	after := hist(1100, map[float64]uint64{.001: 50, .0025: 90, .005: 90, .01: 100, .025: 1100}, bounds)
	for q, want := range map[float64]float64{0.5: 1.0, 0.7: 1.75, 0.95: 7.5, 0.99: 9.5} {
		got, n := histQuantile(before, after, q)
		if n != 100 || math.Abs(got-want) > 1e-9 {
			t.Errorf("q%.2f = %v ms over %d observations, want %v over 100", q, got, n, want)
		}
	}
	if got, n := histQuantile(after, after, 0.5); n != 0 || !math.IsNaN(got) {
		t.Errorf("no observations: %v over %d, want NaN", got, n)
	}
	// Past the last finite bucket (as scraped, with a +Inf bucket): the
	// last finite bound, never +Inf, which the results file cannot hold.
	withInf := append(bounds, math.Inf(1))
	slow := hist(10, map[float64]uint64{.025: 2, math.Inf(1): 10}, withInf)
	if got, _ := histQuantile(hist(0, nil, withInf), slow, 0.5); got != 25 {
		t.Errorf("quantile in the +Inf bucket = %v ms, want the last finite bound, 25", got)
	}
}

func TestQuantileNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p50, p99 := quantile(d, 0.5), quantile(d, 0.99); p50 != 50 || p99 != 99 {
		t.Errorf("p50 = %v, p99 = %v; want 50 and 99", p50, p99)
	}
	if !math.IsNaN(quantile(nil, 0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
}

func TestBenchOrderIDIsPostgresMD5UUID(t *testing.T) {
	// SELECT md5('order1')::uuid, md5('order100000')::uuid
	for i, want := range map[int]string{1: "36525f49-498e-3554-68ca-6bb2d38ed573", 100000: "d795fedf-d6aa-753a-f5cb-8c89369d6f38"} {
		if got := benchOrderID(i); got != want {
			t.Errorf("benchOrderID(%d) = %s, want %s", i, got, want)
		}
	}
}

func TestFormatting(t *testing.T) {
	for n, want := range map[int]string{10_000: "10k", 1_000_000: "1M", 2_500: "2500", 500: "500"} {
		if got := human(n); got != want {
			t.Errorf("human(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -20000: "-20,000"} {
		if got := formatCount(n); got != want {
			t.Errorf("formatCount(%d) = %q, want %q", n, got, want)
		}
	}
}
