// Package pgtest gives tests fresh, migrated PostgreSQL databases.
//
// It finds the server through TEST_POSTGRES_DSN, POSTGRES_DSN or the local
// default. When none is reachable, tests are skipped, except with CI=true,
// where they fail: CI must never pass without the database.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/postgres"
)

// DefaultDSN is the local development server.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServerDSN returns the DSN of the server tests should use.
func ServerDSN() string {
	for _, v := range []string{"TEST_POSTGRES_DSN", "POSTGRES_DSN"} {
		if dsn := os.Getenv(v); dsn != "" {
			return dsn
		}
	}
	return DefaultDSN
}

// NewDB returns a fresh, migrated database of t's own, closed and dropped
// when t ends.
func NewDB(t testing.TB) *postgres.DB {
	t.Helper()
	return Open(t, NewDSN(t))
}

// NewDSN returns the DSN of a fresh, migrated database of t's own, dropped
// when t ends: for tests that open it more than once or hand it to a
// service.
func NewDSN(t testing.TB) string {
	t.Helper()
	dsn := NewEmptyDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := migrate(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	return dsn
}

// NewEmptyDSN returns the DSN of a fresh database without the service's
// tables, dropped when t ends: for tests of migrating, and of a service
// that migrates at start-up.
func NewEmptyDSN(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn, drop, err := newDatabase(ctx)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required in CI: %v", err)
		}
		t.Skipf("no PostgreSQL: %v", err)
	}
	t.Cleanup(drop)
	return dsn
}

// Open opens dsn for test t and closes it when t ends.
func Open(t testing.TB, dsn string) *postgres.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// Main runs a test package's tests against one fresh, migrated database
// shared by the whole package, and calls set with its DSN first. It is for
// packages whose tests do not disturb each other's rows (each uses its own
// users and ids), which then save creating and migrating a database per
// test; a test that needs the tables to itself uses NewDB. Use it from
// TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m, func(dsn string) { testDSN = dsn }) }
func Main(m *testing.M, set func(dsn string)) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	dsn, drop, err := newDatabase(ctx)
	if err != nil {
		cancel()
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "pgtest: PostgreSQL is required in CI:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "pgtest: skipping, no PostgreSQL:", err)
		os.Exit(0)
	}
	err = migrate(ctx, dsn)
	cancel()
	if err != nil {
		drop()
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		os.Exit(1)
	}
	set(dsn)
	code := m.Run()
	drop()
	os.Exit(code)
}

// newDatabase creates an empty database with a random name on the test
// server and returns its DSN and a function that drops it.
func newDatabase(ctx context.Context) (dsn string, drop func(), err error) {
	admin, err := pgx.Connect(ctx, ServerDSN())
	if err != nil {
		return "", nil, fmt.Errorf("connect to test PostgreSQL (set TEST_POSTGRES_DSN): %w", err)
	}
	defer admin.Close(ctx)
	var b [6]byte
	rand.Read(b[:])
	name := "orders_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create test database: %w", err)
	}
	u, err := url.Parse(ServerDSN())
	if err != nil {
		return "", nil, fmt.Errorf("parse test DSN: %w", err)
	}
	u.Path = "/" + name
	drop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, ServerDSN())
		if err != nil {
			return
		}
		defer c.Close(ctx)
		c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
	return u.String(), drop, nil
}

// migrate applies the service's migrations to the database of dsn.
func migrate(ctx context.Context, dsn string) error {
	db, err := postgres.Open(ctx, dsn)
	if err != nil {
		return fmt.Errorf("open test database: %w", err)
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate test database: %w", err)
	}
	return nil
}
