package auth

import (
	"context"
	"slices"
)

// Roles that widen what a caller may do.
const (
	RoleAdmin   = "orders.admin"
	RoleService = "orders.service"
)

// Principal is an authenticated caller: Subject is the token's sub, the
// caller's user id; Roles come from the token's roles claim.
type Principal struct {
	Subject string
	Roles   []string
}

// HasRole reports whether p holds role.
func (p Principal) HasRole(role string) bool { return slices.Contains(p.Roles, role) }

// Privileged reports whether p may act for any user and finish orders:
// it holds orders.admin or orders.service.
func (p Principal) Privileged() bool { return p.HasRole(RoleAdmin) || p.HasRole(RoleService) }

type principalKey struct{}

// NewContext returns a copy of ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal in ctx; false when there is none, which
// means authentication is off.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
