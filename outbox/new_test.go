package outbox

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/acme/orders-service/postgres/pgtest"
)

// TestNewWithoutLoggerOrMetrics: a relay built with no Logger and no
// Metrics logs to slog.Default() and counts in unregistered metrics of its
// own, like the inbox's Consumer and Processor.
func TestNewWithoutLoggerOrMetrics(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	if _, err := db.Pool.Exec(ctx, `
		INSERT INTO outbox (event_id, event_type, topic, key, headers, payload)
		VALUES (gen_random_uuid(), 'test', 'orders.events', 'k', '[]', '\x7b7d')`); err != nil {
		t.Fatal(err)
	}
	w := New(Deps{Store: db}, Options{})
	if w.log == nil || w.m == nil {
		t.Fatalf("New left logger %v, metrics %v nil", w.log, w.m)
	}
	if err := w.refreshGauges(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(w.m.unsent); got != 1 {
		t.Errorf("orders_outbox_unsent = %v, want 1", got)
	}
	if w.cfg.BatchSize != 1000 || w.cfg.Retention <= 0 {
		t.Errorf("Options not defaulted: %+v", w.cfg)
	}
}
