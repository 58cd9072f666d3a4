// Package buildinfo reports what a binary was built from: its version, the
// VCS revision and the Go version, for -version flags, the start-up log and
// the orders_build_info metric.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// version and revision are set by `make build`, `make release` and the
// Dockerfile, from git:
//
//	-ldflags '-X github.com/acme/orders-service/internal/buildinfo.version=v0.1.0 -X ....revision=<commit>'
//
// Without them, Read takes what Go stamps into the binary: the module version
// (set by go install module@version) and, unless built with -buildvcs=false,
// the VCS revision.
var version, revision string

// Info is what a binary was built from.
type Info struct {
	Version   string // release version, module version (a pseudo-version for an untagged commit), or "devel"
	Revision  string // VCS commit; empty when the build recorded none (go run, go test)
	Modified  bool   // the working tree had uncommitted changes
	GoVersion string // the Go toolchain, e.g. go1.26.8
}

// Read returns the running binary's Info.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: orDevel(version), Revision: revision}
	}
	return fromBuildInfo(bi, version, revision)
}

// fromBuildInfo derives Info from bi, preferring the linker-set version v
// and revision rev where they are set.
func fromBuildInfo(bi *debug.BuildInfo, v, rev string) Info {
	if v == "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	info := Info{Version: orDevel(v), GoVersion: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	if rev != "" {
		info.Revision = rev
	}
	return info
}

func orDevel(v string) string {
	if v == "" {
		return "devel"
	}
	return v
}

// String returns e.g. "v0.1.0 (revision 6ab6207abcde, modified, go1.26.8)".
func (i Info) String() string {
	var parts []string
	if i.Revision != "" {
		parts = append(parts, "revision "+i.Revision)
	}
	if i.Modified {
		parts = append(parts, "modified")
	}
	if i.GoVersion != "" {
		parts = append(parts, i.GoVersion)
	}
	if len(parts) == 0 {
		return i.Version
	}
	return i.Version + " (" + strings.Join(parts, ", ") + ")"
}
