package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/internal/buildinfo"
	"github.com/acme/orders-service/internal/settings"
	"github.com/acme/orders-service/outbox"
	"github.com/acme/orders-service/telemetry"
)

// ordersServiceEnv is every environment variable orders-service reads, besides
// the OTEL_* family, and paymentsSimEnv every one payments-sim reads: the
// names of their tables of settings. Deployment files may pass no other.
var ordersServiceEnv, paymentsSimEnv = names(settings.All()), names(settings.PaymentsSim())

func names(ss []settings.Setting) []string {
	var names []string
	for _, s := range ss {
		names = append(names, s.Name)
	}
	return names
}

// composeOnlyVars are variables the compose file interpolates that are not
// passed through under their own name (POSTGRES_PASSWORD goes into the DSN).
var composeOnlyVars = []string{"POSTGRES_PASSWORD"}

// runtimeEnv are variables of the Go runtime the Deployment may set.
var runtimeEnv = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC"}

// serviceMetrics are the service's own metric families (orders_*, without
// the _bucket/_sum/_count suffixes of histograms), gathered from a registry
// holding what the service registers: the relay's, the inbox's, the
// PostgreSQL pool's and the build's metrics.
var serviceMetrics = func() []string {
	reg := prometheus.NewRegistry()
	if _, err := outbox.NewMetrics(reg); err != nil {
		panic(err)
	}
	if _, err := inbox.NewMetrics(reg); err != nil {
		panic(err)
	}
	pool, err := pgxpool.New(context.Background(), "postgres://127.0.0.1:1/none") // connects on first use only: never here
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	telemetry.RegisterPool(reg, pool)
	telemetry.RegisterBuildInfo(reg, buildinfo.Read())
	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	return names
}()

// TestServiceMetricsGathered guards the derived list: an empty one would let
// the dashboard and documentation checks pass on nothing.
func TestServiceMetricsGathered(t *testing.T) {
	for _, m := range []string{"orders_outbox_published_total", "orders_outbox_parked", "orders_inbox_dead_total", "orders_pgxpool_total_conns", "orders_build_info"} {
		if !slices.Contains(serviceMetrics, m) {
			t.Errorf("serviceMetrics %v lacks %s", serviceMetrics, m)
		}
	}
}

func knownServiceVar(name string) bool {
	return slices.Contains(ordersServiceEnv, name) || strings.HasPrefix(name, "OTEL_")
}

// moduleRoot is the nearest directory at or above the working directory that
// holds go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeYAML decodes the single-document YAML file rel into v.
func decodeYAML(t *testing.T, rel string, v any) {
	t.Helper()
	if err := yaml.Unmarshal(readFile(t, rel), v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

// yamlFiles lists the repository's *.yaml and *.yml files, relative to root,
// skipping .git, bin and vendor directories.
func yamlFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "vendor":
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(path); ext == ".yaml" || ext == ".yml" {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	return files, err
}

func TestYAMLFilesParse(t *testing.T) {
	root := moduleRoot(t)
	files, err := yamlFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"deploy/compose.yaml",
		"deploy/k8s/kustomization.yaml",
		"deploy/k8s/deployment.yaml",
		"deploy/k8s/service.yaml",
		"deploy/k8s/configmap.yaml",
		"deploy/k8s/pdb.yaml",
	} {
		if !slices.Contains(files, want) {
			t.Errorf("walk did not find %s (found %v)", want, files)
		}
	}
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for doc := 1; ; doc++ {
			var n yaml.Node
			err := dec.Decode(&n)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("%s, document %d: %v", rel, doc, err)
				break
			}
		}
	}
}

