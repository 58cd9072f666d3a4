package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"

	orders "github.com/acme/orders-service"
	"github.com/acme/orders-service/gen/orderspb"
)

// isSet reports whether flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// flags returns the flag set of command name; synopsis follows the name in
// its usage line, which parse completes with the command's flags.
func (a *app) flags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ordersctl [global flags] %s %s [global flags]\n", name, synopsis)
	}
	return fs
}

// parse parses the command's args, in which flags and positional arguments
// may mix and the global flags may appear too, checks that exactly want
// positional arguments, named what, were given, and completes the global
// options (app.ready).
func (a *app) parse(fs *flag.FlagSet, args []string, want int, what string) ([]string, error) {
	// The usage shows the command's own flags; the global ones are in ordersctl -h.
	own := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	fs.VisitAll(func(f *flag.Flag) { own.Var(f.Value, f.Name, f.Usage) })
	own.SetOutput(fs.Output())
	line := fs.Usage
	fs.Usage = func() {
		line()
		own.PrintDefaults()
		fmt.Fprintln(fs.Output(), "global flags (-addr, -token, -o, ...): see ordersctl -h")
	}
	a.globalFlags(fs)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, flagError(err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != want {
		if want == 0 {
			return nil, usagef("%s: unexpected argument %q", fs.Name(), pos[0])
		}
		return nil, usagef("%s: want exactly one %s, got %d arguments", fs.Name(), what, len(pos))
	}
	return pos, a.ready()
}

// orderIDArg returns the one order id of pos, checked before any call.
func orderIDArg(name string, pos []string) (string, error) {
	if reason := orders.ValidateOrderID(pos[0]); reason != "" {
		return "", usagef("%s: order id %q: %s", name, pos[0], reason)
	}
	return pos[0], nil
}

func cmdCreate(ctx context.Context, a *app, args []string) error {
	fs := a.flags("create", "[-user id] -amount n [-currency code] [-description text] [-request-id key]")
	req := &orderspb.CreateOrderRequest{}
	fs.StringVar(&req.UserId, "user", "", "user `id`; with JWT auth, empty means the token's subject")
	fs.Int64Var(&req.Amount, "amount", 0, "amount in minor units (cents), greater than 0")
	fs.StringVar(&req.Currency, "currency", "", "ISO 4217 `code`; empty means the server default")
	fs.StringVar(&req.Description, "description", "", "description `text`, at most 1000 characters")
	fs.StringVar(&req.RequestId, "request-id", "", "idempotency `key`: repeating it returns the original order")
	if _, err := a.parse(fs, args, 0, ""); err != nil {
		return err
	}
	switch {
	case !isSet(fs, "amount"):
		return usagef("create: -amount is required: minor units, e.g. -amount 1250 for 12.50")
	case req.Amount <= 0:
		return usagef("create: -amount must be greater than 0, got %d", req.Amount)
	case req.Amount > orders.MaxAmount:
		return usagef("create: -amount must be at most %d minor units, got %d", int64(orders.MaxAmount), req.Amount)
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	cctx, cancel := a.callContext(ctx)
	defer cancel()
	resp, err := c.CreateOrder(cctx, req)
	if err != nil {
		return err
	}
	return a.show(resp, func(w io.Writer) { writeOrders(w, resp.GetOrder()) })
}

func cmdList(ctx context.Context, a *app, args []string) error {
	fs := a.flags("list", "[-user id] [-page-size n] [-page-token token] [-all]")
	req := &orderspb.GetOrdersRequest{}
	fs.StringVar(&req.UserId, "user", "", "user `id`; with JWT auth, empty means the token's subject")
	pageSize := fs.Int("page-size", 0, "orders per page; 0 means the server default (50), at most 500")
	fs.StringVar(&req.PageToken, "page-token", "", "start at this next_page_token of an earlier list")
	all := fs.Bool("all", false, "follow next_page_token through every page and print all orders")
	if _, err := a.parse(fs, args, 0, ""); err != nil {
		return err
	}
	if *pageSize < math.MinInt32 || *pageSize > math.MaxInt32 {
		return usagef("list: -page-size %d is out of range", *pageSize)
	}
	req.PageSize = int32(*pageSize)
	c, err := a.client()
	if err != nil {
		return err
	}
	out := &orderspb.GetOrdersResponse{}
	for {
		resp, err := getOrders(ctx, a, c, req)
		if err != nil {
			return err
		}
		out.Orders = append(out.Orders, resp.GetOrders()...)
		next := resp.GetNextPageToken()
		if !*all || next == "" {
			out.NextPageToken = next
			break
		}
		if next == req.PageToken {
			return fmt.Errorf("list: the server returned the same page token twice")
		}
		req.PageToken = next
	}
	return a.show(out, func(w io.Writer) {
		writeOrders(w, out.GetOrders()...)
		if out.GetNextPageToken() != "" {
			fmt.Fprintf(w, "next_page_token: %s\n", out.GetNextPageToken())
		}
	})
}

func getOrders(ctx context.Context, a *app, c orderspb.OrderServiceClient, req *orderspb.GetOrdersRequest) (*orderspb.GetOrdersResponse, error) {
	cctx, cancel := a.callContext(ctx)
	defer cancel()
	return c.GetOrders(cctx, req)
}

// cmdStatus serves both status and get: the API has no GetOrder, so get
// shows what GetOrderStatus returns, the id and the status.
func cmdStatus(ctx context.Context, a *app, args []string) error {
	fs := a.flags(a.command, "<order-id>")
	pos, err := a.parse(fs, args, 1, "order id")
	if err != nil {
		return err
	}
	id, err := orderIDArg(a.command, pos)
	if err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	cctx, cancel := a.callContext(ctx)
	defer cancel()
	resp, err := c.GetOrderStatus(cctx, &orderspb.GetOrderStatusRequest{OrderId: id})
	if err != nil {
		return err
	}
	return a.show(resp, func(w io.Writer) { writeStatus(w, resp) })
}

func cmdFinish(ctx context.Context, a *app, args []string) error {
	fs := a.flags("finish", "<order-id>")
	pos, err := a.parse(fs, args, 1, "order id")
	if err != nil {
		return err
	}
	id, err := orderIDArg("finish", pos)
	if err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	cctx, cancel := a.callContext(ctx)
	defer cancel()
	resp, err := c.MarkOrderFinished(cctx, &orderspb.MarkOrderFinishedRequest{OrderId: id})
	if err != nil {
		return err
	}
	return a.show(resp, func(w io.Writer) { writeOrders(w, resp.GetOrder()) })
}
