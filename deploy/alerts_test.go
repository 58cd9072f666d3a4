package deploy_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/acme/orders-service/telemetry"
)

const alertsFile = "deploy/prometheus/alerts.yaml"

// externalMetrics are the series alerts may use besides the service's own:
// kube-state-metrics' Deployment replicas and Prometheus's up.
var externalMetrics = []string{"kube_deployment_status_replicas_available", "kube_deployment_spec_replicas", "up"}

// grpcMetrics are the gRPC server metric families the service registers
// (telemetry.NewGRPCMetrics), from their descriptors.
func grpcMetrics(t *testing.T) []string {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := telemetry.NewGRPCMetrics(reg)
	ch := make(chan *prometheus.Desc, 32)
	go func() { m.Describe(ch); close(ch) }()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	var names []string
	for d := range ch {
		if sm := fqName.FindStringSubmatch(d.String()); sm != nil {
			names = append(names, sm[1])
		}
	}
	if !slices.Contains(names, "grpc_server_handled_total") {
		t.Fatalf("gRPC metrics %v lack grpc_server_handled_total", names)
	}
	return names
}

// loadRules parses rel with Prometheus's rule-file parser (what promtool
// check rules runs): unknown fields, bad durations, duplicate names and
// expressions that do not parse are errors.
func loadRules(t *testing.T, rel string) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.ParseFile(filepath.Join(moduleRoot(t), rel), false, model.UTF8Validation,
		parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%s: %v", rel, err)
	}
	if groups == nil || len(groups.Groups) == 0 {
		t.Fatalf("%s: no rule groups", rel)
	}
	return groups
}

// TestAlertRulesParse: the rules file is valid for Prometheus, and every
// series an alert selects is one the service exports (or a listed external
// one), so a renamed metric cannot leave an alert that never fires.
func TestAlertRulesParse(t *testing.T) {
	groups := loadRules(t, alertsFile)
	known := slices.Concat(serviceMetrics, grpcMetrics(t), externalMetrics)
	p := parser.NewParser(parser.Options{})
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("%s: rule %q is not an alert", alertsFile, r.Record)
				continue
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: %s: severity %q, want warning or critical", alertsFile, r.Alert, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: %s has no summary", alertsFile, r.Alert)
			}
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: %s: %v", alertsFile, r.Alert, err)
				continue
			}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok && !slices.Contains(known, metricFamily(vs.Name)) {
					t.Errorf("%s: %s selects %s, which nothing exports", alertsFile, r.Alert, vs.Name)
				}
				return nil
			})
		}
	}
}

// TestPrometheusRuleMatchesRulesFile: the Operator's PrometheusRule carries
// exactly the rules file's groups.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	var file, cr struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Groups any `yaml:"groups"`
		} `yaml:"spec"`
		Groups any `yaml:"groups"`
	}
	decodeYAML(t, alertsFile, &file)
	decodeYAML(t, "deploy/k8s/monitoring/prometheusrule.yaml", &cr)
	if cr.Kind != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml: kind %q", cr.Kind)
	}
	if file.Groups == nil || !reflect.DeepEqual(file.Groups, cr.Spec.Groups) {
		t.Error("deploy/k8s/monitoring/prometheusrule.yaml's spec.groups differ from " + alertsFile + ": copy them over")
	}
}

