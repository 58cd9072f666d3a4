package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testSecret = "0123456789abcdef0123456789abcdef-test-secret"
	testIss    = "https://issuer.example"
	testAud    = "orders-service"
)

type testKeys struct {
	rsa, rsaOther *rsa.PrivateKey
	ec, ecOther   *ecdsa.PrivateKey
}

var keysOnce = sync.OnceValue(func() testKeys {
	gen := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	}
	genEC := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}
	return testKeys{rsa: gen(), rsaOther: gen(), ec: genEC(), ecOther: genEC()}
})

func pemPublicKey(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]string {
	raw, err := k.Bytes()
	if err != nil {
		panic(err)
	}
	return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])}
}

func jwksFile(t *testing.T, keys ...map[string]string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "jwks.json", b)
}

func newTestVerifier(t *testing.T, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier(%v): %v", cfg, err)
	}
	if !v.Enabled() {
		t.Fatalf("NewVerifier(%v) is disabled", cfg)
	}
	return v
}

// goodClaims returns valid claims with any of the overrides applied; a nil
// override value deletes the claim.
func goodClaims(over map[string]any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"sub":   "alice",
		"roles": []string{RoleAdmin},
		"iss":   testIss,
		"aud":   testAud,
		"iat":   now.Unix(),
		"nbf":   now.Unix(),
		"exp":   now.Add(5 * time.Minute).Unix(),
	}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerify(t *testing.T) {
	k := keysOnce()
	rsaPEM := pemPublicKey(t, &k.rsa.PublicKey)
	withIssAud := func(c Config) Config { c.Mode, c.Issuer, c.Audience = ModeJWT, testIss, testAud; return c }
	verifiers := map[string]*Verifier{
		"hs":      newTestVerifier(t, withIssAud(Config{HS256Secret: testSecret})),
		"hs-open": newTestVerifier(t, Config{Mode: ModeJWT, HS256SecretFile: writeFile(t, "secret", []byte(testSecret+"\n"))}),
		"rs":      newTestVerifier(t, withIssAud(Config{PublicKeyFile: writeFile(t, "rsa.pem", rsaPEM)})),
		"es":      newTestVerifier(t, withIssAud(Config{PublicKeyFile: writeFile(t, "ec.pem", pemPublicKey(t, &k.ec.PublicKey))})),
		"jwks": newTestVerifier(t, withIssAud(Config{PublicKeyFile: jwksFile(t,
			rsaJWK("rsa-1", &k.rsa.PublicKey), ecJWK("ec-1", &k.ec.PublicKey),
			map[string]string{"kty": "oct", "kid": "sym", "k": b64([]byte(testSecret))})})),
	}
	hs, rs, es := jwt.SigningMethodHS256, jwt.SigningMethodRS256, jwt.SigningMethodES256
	secret := []byte(testSecret)
	now := time.Now()
	valid := sign(t, hs, secret, "", goodClaims(nil))
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + b64([]byte(`{"sub":"mallory","exp":9999999999,"iss":"`+testIss+`","aud":"`+testAud+`"}`)) + "." + parts[2]
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		verifier string
		token    string
		wantSub  string // empty: must be rejected
		wantErr  error  // why it must be rejected
	}{
		{"HS256 valid", "hs", valid, "alice", nil},
		{"HS256 from secret file, no iss/aud configured", "hs-open", sign(t, hs, secret, "", goodClaims(map[string]any{"iss": nil, "aud": nil})), "alice", nil},
		{"HS256 expired within leeway", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"exp": now.Add(-Leeway / 2).Unix()})), "alice", nil},
		{"HS256 MintHS256 token", "hs", mustMint(t, secret, "bob", nil, testIss, testAud), "bob", nil},
		{"RS256 PEM valid", "rs", sign(t, rs, k.rsa, "", goodClaims(nil)), "alice", nil},
		{"ES256 PEM valid", "es", sign(t, es, k.ec, "", goodClaims(nil)), "alice", nil},
		{"JWKS RS256 with kid", "jwks", sign(t, rs, k.rsa, "rsa-1", goodClaims(nil)), "alice", nil},
		{"JWKS ES256 with kid", "jwks", sign(t, es, k.ec, "ec-1", goodClaims(nil)), "alice", nil},
		{"JWKS RS256 without kid", "jwks", sign(t, rs, k.rsa, "", goodClaims(nil)), "alice", nil},

		{"expired", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"exp": now.Add(-time.Hour).Unix()})), "", jwt.ErrTokenExpired},
		{"not yet valid (nbf)", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"nbf": now.Add(time.Hour).Unix()})), "", jwt.ErrTokenNotValidYet},
		{"issued in the future (iat)", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"iat": now.Add(time.Hour).Unix()})), "", jwt.ErrTokenUsedBeforeIssued},
		{"wrong issuer", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"iss": "https://evil.example"})), "", jwt.ErrTokenInvalidIssuer},
		{"missing issuer", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"iss": nil})), "", jwt.ErrTokenRequiredClaimMissing},
		{"wrong audience", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"aud": "other-service"})), "", jwt.ErrTokenInvalidAudience},
		{"missing audience", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"aud": nil})), "", jwt.ErrTokenRequiredClaimMissing},
		{"HS256 wrong secret", "hs", sign(t, hs, []byte("another-secret-of-at-least-32-bytes!!"), "", goodClaims(nil)), "", jwt.ErrTokenSignatureInvalid},
		{"RS256 wrong key", "rs", sign(t, rs, k.rsaOther, "", goodClaims(nil)), "", jwt.ErrTokenSignatureInvalid},
		{"ES256 wrong key", "es", sign(t, es, k.ecOther, "", goodClaims(nil)), "", jwt.ErrTokenSignatureInvalid},
		{"JWKS RS256 wrong key with known kid", "jwks", sign(t, rs, k.rsaOther, "rsa-1", goodClaims(nil)), "", jwt.ErrTokenSignatureInvalid},
		{"JWKS unknown kid", "jwks", sign(t, rs, k.rsa, "rsa-9", goodClaims(nil)), "", jwt.ErrTokenUnverifiable},
		{"JWKS kid of an EC key on an RS256 token", "jwks", sign(t, rs, k.rsa, "ec-1", goodClaims(nil)), "", jwt.ErrTokenUnverifiable},
		{"JWKS HS256 with the oct key's bytes", "jwks", sign(t, hs, secret, "sym", goodClaims(nil)), "", jwt.ErrTokenSignatureInvalid},
		{"alg none", "hs", none, "", jwt.ErrTokenSignatureInvalid},
		{"alg none to RS verifier", "rs", none, "", jwt.ErrTokenSignatureInvalid},
		{"alg confusion: HS256 keyed with RSA public PEM", "rs", sign(t, hs, rsaPEM, "", goodClaims(nil)), "", jwt.ErrTokenSignatureInvalid},
		{"alg confusion: HS256 keyed with RSA public PEM, JWKS", "jwks", sign(t, hs, rsaPEM, "rsa-1", goodClaims(nil)), "", jwt.ErrTokenSignatureInvalid},
		{"RS256 token to HS verifier", "hs", sign(t, rs, k.rsa, "", goodClaims(nil)), "", jwt.ErrTokenSignatureInvalid},
		{"ES256 token to RS verifier", "rs", sign(t, es, k.ec, "", goodClaims(nil)), "", jwt.ErrTokenSignatureInvalid},
		{"RS256 token to ES verifier", "es", sign(t, rs, k.rsa, "", goodClaims(nil)), "", jwt.ErrTokenSignatureInvalid},
		{"missing sub", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"sub": nil})), "", jwt.ErrTokenInvalidClaims},
		{"empty sub", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"sub": ""})), "", jwt.ErrTokenInvalidClaims},
		{"blank sub", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"sub": "   "})), "", jwt.ErrTokenInvalidClaims},
		{"numeric sub", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"sub": 42})), "", jwt.ErrTokenMalformed},
		{"missing exp", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"exp": nil})), "", jwt.ErrTokenRequiredClaimMissing},
		{"roles not an array", "hs", sign(t, hs, secret, "", goodClaims(map[string]any{"roles": RoleAdmin})), "", jwt.ErrTokenMalformed},
		{"tampered payload", "hs", tampered, "", jwt.ErrTokenSignatureInvalid},
		{"garbage: empty", "hs", "", "", ErrInvalidToken},
		{"garbage: word", "hs", "garbage", "", jwt.ErrTokenMalformed},
		{"garbage: three dots", "hs", "a.b.c", "", jwt.ErrTokenMalformed},
		{"garbage: empty segments", "hs", "..", "", jwt.ErrTokenMalformed},
		{"garbage: header only", "hs", b64([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "..", "", jwt.ErrTokenMalformed},
		{"garbage: oversized", "hs", strings.Repeat("A", maxTokenLen+1), "", ErrInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := verifiers[tc.verifier].Verify(tc.token)
			if tc.wantSub != "" {
				if err != nil {
					t.Fatalf("Verify: %v, want accepted", err)
				}
				if p.Subject != tc.wantSub {
					t.Fatalf("Subject = %q, want %q", p.Subject, tc.wantSub)
				}
				t.Logf("accepted: sub=%q roles=%v", p.Subject, p.Roles)
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted the token as %+v, want rejected", p)
			}
			if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v does not wrap ErrInvalidToken and %v", err, tc.wantErr)
			}
			if len(tc.token) > 8 && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error echoes the token: %v", err)
			}
			t.Logf("rejected: %v", err)
		})
	}
}

