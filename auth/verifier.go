package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Leeway is the clock skew tolerated on exp, nbf and iat.
const Leeway = 30 * time.Second

// maxTokenLen bounds the work spent on a token before parsing it.
const maxTokenLen = 8 << 10

// ErrInvalidToken is wrapped by every error Verify returns. Those errors
// explain why (for logs) but never contain the token.
var ErrInvalidToken = errors.New("invalid token")

// Verifier checks bearer tokens against the configured key. Its zero value,
// and the Verifier of a Config in mode none, is disabled.
type Verifier struct {
	keys   []verificationKey
	parser *jwt.Parser
}

// NewVerifier validates cfg and, in jwt mode, loads its key (reading the
// secret or key file once). Each accepted token must be signed with an
// algorithm pinned by the key type (HS256 for a secret, RS256 for RSA keys,
// ES256 for P-256 keys), carry exp, a non-empty sub, and iss / aud when
// configured; nbf and iat are honoured. Errors name the variable at fault.
func NewVerifier(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return &Verifier{}, nil
	}
	keys, err := loadKeys(cfg)
	if err != nil {
		return nil, err
	}
	var algs []string
	for _, k := range keys {
		if !slices.Contains(algs, k.alg) {
			algs = append(algs, k.alg)
		}
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(algs),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &Verifier{keys: keys, parser: jwt.NewParser(opts...)}, nil
}

// Enabled reports whether v checks tokens; false for a nil Verifier and in
// mode none, where no interceptor should be installed.
func (v *Verifier) Enabled() bool { return v != nil && v.parser != nil }

// claims are the token claims the service reads.
type claims struct {
	jwt.RegisteredClaims
	Roles []string `json:"roles,omitempty"`
}

// Validate is called by the jwt validator after the registered claims pass.
func (c *claims) Validate() error {
	if strings.TrimSpace(c.Subject) == "" {
		return errors.New("sub is missing or empty")
	}
	return nil
}

// Verify checks token and returns its principal. Every error wraps
// ErrInvalidToken.
func (v *Verifier) Verify(token string) (Principal, error) {
	if !v.Enabled() {
		return Principal{}, fmt.Errorf("%w: authentication is disabled", ErrInvalidToken)
	}
	if token == "" {
		return Principal{}, fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	if len(token) > maxTokenLen {
		return Principal{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	var c claims
	if _, err := v.parser.ParseWithClaims(token, &c, v.keyFor); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return Principal{Subject: c.Subject, Roles: c.Roles}, nil
}

// keyFor returns the keys pinned to the token's algorithm, narrowed by its
// kid when both the token and the key carry one.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	kid, _ := t.Header["kid"].(string)
	var set jwt.VerificationKeySet
	for _, k := range v.keys {
		if k.alg == alg && (kid == "" || k.kid == "" || k.kid == kid) {
			set.Keys = append(set.Keys, k.key)
		}
	}
	switch len(set.Keys) {
	case 0:
		return nil, errors.New("no key matches the token's alg and kid")
	case 1:
		return set.Keys[0], nil
	}
	return set, nil
}
