package devpostgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
)

// Run runs args as a command with the PostgreSQL that p names. When p.Embed
// is set it first starts an embedded server on p.Port (o says where its
// files go), says so in one line on stderr, exports p.DSN to the command as
// p.Var, and stops the server when the command exits. SIGINT, SIGTERM and
// SIGHUP are forwarded to the command. It returns the command's exit code
// (128+n when a signal n ended it).
func Run(ctx context.Context, p Plan, o Options, args []string, stderr io.Writer) (int, error) {
	if len(args) == 0 {
		return 0, errors.New("no command given")
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	env := os.Environ()
	if p.Embed {
		startCtx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sigs:
				cancel()
			case <-startCtx.Done():
			}
		}()
		o.Port, o.User, o.Password = p.Port, p.User, p.Password
		srv, err := Start(startCtx, o)
		interrupted := startCtx.Err() != nil
		cancel()
		if interrupted {
			return 130, nil
		}
		if err != nil {
			return 0, fmt.Errorf("no PostgreSQL answers at %s and an embedded one could not be started: %w\nTwo ways remain: point %s at a running PostgreSQL, or install one (sudo apt-get install postgresql)",
				net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port))), err, p.Var)
		}
		defer func() {
			if err := srv.Stop(); err != nil {
				fmt.Fprintln(stderr, "withpostgres:", err)
			}
		}()
		if p.Password == "" {
			if err := p.setPassword(srv.Password); err != nil {
				return 0, err
			}
		}
		fmt.Fprintf(stderr, "withpostgres: no PostgreSQL answered at %s, so an embedded PostgreSQL %s runs there for this command (%s=%s; %s)\n",
			net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port))), Version, p.Var, p.shownDSN(), srv)
		env = append(env, p.Var+"="+p.DSN)
	}

	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", args[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			cmd.Process.Signal(sig)
		case err := <-done:
			return exitCode(cmd, err)
		}
	}
}

func exitCode(cmd *exec.Cmd, err error) (int, error) {
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return 0, fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return cmd.ProcessState.ExitCode(), nil
}

// setPassword puts the embedded server's superuser password into p.DSN.
func (p *Plan) setPassword(pw string) error {
	u, err := url.Parse(p.DSN)
	if err != nil {
		return fmt.Errorf("embedded server's DSN: %w", err)
	}
	u.User = url.UserPassword(p.User, pw)
	p.Password, p.DSN = pw, u.String()
	return nil
}

// shownDSN is p.DSN for printing, its password masked.
func (p Plan) shownDSN() string {
	u, err := url.Parse(p.DSN)
	if err != nil {
		return "(DSN hidden)"
	}
	return u.Redacted()
}
