package main

import (
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/grpcapi"
)

var orderColumns = []string{"ID", "USER", "AMOUNT", "CURRENCY", "STATUS", "CREATED", "DESCRIPTION"}

func TestCreateTable(t *testing.T) {
	addr := startServer(t, grpcapi.Options{})
	u := user(t)
	out := ok(t, addr, "create", "-user", u, "-amount", "1250", "-currency", "EUR", "-description", "two\tbooks\nand a pen")
	header, body := rows(t, out, len(orderColumns))
	if !slices.Equal(header, orderColumns) || len(body) != 1 {
		t.Fatalf("table:\n%s", out)
	}
	row := body[0]
	if len(row) != 7 || row[1] != u || row[2] != "1250" || row[3] != "EUR" || row[4] != "NEW" || row[6] != "two books and a pen" {
		t.Fatalf("row %q of\n%s", row, out)
	}
	if created, err := time.Parse(time.RFC3339, row[5]); err != nil || time.Since(created) > time.Minute {
		t.Fatalf("CREATED %q: %v", row[5], err)
	}
	if len(row[0]) != 36 {
		t.Fatalf("ID %q is not a UUID", row[0])
	}
}

func TestCreateJSON(t *testing.T) {
	addr := startServer(t, grpcapi.Options{})
	u := user(t)
	out := ok(t, addr, "-o", "json", "create", "-user", u, "-amount", "4200", "-description", "coffee beans", "-request-id", "checkout-1")
	var resp orderspb.CreateOrderResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("parse %s: %v", out, err)
	}
	o := resp.GetOrder()
	if o.GetUserId() != u || o.GetAmount() != 4200 || o.GetCurrency() != "USD" || o.GetDescription() != "coffee beans" ||
		o.GetStatus() != orderspb.OrderStatus_ORDER_STATUS_NEW || o.GetCreatedAt() == nil || o.GetId() == "" {
		t.Fatalf("order %v from\n%s", o, out)
	}
	var raw map[string]map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"id", "user_id", "amount", "currency", "description", "status", "created_at", "updated_at"} {
		if _, ok := raw["order"][key]; !ok {
			t.Errorf("JSON lacks proto field name %q:\n%s", key, out)
		}
	}
	if raw["order"]["status"] != "ORDER_STATUS_NEW" {
		t.Errorf("status = %v", raw["order"]["status"])
	}

	// The same request id returns the original order.
	again := ok(t, addr, "-o", "json", "create", "-user", u, "-amount", "4200", "-description", "coffee beans", "-request-id", "checkout-1")
	var second orderspb.CreateOrderResponse
	if err := protojson.Unmarshal([]byte(again), &second); err != nil || second.GetOrder().GetId() != o.GetId() {
		t.Fatalf("repeated request id gave %v (%v), want order %s", second.GetOrder(), err, o.GetId())
	}
}

// splitToken separates list's table from its next_page_token line.
func splitToken(t *testing.T, out string) (table, token string) {
	t.Helper()
	table, rest, found := strings.Cut(out, "next_page_token: ")
	if !found {
		return out, ""
	}
	token = strings.TrimSuffix(rest, "\n")
	if token == "" || strings.Contains(token, "\n") {
		t.Fatalf("bad token line in\n%s", out)
	}
	return table, token
}

func TestListPaging(t *testing.T) {
	addr := startServer(t, grpcapi.Options{})
	u := user(t)
	var created []string // newest first, as the server lists them
	for i := range 5 {
		out := ok(t, addr, "-o", "json", "create", "-user", u, "-amount", "100", "-description", "order "+string(rune('a'+i)))
		var resp orderspb.CreateOrderResponse
		if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatal(err)
		}
		created = append([]string{resp.GetOrder().GetId()}, created...)
	}
	ok(t, addr, "create", "-user", u+"-other", "-amount", "1")

	out := ok(t, addr, "-o", "json", "list", "-user", u, "-page-size", "2", "-all")
	var all orderspb.GetOrdersResponse
	if err := protojson.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("parse %s: %v", out, err)
	}
	var ids []string
	for _, o := range all.GetOrders() {
		ids = append(ids, o.GetId())
	}
	if !slices.Equal(ids, created) || all.GetNextPageToken() != "" {
		t.Fatalf("-all listed %v (next %q), want %v", ids, all.GetNextPageToken(), created)
	}

	_, body := rows(t, ok(t, addr, "list", "-user", u, "-page-size", "2", "-all"), len(orderColumns))
	if len(body) != 5 {
		t.Fatalf("-all table has %d rows, want 5", len(body))
	}

	// Without -all, each page ends with a token that fetches the next one.
	var walked []string
	args := []string{"list", "-user", u, "-page-size", "2"}
	for page := 1; ; page++ {
		table, token := splitToken(t, ok(t, addr, args...))
		header, body := rows(t, table, len(orderColumns))
		if !slices.Equal(header, orderColumns) {
			t.Fatalf("page %d header %q", page, header)
		}
		for _, r := range body {
			walked = append(walked, r[0])
		}
		if token == "" {
			break
		}
		if page == 3 {
			t.Fatalf("a third page still has a next token")
		}
		args = []string{"list", "-user", u, "-page-size", "2", "-page-token", token}
	}
	if !slices.Equal(walked, created) {
		t.Fatalf("pages listed %v, want %v", walked, created)
	}
}

