package telemetry

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness check. A failing Required check makes the service
// not ready; an optional one (Kafka: orders are still accepted while it is
// down) only shows in the /readyz body.
type Check struct {
	Name     string
	Required bool
	Run      func(ctx context.Context) error
}

// Readiness runs checks periodically and remembers the outcome, so /readyz
// and the gRPC health service answer without touching dependencies.
// /readyz shows each check as "ok" or "unavailable" only: the raw errors
// name hosts, users and databases, so they go to Log, once per change.
type Readiness struct {
	Log *slog.Logger // where check errors are logged; nil discards them

	checks []Check

	mu     sync.RWMutex
	ready  bool
	status map[string]string
	errs   map[string]string // last error of each failing check
}

// NewReadiness returns a Readiness that is not ready until its first run.
func NewReadiness(checks ...Check) *Readiness {
	return &Readiness{checks: checks, status: map[string]string{}, errs: map[string]string{}}
}

// Update runs every check once (each bounded by timeout) and reports
// whether the service is ready.
func (r *Readiness) Update(ctx context.Context, timeout time.Duration) bool {
	status := make(map[string]string, len(r.checks))
	errs := make(map[string]string, len(r.checks))
	ready := true
	for _, c := range r.checks {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := c.Run(cctx)
		cancel()
		if err != nil {
			status[c.Name] = "unavailable"
			errs[c.Name] = err.Error()
			ready = ready && !c.Required
			continue
		}
		status[c.Name] = "ok"
	}
	r.mu.Lock()
	prev := r.errs
	r.ready, r.status, r.errs = ready, status, errs
	r.mu.Unlock()
	if r.Log != nil {
		for _, c := range r.checks {
			switch err, was := errs[c.Name], prev[c.Name]; {
			case err != "" && err != was:
				r.Log.WarnContext(ctx, "readiness check failed", "check", c.Name, "required", c.Required, "error", err)
			case err == "" && was != "":
				r.Log.InfoContext(ctx, "readiness check ok again", "check", c.Name)
			}
		}
	}
	return ready
}

// Run updates the readiness every interval until ctx ends, calling
// onChange with each new value (and once at the start).
func (r *Readiness) Run(ctx context.Context, interval time.Duration, onChange func(ready bool)) {
	prev, first := false, true
	for {
		ready := r.Update(ctx, interval)
		if first || ready != prev {
			onChange(ready)
			prev, first = ready, false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// Ready reports the last outcome and the status of each check.
func (r *Readiness) Ready() (bool, map[string]string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.ready, r.status
}

// Handler serves /metrics from reg, /healthz (the process answers) and
// /readyz (200 when ready, else 503; the body lists every check as "ok" or
// "unavailable").
func Handler(reg *prometheus.Registry, r *Readiness) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ready, checks := r.Ready()
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(struct {
			Ready  bool              `json:"ready"`
			Checks map[string]string `json:"checks"`
		}{ready, checks})
	})
	return mux
}
