package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/acme/orders-service/auth"
)

// minSecretLen matches the server, which refuses shorter HS256 secrets.
const minSecretLen = 32

// cmdToken mints a development HS256 token and prints it. It talks to no
// server. A -secret-file is read like the server reads
// AUTH_JWT_HS256_SECRET_FILE: trailing whitespace is trimmed.
func cmdToken(_ context.Context, a *app, args []string) error {
	fs := a.flags("token", "(-secret s | -secret-file file) -sub user [-roles r1,r2] [-iss issuer] [-aud audience] [-ttl d]")
	secret := fs.String("secret", "", "HS256 shared `secret` (visible in the process list: prefer -secret-file)")
	secretFile := fs.String("secret-file", "", "`file` holding the HS256 shared secret")
	sub := fs.String("sub", "", "subject: the caller's `user` id")
	roles := fs.String("roles", "", "comma-separated `roles`, e.g. orders.admin or orders.service")
	iss := fs.String("iss", "", "issuer claim (set it when the server sets AUTH_JWT_ISSUER)")
	aud := fs.String("aud", "", "audience claim (set it when the server sets AUTH_JWT_AUDIENCE)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	if _, err := a.parse(fs, args, 0, ""); err != nil {
		return err
	}
	switch {
	case (*secret == "") == (*secretFile == ""):
		return usagef("token: give exactly one of -secret and -secret-file")
	case strings.TrimSpace(*sub) == "":
		return usagef("token: -sub is required")
	case *ttl <= 0:
		return usagef("token: -ttl must be positive")
	}
	for _, r := range splitRoles(*roles) {
		if r != auth.RoleAdmin && r != auth.RoleService {
			return usagef("token: unknown role %q: the server knows %s and %s", r, auth.RoleAdmin, auth.RoleService)
		}
	}
	key := []byte(*secret)
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("token: -secret-file: %w", err)
		}
		key = bytes.TrimRight(b, " \t\r\n")
	}
	if len(key) < minSecretLen {
		return usagef("token: the secret must be at least %d bytes, like the server's", minSecretLen)
	}
	tok, err := auth.MintHS256(key, *sub, splitRoles(*roles), *iss, *aud, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(a.stdout, tok)
	return err
}

// splitRoles splits a comma-separated list, dropping blanks.
func splitRoles(s string) []string {
	var roles []string
	for r := range strings.SplitSeq(s, ",") {
		if r = strings.TrimSpace(r); r != "" {
			roles = append(roles, r)
		}
	}
	return roles
}
