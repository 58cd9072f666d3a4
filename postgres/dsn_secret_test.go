package postgres

import (
	"context"
	"strings"
	"testing"
	"time"
)

// secretDSNs are DSN forms whose password is Secret7 (alone or inside a
// longer secret); none of them opens a connection (a bad setting or a port
// nothing listens on), so every one ends in an error.
var secretDSNs = []string{
	"postgres://app:TopSecret7@127.0.0.1:1/orders?sslmode=bogus",
	"postgres://app:TopSecret7@127.0.0.1:1/orders?sslmode=disable&connect_timeout=5",
	"postgresql://app:Top%53ecret7@127.0.0.1:1/orders?sslmode=disable",
	"postgres://app:TopSecret7@127.0.0.1:1/%zz",
	"postgres://app@127.0.0.1:1/orders?password=TopSecret7&sslmode=bogus",
	"postgres://app@127.0.0.1:1/orders?sslmode=disable&password=TopSecret7",
	"postgres://app@127.0.0.1:1/orders?sslpassword=TopSecret7&sslmode=bogus",
	"host=127.0.0.1 password = TopSecret7 sslmode=bogus",
	"host=127.0.0.1 password=TopSecret7 sslmode=bogus",
	"host=127.0.0.1 password= TopSecret7 port=notaport",
	"host=127.0.0.1 password ='TopSecret7' sslmode=bogus",
	"host=127.0.0.1 password='Top Secret7' sslmode=bogus",
	`host=127.0.0.1 password='Top\'Secret7' sslmode=bogus`,
	`host=127.0.0.1 password=Top\ Secret7 sslmode=bogus`,
	"host=127.0.0.1 port=1 user=app password = TopSecret7 sslmode=disable connect_timeout=5",
	"host=127.0.0.1 sslpassword = TopSecret7 sslmode=bogus",
	"host=127.0.0.1 password = 'TopSecret7",
	"password=TopSecret7",
	"host=127.0.0.1 password=Top Secret7 port=1",
}

func leaksSecret(s string) bool {
	return strings.Contains(s, "Secret7") || strings.Contains(s, "%53ecret7")
}

// TestDSNErrorsHideSecrets: whatever form the DSN takes and wherever it
// fails (parsing, connecting), the error Open and CreateDatabaseIfMissing
// return never holds its password.
func TestDSNErrorsHideSecrets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, dsn := range secretDSNs {
		db, err := Open(ctx, dsn)
		if err == nil {
			db.Close()
			t.Errorf("Open(%q): no error", dsn)
		} else if leaksSecret(err.Error()) {
			t.Errorf("Open(%q): error shows the password: %v", dsn, err)
		}
		_, err = CreateDatabaseIfMissing(ctx, dsn)
		if err == nil {
			t.Errorf("CreateDatabaseIfMissing(%q): no error", dsn)
		} else if leaksSecret(err.Error()) {
			t.Errorf("CreateDatabaseIfMissing(%q): error shows the password: %v", dsn, err)
		}
	}
}
