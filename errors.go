package orders

import (
	"errors"
	"fmt"
)

// Code is the kind of an application error. Adapters translate codes to
// their protocol (gRPC status codes, log levels) in exactly one place each.
type Code string

// Error kinds.
const (
	EINVALID      Code = "invalid"      // the request is malformed
	ENOTFOUND     Code = "not_found"    // the entity does not exist (or is not the caller's)
	ECONFLICT     Code = "conflict"     // the entity's state forbids the change
	EEXISTS       Code = "exists"       // an idempotency key was reused for a different request
	EUNAUTHORIZED Code = "unauthorized" // no valid credentials
	EFORBIDDEN    Code = "forbidden"    // valid credentials, not allowed
	ELIMIT        Code = "limit"        // a rate or size limit was hit
	EUNAVAILABLE  Code = "unavailable"  // a dependency is down; retrying may help
	EINTERNAL     Code = "internal"     // a bug or an unexpected failure
)

// Error is an application error with a code safe to show to callers.
// Fields lists per-field violations for EINVALID.
type Error struct {
	Code    Code
	Message string
	Fields  []FieldViolation
}

// FieldViolation names one bad request field and why it is bad.
type FieldViolation struct {
	Field       string
	Description string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, "" for nil
// and EINTERNAL for any other error.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the caller-safe message of err: the *Error's message,
// or "internal error" for anything else, so internals never leak.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// Violations collects field violations into one EINVALID error.
type Violations []FieldViolation

// Add records that field is bad for reason.
func (v *Violations) Add(field, reason string) {
	*v = append(*v, FieldViolation{Field: field, Description: reason})
}

// Check records a violation when reason is not empty.
func (v *Violations) Check(field, reason string) {
	if reason != "" {
		v.Add(field, reason)
	}
}

// Err returns nil when nothing was recorded, else an EINVALID *Error.
func (v Violations) Err() error {
	if len(v) == 0 {
		return nil
	}
	msg := "invalid " + v[0].Field + ": " + v[0].Description
	if len(v) > 1 {
		msg = fmt.Sprintf("%s (and %d more)", msg, len(v)-1)
	}
	return &Error{Code: EINVALID, Message: msg, Fields: v}
}
