package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
)

// minRSABits is the smallest RSA modulus accepted for RS256.
const minRSABits = 2048

// verificationKey is one key a token may be signed with, pinned to the single
// algorithm it is valid for.
type verificationKey struct {
	kid string // empty: matches any kid
	alg string // HS256, RS256 or ES256
	key any    // []byte, *rsa.PublicKey or *ecdsa.PublicKey
}

// loadKeys returns the keys named by a validated jwt-mode cfg. Errors start
// with the environment variable at fault and never contain key material.
func loadKeys(cfg Config) ([]verificationKey, error) {
	switch {
	case cfg.HS256Secret != "":
		return []verificationKey{{alg: "HS256", key: []byte(cfg.HS256Secret)}}, nil
	case cfg.HS256SecretFile != "":
		b, err := os.ReadFile(cfg.HS256SecretFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvHS256SecretFile, err)
		}
		b = bytes.TrimRight(b, " \t\r\n")
		if len(b) < minSecretLen {
			return nil, fmt.Errorf("%s: secret must be at least %d bytes", EnvHS256SecretFile, minSecretLen)
		}
		return []verificationKey{{alg: "HS256", key: b}}, nil
	case cfg.PublicKeyFile != "":
		b, err := os.ReadFile(cfg.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvPublicKeyFile, err)
		}
		var keys []verificationKey
		if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
			keys, err = parseJWKS(t)
		} else {
			keys, err = parsePEM(b)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvPublicKeyFile, err)
		}
		return keys, nil
	}
	return nil, errors.New("no key source configured")
}

// parsePEM reads the first PEM block: a PKIX or PKCS#1 public key or a
// certificate.
func parsePEM(b []byte) ([]verificationKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block and not a JWKS")
	}
	var pub any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key or certificate", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse PEM %s: %w", block.Type, err)
	}
	k, err := publicKey(pub)
	if err != nil {
		return nil, err
	}
	return []verificationKey{k}, nil
}

// publicKey pins pub to its algorithm: RSA of at least 2048 bits to RS256,
// P-256 to ES256; anything else is refused.
func publicKey(pub any) (verificationKey, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return verificationKey{}, fmt.Errorf("RSA key has %d bits, need at least %d", k.N.BitLen(), minRSABits)
		}
		return verificationKey{alg: "RS256", key: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return verificationKey{}, fmt.Errorf("EC key on curve %s, need P-256 for ES256", k.Curve.Params().Name)
		}
		return verificationKey{alg: "ES256", key: k}, nil
	}
	return verificationKey{}, fmt.Errorf("unsupported public key type %T", pub)
}

// jwk holds the RFC 7517 members used for RSA and EC signature keys.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS reads a JWK Set. Keys not meant for RS256/ES256 signatures
// (encryption keys, symmetric keys, other algorithms) are skipped; a set
// with no usable key, or a malformed RSA or EC key, is an error.
func parseJWKS(b []byte) ([]verificationKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	var keys []verificationKey
	for i, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		var pub any
		var err error
		switch j.Kty {
		case "RSA":
			pub, err = j.rsa()
		case "EC":
			pub, err = j.ec()
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("JWKS key %d (kid %q): %w", i, j.Kid, err)
		}
		k, err := publicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("JWKS key %d (kid %q): %w", i, j.Kid, err)
		}
		if j.Alg != "" && j.Alg != k.alg {
			continue
		}
		k.kid = j.Kid
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS has no RS256 or ES256 signature key")
	}
	return keys, nil
}

func (j jwk) rsa() (*rsa.PublicKey, error) {
	n, err := b64int(j.N)
	if err != nil {
		return nil, fmt.Errorf("n: %w", err)
	}
	e, err := b64int(j.E)
	if err != nil {
		return nil, fmt.Errorf("e: %w", err)
	}
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, errors.New("e: invalid RSA exponent")
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

func (j jwk) ec() (*ecdsa.PublicKey, error) {
	if j.Crv != "P-256" {
		return nil, fmt.Errorf("crv %q unsupported, need P-256", j.Crv)
	}
	x, err := base64.RawURLEncoding.DecodeString(j.X)
	if err != nil || len(x) != 32 {
		return nil, errors.New("x: want 32 base64url bytes")
	}
	y, err := base64.RawURLEncoding.DecodeString(j.Y)
	if err != nil || len(y) != 32 {
		return nil, errors.New("y: want 32 base64url bytes")
	}
	// ParseUncompressedPublicKey checks that the point is on the curve.
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
}

func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New("empty")
	}
	return new(big.Int).SetBytes(b), nil
}
