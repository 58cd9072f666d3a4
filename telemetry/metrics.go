// Package telemetry holds what lets an operator see into the service: the
// Prometheus registry and collectors, the HTTP side port (/metrics, /healthz,
// /readyz), readiness checks and OpenTelemetry tracing.
package telemetry

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/acme/orders-service/internal/buildinfo"
)

// LatencyBuckets suit latencies measured in milliseconds up to seconds.
var LatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// RegisterPool exports pgxpool statistics as orders_pgxpool_*; they are read
// from the pool's counters at scrape time, without touching the database.
func RegisterPool(reg prometheus.Registerer, pool *pgxpool.Pool) {
	reg.MustRegister(poolCollector{pool})
}

type poolCollector struct{ pool *pgxpool.Pool }

var (
	poolAcquired     = prometheus.NewDesc("orders_pgxpool_acquired_conns", "Connections currently in use.", nil, nil)
	poolIdle         = prometheus.NewDesc("orders_pgxpool_idle_conns", "Idle connections.", nil, nil)
	poolTotal        = prometheus.NewDesc("orders_pgxpool_total_conns", "All connections in the pool.", nil, nil)
	poolMax          = prometheus.NewDesc("orders_pgxpool_max_conns", "Maximum size of the pool.", nil, nil)
	poolAcquires     = prometheus.NewDesc("orders_pgxpool_acquire_total", "Successful connection acquisitions.", nil, nil)
	poolEmptyAcquire = prometheus.NewDesc("orders_pgxpool_empty_acquire_total", "Acquisitions that had to wait for a connection.", nil, nil)
	poolAcquireTime  = prometheus.NewDesc("orders_pgxpool_acquire_duration_seconds_total", "Total time spent acquiring connections.", nil, nil)
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolAcquired, poolIdle, poolTotal, poolMax, poolAcquires, poolEmptyAcquire, poolAcquireTime} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(poolAcquired, prometheus.GaugeValue, float64(s.AcquiredConns()))
	ch <- prometheus.MustNewConstMetric(poolIdle, prometheus.GaugeValue, float64(s.IdleConns()))
	ch <- prometheus.MustNewConstMetric(poolTotal, prometheus.GaugeValue, float64(s.TotalConns()))
	ch <- prometheus.MustNewConstMetric(poolMax, prometheus.GaugeValue, float64(s.MaxConns()))
	ch <- prometheus.MustNewConstMetric(poolAcquires, prometheus.CounterValue, float64(s.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolEmptyAcquire, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolAcquireTime, prometheus.CounterValue, s.AcquireDuration().Seconds())
}

// RegisterBuildInfo exports orders_build_info, always 1, labelled with the
// binary's version, VCS revision and Go version, so dashboards can show which
// build runs and when it changed.
func RegisterBuildInfo(reg prometheus.Registerer, bi buildinfo.Info) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "orders_build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "revision": bi.Revision, "goversion": bi.GoVersion},
	})
	g.Set(1)
	reg.MustRegister(g)
}
