package telemetry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestReadyzHidesErrorDetails: /readyz answers a short status per check;
// the raw errors, which name hosts, users and databases, go to the log only.
func TestReadyzHidesErrorDetails(t *testing.T) {
	raw := errors.New(`failed to connect to "host=10.9.8.7 user=orders_admin database=orders_prod": dial tcp 10.9.8.7:5432: i/o timeout`)
	var logs bytes.Buffer
	r := NewReadiness(
		Check{Name: "postgres", Required: true, Run: func(context.Context) error { return raw }},
		Check{Name: "kafka", Run: func(context.Context) error { return errors.New("kafka-0.internal:9092: connection refused") }},
		Check{Name: "migrations", Required: true, Run: func(context.Context) error { return nil }},
	)
	r.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	if r.Update(context.Background(), time.Second) {
		t.Fatal("ready with a required check failing")
	}
	srv := httptest.NewServer(Handler(prometheus.NewRegistry(), r))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `{"ready":false,"checks":{"kafka":"unavailable","migrations":"ok","postgres":"unavailable"}}`
	if resp.StatusCode != http.StatusServiceUnavailable || strings.TrimSpace(string(body)) != want {
		t.Errorf("/readyz = %d %s, want 503 %s", resp.StatusCode, body, want)
	}
	for _, secret := range []string{"10.9.8.7", "orders_admin", "orders_prod", "kafka-0.internal"} {
		if strings.Contains(string(body), secret) {
			t.Errorf("/readyz body tells %q: %s", secret, body)
		}
		if !strings.Contains(logs.String(), secret) {
			t.Errorf("the log lacks %q of the raw error: %s", secret, logs.String())
		}
	}
	// The same errors again are not logged again.
	n := logs.Len()
	r.Update(context.Background(), time.Second)
	if logs.Len() != n {
		t.Errorf("an unchanged failure was logged again: %s", logs.String()[n:])
	}
}
