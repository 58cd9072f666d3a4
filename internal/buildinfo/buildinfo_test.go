package buildinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/acme/orders-service", Version: "v0.0.0-20261205225552-6ab6207abcde+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "6ab6207abcde0123456789abcdef0123456789ab"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, tc := range []struct {
		name    string
		bi      *debug.BuildInfo
		version string
		rev     string
		want    string
	}{
		{"module version", stamped, "", "", "v0.0.0-20261205225552-6ab6207abcde+dirty (revision 6ab6207abcde0123456789abcdef0123456789ab, modified, go1.26.8)"},
		{"linker version wins", stamped, "v0.1.0", "", "v0.1.0 (revision 6ab6207abcde0123456789abcdef0123456789ab, modified, go1.26.8)"},
		{"go run", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "", "", "devel (go1.26.8)"},
		{"-buildvcs=false, make build", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "v0.1.0-3-g1a2b3c4", "1a2b3c4d", "v0.1.0-3-g1a2b3c4 (revision 1a2b3c4d, go1.26.8)"},
	} {
		if got := fromBuildInfo(tc.bi, tc.version, tc.rev).String(); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestEveryCommandPrintsVersion builds every binary in cmd/ the way
// `make build` does, with a version set by the linker, and runs each with
// -version: it must exit 0 and print its name and that version.
func TestEveryCommandPrintsVersion(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := filepath.Glob(filepath.Join(root, "cmd", "*", "main.go"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no commands found under %s/cmd: %v", root, err)
	}
	const v = "v9.8.7-test"
	out := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", out+string(filepath.Separator),
		"-ldflags", "-X github.com/acme/orders-service/internal/buildinfo.version="+v+" -X github.com/acme/orders-service/internal/buildinfo.revision=0123abcd", "./cmd/...")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, b)
	}
	for _, main := range dirs {
		name := filepath.Base(filepath.Dir(main))
		b, err := exec.Command(filepath.Join(out, name), "-version").CombinedOutput()
		if err != nil {
			t.Errorf("%s -version: %v\n%s", name, err, b)
			continue
		}
		if got := string(b); !strings.HasPrefix(got, name+" "+v+" (revision 0123abcd") || strings.Count(got, "\n") != 1 {
			t.Errorf("%s -version printed %q, want one line %q", name, got, name+" "+v+" (revision 0123abcd, ...)")
		}
	}
}
