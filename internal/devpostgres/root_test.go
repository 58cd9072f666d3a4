package devpostgres

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rootCache is a cache folder for a start as root: its parents open to
// nobody, holding a copy of the cached binaries archive (fetched into
// DefaultCacheDir when missing), so no test downloads twice, and with
// withBinaries a copy of their extraction.
func rootCache(t *testing.T, withBinaries bool) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CI runs as root)")
	}
	src, err := DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ensureArchive(context.Background(), src, MavenCentral); err != nil {
		t.Fatalf("the embedded PostgreSQL binaries: %v", err)
	}
	srcBin := filepath.Join(src, "postgres-"+Version)
	if err := ensureBinaries(archivePath(src), srcBin); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "cache")
	for d := filepath.Dir(cache); d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	if err := os.Mkdir(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(archivePath(src))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(archivePath(cache))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if withBinaries {
		// A copy of an extraction is faster than one more (xz under -race).
		if out, err := exec.Command("cp", "-a", srcBin, filepath.Join(cache, "postgres-"+Version)).CombinedOutput(); err != nil {
			t.Fatalf("copy binaries: %v: %s", err, out)
		}
	}
	return cache
}

type victim struct{ path, contents string }

func newVictim(t *testing.T, dir bool) victim {
	t.Helper()
	p := filepath.Join(t.TempDir(), "victim")
	v := victim{path: p, contents: "root's own, do not touch"}
	file := p
	if dir {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		file = filepath.Join(p, "secret")
	}
	if err := os.WriteFile(file, []byte(v.contents), 0o600); err != nil {
		t.Fatal(err)
	}
	return v
}

// check fails unless the victim still has its owner and contents.
func (v victim) check(t *testing.T) {
	t.Helper()
	fi, err := os.Lstat(v.path)
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
		t.Errorf("victim %s now belongs to uid %d, want root", v.path, uid)
	}
	file := v.path
	if fi.IsDir() {
		file = filepath.Join(v.path, "secret")
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("victim folder mode %o, want 700", fi.Mode().Perm())
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != v.contents {
		t.Errorf("victim %s holds %q (%v), want %q", file, b, err, v.contents)
	}
}

func owner(t *testing.T, path string) uint32 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

