package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MintHS256 returns an HS256 token for development and tests: sub and roles
// as given, iat and nbf now, exp now+ttl, and iss / aud when not empty.
func MintHS256(secret []byte, sub string, roles []string, iss, aud string, ttl time.Duration) (string, error) {
	switch {
	case len(secret) == 0:
		return "", errors.New("mint token: empty secret")
	case sub == "":
		return "", errors.New("mint token: empty sub")
	case ttl <= 0:
		return "", errors.New("mint token: ttl must be positive")
	}
	now := time.Now()
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			Issuer:    iss,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Roles: roles,
	}
	if aud != "" {
		c.Audience = jwt.ClaimStrings{aud}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}
