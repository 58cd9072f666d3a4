package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestConfigValidate(t *testing.T) {
	long := strings.Repeat("s", minSecretLen)
	tests := []struct {
		name string
		cfg  Config
		want string // prefix of the error; empty: valid
	}{
		{"zero value is none", Config{}, ""},
		{"none", Config{Mode: ModeNone}, ""},
		{"jwt with secret", Config{Mode: ModeJWT, HS256Secret: long}, ""},
		{"jwt with secret file", Config{Mode: ModeJWT, HS256SecretFile: "/x"}, ""},
		{"jwt with key file and iss/aud", Config{Mode: ModeJWT, PublicKeyFile: "/x", Issuer: "i", Audience: "a"}, ""},
		{"unknown mode", Config{Mode: "JWT"}, EnvMode + ":"},
		{"jwt without key", Config{Mode: ModeJWT}, EnvMode + ":"},
		{"jwt with two keys", Config{Mode: ModeJWT, HS256Secret: long, PublicKeyFile: "/x"}, EnvHS256Secret + ":"},
		{"jwt with secret and secret file", Config{Mode: ModeJWT, HS256SecretFile: "/x", PublicKeyFile: "/y"}, EnvHS256SecretFile + ":"},
		{"short secret", Config{Mode: ModeJWT, HS256Secret: "short-secret"}, EnvHS256Secret + ":"},
		{"secret with mode none", Config{HS256Secret: long}, EnvHS256Secret + ":"},
		{"key file with mode none", Config{Mode: ModeNone, PublicKeyFile: "/x"}, EnvPublicKeyFile + ":"},
		{"issuer with mode none", Config{Issuer: "i"}, EnvIssuer + ":"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Validate error = %v, want prefix %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			if tc.cfg.HS256Secret != "" && strings.Contains(err.Error(), tc.cfg.HS256Secret) {
				t.Errorf("error contains the secret: %v", err)
			}
		})
	}
}

func TestConfigMasksSecret(t *testing.T) {
	const secret = "do-not-print-this-secret-0123456789"
	cfg := Config{Mode: ModeJWT, HS256Secret: secret, Issuer: "iss-x"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "auth", cfg)
	//lint:ignore S1025 the test checks what the %s verb prints
	asString := fmt.Sprintf("%s", cfg)
	outputs := map[string]string{
		"slog": buf.String(),
		"%v":   fmt.Sprintf("%v", cfg),
		"%+v":  fmt.Sprintf("%+v", cfg),
		"%#v":  fmt.Sprintf("%#v", cfg),
		"%s":   asString,
		"ptr":  fmt.Sprintf("%v", &cfg),
	}
	for name, out := range outputs {
		if strings.Contains(out, secret) {
			t.Errorf("%s output contains the secret: %s", name, out)
		}
		if !strings.Contains(out, "[REDACTED]") || !strings.Contains(out, "iss-x") {
			t.Errorf("%s output lacks the masked secret or the issuer: %s", name, out)
		}
	}
}

func TestNewVerifierKeyErrors(t *testing.T) {
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakDER, err := x509.MarshalPKIXPublicKey(&weak.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	k := keysOnce()
	privDER := x509.MarshalPKCS1PrivateKey(k.rsa)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing secret file", Config{HS256SecretFile: "/nonexistent/secret"}, EnvHS256SecretFile + ":"},
		{"short secret file", Config{HS256SecretFile: writeFile(t, "s", []byte("short\n"))}, EnvHS256SecretFile + ":"},
		{"missing key file", Config{PublicKeyFile: "/nonexistent/key.pem"}, EnvPublicKeyFile + ":"},
		{"not PEM", Config{PublicKeyFile: writeFile(t, "k", []byte("hello"))}, EnvPublicKeyFile + ": no PEM block"},
		{"private key PEM", Config{PublicKeyFile: writeFile(t, "k", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: privDER}))}, EnvPublicKeyFile + ": PEM block"},
		{"RSA 1024", Config{PublicKeyFile: writeFile(t, "k", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: weakDER}))}, EnvPublicKeyFile + ": RSA key has 1024 bits"},
		{"bad JWKS JSON", Config{PublicKeyFile: writeFile(t, "k", []byte(`{"keys": [`))}, EnvPublicKeyFile + ": parse JWKS"},
		{"JWKS without usable key", Config{PublicKeyFile: jwksFile(t, map[string]string{"kty": "oct", "k": "c2VjcmV0"})}, EnvPublicKeyFile + ": JWKS has no"},
		{"JWKS EC point off curve", Config{PublicKeyFile: jwksFile(t, map[string]string{"kty": "EC", "crv": "P-256",
			"x": b64(bytes.Repeat([]byte{1}, 32)), "y": b64(bytes.Repeat([]byte{2}, 32))})}, EnvPublicKeyFile + ": JWKS key 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Mode = ModeJWT
			_, err := NewVerifier(tc.cfg)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("NewVerifier error = %v, want prefix %q", err, tc.want)
			}
		})
	}
}

func TestNewVerifierAcceptsCertificateAndPKCS1(t *testing.T) {
	k := keysOnce()
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)})
	tok := sign(t, jwt.SigningMethodRS256, k.rsa, "", goodClaims(nil))
	for name, file := range map[string][]byte{"PKCS1": pkcs1, "certificate": selfSignedCertPEM(t, k.rsa)} {
		v := newTestVerifier(t, Config{Mode: ModeJWT, PublicKeyFile: writeFile(t, "k.pem", file)})
		if p, err := v.Verify(tok); err != nil || p.Subject != "alice" {
			t.Errorf("%s: Verify = %+v, %v; want alice", name, p, err)
		}
	}
}
