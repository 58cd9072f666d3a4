package inbox

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the inbox's Prometheus metrics, shared by the Consumer and
// the Processor.
type Metrics struct {
	Received    prometheus.Counter // records polled from Kafka
	Duplicates  prometheus.Counter // records already in the inbox
	Processed   prometheus.Counter // messages applied (or found to be no-ops)
	Dead        prometheus.Counter // messages dead-lettered
	Unprocessed prometheus.Gauge   // pending messages, a bounded count refreshed every few seconds
}

// NewMetrics creates the inbox metrics and registers them on reg; with a nil
// reg they are created but not registered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := newMetrics()
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.Received, m.Duplicates, m.Processed, m.Dead, m.Unprocessed} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register inbox metrics: %w", err)
		}
	}
	return m, nil
}

func newMetrics() *Metrics {
	return &Metrics{
		Received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orders_inbox_received_total",
			Help: "Records received from the inbox topic, duplicates included.",
		}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orders_inbox_duplicates_total",
			Help: "Received records whose message id was already in the inbox.",
		}),
		Processed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orders_inbox_processed_total",
			Help: "Inbox messages applied to their order, no-ops included.",
		}),
		Dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orders_inbox_dead_total",
			Help: "Inbox messages marked dead and copied to the dead-letter topic.",
		}),
		Unprocessed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orders_inbox_unprocessed",
			Help: "Inbox messages neither processed nor dead (counted up to a bound).",
		}),
	}
}
