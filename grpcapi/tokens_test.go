package grpcapi_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

// TestHostileTokensAreUnauthenticated sends every kind of bad token through
// a real gRPC server and expects UNAUTHENTICATED, never anything else.
func TestHostileTokensAreUnauthenticated(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pubFile := filepath.Join(t.TempDir(), "pub.pem")
	os.WriteFile(pubFile, pubPEM, 0o600)
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)

	db := pgtest.Open(t, testDSN)
	svc := postgres.NewOrderService(db, postgres.NewOrderWriter("orders.events", cloudevents.Encoder[postgres.Header]{Source: "test"}), "USD")
	client := func(cfg auth.Config) orderspb.OrderServiceClient {
		v, err := auth.NewVerifier(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := serveWith(t, svc, grpcapi.Options{Log: quiet,
			Interceptors: []grpc.UnaryServerInterceptor{auth.UnaryServerInterceptor(v)}})
		return c
	}
	hs := client(auth.Config{Mode: auth.ModeJWT, HS256Secret: string(secret), Issuer: "idp", Audience: "orders"})
	rs := client(auth.Config{Mode: auth.ModeJWT, PublicKeyFile: pubFile})

	now := time.Now()
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "iss": "idp", "aud": "orders", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	}
	with := func(k string, v any) jwt.MapClaims { c := good(); c[k] = v; return c }
	without := func(k string) jwt.MapClaims { c := good(); delete(c, k); return c }
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, good()).SignedString(jwt.UnsafeAllowNoneSignatureType)

	// Sanity: the good tokens pass, so the rejections below are about the token.
	for name, c := range map[string]struct {
		client orderspb.OrderServiceClient
		token  string
	}{
		"HS256": {hs, sign(jwt.SigningMethodHS256, secret, good())},
		"RS256": {rs, sign(jwt.SigningMethodRS256, rsaKey, good())},
	} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+c.token)
		if _, err := c.client.GetOrders(ctx, &orderspb.GetOrdersRequest{}); err != nil {
			t.Fatalf("good %s token refused: %v", name, err)
		}
	}

	for name, c := range map[string]struct {
		client orderspb.OrderServiceClient
		token  string
	}{
		"expired":                     {hs, sign(jwt.SigningMethodHS256, secret, with("exp", now.Add(-time.Hour).Unix()))},
		"not yet valid":               {hs, sign(jwt.SigningMethodHS256, secret, with("nbf", now.Add(time.Hour).Unix()))},
		"wrong issuer":                {hs, sign(jwt.SigningMethodHS256, secret, with("iss", "evil"))},
		"wrong audience":              {hs, sign(jwt.SigningMethodHS256, secret, with("aud", "billing"))},
		"wrong HS key":                {hs, sign(jwt.SigningMethodHS256, []byte("another secret that is long enough!!"), good())},
		"wrong RS key":                {rs, sign(jwt.SigningMethodRS256, otherKey, good())},
		"alg none":                    {hs, none},
		"alg none against RS":         {rs, none},
		"HS256 with the RSA pub key":  {rs, sign(jwt.SigningMethodHS256, pubPEM, good())},
		"missing sub":                 {hs, sign(jwt.SigningMethodHS256, secret, without("sub"))},
		"missing exp":                 {hs, sign(jwt.SigningMethodHS256, secret, without("exp"))},
		"garbage":                     {hs, "garbage"},
		"three dots of garbage":       {hs, "a.b.c"},
		"empty":                       {hs, ""},
		"RS256 token to an HS server": {hs, sign(jwt.SigningMethodRS256, rsaKey, good())},
	} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+c.token)
		_, err := c.client.CreateOrder(ctx, &orderspb.CreateOrderRequest{Amount: 1})
		st := wantCodeNamed(t, name, err, codes.Unauthenticated)
		if c.token != "" && len(c.token) > 8 && strings.Contains(st.Message(), c.token) {
			t.Errorf("%s: the error echoes the token", name)
		}
	}
}
