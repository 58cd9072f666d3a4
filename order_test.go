package orders_test

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/acme/orders-service"
)

func TestTransitions(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		from    orders.Status
		finish  bool
		changed bool
		code    orders.Code
		to      orders.Status
	}{
		{orders.StatusNew, true, true, "", orders.StatusFinished},
		{orders.StatusNew, false, true, "", orders.StatusCancelled},
		{orders.StatusFinished, true, false, "", orders.StatusFinished},
		{orders.StatusCancelled, false, false, "", orders.StatusCancelled},
		{orders.StatusCancelled, true, false, orders.ECONFLICT, orders.StatusCancelled},
		{orders.StatusFinished, false, false, orders.ECONFLICT, orders.StatusFinished},
	} {
		o := &orders.Order{ID: "o", Status: tc.from}
		var changed bool
		var err error
		if tc.finish {
			changed, err = o.Finish(now)
		} else {
			changed, err = o.Cancel(now)
		}
		if changed != tc.changed || orders.ErrorCode(err) != tc.code || o.Status != tc.to {
			t.Errorf("%s finish=%v: changed=%v err=%v status=%s", tc.from, tc.finish, changed, err, o.Status)
		}
		if changed != o.UpdatedAt.Equal(now) {
			t.Errorf("%s finish=%v: updated_at %v", tc.from, tc.finish, o.UpdatedAt)
		}
	}
}

func TestValidateOrderID(t *testing.T) {
	for id, ok := range map[string]bool{
		"0190f5e4-8c1a-7b3e-9f00-1234567890ab": true,
		"0190F5E4-8C1A-7B3E-9F00-1234567890AB": true,
		"0190f5e48c1a7b3e9f001234567890ab":     false,
		"0190f5e4-8c1a-7b3e-9f00-1234567890ag": false,
		"":                                     false,
		"0190f5e4-8c1a-7b3e-9f00_1234567890ab": false,
	} {
		if got := orders.ValidateOrderID(id) == ""; got != ok {
			t.Errorf("ValidateOrderID(%q) ok = %v, want %v", id, got, ok)
		}
	}
}

// FuzzValidateNewOrder checks that validation never panics and that what it
// accepts is storable: valid UTF-8 without NUL, within every limit.
func FuzzValidateNewOrder(f *testing.F) {
	f.Add("alice", int64(1250), "EUR", "two books", "checkout-1")
	f.Add("", int64(0), "", "", "")
	f.Add("bob\x00", int64(-1), "usd", "caf\xe9", strings.Repeat("k", 200))
	f.Add(strings.Repeat("ж", 128), int64(orders.MaxAmount), "XTS", strings.Repeat("x", 1000), "r")
	f.Add("'; DROP TABLE orders; --", int64(1), "USD", "line one\nline two\ttab", "\u202e")
	f.Fuzz(func(t *testing.T, user string, amount int64, currency, description, requestID string) {
		err := orders.NewOrder{UserID: user, Amount: amount, Currency: currency, Description: description, RequestID: requestID}.Validate()
		if err != nil {
			if orders.ErrorCode(err) != orders.EINVALID {
				t.Fatalf("validation error of kind %s: %v", orders.ErrorCode(err), err)
			}
			return
		}
		for _, s := range []string{user, currency, description, requestID} {
			if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
				t.Fatalf("accepted text that PostgreSQL cannot store: %q", s)
			}
		}
		if strings.TrimSpace(user) == "" || utf8.RuneCountInString(user) > orders.MaxUserIDLen ||
			utf8.RuneCountInString(description) > orders.MaxDescriptionLen ||
			utf8.RuneCountInString(requestID) > orders.MaxRequestIDLen ||
			amount <= 0 || amount > orders.MaxAmount || (currency != "" && len(currency) != 3) {
			t.Fatalf("accepted out-of-limit order %q %d %q %q %q", user, amount, currency, description, requestID)
		}
	})
}
