package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestDSNSecretNeverShown runs every DSN form through the paths that read
// POSTGRES_DSN (migrate, -dev migrate, serve) and formats the loaded
// configuration every way fmt and slog can: the password shows nowhere.
func TestDSNSecretNeverShown(t *testing.T) {
	const jwtSecret = "JwtSecret7-0123456789-0123456789-0123456789"
	leaks := func(s string) bool {
		return strings.Contains(s, "Secret7") || strings.Contains(s, "%53ecret7")
	}
	for _, dsn := range []string{
		"postgres://app:TopSecret7@127.0.0.1:1/orders?sslmode=bogus",
		"postgres://app:TopSecret7@127.0.0.1:1/orders?sslmode=disable&connect_timeout=5",
		"postgresql://app:Top%53ecret7@127.0.0.1:1/orders?sslmode=disable",
		"postgres://app@127.0.0.1:1/orders?password=TopSecret7&sslmode=bogus",
		"postgres://app@127.0.0.1:1/orders?sslpassword=TopSecret7&sslmode=bogus",
		"host=127.0.0.1 password = TopSecret7 sslmode=bogus",
		"host=127.0.0.1 password=TopSecret7 sslmode=bogus",
		"host=127.0.0.1 password= TopSecret7 port=notaport",
		"host=127.0.0.1 password='Top Secret7' sslmode=bogus",
		`host=127.0.0.1 password=Top\ Secret7 sslmode=bogus`,
		"host=127.0.0.1 port=1 user=app password = TopSecret7 sslmode=disable connect_timeout=5",
		"host=127.0.0.1 password = 'TopSecret7",
	} {
		env := map[string]string{
			"POSTGRES_DSN": dsn, "AUTH_MODE": "jwt", "AUTH_JWT_HS256_SECRET": jwtSecret,
			"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USER": "orders", "KAFKA_SASL_PASSWORD": "SaslSecret7",
			"KAFKA_SASL_ALLOW_PLAINTEXT": "true", "GRPC_PORT": "0", "HTTP_PORT": "0", "KAFKA_BROKER": "127.0.0.1:1",
			"POSTGRES_START_TIMEOUT": "1s", // serve waits this long for an unreachable PostgreSQL
		}
		for _, args := range [][]string{{"migrate"}, {"-dev", "migrate"}, {"serve"}} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var out bytes.Buffer
			err := run(ctx, args, envOf(env), &out)
			cancel()
			if err == nil {
				t.Errorf("%v with %q: no error", args, dsn)
				continue
			}
			if leaks(err.Error()) || leaks(out.String()) {
				t.Errorf("%v with %q shows a secret:\nerror: %v\noutput: %s", args, dsn, err, out.String())
			}
		}
		cfg, err := loadConfig(envOf(env))
		if err != nil {
			t.Fatalf("%q: %v", dsn, err)
		}
		var logged bytes.Buffer
		slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "config", cfg, "settings", cfg.Config)
		for _, s := range []string{
			fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprint(cfg),
			fmt.Sprintf("%v", cfg.Config), fmt.Sprintf("%+v", cfg.Config), fmt.Sprintf("%#v", cfg.Config),
			fmt.Sprintf("%v", &cfg.Config), fmt.Sprintf("%+v", &cfg), fmt.Sprintf("%#v", &cfg.Config),
			logged.String(),
		} {
			if leaks(s) {
				t.Errorf("%q: the configuration shows a secret: %s", dsn, s)
			}
			if !strings.Contains(s, "127.0.0.1") {
				t.Errorf("%q: the configuration lost its host, masked too much: %s", dsn, s)
			}
		}
	}
}