type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []templateVar `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type templateVar struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Query any    `json:"query"`
}

type dashboardPanel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func (d *datasource) isVariable() bool {
	return d != nil && d.Type == "prometheus" && d.UID == "${datasource}"
}

func loadDashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	root := moduleRoot(t)
	out := map[string]dashboard{}
	err := filepath.WalkDir(filepath.Join(root, "dashboards"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".json" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var db dashboard
		dec := json.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(&db); err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		if dec.More() {
			t.Errorf("%s: trailing data after the JSON value", path)
		}
		rel, _ := filepath.Rel(root, path)
		out[filepath.ToSlash(rel)] = db
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no dashboards/*.json found")
	}
	return out
}

func TestDashboardsParse(t *testing.T) {
	for path, db := range loadDashboards(t) {
		if db.UID == "" || db.Title == "" {
			t.Errorf("%s: uid %q, title %q: both are required", path, db.UID, db.Title)
		}
		hasDatasourceVar := slices.ContainsFunc(db.Templating.List, func(v templateVar) bool {
			return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
		})
		if !hasDatasourceVar {
			t.Errorf("%s: no Prometheus datasource variable named datasource", path)
		}
		ids := map[int]bool{}
		for _, p := range db.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d used twice", path, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			if !p.Datasource.isVariable() {
				t.Errorf("%s: panel %q does not use the ${datasource} variable", path, p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no queries", path, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" || !tg.Datasource.isVariable() {
					t.Errorf("%s: panel %q has a query without expr, refId or the ${datasource} variable", path, p.Title)
				}
			}
		}
	}
}

var metricName = regexp.MustCompile(`\borders_[a-z0-9_]+`)

// metricFamily strips the series suffixes Prometheus adds to histograms.
func metricFamily(series string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if fam, ok := strings.CutSuffix(series, suffix); ok && slices.Contains(serviceMetrics, fam) {
			return fam
		}
	}
	return series
}

func TestDashboardShowsEveryServiceMetric(t *testing.T) {
	db, ok := loadDashboards(t)["dashboards/orders-service.json"]
	if !ok {
		t.Fatal("dashboards/orders-service.json is missing")
	}
	used := map[string]bool{}
	for _, p := range db.Panels {
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				fam := metricFamily(m)
				if !slices.Contains(serviceMetrics, fam) {
					t.Errorf("panel %q queries unknown metric %s", p.Title, m)
				}
				used[fam] = true
			}
		}
	}
	for _, m := range serviceMetrics {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}

func TestOperationsDocMatchesConfigAndMetrics(t *testing.T) {
	doc := string(readFile(t, "docs/operations.md"))
	for _, name := range ordersServiceEnv {
		if !regexp.MustCompile(`\b` + name + `\b`).MatchString(doc) {
			t.Errorf("docs/operations.md does not describe %s", name)
		}
	}
	for _, m := range metricName.FindAllString(doc, -1) {
		if !slices.Contains(serviceMetrics, metricFamily(m)) {
			t.Errorf("docs/operations.md names unknown metric %s", m)
		}
	}
	for _, m := range serviceMetrics {
		if !strings.Contains(doc, m) {
			t.Errorf("docs/operations.md does not list metric %s", m)
		}
	}
}

// logicalLines joins backslash-continued lines.
func logicalLines(b []byte) []string {
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if s, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(s)
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(line)
		out = append(out, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// buildPatterns returns the package arguments ("./...") of the first
// `go build` command in line, and whether there is one.
func buildPatterns(line string) ([]string, bool) {
	_, after, ok := strings.Cut(line, "go build")
	if !ok {
		return nil, false
	}
	var pkgs []string
	for _, f := range strings.Fields(after) {
		if strings.HasPrefix(f, "./") {
			pkgs = append(pkgs, f)
		}
	}
	return pkgs, true
}

// covers reports whether the go package pattern includes pkg.
func covers(pattern, pkg string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
	}
	return pattern == pkg
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		pattern, pkg string
		want         bool
	}{
		{"./cmd/...", "./cmd/orders-service", true},
		{"./...", "./cmd/orders-service", true},
		{"./cmd/orders-service", "./cmd/orders-service", true},
		{"./cmd/payments-sim", "./cmd/orders-service", false},
		{"./cmd/orders/...", "./cmd/orders-service", false},
	} {
		if got := covers(tc.pattern, tc.pkg); got != tc.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tc.pattern, tc.pkg, got, tc.want)
		}
	}
}

func TestDockerfileBuildsOrdersService(t *testing.T) {
	var builds int
	var entrypoint, user string
	for _, line := range logicalLines(readFile(t, "Dockerfile")) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "RUN":
			pkgs, ok := buildPatterns(line)
			if !ok {
				continue
			}
			builds++
			for _, want := range []string{"./cmd/orders-service", "./cmd/payments-sim", "./cmd/ordersctl"} {
				if !slices.ContainsFunc(pkgs, func(p string) bool { return covers(p, want) }) {
					t.Errorf("Dockerfile go build %v does not build %s", pkgs, want)
				}
			}
			if !strings.Contains(line, "CGO_ENABLED=0") {
				t.Errorf("Dockerfile go build does not set CGO_ENABLED=0: the runtime image has no libc")
			}
		case "ENTRYPOINT":
			entrypoint = line
		case "USER":
			user = fields[len(fields)-1]
		}
	}
	if builds != 1 {
		t.Errorf("Dockerfile has %d go build commands, want 1", builds)
	}
	if !strings.Contains(entrypoint, `"/usr/local/bin/orders-service"`) {
		t.Errorf("Dockerfile ENTRYPOINT %q is not /usr/local/bin/orders-service", entrypoint)
	}
	if user != "nonroot" {
		t.Errorf("Dockerfile runs as %q, want nonroot", user)
	}
}

func TestMakefileBuildCoversOrdersService(t *testing.T) {
	var inBuild, found bool
	for _, line := range logicalLines(readFile(t, "Makefile")) {
		if !strings.HasPrefix(line, "\t") {
			inBuild = strings.HasPrefix(line, "build:")
			continue
		}
		if !inBuild {
			continue
		}
		pkgs, ok := buildPatterns(line)
		if !ok {
			continue
		}
		found = true
		if !slices.ContainsFunc(pkgs, func(p string) bool { return covers(p, "./cmd/orders-service") }) {
			t.Errorf("make build builds %v, which does not cover ./cmd/orders-service", pkgs)
		}
	}
	if !found {
		t.Error("the Makefile's build target runs no go build")
	}
}

type composeFile struct {
	Services map[string]yaml.Node `yaml:"services"`
}

type composeService struct {
	Environment yaml.Node `yaml:"environment"`
	Entrypoint  []string  `yaml:"entrypoint"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// environment returns a compose service's environment, given as a mapping or
