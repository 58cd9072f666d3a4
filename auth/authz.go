package auth

import (
	"context"

	orders "github.com/acme/orders-service"
)

// ResolveUser returns the user a request acts for. Without a principal in
// ctx (authentication off) it returns requested unchanged. With one, an
// empty requested means the caller's sub, the caller's own sub is allowed,
// and another user needs a privileged role, else an EFORBIDDEN error.
func ResolveUser(ctx context.Context, requested string) (string, error) {
	p, ok := FromContext(ctx)
	switch {
	case !ok:
		return requested, nil
	case requested == "" || requested == p.Subject:
		return p.Subject, nil
	case p.Privileged():
		return requested, nil
	}
	return "", orders.Errorf(orders.EFORBIDDEN, "not allowed to act for another user")
}

// CanSeeOwner reports whether the caller may see an entity owned by
// owner: true with authentication off, for a privileged caller, or when owner
// is the caller. Callers report false as ENOTFOUND so ids of other users'
// orders are not disclosed.
func CanSeeOwner(ctx context.Context, owner string) bool {
	p, ok := FromContext(ctx)
	return !ok || p.Privileged() || owner == p.Subject
}

// RequirePrivileged returns nil with authentication off or for a privileged
// caller, else an EFORBIDDEN error.
func RequirePrivileged(ctx context.Context) error {
	if p, ok := FromContext(ctx); ok && !p.Privileged() {
		return orders.Errorf(orders.EFORBIDDEN, "requires role %s or %s", RoleAdmin, RoleService)
	}
	return nil
}
