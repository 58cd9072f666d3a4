// Command withpostgres runs a command with a PostgreSQL: the one the first
// set variable of -env names, or -default. When nothing answers there and the
// address is a loopback one, it starts an embedded PostgreSQL on that port
// (binaries fetched from Maven Central once and cached), exports its DSN as
// that variable, and stops it when the command exits. It exits with the
// command's exit code. make run and make test go through it:
//
//	withpostgres -env TEST_POSTGRES_DSN,POSTGRES_DSN \
//	  -default 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable' -- go test ./...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/acme/orders-service/internal/buildinfo"
	"github.com/acme/orders-service/internal/devpostgres"
)

func main() {
	devpostgres.MaybeServe()
	code, err := run(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "withpostgres:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(args []string) (int, error) {
	fs := flag.NewFlagSet("withpostgres", flag.ContinueOnError)
	vars := fs.String("env", "POSTGRES_DSN", "comma-separated DSN variables to read, first set wins; an embedded server's DSN is exported as the one read (the first when none is set)")
	def := fs.String("default", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "DSN when none of -env is set")
	persist := fs.Bool("persist", false, "keep an embedded server's data in the cache folder between runs (otherwise it is thrown away)")
	repo := fs.String("repo", devpostgres.MavenCentral, "Maven repository (https) to download the PostgreSQL binaries from; where it cannot be reached, mvn fetches them; either way they must have the pinned SHA-256")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: withpostgres [flags] -- command [args...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 0, err
	}
	if *version {
		fmt.Println("withpostgres", buildinfo.Read())
		return 0, nil
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 0, errors.New("no command given")
	}
	ctx := context.Background()
	p, err := devpostgres.Decide(ctx, strings.Split(*vars, ","), *def, os.LookupEnv, devpostgres.DialProbe)
	if err != nil {
		return 0, err
	}
	o := devpostgres.Options{Persist: *persist, RepoURL: *repo}
	if p.Embed {
		if o.CacheDir, err = devpostgres.DefaultCacheDir(); err != nil {
			return 0, err
		}
	}
	return devpostgres.Run(ctx, p, o, fs.Args(), os.Stderr)
}