// TestAlertTableMatchesRules: docs/operations.md's alert table shows every
// rule, with its expression, for and severity, and no other.
func TestAlertTableMatchesRules(t *testing.T) {
	type row struct{ expr, forDur, severity string }
	doc := string(readFile(t, "docs/operations.md"))
	start := strings.Index(doc, "\n## Alerts\n")
	if start < 0 {
		t.Fatal("docs/operations.md has no ## Alerts section")
	}
	section, _, _ := strings.Cut(doc[start+1:], "\n## Runbooks")
	table := map[string]row{}
	cell := regexp.MustCompile(`^\x60(.*)\x60$`)
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| Orders") {
			continue
		}
		// Split on unescaped pipes; \| in a cell is a literal |.
		cells := strings.Split(strings.ReplaceAll(line, `\|`, "\x00"), "|")
		if len(cells) < 6 {
			t.Errorf("alert table row %q: want 5 columns", line)
			continue
		}
		get := func(i int) string {
			c := strings.ReplaceAll(strings.TrimSpace(cells[i]), "\x00", "|")
			if m := cell.FindStringSubmatch(c); m != nil {
				c = m[1]
			}
			return c
		}
		forDur := get(3)
		if forDur == "—" {
			forDur = "0s"
		}
		table[get(1)] = row{get(2), forDur, get(4)}
	}
	rules := map[string]row{}
	for _, g := range loadRules(t, alertsFile).Groups {
		for _, r := range g.Rules {
			rules[r.Alert] = row{r.Expr, time.Duration(r.For).String(), r.Labels["severity"]}
		}
	}
	for name, want := range rules {
		got, ok := table[name]
		if !ok {
			t.Errorf("docs/operations.md's alert table lacks %s", name)
			continue
		}
		if got.forDur != "0s" {
			if d, err := model.ParseDuration(got.forDur); err == nil {
				got.forDur = time.Duration(d).String()
			}
		}
		if got != want {
			t.Errorf("docs/operations.md's %s = %+v, %s has %+v", name, got, alertsFile, want)
		}
	}
	for name := range table {
		if _, ok := rules[name]; !ok {
			t.Errorf("docs/operations.md's alert table has %s, which %s lacks", name, alertsFile)
		}
	}
}

