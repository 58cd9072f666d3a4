package devpostgres

import (
	"context"
	"strings"
	"testing"
)

const testDefault = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func TestDecide(t *testing.T) {
	vars := []string{"TEST_POSTGRES_DSN", "POSTGRES_DSN"}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		answers string // the one network address that answers, if any
		probed  string
		want    Plan
		wantErr string
	}{{
		name:    "default answers: used as is, nothing exported",
		answers: "127.0.0.1:5432",
		probed:  "127.0.0.1:5432",
		want:    Plan{Var: "TEST_POSTGRES_DSN", DSN: testDefault, Host: "127.0.0.1", Port: 5432},
	}, {
		name:   "default silent: embedded on 5432, exported as the first variable",
		probed: "127.0.0.1:5432",
		want: Plan{Var: "TEST_POSTGRES_DSN", DSN: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
			Embed: true, Host: "127.0.0.1", Port: 5432, User: "postgres"},
	}, {
		name:   "explicit loopback port silent: embedded on that port",
		env:    map[string]string{"TEST_POSTGRES_DSN": "postgres://postgres@127.0.0.1:5499/postgres?sslmode=disable"},
		probed: "127.0.0.1:5499",
		want: Plan{Var: "TEST_POSTGRES_DSN", DSN: "postgres://postgres@127.0.0.1:5499/postgres?sslmode=disable", Explicit: true,
			Embed: true, Host: "127.0.0.1", Port: 5499, User: "postgres"},
	}, {
		name:   "first set variable wins, and is the one exported",
		env:    map[string]string{"TEST_POSTGRES_DSN": "", "POSTGRES_DSN": "postgres://app:pw@localhost:6000/orders"},
		probed: "localhost:6000",
		want: Plan{Var: "POSTGRES_DSN", DSN: "postgres://app:pw@localhost:6000/orders?sslmode=disable", Explicit: true,
			Embed: true, Host: "localhost", Port: 6000, User: "app", Password: "pw"},
	}, {
		name:   "keyword form, IPv6 loopback",
		env:    map[string]string{"POSTGRES_DSN": "host=::1 port=5433 user=postgres dbname=orders sslmode=disable"},
		probed: "[::1]:5433",
		want: Plan{Var: "POSTGRES_DSN", DSN: "postgres://postgres@[::1]:5433/orders?sslmode=disable", Explicit: true,
			Embed: true, Host: "::1", Port: 5433, User: "postgres"},
	}, {
		name:    "explicit remote answers: used as is",
		env:     map[string]string{"TEST_POSTGRES_DSN": "postgres://app@db.internal:5432/x"},
		answers: "db.internal:5432",
		probed:  "db.internal:5432",
		want:    Plan{Var: "TEST_POSTGRES_DSN", DSN: "postgres://app@db.internal:5432/x", Explicit: true, Host: "db.internal", Port: 5432},
	}, {
		name:    "explicit remote silent: an error, never a silent swap",
		env:     map[string]string{"TEST_POSTGRES_DSN": "postgres://app@db.internal:5432/x"},
		probed:  "db.internal:5432",
		wantErr: "TEST_POSTGRES_DSN: no PostgreSQL answers at db.internal:5432; an embedded one is started only for a loopback address",
	}, {
		name:    "unix socket silent: an error",
		env:     map[string]string{"POSTGRES_DSN": "host=/var/run/postgresql user=postgres"},
		probed:  "/var/run/postgresql/.s.PGSQL.5432",
		wantErr: "POSTGRES_DSN: no PostgreSQL answers at /var/run/postgresql/.s.PGSQL.5432",
	}, {
		name:    "malformed DSN names the variable",
		env:     map[string]string{"POSTGRES_DSN": "postgres://x:y@127.0.0.1:notaport/db"},
		wantErr: "POSTGRES_DSN: not a valid PostgreSQL connection string",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			var probed string
			probe := func(_ context.Context, network, addr string) bool {
				probed = addr
				return addr == tc.answers
			}
			got, err := Decide(context.Background(), vars, testDefault, lookup, probe)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if tc.probed != "" && probed != tc.probed {
					t.Errorf("probed %q, want %q", probed, tc.probed)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if probed != tc.probed {
				t.Errorf("probed %q, want %q", probed, tc.probed)
			}
			if got != tc.want {
				t.Errorf("plan\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestShownDSNMasksConfiguredPasswords(t *testing.T) {
	p := Plan{DSN: "postgres://app:s3cret@127.0.0.1:5499/orders?sslmode=disable", Password: "s3cret"}
	if s := p.shownDSN(); strings.Contains(s, "s3cret") {
		t.Errorf("shownDSN = %q, shows the password", s)
	}
	p = Plan{DSN: "postgres://postgres@127.0.0.1:5499/orders", User: "postgres"}
	if err := p.setPassword("r4ndom"); err != nil {
		t.Fatal(err)
	}
	if s := p.shownDSN(); strings.Contains(s, "r4ndom") || !strings.Contains(p.DSN, "postgres:r4ndom@") {
		t.Errorf("DSN %q shown as %q: want the random password in the DSN, masked when shown", p.DSN, s)
	}
}

// TestDecideHidesPassword: a DSN pgx cannot parse is named in the error
// with its password masked, whatever its form.
func TestDecideHidesPassword(t *testing.T) {
	for _, dsn := range []string{
		"host=127.0.0.1 password = TopSecret7 sslmode=bogus",
		"host=127.0.0.1 password = 'TopSecret7",
		"postgres://app:TopSecret7@127.0.0.1:notaport/db",
	} {
		lookup := func(string) (string, bool) { return dsn, true }
		_, err := Decide(context.Background(), []string{"POSTGRES_DSN"}, testDefault, lookup, func(context.Context, string, string) bool { return false })
		if err == nil || strings.Contains(err.Error(), "Secret7") || !strings.Contains(err.Error(), "POSTGRES_DSN: not a valid PostgreSQL connection string") {
			t.Errorf("%q: err = %v, want it invalid without the password", dsn, err)
		}
	}
}
