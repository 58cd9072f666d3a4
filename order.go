// Package orders is the domain of orders-service: orders, their status
// transitions, the events they emit and the error kinds the adapters translate.
// It imports nothing of the project and only the standard library.
package orders

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Status is the life-cycle state of an order, stored as these exact strings.
type Status string

// The statuses an order can be in. New is the only non-final one.
const (
	StatusNew       Status = "new"
	StatusFinished  Status = "finished"
	StatusCancelled Status = "cancelled"
)

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusNew, StatusFinished, StatusCancelled:
		return true
	}
	return false
}

// Limits on order fields. Amounts are minor units (cents); MaxAmount keeps
// sums far from int64 overflow while allowing any realistic order.
const (
	MaxUserIDLen      = 128
	MaxDescriptionLen = 1000
	MaxRequestIDLen   = 128
	MaxReasonLen      = 1000
	MaxAmount         = 100_000_000_000_000 // one trillion major units
	DefaultCurrency   = "USD"
	DefaultPageSize   = 50
	MaxPageSize       = 500
)

// Order is a user's order. Amount is in minor units of Currency.
type Order struct {
	ID          string
	UserID      string
	Amount      int64
	Currency    string
	Description string
	Status      Status
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// NewOrder is what a caller asks to create. RequestID, when set, makes the
// creation idempotent per user.
type NewOrder struct {
	UserID      string
	Amount      int64
	Currency    string
	Description string
	RequestID   string
}

// Validate checks every field of n and returns an EINVALID *Error naming each
// bad field, or nil. An empty Currency is valid: the service fills a default.
func (n NewOrder) Validate() error {
	var v Violations
	v.Check("user_id", ValidateUserID(n.UserID))
	switch {
	case n.Amount <= 0:
		v.Add("amount", "must be greater than 0")
	case n.Amount > MaxAmount:
		v.Add("amount", fmt.Sprintf("must be at most %d minor units", int64(MaxAmount)))
	}
	if n.Currency != "" {
		v.Check("currency", ValidateCurrency(n.Currency))
	}
	v.Check("description", validateText(n.Description, MaxDescriptionLen, true))
	if n.RequestID != "" {
		v.Check("request_id", validateText(n.RequestID, MaxRequestIDLen, false))
	}
	return v.Err()
}

// ValidateUserID returns a reason why id is not a valid user id, or "".
func ValidateUserID(id string) string {
	if strings.TrimSpace(id) == "" {
		return "must not be empty"
	}
	return validateText(id, MaxUserIDLen, false)
}

// ValidateCurrency returns a reason why c is not an ISO 4217 alphabetic code
// (three upper-case ASCII letters), or "".
func ValidateCurrency(c string) string {
	if len(c) != 3 {
		return "must be a three-letter ISO 4217 code such as USD"
	}
	for i := 0; i < 3; i++ {
		if c[i] < 'A' || c[i] > 'Z' {
			return "must be a three-letter ISO 4217 code such as USD"
		}
	}
	return ""
}

// ValidateOrderID returns a reason why id is not a canonical UUID
// (8-4-4-4-12 hexadecimal digits), or "".
func ValidateOrderID(id string) string {
	const reason = "must be a UUID such as 0190f5e4-8c1a-7b3e-9f00-1234567890ab"
	if len(id) != 36 {
		return reason
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return reason
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return reason
			}
		}
	}
	return ""
}

// validateText checks that s is valid UTF-8 of at most max characters without
// NUL bytes (which PostgreSQL text cannot hold). Multi-line text is allowed
// only when multiline is set; other control characters never are.
func validateText(s string, max int, multiline bool) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	if n := utf8.RuneCountInString(s); n > max {
		return fmt.Sprintf("must be at most %d characters, got %d", max, n)
	}
	for _, r := range s {
		if r == 0 {
			return "must not contain NUL characters"
		}
		if multiline && (r == '\n' || r == '\r' || r == '\t') {
			continue
		}
		if unicode.IsControl(r) {
			return "must not contain control characters"
		}
	}
	return ""
}

// Finish moves a new order to finished at time now. Finishing a finished
// order reports changed=false and no error; a cancelled order is refused with
// ECONFLICT.
func (o *Order) Finish(now time.Time) (changed bool, err error) {
	return o.transition(StatusFinished, now)
}

// Cancel moves a new order to cancelled at time now. Cancelling a cancelled
// order reports changed=false; a finished order is refused with ECONFLICT.
func (o *Order) Cancel(now time.Time) (changed bool, err error) {
	return o.transition(StatusCancelled, now)
}

func (o *Order) transition(to Status, now time.Time) (bool, error) {
	switch o.Status {
	case to:
		return false, nil
	case StatusNew:
		o.Status = to
		o.UpdatedAt = now
		return true, nil
	default:
		return false, Errorf(ECONFLICT, "order %s is %s and cannot become %s", o.ID, o.Status, to)
	}
}

// Cursor is a position in a user's newest-first order list: the last order
// of the previous page.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}
