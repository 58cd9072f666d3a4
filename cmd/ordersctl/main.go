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

// Exit codes. A call that failed with a gRPC status exits exitStatus plus
// its code (as grpcurl does), so a script can tell NotFound (69) from
// Unavailable (78).
const (
	exitOK     = 0
	exitError  = 1  // something failed before or outside a call (a file, a connection set-up)
	exitUsage  = 2  // ordersctl was called wrongly; nothing was sent
	exitStatus = 64 // + the gRPC status code of a failed call
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
// exit code (see exitOK). Output goes to stdout, errors to stderr; getenv
// supplies ORDERSCTL_ADDR and ORDERSCTL_TOKEN.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr, getenv: getenv, addr: getenv("ORDERSCTL_ADDR"), timeout: 10 * time.Second, output: "table"}
	if a.addr == "" {
		a.addr = "localhost:50051"
	}
	fs := flag.NewFlagSet("ordersctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	a.globalFlags(fs)
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintln(w, "usage: ordersctl [global flags] <command> [command flags] [args]")
		fmt.Fprintln(w, "\ncommands:")
		for _, name := range commandOrder {
			fmt.Fprintf(w, "  %-7s %s\n", name, commands[name].summary)
		}
		fmt.Fprintln(w, "\nglobal flags (before or after the command):")
		fs.PrintDefaults()
		fmt.Fprintln(w, "\nrun ordersctl <command> -h for a command's flags")
		fmt.Fprintln(w, "exit status: 0 success, 1 failure before a call, 2 usage error, 64 + gRPC code when a call fails (69 NotFound, 78 Unavailable)")
	}
	if err := fs.Parse(args); err != nil {
		return report(stderr, flagError(err))
	}
	if *version {
		fmt.Fprintln(stdout, "ordersctl", buildinfo.Read())
		return exitOK
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	name := fs.Arg(0)
	cmd, ok := commands[name]
	if !ok {
		return report(stderr, usagef("unknown command %q (run ordersctl -h for the list)", name))
	}
	a.command = name
	defer a.close()
	return report(stderr, cmd.run(ctx, a, fs.Args()[1:]))
}

// globalFlags defines the flags every command takes, before or after it, on
// fs, with the values a holds as defaults. The environment supplies -addr's
// (in run) and -token's (in ready, so usage never prints a token).
func (a *app) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.addr, "addr", a.addr, "server `host[:port]`; the port defaults to 50051 (env ORDERSCTL_ADDR)")
	fs.Func("token", "bearer `token`, sent as authorization: Bearer <token> (env ORDERSCTL_TOKEN)", func(s string) error {
		a.token, a.tokenSet = s, true
		return nil
	})
	fs.BoolVar(&a.tls, "tls", a.tls, "connect with TLS (implied by -ca, -cert and -insecure-skip-verify)")
	fs.StringVar(&a.ca, "ca", a.ca, "PEM `file` of the CA that signed the server certificate (default: system roots)")
	fs.StringVar(&a.cert, "cert", a.cert, "PEM client certificate `file` for mTLS (with -key)")
	fs.StringVar(&a.key, "key", a.key, "PEM client key `file` for mTLS (with -cert)")
	fs.BoolVar(&a.insecureSkipVerify, "insecure-skip-verify", a.insecureSkipVerify, "do not verify the server certificate (development only)")
	fs.DurationVar(&a.timeout, "timeout", a.timeout, "deadline of each call")
	fs.StringVar(&a.output, "o", a.output, "output `format`: table or json")
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
