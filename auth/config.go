// Package auth authenticates gRPC callers with JWTs and answers the
// authorization questions of the order API: who is calling, and may they act
// for a given user.
package auth

import (
	"fmt"
	"log/slog"
	"strings"
)

// Modes of Config.Mode.
const (
	ModeNone = "none"
	ModeJWT  = "jwt"
)

// minSecretLen is the shortest accepted HS256 secret: RFC 7518 section 3.2
// requires a key at least as long as the hash output.
const minSecretLen = 32

// Environment variables that configure authentication.
const (
	EnvMode            = "AUTH_MODE"
	EnvHS256Secret     = "AUTH_JWT_HS256_SECRET"
	EnvHS256SecretFile = "AUTH_JWT_HS256_SECRET_FILE"
	EnvPublicKeyFile   = "AUTH_JWT_PUBLIC_KEY_FILE"
	EnvIssuer          = "AUTH_JWT_ISSUER"
	EnvAudience        = "AUTH_JWT_AUDIENCE"
)

// Config selects how callers are authenticated. Mode "" means "none".
// In jwt mode exactly one key source must be set.
type Config struct {
	Mode            string // AUTH_MODE: "none" or "jwt"
	HS256Secret     string `json:"-"` // AUTH_JWT_HS256_SECRET
	HS256SecretFile string // AUTH_JWT_HS256_SECRET_FILE: file holding the secret (trailing whitespace trimmed)
	PublicKeyFile   string // AUTH_JWT_PUBLIC_KEY_FILE: PEM RSA or P-256 public key or certificate, or a JWKS
	Issuer          string // AUTH_JWT_ISSUER: required iss when set
	Audience        string // AUTH_JWT_AUDIENCE: required aud when set
}

// Enabled reports whether tokens are required (Mode is "jwt").
func (c Config) Enabled() bool { return c.Mode == ModeJWT }

// Validate checks c without reading files. Each error is one line that
// starts with the environment variable at fault and never contains the
// secret. Setting any AUTH_JWT_* variable while Mode is none is an error, so a
// forgotten AUTH_MODE=jwt cannot leave the service open unnoticed.
func (c Config) Validate() error {
	switch c.Mode {
	case "", ModeNone:
		if vars := c.setVars(); len(vars) > 0 {
			return fmt.Errorf("%s: set while %s is %q; set %s=%s or unset it", vars[0], EnvMode, ModeNone, EnvMode, ModeJWT)
		}
		return nil
	case ModeJWT:
	default:
		return fmt.Errorf("%s: must be %q or %q, got %q", EnvMode, ModeNone, ModeJWT, c.Mode)
	}
	var sources []string
	if c.HS256Secret != "" {
		sources = append(sources, EnvHS256Secret)
	}
	if c.HS256SecretFile != "" {
		sources = append(sources, EnvHS256SecretFile)
	}
	if c.PublicKeyFile != "" {
		sources = append(sources, EnvPublicKeyFile)
	}
	switch len(sources) {
	case 0:
		return fmt.Errorf("%s: %s=%s needs a key: set one of %s, %s, %s",
			EnvMode, EnvMode, ModeJWT, EnvHS256Secret, EnvHS256SecretFile, EnvPublicKeyFile)
	case 1:
	default:
		return fmt.Errorf("%s: only one key source may be set, got %s", sources[0], strings.Join(sources, ", "))
	}
	if c.HS256Secret != "" && len(c.HS256Secret) < minSecretLen {
		return fmt.Errorf("%s: must be at least %d bytes", EnvHS256Secret, minSecretLen)
	}
	return nil
}

func (c Config) setVars() []string {
	var vars []string
	for _, f := range []struct{ name, val string }{
		{EnvHS256Secret, c.HS256Secret},
		{EnvHS256SecretFile, c.HS256SecretFile},
		{EnvPublicKeyFile, c.PublicKeyFile},
		{EnvIssuer, c.Issuer},
		{EnvAudience, c.Audience},
	} {
		if f.val != "" {
			vars = append(vars, f.name)
		}
	}
	return vars
}

func (c Config) mode() string {
	if c.Mode == "" {
		return ModeNone
	}
	return c.Mode
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "[REDACTED]"
}

// LogValue renders c for log/slog with the secret masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("mode", c.mode()),
		slog.String("hs256_secret", mask(c.HS256Secret)),
		slog.String("hs256_secret_file", c.HS256SecretFile),
		slog.String("public_key_file", c.PublicKeyFile),
		slog.String("issuer", c.Issuer),
		slog.String("audience", c.Audience),
	)
}

// String renders c with the secret masked.
func (c Config) String() string {
	return fmt.Sprintf("auth.Config{Mode:%s HS256Secret:%s HS256SecretFile:%s PublicKeyFile:%s Issuer:%s Audience:%s}",
		c.mode(), mask(c.HS256Secret), c.HS256SecretFile, c.PublicKeyFile, c.Issuer, c.Audience)
}

// GoString makes %#v mask the secret too.
func (c Config) GoString() string { return c.String() }