// TestStartAsRootFollowsNoPlantedSymlink: as root, symlinks planted where the
// embedded server's user could once write (the run folder, the cache lock,
// the binaries' completeness marker) make the start fail, and what they name
// keeps its owner and contents; the cache stays root's.
func TestStartAsRootFollowsNoPlantedSymlink(t *testing.T) {
	nb := nobody()
	for _, tc := range []struct {
		name     string
		persist  bool
		binaries bool // the cache holds an extraction
		dir      bool // the victim is a folder
		plant    func(t *testing.T, cache, victim string)
	}{{
		name: "run", persist: true, dir: true,
		plant: func(t *testing.T, cache, victim string) {
			if err := os.Symlink(victim, filepath.Join(cache, "run")); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: ".lock",
		plant: func(t *testing.T, cache, victim string) {
			if err := os.Symlink(victim, filepath.Join(cache, ".lock")); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		// The binaries folder as a start as nobody left it, with the
		// marker replaced by a symlink.
		name: ".extracted",
		plant: func(t *testing.T, cache, victim string) {
			bin := filepath.Join(cache, "postgres-"+Version)
			if err := os.Mkdir(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, filepath.Join(bin, ".extracted")); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(bin, int(nb.Uid), int(nb.Gid)); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		// A whole extraction of root's, with the marker a symlink.
		name: ".extracted in root's folder", binaries: true,
		plant: func(t *testing.T, cache, victim string) {
			bin := filepath.Join(cache, "postgres-"+Version)
			if err := os.Remove(filepath.Join(bin, ".extracted")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, filepath.Join(bin, ".extracted")); err != nil {
				t.Fatal(err)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			cache := rootCache(t, tc.binaries)
			v := newVictim(t, tc.dir)
			tc.plant(t, cache, v.path)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			srv, err := Start(ctx, Options{Port: freePort(t), User: "postgres", CacheDir: cache, Persist: tc.persist})
			if err == nil {
				srv.Stop()
				t.Errorf("start with a planted %s symlink succeeded", tc.name)
			} else {
				t.Logf("refused: %v", err)
			}
			v.check(t)
			if uid := owner(t, cache); uid != 0 {
				t.Errorf("cache folder belongs to uid %d, want root", uid)
			}
		})
	}
}

// TestStartAsRootPersists: as root with persisted data (make run), nobody
// gets one fresh 0700 folder for the data; the cache, the binaries and the
// password file (0600, random, not postgres) stay root's; a second start
// finds the same password and the same data.
func TestStartAsRootPersists(t *testing.T) {
	cache := rootCache(t, true)
	nb := nobody()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var first string
	for run := 1; run <= 2; run++ {
		srv, err := Start(ctx, Options{Port: freePort(t), User: "postgres", CacheDir: cache, Persist: true})
		if err != nil {
			t.Fatalf("start %d: %v", run, err)
		}
		pgDir := filepath.Dir(srv.DataDir)
		fi, err := os.Lstat(pgDir)
		if err != nil {
			t.Fatal(err)
		}
		if owner(t, pgDir) != nb.Uid || fi.Mode().Perm() != 0o700 {
			t.Errorf("data folder %s: uid %d mode %o, want nobody's 0700", pgDir, owner(t, pgDir), fi.Mode().Perm())
		}
		for _, p := range []string{cache, filepath.Join(cache, "run"), filepath.Join(cache, "postgres-"+Version), filepath.Join(cache, "postgres-"+Version, "bin", "postgres"), srv.PasswordFile} {
			if owner(t, p) != 0 {
				t.Errorf("%s belongs to uid %d, want root", p, owner(t, p))
			}
		}
		if fi, err := os.Lstat(srv.PasswordFile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("password file %s: %v, want mode 600", srv.PasswordFile, fi.Mode())
		}
		b, _ := os.ReadFile(srv.PasswordFile)
		if pw := strings.TrimSpace(string(b)); pw != srv.Password || pw == "postgres" || len(pw) < 20 {
			t.Errorf("password file holds %q, server uses %q: want the same random one", pw, srv.Password)
		}
		if run == 1 {
			first = srv.Password
		} else if srv.Password != first {
			t.Errorf("second start: password %q, want the data folder's %q", srv.Password, first)
		}
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReclaimOldCache: as root, a cache that an earlier version gave to
// nobody (binaries extracted by nobody, nobody's lock) is taken back: the
// folder is root's again and what nobody owned in it is gone, to be made
// afresh; the archive (root's, and checked against its pinned digest) stays.
func TestReclaimOldCache(t *testing.T) {
	cache := rootCache(t, false)
	nb := nobody()
	bin := filepath.Join(cache, "postgres-"+Version)
	os.MkdirAll(filepath.Join(bin, "bin"), 0o755)
	os.WriteFile(filepath.Join(bin, "bin", "postgres"), []byte("nobody's"), 0o755)
	os.WriteFile(filepath.Join(cache, ".lock"), nil, 0o644)
	for _, p := range []string{cache, filepath.Join(cache, ".lock"), bin, filepath.Join(bin, "bin", "postgres")} {
		if err := os.Lchown(p, int(nb.Uid), int(nb.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	if err := reclaimCache(cache, nb); err != nil {
		t.Fatal(err)
	}
	if owner(t, cache) != 0 {
		t.Errorf("cache belongs to uid %d, want root", owner(t, cache))
	}
	for _, p := range []string{filepath.Join(cache, ".lock"), bin} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s, nobody's, is still there", p)
		}
	}
	if _, err := os.Stat(archivePath(cache)); err != nil {
		t.Errorf("root's archive was removed: %v", err)
	}
}
