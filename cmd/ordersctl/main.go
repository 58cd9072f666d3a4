// Command ordersctl is a command-line client of the orders gRPC API
// (orders.v1.OrderService).
//
//	ordersctl [global flags] <command> [command flags] [args]
//
// Commands: create, get, list, status, finish, and token (mint a development
// HS256 token). See docs/ordersctl.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/acme/orders-service/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the call failed
	exitUsage = 2 // ordersctl was called wrongly
)

// command is one subcommand: it parses its own args and does its work.
type command struct {
	summary string
	run     func(ctx context.Context, a *app, args []string) error
}

var commands = map[string]command{
	"create": {"create an order", cmdCreate},
	"get":    {"show an order's id and status (there is no GetOrder RPC: this calls GetOrderStatus)", cmdStatus},
	"list":   {"list a user's orders, newest first", cmdList},
	"status": {"show an order's id and status", cmdStatus},
	"finish": {"mark an order finished", cmdFinish},
	"token":  {"mint a development HS256 token", cmdToken},
}

var commandOrder = []string{"create", "get", "list", "status", "finish", "token"}

// run runs ordersctl with args (without the program name) and returns the
// exit code: 0 on success, 1 when the call failed, 2 on a usage error.
// Output goes to stdout, errors to stderr; getenv supplies ORDERSCTL_ADDR
// and ORDERSCTL_TOKEN.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr}
	fs := a.globalFlags(getenv)
	if err := fs.Parse(args); err != nil {
		return report(stderr, flagError(err))
	}
	if a.version {
		fmt.Fprintln(stdout, "ordersctl", buildinfo.Read())
		return 0
	}
	if !isSet(fs, "token") {
		a.token = getenv("ORDERSCTL_TOKEN")
	}
	a.token = strings.TrimSpace(a.token)
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	name := fs.Arg(0)
	cmd, ok := commands[name]
	if !ok {
		return report(stderr, usagef("unknown command %q (run ordersctl -h for the list)", name))
	}
	if err := a.check(); err != nil {
		return report(stderr, err)
	}
	a.command = name
	defer a.close()
	return report(stderr, cmd.run(ctx, a, fs.Args()[1:]))
}

// globalFlags defines the flags that come before the command; the
// environment supplies the defaults of -addr and -token.
func (a *app) globalFlags(getenv func(string) string) *flag.FlagSet {
	fs := flag.NewFlagSet("ordersctl", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	addr := getenv("ORDERSCTL_ADDR")
	if addr == "" {
		addr = "localhost:50051"
	}
	fs.StringVar(&a.addr, "addr", addr, "server address host:port (env ORDERSCTL_ADDR)")
	// The token's default is applied after parsing so usage never prints it.
	fs.StringVar(&a.token, "token", "", "bearer `token`, sent as authorization: Bearer <token> (env ORDERSCTL_TOKEN)")
	fs.BoolVar(&a.tls, "tls", false, "connect with TLS (implied by -ca, -cert and -insecure-skip-verify)")
	fs.StringVar(&a.ca, "ca", "", "PEM `file` of the CA that signed the server certificate (default: system roots)")
	fs.StringVar(&a.cert, "cert", "", "PEM client certificate `file` for mTLS (with -key)")
	fs.StringVar(&a.key, "key", "", "PEM client key `file` for mTLS (with -cert)")
	fs.BoolVar(&a.insecureSkipVerify, "insecure-skip-verify", false, "do not verify the server certificate (development only)")
	fs.DurationVar(&a.timeout, "timeout", 10*time.Second, "deadline of each call")
	fs.StringVar(&a.output, "o", "table", "output `format`: table or json")
	fs.BoolVar(&a.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintln(w, "usage: ordersctl [global flags] <command> [command flags] [args]")
		fmt.Fprintln(w, "\ncommands:")
		for _, name := range commandOrder {
			fmt.Fprintf(w, "  %-7s %s\n", name, commands[name].summary)
		}
		fmt.Fprintln(w, "\nglobal flags:")
		fs.PrintDefaults()
		fmt.Fprintln(w, "\nrun ordersctl <command> -h for a command's flags")
	}
	return fs
}

// isSet reports whether flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// usageError is a mistake in how ordersctl was called; it exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// errFlagsReported is a flag parse error the flag package already printed.
var errFlagsReported = errors.New("bad flags")

// flagError classifies an error of flag.FlagSet.Parse.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return errFlagsReported
}
