package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/acme/orders-service/telemetry"
)

func TestPprofServedOnlyWhenEnabled(t *testing.T) {
	reg := telemetry.NewRegistry()
	ready := telemetry.NewReadiness()
	get := func(h http.Handler, path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	plain := telemetry.Handler(reg, ready)
	if code := get(plain, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("without HTTP_PPROF: /debug/pprof/ = %d, want 404", code)
	}
	profiled := withPprof(plain)
	for path, want := range map[string]int{"/debug/pprof/": 200, "/debug/pprof/goroutine?debug=1": 200, "/healthz": 200, "/metrics": 200} {
		if code := get(profiled, path); code != want {
			t.Errorf("with HTTP_PPROF: %s = %d, want %d", path, code, want)
		}
	}
}