func mustMint(t *testing.T, secret []byte, sub string, roles []string, iss, aud string) string {
	t.Helper()
	s, err := MintHS256(secret, sub, roles, iss, aud, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyReturnsRoles(t *testing.T) {
	secret := []byte(testSecret)
	v := newTestVerifier(t, Config{Mode: ModeJWT, HS256Secret: testSecret, Issuer: testIss, Audience: testAud})
	p, err := v.Verify(mustMint(t, secret, "svc", []string{RoleService, "x"}, testIss, testAud))
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "svc" || !slices.Equal(p.Roles, []string{RoleService, "x"}) || !p.Privileged() {
		t.Fatalf("principal = %+v, want svc with roles [orders.service x], privileged", p)
	}
}

func TestMintHS256RejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secret []byte
		sub    string
		ttl    time.Duration
	}{
		{"empty secret", nil, "a", time.Minute},
		{"empty sub", []byte(testSecret), "", time.Minute},
		{"zero ttl", []byte(testSecret), "a", 0},
	} {
		if _, err := MintHS256(tc.secret, tc.sub, nil, "", "", tc.ttl); err == nil {
			t.Errorf("%s: MintHS256 succeeded, want error", tc.name)
		}
	}
}

func TestDisabledVerifier(t *testing.T) {
	v, err := NewVerifier(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if v.Enabled() {
		t.Fatal("verifier of mode none is enabled")
	}
	var nilV *Verifier
	if nilV.Enabled() {
		t.Fatal("nil verifier is enabled")
	}
	if _, err := v.Verify(mustMint(t, []byte(testSecret), "a", nil, "", "")); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("disabled Verify error = %v, want ErrInvalidToken", err)
	}
}

func selfSignedCertPEM(t *testing.T, key *rsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