// as a list of NAME=value / NAME entries.
func environment(t *testing.T, n yaml.Node) map[string]string {
	t.Helper()
	env := map[string]string{}
	switch n.Kind {
	case 0:
	case yaml.MappingNode:
		var m map[string]string
		if err := n.Decode(&m); err != nil {
			t.Fatal(err)
		}
		env = m
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			t.Fatal(err)
		}
		for _, kv := range l {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	default:
		t.Fatalf("line %d: environment is neither a mapping nor a list", n.Line)
	}
	return env
}

var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)|\$([A-Za-z_][A-Za-z0-9_]*)`)

// interpolated returns the variables compose substitutes into s.
func interpolated(s string) []string {
	var names []string
	for _, m := range interpolation.FindAllStringSubmatch(strings.ReplaceAll(s, "$$", ""), -1) {
		names = append(names, m[1]+m[2])
	}
	return names
}

func TestInterpolated(t *testing.T) {
	got := interpolated("a ${A} ${B:-x} ${C-y} $D $${E} $$F")
	if want := []string{"A", "B", "C", "D"}; !slices.Equal(got, want) {
		t.Errorf("interpolated = %v, want %v", got, want)
	}
}

func TestComposePassesOnlyKnownVariables(t *testing.T) {
	var f composeFile
	decodeYAML(t, "deploy/compose.yaml", &f)
	for _, tc := range []struct {
		service string
		known   func(string) bool
	}{
		{"orders-service", knownServiceVar},
		{"payments-sim", func(name string) bool { return slices.Contains(paymentsSimEnv, name) }},
	} {
		node, ok := f.Services[tc.service]
		if !ok {
			t.Errorf("compose has no %s service", tc.service)
			continue
		}
		var svc composeService
		if err := node.Decode(&svc); err != nil {
			t.Fatal(err)
		}
		env := environment(t, svc.Environment)
		if len(env) == 0 {
			t.Errorf("%s: no environment", tc.service)
		}
		for name := range env {
			if !tc.known(name) {
				t.Errorf("%s: environment variable %s is not one the binary reads", tc.service, name)
			}
		}
		text, err := yaml.Marshal(&node)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range interpolated(string(text)) {
			if !tc.known(name) && !slices.Contains(composeOnlyVars, name) {
				t.Errorf("%s: interpolates unknown variable ${%s}", tc.service, name)
			}
		}
	}

	var svc composeService
	orders, sim := f.Services["orders-service"], f.Services["payments-sim"]
	if err := orders.Decode(&svc); err != nil {
		t.Fatal(err)
	}
	if want := []string{"CMD", "/usr/local/bin/orders-service", "healthcheck"}; !slices.Equal(svc.Healthcheck.Test, want) {
		t.Errorf("orders-service healthcheck = %q, want %q (the image has no shell)", svc.Healthcheck.Test, want)
	}
	if err := sim.Decode(&svc); err != nil {
		t.Fatal(err)
	}
	if want := []string{"/usr/local/bin/payments-sim"}; !slices.Equal(svc.Entrypoint, want) {
		t.Errorf("payments-sim entrypoint = %q, want %q", svc.Entrypoint, want)
	}
}

type configMap struct {
	Kind string            `yaml:"kind"`
	Data map[string]string `yaml:"data"`
}

type probe struct {
	GRPC *struct {
		Port    int    `yaml:"port"`
		Service string `yaml:"service"`
	} `yaml:"grpc"`
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"` // a number or the container port's name
	} `yaml:"httpGet"`
}

