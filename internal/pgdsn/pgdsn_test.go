package pgdsn

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRedact(t *testing.T) {
	for dsn, want := range map[string]string{
		"postgres://app:s3cret@db:5432/orders?sslmode=require":     "postgres://app:xxxxx@db:5432/orders?sslmode=require",
		"host=db user=app password = 's3 cret' dbname=orders":      "host=db user=app password = xxxxx dbname=orders",
		`host=db password=s3\ cret sslpassword= x dbname=orders`:   "host=db password=xxxxx sslpassword= xxxxx dbname=orders",
		"host=db password='s3cret":                                 Hidden,
		"postgres://app:s3cret@db/%zz":                             Hidden,
		"host=db password=s3 cret x=1":                             Hidden,
		"host=db user=app":                                         "host=db user=app",
		"postgres://app@db/orders?password=s3cret&sslmode=require": "postgres://app@db/orders?password=xxxxx&sslmode=require",
	} {
		if got := Redact(dsn); got != want {
			t.Errorf("Redact(%q) = %q, want %q", dsn, got, want)
		}
	}
}

// TestErrorKeepsChain: a masked connection error still unwraps to what pgx
// returned, so callers can tell a refused connection from a bug.
func TestErrorKeepsChain(t *testing.T) {
	base := errors.New("dial tcp: connection refused (password s3cret)")
	err := Error(base, "host=db password = s3cret")
	if !errors.Is(err, base) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Error = %v, want base in its chain and no secret", err)
	}
	_, perr := pgconn.ParseConfig("host=db password = s3cret sslmode=bogus")
	err = Error(perr, "host=db password = s3cret sslmode=bogus")
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "sslmode is invalid") {
		t.Errorf("Error = %v, want the parse error's message without the DSN it holds", err)
	}
	if Error(nil, "x") != nil {
		t.Error("Error(nil) is not nil")
	}
}
