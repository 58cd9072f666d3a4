// Package pgplan reads PostgreSQL query plans (EXPLAIN (FORMAT JSON)) so
// that tests and the benchmark can check how the service's queries run: by
// index, never by scanning a whole table.
package pgplan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Mode chooses which plan of a parameterised statement is explained: the
// custom plan PostgreSQL makes for the first executions of a prepared
// statement, with the parameter values known, or the generic plan it may
// switch to afterwards (pgx prepares and caches the service's statements).
type Mode string

// The plan_cache_mode values Explain accepts.
const (
	Custom  Mode = "force_custom_plan"
	Generic Mode = "force_generic_plan"
)

// Node is one node of a plan.
type Node struct {
	NodeType string `json:"Node Type"`
	Relation string `json:"Relation Name"`
	Index    string `json:"Index Name"`
	Plans    []Node `json:"Plans"`
}

// Beginner starts a transaction; *pgxpool.Pool and *pgx.Conn are ones.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Explain prepares query, and returns the plan PostgreSQL chooses for
// executing it with args in the given mode. Nothing is executed: the
// transaction it uses is rolled back and the statement deallocated.
func Explain(ctx context.Context, db Beginner, mode Mode, query string, args ...any) (*Node, error) {
	if mode != Custom && mode != Generic {
		return nil, fmt.Errorf("explain: unknown mode %q", mode)
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "PREPARE pgplan_stmt AS "+query); err != nil {
		return nil, fmt.Errorf("explain: prepare: %w", err)
	}
	defer tx.Exec(context.WithoutCancel(ctx), "DEALLOCATE pgplan_stmt")
	if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = "+string(mode)); err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	// EXECUTE inside EXPLAIN takes no bind parameters: the values are
	// written as literals, which the prepared statement's types then apply to.
	params := make([]string, len(args))
	for i, a := range args {
		if params[i], err = literal(a); err != nil {
			return nil, fmt.Errorf("explain: argument %d: %w", i+1, err)
		}
	}
	explain := "EXPLAIN (FORMAT JSON) EXECUTE pgplan_stmt"
	if len(params) > 0 {
		explain += "(" + strings.Join(params, ", ") + ")"
	}
	var raw []byte
	if err := tx.QueryRow(ctx, explain).Scan(&raw); err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	return Parse(raw)
}

// literal renders a as an SQL literal of unknown type.
func literal(a any) (string, error) {
	switch v := a.(type) {
	case string:
		return "'" + strings.ReplaceAll(v, "'", "''") + "'", nil
	case int:
		return strconv.Itoa(v), nil
	case int32:
		return strconv.FormatInt(int64(v), 10), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case time.Time:
		return "'" + v.Format(time.RFC3339Nano) + "'", nil
	}
	return "", fmt.Errorf("unsupported type %T", a)
}

// Parse decodes the output of EXPLAIN (FORMAT JSON).
func Parse(raw []byte) (*Node, error) {
	var out []struct {
		Plan Node `json:"Plan"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("parse plan: %w", err)
	}
	if len(out) != 1 {
		return nil, fmt.Errorf("parse plan: %d plans, want 1", len(out))
	}
	return &out[0].Plan, nil
}

// Walk calls fn for n and every node below it, parents first.
func (n *Node) Walk(fn func(*Node)) {
	fn(n)
	for i := range n.Plans {
		n.Plans[i].Walk(fn)
	}
}

// String renders the plan on one line, such as
// "Limit > Index Only Scan using orders_user_created on orders".
func (n *Node) String() string {
	var b strings.Builder
	var write func(n *Node, depth int)
	write = func(n *Node, depth int) {
		if depth > 0 {
			b.WriteString(" > ")
		}
		b.WriteString(n.NodeType)
		if n.Index != "" {
			b.WriteString(" using " + n.Index)
		}
		if n.Relation != "" {
			b.WriteString(" on " + n.Relation)
		}
		switch len(n.Plans) {
		case 0:
		case 1:
			write(&n.Plans[0], depth+1)
		default:
			b.WriteString(" (")
			for i := range n.Plans {
				if i > 0 {
					b.WriteString("; ")
				}
				write(&n.Plans[i], 0)
			}
			b.WriteString(")")
		}
	}
	write(n, 0)
	return b.String()
}

// indexScans are the node types that read a table through an index.
var indexScans = map[string]bool{"Index Scan": true, "Index Only Scan": true, "Bitmap Index Scan": true}

// CheckIndexed reports an error unless the plan reads table only through
// index: at least one Index Scan, Index Only Scan or Bitmap Index Scan
// using index, and no Seq Scan of table.
func (n *Node) CheckIndexed(table, index string) error {
	var errs []error
	used := false
	n.Walk(func(c *Node) {
		if c.NodeType == "Seq Scan" && c.Relation == table {
			errs = append(errs, fmt.Errorf("sequential scan of %s", table))
		}
		if indexScans[c.NodeType] && c.Index == index {
			used = true
		}
	})
	if !used {
		errs = append(errs, fmt.Errorf("index %s not used", index))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("plan %s: %w", n, err)
	}
	return nil
}
