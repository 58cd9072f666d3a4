package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docFiles are the documents whose commands a reader copies.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md", "CONTRIBUTING.md"}
	more, err := filepath.Glob(filepath.Join(moduleRoot(t), "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range more {
		files = append(files, filepath.ToSlash(filepath.Join("docs", filepath.Base(f))))
	}
	var out []string
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(moduleRoot(t), f)); err == nil {
			out = append(out, f)
		}
	}
	return out
}

var (
	fence      = regexp.MustCompile("(?s)```[a-z]*\n(.*?)```")
	inlineCode = regexp.MustCompile("`([^`\n]+)`")
)

// codeLines returns the code of a Markdown document, one logical line each:
// the lines of fenced blocks (with backslash continuations joined) and each
// inline code span.
func codeLines(doc string) []string {
	var lines []string
	for _, m := range fence.FindAllStringSubmatch(doc, -1) {
		lines = append(lines, logicalLines([]byte(m[1]))...)
	}
	for _, m := range inlineCode.FindAllStringSubmatch(fence.ReplaceAllString(doc, ""), -1) {
		lines = append(lines, m[1])
	}
	return lines
}

// helpText builds the command pkg of the module and returns what its -h
// prints; -h must exit 0.
func helpText(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	build := exec.Command("go", "build", "-o", bin, "./"+pkg)
	build.Dir = moduleRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./%s: %v\n%s", pkg, err, out)
	}
	cmd := exec.Command(bin, "-h")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s -h: %v (want exit 0)\n%s", filepath.Base(pkg), err, out)
	}
	return string(out)
}

var (
	makeCall   = regexp.MustCompile(`(?:^|[\s(;&|])make ([a-z][a-z0-9-]*)`)
	makeTarget = regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):[^=\n]*## `)
	serviceSub = regexp.MustCompile(`(?:^|[\s/])orders-service ([a-z][a-z-]*)\b`)
	ctlCommand = regexp.MustCompile(`(?:^|[\s/])ordersctl(?: -[a-z-]+(?: [^-\s]\S*)?)* ([a-z][a-z-]*)(?:\s|$)`)
	assignment = regexp.MustCompile(`(?:^|\s)([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)=`)
)

// TestDocsCommandsExist keeps the commands in README.md, CONTRIBUTING.md and
// docs/*.md honest: every `make X` is a target that make help lists, every
// `orders-service X` a subcommand of its usage, every `ordersctl X` one of
// its commands, and every NAME=value given to orders-service (or make run)
// a setting of the service.
func TestDocsCommandsExist(t *testing.T) {
	makefile := string(readFile(t, "Makefile"))
	var targets []string
	for _, m := range makeTarget.FindAllStringSubmatch(makefile, -1) {
		targets = append(targets, m[1])
	}
	serviceHelp := helpText(t, "cmd/orders-service")
	usage, _, _ := strings.Cut(serviceHelp[strings.Index(serviceHelp, "usage: orders-service"):], "\n")
	usage = regexp.MustCompile(`\[-[a-z-]+\]`).ReplaceAllString(strings.TrimPrefix(usage, "usage: orders-service"), "") // flags
	subcommands := regexp.MustCompile(`\b[a-z][a-z-]+[a-z]\b`).FindAllString(usage, -1)
	ctlHelp := helpText(t, "cmd/ordersctl")
	_, cmds, _ := strings.Cut(ctlHelp, "\ncommands:\n")
	cmds, _, _ = strings.Cut(cmds, "\n\n")
	var ctlCommands []string
	for _, l := range strings.Split(cmds, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			ctlCommands = append(ctlCommands, f[0])
		}
	}
	if len(targets) < 5 || !slices.Contains(subcommands, "migrate") || !slices.Contains(ctlCommands, "create") {
		t.Fatalf("derived lists look wrong: targets %v, subcommands %v, ordersctl commands %v", targets, subcommands, ctlCommands)
	}

	for _, doc := range docFiles(t) {
		for _, line := range codeLines(string(readFile(t, doc))) {
			for _, m := range makeCall.FindAllStringSubmatch(line, -1) {
				if !slices.Contains(targets, m[1]) {
					t.Errorf("%s: `make %s` is not a target make help lists: %q", doc, m[1], line)
				}
			}
			for _, m := range serviceSub.FindAllStringSubmatch(line, -1) {
				if !slices.Contains(subcommands, m[1]) {
					t.Errorf("%s: `orders-service %s` is no subcommand (%v): %q", doc, m[1], subcommands, line)
				}
			}
			for _, m := range ctlCommand.FindAllStringSubmatch(line, -1) {
				if !slices.Contains(ctlCommands, m[1]) {
					t.Errorf("%s: `ordersctl %s` is no command (%v): %q", doc, m[1], ctlCommands, line)
				}
			}
			runsService := strings.Contains(line, "cmd/orders-service") && !strings.Contains(line, "go test")
			if runsService || strings.Contains(line, "make run") || regexp.MustCompile(`(?:^|\s)orders-service(?:\s|$)`).MatchString(line) {
				for _, m := range assignment.FindAllStringSubmatch(line, -1) {
					if !knownServiceVar(m[1]) {
						t.Errorf("%s: %s is not a setting of orders-service: %q", doc, m[1], line)
					}
				}
			}
		}
	}
}

// TestBareMakePrintsHelp: `make` with no target lists the targets with their
// `##` descriptions instead of starting anything, the two commands first.
func TestBareMakePrintsHelp(t *testing.T) {
	cmd := exec.Command("make", "--no-print-directory")
	cmd.Dir = moduleRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	for _, target := range makeTarget.FindAllStringSubmatch(string(readFile(t, "Makefile")), -1) {
		if !regexp.MustCompile(`(?m)^  make ` + regexp.QuoteMeta(target[1]) + `\s+\S`).Match(out) {
			t.Errorf("make does not list %s with its description:\n%s", target[1], out)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):([^=\n].*)?$`).FindAllStringSubmatch(string(readFile(t, "Makefile")), -1) {
		if !strings.Contains(m[0], "## ") {
			t.Errorf("Makefile target %s has no ## description, so make help does not list it", m[1])
		}
	}
	if run, test := strings.Index(string(out), "make run "), strings.Index(string(out), "make test "); run < 0 || test < 0 || run > test {
		t.Errorf("make lists run and test out of order:\n%s", out)
	}
}