func TestStatusGetFinish(t *testing.T) {
	addr := startServer(t, grpcapi.Options{})
	_, body := rows(t, ok(t, addr, "create", "-user", user(t), "-amount", "700"), len(orderColumns))
	id := body[0][0]

	for _, cmd := range []string{"status", "get"} {
		header, body := rows(t, ok(t, addr, cmd, id), 2)
		if !slices.Equal(header, []string{"ID", "STATUS"}) || len(body) != 1 || !slices.Equal(body[0], []string{id, "NEW"}) {
			t.Fatalf("%s: %q %q", cmd, header, body)
		}
	}
	var st orderspb.GetOrderStatusResponse
	if err := protojson.Unmarshal([]byte(ok(t, addr, "-o", "json", "get", id)), &st); err != nil ||
		st.GetOrderId() != id || st.GetStatus() != orderspb.OrderStatus_ORDER_STATUS_NEW {
		t.Fatalf("get -o json: %v, %v", &st, err)
	}

	_, body = rows(t, ok(t, addr, "finish", id), len(orderColumns))
	if len(body) != 1 || body[0][0] != id || body[0][4] != "FINISHED" {
		t.Fatalf("finish printed %q", body)
	}
	_, body = rows(t, ok(t, addr, "status", id), 2)
	if body[0][1] != "FINISHED" {
		t.Fatalf("status after finish: %q", body)
	}
	var fin orderspb.MarkOrderFinishedResponse
	if err := protojson.Unmarshal([]byte(ok(t, addr, "-o", "json", "finish", id)), &fin); err != nil ||
		fin.GetOrder().GetStatus() != orderspb.OrderStatus_ORDER_STATUS_FINISHED {
		t.Fatalf("finishing again: %v, %v", &fin, err)
	}
}

func TestCallErrors(t *testing.T) {
	addr := startServer(t, grpcapi.Options{})

	r := fails(t, addr, 64+3, "InvalidArgument: ", "create", "-user", "", "-amount", "5", "-currency", "usd")
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	var fields []string
	for _, l := range lines[1:] {
		field, desc, found := strings.Cut(strings.TrimPrefix(l, "  "), ": ")
		if !strings.HasPrefix(l, "  ") || !found || desc == "" {
			t.Fatalf("violation line %q in\n%s", l, r.stderr)
		}
		fields = append(fields, field)
	}
	slices.Sort(fields)
	if !slices.Equal(fields, []string{"currency", "user_id"}) {
		t.Fatalf("violations %q in\n%s", fields, r.stderr)
	}

	fails(t, addr, 64+5, "NotFound: ", "status", "6f1c5a3e-1b2c-4d5e-8f90-123456789abc")
	fails(t, addr, 64+5, "NotFound: ", "finish", "6f1c5a3e-1b2c-4d5e-8f90-123456789abc")
	fails(t, addr, 64+3, "InvalidArgument: ", "list", "-user", "x", "-page-size", "-1")
}

func TestUnreachableServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	fails(t, addr, 64+14, "Unavailable: ", "-timeout", "5s", "list", "-user", "u")
}

func TestAddressFromEnvironment(t *testing.T) {
	addr := startServer(t, grpcapi.Options{})
	u := user(t)
	if r := ctl(t, map[string]string{"ORDERSCTL_ADDR": addr}, "create", "-user", u, "-amount", "1"); r.code != 0 {
		t.Fatalf("ORDERSCTL_ADDR: exit %d: %s", r.code, r.stderr)
	}
	// -addr wins over the environment.
	if r := ctl(t, map[string]string{"ORDERSCTL_ADDR": "127.0.0.1:1"}, "-addr", addr, "list", "-user", u); r.code != 0 || !strings.Contains(r.stdout, u) {
		t.Fatalf("-addr over ORDERSCTL_ADDR: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-nope", "list"},
		{"list", "-nope"},
		{"frobnicate"},
		{"get"},
		{"status", "a", "b"},
		{"finish"},
		{"list", "extra"},
		{"create", "-amount", "ten"},
		{"list", "-page-size", "9999999999"},
		{"-o", "yaml", "list"},
		{"-timeout", "0s", "list"},
		{"-cert", "c.pem", "list"},
		{"token", "-sub", "alice"},
		{"token", "-secret", "x", "-secret-file", "f", "-sub", "alice"},
		{"token", "-secret", "short", "-sub", "alice"},
		{"token", "-secret", strings.Repeat("s", 32)},
		{"token", "-secret", strings.Repeat("s", 32), "-sub", "alice", "-ttl", "-1h"},
	} {
		// No server runs at this address: a usage error must not call one.
		r := ctl(t, nil, append([]string{"-addr", "127.0.0.1:1"}, args...)...)
		if r.code != 2 || r.stdout != "" || r.stderr == "" {
			t.Errorf("ordersctl %q: exit %d, stdout %q, stderr %q; want exit 2 and a message", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{{"-h"}, {"list", "-h"}, {"token", "-h"}} {
		if r := ctl(t, nil, args...); r.code != 0 || !strings.Contains(r.stderr, "usage: ordersctl") {
			t.Errorf("ordersctl %q: exit %d, stderr %q; want usage and exit 0", args, r.code, r.stderr)
		}
	}
}
