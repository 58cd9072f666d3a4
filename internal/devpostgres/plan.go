// Package devpostgres gives development commands (make run, make test) a
// PostgreSQL: the one their DSN names when it answers, otherwise an embedded
// one (github.com/fergusstrange/embedded-postgres) started on the DSN's
// loopback port, with binaries fetched from Maven Central once and cached.
//
// It is a development tool: the production binary does not import it.
package devpostgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/acme/orders-service/internal/pgdsn"
)

// Plan says which PostgreSQL a command gets.
type Plan struct {
	// Var is the environment variable the DSN came from, or the one the
	// embedded server's DSN is exported as when the DSN is the default.
	Var string
	// DSN is what the command should use: the configured one when Embed is
	// false, the embedded server's otherwise.
	DSN string
	// Explicit reports whether DSN came from the environment.
	Explicit bool
	// Embed reports whether an embedded server must be started, on Host:Port
	// with superuser User / Password. An empty Password means the server's
	// random one: Run puts it into DSN once the server runs.
	Embed          bool
	Host           string
	Port           uint16
	User, Password string
}

// Prober reports whether something accepts connections at a network address.
type Prober func(ctx context.Context, network, addr string) bool

// DialProbe is the Prober used by Decide outside tests: a connection that
// opens within a second counts as an answer.
func DialProbe(ctx context.Context, network, addr string) bool {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Decide picks the PostgreSQL for a command. vars are the environment
// variables to read in order (the first one set wins; lookup reads them),
// def is the DSN when none is set. When the server does not answer:
//   - at a loopback address (the default, or a DSN naming localhost,
//     127.0.0.0/8 or ::1), an embedded server is planned on that port and
//     exported as the variable the DSN came from (vars[0] for the default);
//   - anywhere else it is an error: an explicitly configured remote server is
//     never silently replaced.
func Decide(ctx context.Context, vars []string, def string, lookup func(string) (string, bool), probe Prober) (Plan, error) {
	if len(vars) == 0 {
		return Plan{}, errors.New("no DSN variable named")
	}
	p := Plan{Var: vars[0], DSN: def}
	for _, v := range vars {
		if dsn, ok := lookup(v); ok && dsn != "" {
			p.Var, p.DSN, p.Explicit = v, dsn, true
			break
		}
	}
	cfg, err := pgconn.ParseConfig(p.DSN)
	if err != nil {
		return Plan{}, fmt.Errorf("%s: not a valid PostgreSQL connection string: %w", p.Var, pgdsn.Error(err, p.DSN))
	}
	p.Host, p.Port = cfg.Host, cfg.Port
	network, addr := "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if filepath.IsAbs(cfg.Host) {
		network, addr = "unix", filepath.Join(cfg.Host, ".s.PGSQL."+strconv.Itoa(int(cfg.Port)))
	}
	if probe(ctx, network, addr) {
		return p, nil
	}
	if network == "unix" || !isLoopback(cfg.Host) {
		return Plan{}, fmt.Errorf("%s: no PostgreSQL answers at %s; an embedded one is started only for a loopback address (127.0.0.1, localhost), so start that server or point %s at one that runs", p.Var, addr, p.Var)
	}
	p.Embed = true
	p.User, p.Password = cfg.User, cfg.Password
	db := cfg.Database
	if db == "" {
		db = cfg.User
	}
	user := url.User(p.User)
	if p.Password != "" {
		user = url.UserPassword(p.User, p.Password)
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     user,
		Host:     addr,
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	p.DSN = u.String()
	return p, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
