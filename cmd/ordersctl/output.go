package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/acme/orders-service/gen/orderspb"
)

// jsonOptions render responses as the proto defines them: snake_case field
// names, every field present.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// show prints resp as JSON with -o json, else as the table table writes.
func (a *app) show(resp proto.Message, table func(w io.Writer)) error {
	if a.output == "json" {
		b, err := jsonOptions.Marshal(resp)
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		// protojson varies its whitespace on purpose; indent it the same
		// way every time.
		var out bytes.Buffer
		if err := json.Indent(&out, b, "", "  "); err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		out.WriteByte('\n')
		_, err = out.WriteTo(a.stdout)
		return err
	}
	table(a.stdout)
	return nil
}

// writeOrders writes a table of orders; amounts are in minor units.
func writeOrders(w io.Writer, orders ...*orderspb.Order) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tAMOUNT\tCURRENCY\tSTATUS\tCREATED\tDESCRIPTION")
	for _, o := range orders {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", cell(o.GetId()), cell(o.GetUserId()), o.GetAmount(),
			cell(o.GetCurrency()), statusName(o.GetStatus()), timestamp(o), cell(o.GetDescription()))
	}
	tw.Flush()
}

func writeStatus(w io.Writer, s *orderspb.GetOrderStatusResponse) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS")
	fmt.Fprintf(tw, "%s\t%s\n", cell(s.GetOrderId()), statusName(s.GetStatus()))
	tw.Flush()
}

// statusName is the enum value without its ORDER_STATUS_ prefix: NEW,
// FINISHED, CANCELLED.
func statusName(s orderspb.OrderStatus) string {
	return strings.TrimPrefix(s.String(), "ORDER_STATUS_")
}

func timestamp(o *orderspb.Order) string {
	if o.GetCreatedAt() == nil {
		return "-"
	}
	return o.GetCreatedAt().AsTime().UTC().Format(time.RFC3339)
}

// cell keeps text on one table row: control characters (tabs, newlines)
// become spaces, and an empty value shows as "-".
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// report prints err to w and returns the exit code: gRPC errors as
// "ordersctl: <code>: <message>" followed by each BadRequest field
// violation on its own line, exiting exitStatus + the code.
func report(w io.Writer, err error) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errFlagsReported):
		return exitUsage
	case errors.As(err, &ue):
		fmt.Fprintf(w, "ordersctl: %s\n", ue.msg)
		return exitUsage
	}
	st, ok := status.FromError(err)
	if !ok {
		fmt.Fprintf(w, "ordersctl: %v\n", err)
		return exitError
	}
	fmt.Fprintf(w, "ordersctl: %s: %s\n", st.Code(), st.Message())
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fmt.Fprintf(w, "  %s: %s\n", v.GetField(), v.GetDescription())
			}
		}
	}
	return exitStatus + int(st.Code())
}