type deployment struct {
	Kind string `yaml:"kind"`
	Spec struct {
		Replicas int `yaml:"replicas"`
		Template struct {
			Metadata struct {
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				Containers                    []struct {
					Name  string `yaml:"name"`
					Ports []struct {
						ContainerPort int `yaml:"containerPort"`
					} `yaml:"ports"`
					Env []struct {
						Name string `yaml:"name"`
					} `yaml:"env"`
					StartupProbe   probe `yaml:"startupProbe"`
					LivenessProbe  probe `yaml:"livenessProbe"`
					ReadinessProbe probe `yaml:"readinessProbe"`
					Lifecycle      struct {
						PreStop struct {
							Sleep struct {
								Seconds int `yaml:"seconds"`
							} `yaml:"sleep"`
						} `yaml:"preStop"`
					} `yaml:"lifecycle"`
					SecurityContext struct {
						ReadOnlyRootFilesystem bool `yaml:"readOnlyRootFilesystem"`
					} `yaml:"securityContext"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func TestKubernetesPassesOnlyKnownVariables(t *testing.T) {
	var cm configMap
	decodeYAML(t, "deploy/k8s/configmap.yaml", &cm)
	if cm.Kind != "ConfigMap" || len(cm.Data) == 0 {
		t.Fatalf("configmap.yaml: kind %q with %d keys", cm.Kind, len(cm.Data))
	}
	for name := range cm.Data {
		if !knownServiceVar(name) {
			t.Errorf("configmap.yaml: %s is not a variable orders-service reads", name)
		}
	}
	var d deployment
	decodeYAML(t, "deploy/k8s/deployment.yaml", &d)
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("deployment.yaml: %d containers, want 1", len(d.Spec.Template.Spec.Containers))
	}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if !knownServiceVar(e.Name) && !slices.Contains(runtimeEnv, e.Name) {
			t.Errorf("deployment.yaml: %s is not a variable orders-service reads", e.Name)
		}
	}
}

func TestDeploymentFitsConfig(t *testing.T) {
	var cm configMap
	decodeYAML(t, "deploy/k8s/configmap.yaml", &cm)
	var d deployment
	decodeYAML(t, "deploy/k8s/deployment.yaml", &d)
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("deployment.yaml: %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	if d.Spec.Replicas < 2 {
		t.Errorf("replicas = %d, want at least 2", d.Spec.Replicas)
	}
	shutdown, err := time.ParseDuration(cm.Data["SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("configmap SHUTDOWN_TIMEOUT: %v", err)
	}
	needed := shutdown + time.Duration(c.Lifecycle.PreStop.Sleep.Seconds)*time.Second
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= needed {
		t.Errorf("terminationGracePeriodSeconds %v does not exceed preStop sleep + SHUTDOWN_TIMEOUT = %v", grace, needed)
	}

	grpcPort, err := strconv.Atoi(cm.Data["GRPC_PORT"])
	if err != nil {
		t.Fatalf("configmap GRPC_PORT: %v", err)
	}
	httpPort, err := strconv.Atoi(cm.Data["HTTP_PORT"])
	if err != nil {
		t.Fatalf("configmap HTTP_PORT: %v", err)
	}
	var ports []int
	for _, p := range c.Ports {
		ports = append(ports, p.ContainerPort)
	}
	for _, want := range []int{grpcPort, httpPort} {
		if !slices.Contains(ports, want) {
			t.Errorf("container ports %v lack %d", ports, want)
		}
	}
	// Kubernetes gRPC probes speak plaintext only: with gRPC over TLS the
	// probes ask HTTP_PORT's /healthz (alive) and /readyz instead.
	tls := cm.Data["GRPC_TLS_CERT_FILE"] != ""
	for name, p := range map[string]probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		switch {
		case tls:
			want := map[string]string{"readiness": "/readyz"}[name]
			if want == "" {
				want = "/healthz" // a database outage must not restart every pod
			}
			if p.HTTPGet == nil || p.HTTPGet.Path != want || (p.HTTPGet.Port != "http" && p.HTTPGet.Port != httpPort) {
				t.Errorf("%s probe is not an HTTP probe of %s on HTTP_PORT %d (gRPC is served over TLS)", name, want, httpPort)
			}
		case p.GRPC == nil || p.GRPC.Port != grpcPort:
			t.Errorf("%s probe is not a gRPC probe on GRPC_PORT %d", name, grpcPort)
		}
	}
	if c.LivenessProbe.GRPC != nil && c.LivenessProbe.GRPC.Service != "" {
		t.Errorf("liveness probe checks %q: it must ask for the whole server, or a database outage restarts every pod", c.LivenessProbe.GRPC.Service)
	}
	if ann := d.Spec.Template.Metadata.Annotations; ann["prometheus.io/port"] != strconv.Itoa(httpPort) || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("prometheus annotations %v do not point at HTTP_PORT %d /metrics", ann, httpPort)
	}
	if !c.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("root filesystem is writable")
	}
}

func TestKustomizationResourcesExist(t *testing.T) {
	var k struct {
		Resources []string `yaml:"resources"`
	}
	decodeYAML(t, "deploy/k8s/kustomization.yaml", &k)
	if len(k.Resources) == 0 {
		t.Fatal("kustomization.yaml lists no resources")
	}
	dir := filepath.Join(moduleRoot(t), "deploy", "k8s")
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
			t.Errorf("kustomization resource %s: %v", r, err)
		}
	}
}

// TestDeploymentsSetAuthMode: outside -dev the service refuses to start
// without AUTH_MODE, so every deployment file sets it.
func TestDeploymentsSetAuthMode(t *testing.T) {
	var f composeFile
	decodeYAML(t, "deploy/compose.yaml", &f)
	var svc composeService
	node := f.Services["orders-service"]
	if err := node.Decode(&svc); err != nil {
		t.Fatal(err)
	}
	if v := environment(t, svc.Environment)["AUTH_MODE"]; v == "" {
		t.Error("compose.yaml: orders-service does not set AUTH_MODE")
	}
	var cm configMap
	decodeYAML(t, "deploy/k8s/configmap.yaml", &cm)
	if v := cm.Data["AUTH_MODE"]; v != "jwt" {
		t.Errorf("configmap.yaml: AUTH_MODE = %q, want jwt", v)
	}
}

// TestReadmeLayoutNamesEveryPackage keeps the README's Layout true: every
// directory holding Go code is named there (as "dir/"), and every directory
// it names exists.
func TestReadmeLayoutNamesEveryPackage(t *testing.T) {
	readme := string(readFile(t, "README.md"))
	start := strings.Index(readme, "## Layout\n")
	if start < 0 {
		t.Fatal("README.md has no ## Layout section")
	}
	layout, _, _ := strings.Cut(readme[start+len("## Layout\n"):], "\n## ")
	root := moduleRoot(t)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil || rel == "." {
			return err
		}
		if !strings.Contains(layout, filepath.ToSlash(rel)+"/") {
			t.Errorf("README.md's Layout does not name %s/", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range regexp.MustCompile(`(?m)^(\S.*?)\s{2,}`).FindAllStringSubmatch(layout, -1) {
		for _, name := range strings.Split(line[1], ", ") {
			dir, ok := strings.CutSuffix(name, "/")
			if !ok {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
				t.Errorf("README.md's Layout names %s/, which does not exist", dir)
			}
		}
	}
}
