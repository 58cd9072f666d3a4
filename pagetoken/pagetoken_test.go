package pagetoken_test

import (
	"strings"
	"testing"
	"time"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/pagetoken"
)

var key = []byte("0123456789abcdef0123456789abcdef")

func TestRoundTrip(t *testing.T) {
	c := orders.Cursor{CreatedAt: time.Date(2026, 11, 26, 12, 0, 0, 123456000, time.UTC), ID: "0190f5e4-8c1a-7b3e-9f00-1234567890ab"}
	tok := pagetoken.Encode(key, "alice", c)
	got, err := pagetoken.Decode(key, "alice", tok)
	if err != nil {
		t.Fatal(err)
	}
	if !got.CreatedAt.Equal(c.CreatedAt) || got.ID != c.ID {
		t.Fatalf("got %+v, want %+v", got, c)
	}
}

func TestRejected(t *testing.T) {
	c := orders.Cursor{CreatedAt: time.Now(), ID: "0190f5e4-8c1a-7b3e-9f00-1234567890ab"}
	tok := pagetoken.Encode(key, "alice", c)
	flipped := []byte(tok)
	flipped[5] ^= 1
	cases := map[string]struct{ user, token string }{
		"other user":     {"bob", tok},
		"tampered":       {"alice", string(flipped)},
		"truncated":      {"alice", tok[:len(tok)-2]},
		"garbage":        {"alice", "not a token!"},
		"empty":          {"alice", "x"},
		"too long":       {"alice", strings.Repeat("A", 1000)},
		"other key used": {"alice", pagetoken.Encode([]byte("another key"), "alice", c)},
	}
	for name, tc := range cases {
		if _, err := pagetoken.Decode(key, tc.user, tc.token); err != pagetoken.ErrInvalid {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("alice", pagetoken.Encode(key, "alice", orders.Cursor{CreatedAt: time.Unix(1700000000, 0), ID: "0190f5e4-8c1a-7b3e-9f00-1234567890ab"}))
	f.Add("bob", "")
	f.Add("", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, user, token string) {
		c, err := pagetoken.Decode(key, user, token)
		if err != nil {
			return
		}
		// Anything accepted must re-encode to the same token.
		if again := pagetoken.Encode(key, user, c); again != token {
			t.Fatalf("accepted token %q re-encodes to %q", token, again)
		}
	})
}
