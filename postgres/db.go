// Package postgres keeps orders, the outbox and the inbox in PostgreSQL
// through pgx. Every method is one readable SQL statement; methods that take a
// pgx.Tx compose into one transaction.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/internal/pgdsn"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DB is the connection pool plus the in-process signal that outbox rows were
// committed, which wakes the relay without waiting for its poll interval.
type DB struct {
	Pool    *pgxpool.Pool
	written chan struct{}
	now     func() time.Time
}

// BackgroundConns is what Open adds to pgxpool's default pool size (max(4,
// CPUs)) when the DSN sets no pool_max_conns: the relay and the inbox consumer
// and processor each hold a connection across a batch, and housekeeping
// (retention, gauges) takes one now and then, so API calls get pgxpool's
// default to themselves instead of queueing behind them.
const BackgroundConns = 4

// Open connects to dsn and checks the connection. The pool's size is the
// DSN's pool_max_conns, or pgxpool's default plus BackgroundConns. The caller
// closes the DB. Its errors never show the DSN's secrets.
func Open(ctx context.Context, dsn string) (*DB, error) {
	db, err := open(ctx, dsn)
	return db, pgdsn.Error(err, dsn)
}

func open(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse POSTGRES_DSN: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns += BackgroundConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres pool: %w", err)
	}
	db := &DB{Pool: pool, written: make(chan struct{}, 1), now: time.Now}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres %s: %w", cfg.ConnConfig.Host, err)
	}
	return db, nil
}

// Close closes the pool.
func (db *DB) Close() { db.Pool.Close() }

// OutboxWritten delivers a value after a transaction that wrote outbox rows
// commits in this process. Signals coalesce: one pending value at most.
func (db *DB) OutboxWritten() <-chan struct{} { return db.written }

func (db *DB) signalOutbox() {
	select {
	case db.written <- struct{}{}:
	default:
	}
}

// Now returns the current time at the database's precision (microseconds).
func (db *DB) Now() time.Time { return db.now().UTC().Truncate(time.Microsecond) }

// InTx runs fn in a READ COMMITTED transaction and commits it when fn
// returns nil. The level is asked for explicitly, whatever the database's or
// role's default_transaction_isolation: the outbox and inbox claims rely on
// each statement seeing what committed before it (after the advisory lock,
// the previous holder's marks). When wroteOutbox is set, the relay is woken
// after the commit.
func (db *DB) InTx(ctx context.Context, wroteOutbox bool, fn func(pgx.Tx) error) error {
	if err := pgx.BeginTxFunc(ctx, db.Pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, fn); err != nil {
		return classify(err)
	}
	if wroteOutbox {
		db.signalOutbox()
	}
	return nil
}

// Migrate applies the embedded migrations under goose's PostgreSQL session
// lock, so replicas starting together migrate once. It reports what it applied.
func (db *DB) Migrate(ctx context.Context) ([]string, error) {
	sqlDB := stdlib.OpenDBFromPool(db.Pool)
	defer sqlDB.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("migration locker: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, mustSub(migrations, "migrations"),
		goose.WithSessionLocker(locker))
	if err != nil {
		return nil, fmt.Errorf("migration provider: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply migrations: %w", err)
	}
	applied := make([]string, 0, len(results))
	for _, r := range results {
		applied = append(applied, r.Source.Path)
	}
	return applied, nil
}

// MigrationsPending reports whether embedded migrations are not yet applied.
func (db *DB) MigrationsPending(ctx context.Context) (bool, error) {
	sqlDB := stdlib.OpenDBFromPool(db.Pool)
	defer sqlDB.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, mustSub(migrations, "migrations"))
	if err != nil {
		return false, fmt.Errorf("migration provider: %w", err)
	}
	pending, err := p.HasPending(ctx)
	if err != nil {
		return false, fmt.Errorf("check migrations: %w", classify(err))
	}
	return pending, nil
}

// PageTokenKey returns the key that signs page tokens, shared by all replicas.
func (db *DB) PageTokenKey(ctx context.Context) ([]byte, error) {
	var key []byte
	err := db.Pool.QueryRow(ctx, `SELECT key FROM service_keys WHERE name = 'page_token'`).Scan(&key)
	if err != nil {
		return nil, fmt.Errorf("load page token key: %w", classify(err))
	}
	return key, nil
}

// classify turns connection-level failures, shutdowns, too many connections,
// serialization failures and deadlocks into EUNAVAILABLE so callers can tell
// "try again" from a bug; domain errors pass through unchanged. It runs at the
// boundary only: InTx for everything done in a transaction, and each method
// that runs one statement on the pool. Helpers that take a transaction only
// wrap their errors with context.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var de *orders.Error
	if errors.As(err, &de) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if pgerrcode.IsConnectionException(pgErr.Code) {
			return unavailable(err)
		}
		switch pgErr.Code {
		case pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow,
			pgerrcode.TooManyConnections, pgerrcode.SerializationFailure, pgerrcode.DeadlockDetected:
			return unavailable(err)
		}
		return err
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connErr) || errors.As(err, &netErr) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return unavailable(err)
	}
	return err
}

func unavailable(err error) error {
	return fmt.Errorf("%w: %w", orders.Errorf(orders.EUNAVAILABLE, "database unavailable, try again"), err)
}

func mustSub(fsys embed.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

// CreateDatabaseIfMissing creates the database named in dsn, connecting to
// the server's "postgres" database to do so. It reports whether it created it.
// Its errors never show the DSN's secrets.
func CreateDatabaseIfMissing(ctx context.Context, dsn string) (bool, error) {
	created, err := createDatabaseIfMissing(ctx, dsn)
	return created, pgdsn.Error(err, dsn)
}

func createDatabaseIfMissing(ctx context.Context, dsn string) (bool, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return false, fmt.Errorf("parse POSTGRES_DSN: %w", err)
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect to postgres %s: %w", cfg.Host, err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return false, fmt.Errorf("look up database %q: %w", name, err)
	}
	if exists {
		return false, nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.DuplicateDatabase { // created concurrently
			return false, nil
		}
		return false, fmt.Errorf("create database %q: %w", name, err)
	}
	return true, nil
}
