package auth

import (
	"context"
	"testing"

	orders "github.com/acme/orders-service"
)

func TestPrincipal(t *testing.T) {
	tests := []struct {
		roles      []string
		privileged bool
	}{
		{nil, false},
		{[]string{"orders.viewer"}, false},
		{[]string{"x", RoleAdmin}, true},
		{[]string{RoleService}, true},
		{[]string{"orders.admin.extra", "ORDERS.ADMIN"}, false},
	}
	for _, tc := range tests {
		p := Principal{Subject: "u", Roles: tc.roles}
		if got := p.Privileged(); got != tc.privileged {
			t.Errorf("Privileged(%v) = %v, want %v", tc.roles, got, tc.privileged)
		}
	}
	if !(Principal{Roles: []string{"a", "b"}}).HasRole("b") || (Principal{}).HasRole("") {
		t.Error("HasRole answers wrongly")
	}
	if _, ok := FromContext(context.Background()); ok {
		t.Error("FromContext found a principal in an empty context")
	}
	want := Principal{Subject: "alice", Roles: []string{RoleAdmin}}
	got, ok := FromContext(NewContext(context.Background(), want))
	if !ok || got.Subject != want.Subject || !got.HasRole(RoleAdmin) {
		t.Errorf("FromContext = %+v, %v; want %+v", got, ok, want)
	}
}

func TestAuthorization(t *testing.T) {
	off := context.Background()
	alice := NewContext(off, Principal{Subject: "alice"})
	admin := NewContext(off, Principal{Subject: "root", Roles: []string{RoleAdmin}})
	service := NewContext(off, Principal{Subject: "billing", Roles: []string{RoleService}})

	resolve := []struct {
		name      string
		ctx       context.Context
		requested string
		want      string
		forbidden bool
	}{
		{"auth off keeps requested", off, "bob", "bob", false},
		{"auth off keeps empty", off, "", "", false},
		{"empty means sub", alice, "", "alice", false},
		{"self", alice, "alice", "alice", false},
		{"other user forbidden", alice, "bob", "", true},
		{"admin for other user", admin, "bob", "bob", false},
		{"service for other user", service, "bob", "bob", false},
		{"admin empty means sub", admin, "", "root", false},
	}
	for _, tc := range resolve {
		got, err := ResolveUser(tc.ctx, tc.requested)
		if tc.forbidden {
			if orders.ErrorCode(err) != orders.EFORBIDDEN || got != "" {
				t.Errorf("%s: ResolveUser = %q, %v; want EFORBIDDEN", tc.name, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: ResolveUser = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}

	see := []struct {
		name  string
		ctx   context.Context
		owner string
		want  bool
	}{
		{"auth off", off, "bob", true},
		{"own order", alice, "alice", true},
		{"other's order", alice, "bob", false},
		{"admin", admin, "bob", true},
		{"service", service, "bob", true},
	}
	for _, tc := range see {
		if got := CanSeeOwner(tc.ctx, tc.owner); got != tc.want {
			t.Errorf("%s: CanSeeOwner = %v, want %v", tc.name, got, tc.want)
		}
	}

	for name, tc := range map[string]struct {
		ctx       context.Context
		forbidden bool
	}{
		"auth off": {off, false}, "user": {alice, true}, "admin": {admin, false}, "service": {service, false},
	} {
		err := RequirePrivileged(tc.ctx)
		if tc.forbidden != (orders.ErrorCode(err) == orders.EFORBIDDEN) || (!tc.forbidden && err != nil) {
			t.Errorf("%s: RequirePrivileged = %v, forbidden want %v", name, err, tc.forbidden)
		}
	}
}
