package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
)

// adminArgs parses an admin subcommand's arguments: the ids it acts on, or
// -all. Acting on every row takes -all, so a forgotten id cannot.
func adminArgs(command string, args []string) (ids []string, err error) {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	all := fs.Bool("all", false, "act on every row")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errUsage, command, err)
	}
	switch ids = fs.Args(); {
	case *all && len(ids) > 0:
		return nil, fmt.Errorf("%w: %s: give ids or -all, not both", errUsage, command)
	case !*all && len(ids) == 0:
		return nil, fmt.Errorf("%w: %s: give the ids to act on, or -all for every row", errUsage, command)
	}
	return ids, nil
}

// logAdmin logs the one line of an admin subcommand: who ran it (the
// operating-system user and the database user), what it did and to how
// many rows.
func logAdmin(ctx context.Context, log *slog.Logger, cfg config, command string, rows int64, args ...any) {
	dbUser := ""
	if c, err := pgx.ParseConfig(cfg.PostgresDSN); err == nil {
		dbUser = c.User
	}
	log.InfoContext(ctx, "admin command", append([]any{"command", command, "os_user", osUser(), "db_user", dbUser, "rows", rows}, args...)...)
}

// osUser is the name of the user running the process, or its uid.
func osUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid " + strconv.Itoa(os.Getuid())
}

// errNotMigrated is the error of a read-only subcommand on a database whose
// schema is missing or behind this binary's migrations.
var errNotMigrated = errors.New("the database schema is not up to date: run `orders-service migrate` first (this command applies no migrations)")

// openReadOnly connects for a subcommand that only reads: it applies no
// migrations (not even goose's version table is created) and refuses a
// schema that is missing or behind.
func openReadOnly(ctx context.Context, cfg config) (*postgres.DB, error) {
	connectCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	db, err := postgres.Open(connectCtx, cfg.PostgresDSN)
	if err != nil {
		return nil, err
	}
	var versioned bool
	err = db.Pool.QueryRow(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&versioned)
	pending := !versioned
	if err == nil && versioned {
		pending, err = db.MigrationsPending(ctx)
	}
	if err == nil && pending {
		err = errNotMigrated
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// redrive re-queues dead inbox rows, those named by ids or, with -all,
// every one, for the processor to try again once the cause is fixed.
func redrive(ctx context.Context, cfg config, log *slog.Logger, args []string, stdout io.Writer) error {
	ids, err := adminArgs("redrive", args)
	if err != nil {
		return err
	}
	db, err := openDatabase(ctx, cfg, log, false)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := postgres.Redrive(ctx, db, ids)
	if err != nil {
		return fmt.Errorf("redrive: %w", err)
	}
	logAdmin(ctx, log, cfg, "redrive", n, "ids", ids, "all", len(ids) == 0)
	fmt.Fprintf(stdout, "re-queued %d dead inbox message(s)\n", n)
	return nil
}

// outboxParked lists parked outbox rows: rows Kafka will never accept as
// they are, and rows parked behind them. It only reads.
func outboxParked(ctx context.Context, cfg config, log *slog.Logger, stdout io.Writer) error {
	db, err := openReadOnly(ctx, cfg)
	if err != nil {
		return fmt.Errorf("outbox-parked: %w", err)
	}
	defer db.Close()
	rows, err := db.ListParkedOutbox(ctx, 1000)
	if err != nil {
		return fmt.Errorf("outbox-parked: %w", err)
	}
	logAdmin(ctx, log, cfg, "outbox-parked", int64(len(rows)))
	for _, r := range rows {
		fmt.Fprintf(stdout, "%d\t%s\t%s\t%s\t%s\t%d bytes\tparked %s\t%s\n", r.ID, r.EventID, r.EventType, r.Topic, kafka.KeyText(r.Key),
			r.Bytes, r.ParkedAt.UTC().Format(time.RFC3339), r.LastError)
	}
	fmt.Fprintf(stdout, "%d parked outbox row(s)\n", len(rows))
	return nil
}

// outboxRedrive un-parks outbox rows, those named by ids with the other
// parked rows of their keys or, with -all, every one, for the relay to
// publish in order.
func outboxRedrive(ctx context.Context, cfg config, log *slog.Logger, args []string, stdout io.Writer) error {
	texts, err := adminArgs("outbox-redrive", args)
	if err != nil {
		return err
	}
	ids := make([]int64, 0, len(texts))
	for _, a := range texts {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil || id <= 0 {
			return fmt.Errorf("%w: outbox-redrive: %q is not an outbox row id", errUsage, a)
		}
		ids = append(ids, id)
	}
	db, err := openDatabase(ctx, cfg, log, false)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := db.RedriveOutbox(ctx, ids)
	if err != nil {
		return fmt.Errorf("outbox-redrive: %w", err)
	}
	logAdmin(ctx, log, cfg, "outbox-redrive", n, "ids", ids, "all", len(ids) == 0)
	fmt.Fprintf(stdout, "un-parked %d outbox row(s)\n", n)
	return nil
}
