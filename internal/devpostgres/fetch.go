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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Version is the PostgreSQL version embedded; the same major version CI
// installs from Debian, so query plans and behaviour match.
const Version = "15.13.0"

// MavenCentral is where embedded-postgres downloads its binaries from.
const MavenCentral = "https://repo1.maven.org/maven2"

const mavenGroup = "io.zonky.test.postgres"

// artifact is the Maven artifact holding the PostgreSQL binaries for this
// platform, named as embedded-postgres names it.
func artifact(goos, goarch string) string {
	if goos == "linux" && goarch == "arm64" || goos == "darwin" && goarch == "arm64" {
		goarch = "arm64v8"
	}
	return "embedded-postgres-binaries-" + goos + "-" + goarch
}

// archivePath is where embedded-postgres looks for the binaries in its cache
// (its defaultCacheLocator): <cache>/<artifact>-<version>.txz.
func archivePath(cacheDir string) string {
	return filepath.Join(cacheDir, artifact(runtime.GOOS, runtime.GOARCH)+"-"+Version+".txz")
}

// ensureArchive puts the PostgreSQL binaries archive into cacheDir unless it
// is there already: downloaded from repoURL, or where that is refused,
// fetched by Maven (which may go through a mirror or proxy of its own).
// It reports how it got the archive ("" when it was cached).
func ensureArchive(ctx context.Context, cacheDir, repoURL string) (string, error) {
	dst := archivePath(cacheDir)
	if _, err := os.Stat(dst); err == nil {
		return "", nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create cache folder: %w", err)
	}
	jarURL := fmt.Sprintf("%s/%s/%s/%s/%s-%s.jar", strings.TrimSuffix(repoURL, "/"),
		strings.ReplaceAll(mavenGroup, ".", "/"), artifact(runtime.GOOS, runtime.GOARCH), Version, artifact(runtime.GOOS, runtime.GOARCH), Version)
	jar, directErr := download(ctx, jarURL)
	how := "downloaded " + jarURL
	if directErr != nil {
		var mavenErr error
		jar, mavenErr = mavenFetch(ctx)
		if mavenErr != nil {
			return "", fmt.Errorf("get PostgreSQL %s binaries: download: %w; maven: %w", Version, directErr, mavenErr)
		}
		how = "fetched with Maven (download: " + directErr.Error() + ")"
	}
	if err := extractArchive(jar, dst); err != nil {
		return "", err
	}
	return how, nil
}

// download fetches a jar and checks it against the .sha256 file beside it.
func download(ctx context.Context, jarURL string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	get := func(u string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	jar, err := get(jarURL)
	if err != nil {
		return nil, err
	}
	sum, err := get(jarURL + ".sha256")
	if err != nil {
		return nil, fmt.Errorf("checksum: %w", err)
	}
	got := sha256.Sum256(jar)
	if want := strings.TrimSpace(string(sum)); hex.EncodeToString(got[:]) != want {
		return nil, fmt.Errorf("%s: sha256 %x, want %s", jarURL, got, want)
	}
	return jar, nil
}

// mavenFetch copies the artifact out of Maven's repository (downloading it
// into ~/.m2 first when needed) and returns the jar.
func mavenFetch(ctx context.Context) ([]byte, error) {
	if _, err := exec.LookPath("mvn"); err != nil {
		return nil, errors.New("mvn is not installed")
	}
	dir, err := os.MkdirTemp("", "devpostgres-mvn-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	coords := mavenGroup + ":" + artifact(runtime.GOOS, runtime.GOARCH) + ":" + Version + ":jar"
	cmd := exec.CommandContext(ctx, "mvn", "-B", "-q", "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
		"-Dartifact="+coords, "-DoutputDirectory="+dir, "-Dmdep.stripVersion=false")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("mvn dependency:copy %s: %w: %s", coords, err, lastLines(out.String(), 3))
	}
	return os.ReadFile(filepath.Join(dir, artifact(runtime.GOOS, runtime.GOARCH)+"-"+Version+".jar"))
}

// extractArchive writes the .txz inside jar to dst atomically.
func extractArchive(jar []byte, dst string) error {
	zr, err := zip.NewReader(bytes.NewReader(jar), int64(len(jar)))
	if err != nil {
		return fmt.Errorf("open PostgreSQL binaries jar: %w", err)
	}
	for _, f := range zr.File {
		if !strings.HasSuffix(f.Name, ".txz") {
			continue
		}
		r, err := f.Open()
		if err != nil {
			return fmt.Errorf("read %s from jar: %w", f.Name, err)
		}
		defer r.Close()
		tmp, err := os.CreateTemp(filepath.Dir(dst), ".archive-")
		if err != nil {
			return fmt.Errorf("cache PostgreSQL binaries: %w", err)
		}
		defer os.Remove(tmp.Name())
		if _, err := io.Copy(tmp, r); err != nil {
			tmp.Close()
			return fmt.Errorf("cache PostgreSQL binaries: %w", err)
		}
		if err := tmp.Close(); err != nil {
			return fmt.Errorf("cache PostgreSQL binaries: %w", err)
		}
		if err := os.Chmod(tmp.Name(), 0o644); err != nil {
			return err
		}
		return os.Rename(tmp.Name(), dst)
	}
	return errors.New("PostgreSQL binaries jar holds no .txz archive")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
