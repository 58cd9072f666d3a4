package deploy_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/outbox"
	"github.com/acme/orders-service/telemetry"
)

// TestCountersEndInTotal: Prometheus names counters *_total; a counter
// without it reads as a gauge to people and to tools (rate() on it is right,
// but nothing tells you so).
func TestCountersEndInTotal(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := outbox.NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := inbox.NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), "postgres://127.0.0.1:1/none") // never connects
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	telemetry.RegisterPool(reg, pool)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var counters int
	for _, mf := range mfs {
		if mf.GetType() != dto.MetricType_COUNTER {
			continue
		}
		counters++
		if !strings.HasSuffix(mf.GetName(), "_total") {
			t.Errorf("counter %s does not end in _total", mf.GetName())
		}
	}
	if counters == 0 {
		t.Fatal("no counters gathered")
	}
}

// TestDashboardAsksForDataSource: Grafana's import dialog asks for a data
// source only for the file's __inputs; the datasource variable starts at
// the chosen one.
func TestDashboardAsksForDataSource(t *testing.T) {
	for path := range loadDashboards(t) {
		var db struct {
			Inputs []struct {
				Name     string `json:"name"`
				Type     string `json:"type"`
				PluginID string `json:"pluginId"`
			} `json:"__inputs"`
			Templating struct {
				List []struct {
					Name    string `json:"name"`
					Current struct {
						Value any `json:"value"`
					} `json:"current"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(readFile(t, path), &db); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		i := slices.IndexFunc(db.Inputs, func(in struct {
			Name     string `json:"name"`
			Type     string `json:"type"`
			PluginID string `json:"pluginId"`
		}) bool {
			return in.Type == "datasource" && in.PluginID == "prometheus"
		})
		if i < 0 {
			t.Errorf("%s: no __inputs entry for a Prometheus data source", path)
			continue
		}
		want := "${" + db.Inputs[i].Name + "}"
		for _, v := range db.Templating.List {
			if v.Name == "datasource" && v.Current.Value != want {
				t.Errorf("%s: the datasource variable starts at %v, want %s (the data source chosen on import)", path, v.Current.Value, want)
			}
		}
	}
}
