package outbox

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the relay's Prometheus metrics.
type Metrics struct {
	published prometheus.Counter
	latency   prometheus.Histogram
	errors    prometheus.Counter
	unsent    prometheus.Gauge
	oldestAge prometheus.Gauge
	parked    prometheus.Counter
	parkedNow prometheus.Gauge

	heldPartitions prometheus.Gauge
}

// NewMetrics creates the relay's metrics and registers them on reg; with a
// nil reg they are created but not registered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := newMetrics()
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.published, m.latency, m.errors, m.unsent, m.oldestAge, m.parked, m.parkedNow, m.heldPartitions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register outbox metrics: %w", err)
		}
	}
	return m, nil
}

func newMetrics() *Metrics {
	return &Metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orders_outbox_published_total",
			Help: "Outbox rows acknowledged by Kafka and marked sent.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orders_outbox_publish_latency_seconds",
			Help:    "Time from an outbox row's commit to Kafka's acknowledgement of its record.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orders_outbox_publish_errors_total",
			Help: "Publishing batches that failed and left their rows unsent for a retry.",
		}),
		unsent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orders_outbox_unsent",
			Help: "Outbox rows not yet published (counted up to 100000, refreshed every few seconds).",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orders_outbox_oldest_unsent_age_seconds",
			Help: "Age of the oldest unsent outbox row, 0 when none (refreshed every few seconds).",
		}),
		parked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orders_outbox_parked_total",
			Help: "Outbox rows parked because Kafka will never accept them, or behind such a row of their key.",
		}),
		parkedNow: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orders_outbox_parked",
			Help: "Parked outbox rows waiting for a re-drive (counted up to 100000, refreshed every few seconds).",
		}),
		heldPartitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orders_outbox_held_partitions",
			Help: "Kafka partitions this relay holds back: their records failed or stayed unanswered while others were acknowledged; their rows wait until the partition has a leader that answers.",
		}),
	}
}