// TestMonitoringKustomization: deploy/k8s/monitoring lists its files, and
// the PodMonitor scrapes the Deployment's pods on the port serving /metrics
// with the job the alerts expect.
func TestMonitoringKustomization(t *testing.T) {
	var k struct {
		Resources []string `yaml:"resources"`
	}
	decodeYAML(t, "deploy/k8s/monitoring/kustomization.yaml", &k)
	if !slices.Equal(k.Resources, []string{"podmonitor.yaml", "prometheusrule.yaml"}) {
		t.Errorf("monitoring kustomization resources %v", k.Resources)
	}
	var pm struct {
		Kind string `yaml:"kind"`
		Spec struct {
			JobLabel string `yaml:"jobLabel"`
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Endpoints []struct {
				Port string `yaml:"port"`
				Path string `yaml:"path"`
			} `yaml:"podMetricsEndpoints"`
		} `yaml:"spec"`
	}
	decodeYAML(t, "deploy/k8s/monitoring/podmonitor.yaml", &pm)
	var d struct {
		Spec struct {
			Template struct {
				Metadata struct {
					Labels map[string]string `yaml:"labels"`
				} `yaml:"metadata"`
				Spec struct {
					Containers []struct {
						Ports []struct {
							Name          string `yaml:"name"`
							ContainerPort int    `yaml:"containerPort"`
						} `yaml:"ports"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	decodeYAML(t, "deploy/k8s/deployment.yaml", &d)
	var cm configMap
	decodeYAML(t, "deploy/k8s/configmap.yaml", &cm)
	labels := d.Spec.Template.Metadata.Labels
	if pm.Kind != "PodMonitor" || len(pm.Spec.Selector.MatchLabels) == 0 {
		t.Fatalf("podmonitor.yaml: kind %q, selector %v", pm.Kind, pm.Spec.Selector.MatchLabels)
	}
	for k, v := range pm.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("PodMonitor selects %s=%s; the pods have %v", k, v, labels)
		}
	}
	if labels[pm.Spec.JobLabel] != "orders-service" {
		t.Errorf("PodMonitor jobLabel %q gives job %q, want orders-service (OrdersScrapeDown)", pm.Spec.JobLabel, labels[pm.Spec.JobLabel])
	}
	if len(pm.Spec.Endpoints) != 1 || pm.Spec.Endpoints[0].Path != "/metrics" {
		t.Fatalf("PodMonitor endpoints %+v, want one on /metrics", pm.Spec.Endpoints)
	}
	var port int
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		if p.Name == pm.Spec.Endpoints[0].Port {
			port = p.ContainerPort
		}
	}
	if want := cm.Data["HTTP_PORT"]; want == "" || port == 0 || want != strconv.Itoa(port) {
		t.Errorf("PodMonitor scrapes port %q (%d), HTTP_PORT is %q", pm.Spec.Endpoints[0].Port, port, want)
	}
}

// TestComposeMonitoringProfile checks the monitoring profile statically (no
// Docker here): the files it mounts exist, Prometheus scrapes the service's
// HTTP_PORT as job orders-service and loads the rules file, and Grafana gets
// that Prometheus as data source and the repository's dashboards.
func TestComposeMonitoringProfile(t *testing.T) {
	type service struct {
		Profiles    []string          `yaml:"profiles"`
		Command     []string          `yaml:"command"`
		Volumes     []string          `yaml:"volumes"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
	}
	var f struct {
		Services map[string]service `yaml:"services"`
	}
	decodeYAML(t, "deploy/compose.yaml", &f)
	root := moduleRoot(t)
	// mounts maps each container path of svc to its repository path.
	mounts := func(name string) map[string]string {
		svc, ok := f.Services[name]
		if !ok {
			t.Fatalf("compose.yaml has no %s service", name)
		}
		if !slices.Equal(svc.Profiles, []string{"monitoring"}) {
			t.Errorf("%s: profiles %v, want [monitoring] (off by default)", name, svc.Profiles)
		}
		m := map[string]string{}
		for _, v := range svc.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 || !strings.HasPrefix(parts[0], ".") {
				t.Errorf("%s: volume %q is not a repository path", name, v)
				continue
			}
			rel := filepath.ToSlash(filepath.Join("deploy", parts[0]))
			if _, err := os.Stat(filepath.Join(root, rel)); err != nil {
				t.Errorf("%s: volume %q: %v", name, v, err)
			}
			m[parts[1]] = rel
		}
		return m
	}

	prom := mounts("prometheus")
	var cfgPath string
	for _, c := range f.Services["prometheus"].Command {
		if v, ok := strings.CutPrefix(c, "--config.file="); ok {
			cfgPath = v
		}
	}
	cfgFile, ok := prom[cfgPath]
	if !ok {
		t.Fatalf("prometheus: --config.file=%q is not mounted", cfgPath)
	}
	var cfg struct {
		Global        map[string]string `yaml:"global"`
		RuleFiles     []string          `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, cfgFile)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("%s: %v", cfgFile, err)
	}
	if len(cfg.RuleFiles) != 1 || prom[cfg.RuleFiles[0]] != alertsFile {
		t.Errorf("%s: rule_files %v, want the mount of %s", cfgFile, cfg.RuleFiles, alertsFile)
	}
	var orders composeService
	node := composeServiceNode(t, "orders-service")
	if err := node.Decode(&orders); err != nil {
		t.Fatal(err)
	}
	target := "orders-service:" + environment(t, orders.Environment)["HTTP_PORT"]
	if len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].JobName != "orders-service" || cfg.ScrapeConfigs[0].MetricsPath != "/metrics" ||
		len(cfg.ScrapeConfigs[0].StaticConfigs) != 1 || !slices.Equal(cfg.ScrapeConfigs[0].StaticConfigs[0].Targets, []string{target}) {
		t.Errorf("%s: scrape_configs %+v, want job orders-service scraping %s/metrics", cfgFile, cfg.ScrapeConfigs, target)
	}

	graf := mounts("grafana")
	prov, ok := graf["/etc/grafana/provisioning"]
	if !ok {
		t.Fatal("grafana: /etc/grafana/provisioning is not mounted")
	}
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Type      string `yaml:"type"`
			URL       string `yaml:"url"`
			IsDefault bool   `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	decodeYAML(t, prov+"/datasources/prometheus.yaml", &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" ||
		ds.Datasources[0].URL != "http://prometheus:9090" || !ds.Datasources[0].IsDefault {
		t.Errorf("grafana data sources %+v, want the compose Prometheus as the default", ds)
	}
	var dp struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeYAML(t, prov+"/dashboards/orders-service.yaml", &dp)
	if dp.APIVersion != 1 || len(dp.Providers) != 1 || dp.Providers[0].Type != "file" || graf[dp.Providers[0].Options.Path] != "dashboards" {
		t.Errorf("grafana dashboard provider %+v, want a file provider over the mount of dashboards/", dp)
	}
}

func composeServiceNode(t *testing.T, name string) yaml.Node {
	t.Helper()
	var f composeFile
	decodeYAML(t, "deploy/compose.yaml", &f)
	n, ok := f.Services[name]
	if !ok {
		t.Fatalf("compose.yaml has no %s service", name)
	}
	return n
}
