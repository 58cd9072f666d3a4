package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service"
)

// OrderService is the business logic of orders on PostgreSQL. Every change
// to an order and the event describing it commit in one transaction.
type OrderService struct {
	db              *DB
	writer          *OrderWriter
	defaultCurrency string
}

// NewOrderService returns an OrderService that writes events through w and
// fills defaultCurrency into orders created without one.
func NewOrderService(db *DB, w *OrderWriter, defaultCurrency string) *OrderService {
	return &OrderService{db: db, writer: w, defaultCurrency: defaultCurrency}
}

const orderColumns = `id, user_id, amount, currency, description, status, created_at, updated_at`

// scanOrder scans orderColumns, then extra destinations.
func scanOrder(row pgx.Row, extra ...any) (*orders.Order, error) {
	var o orders.Order
	var id uuid.UUID
	dest := append([]any{&id, &o.UserID, &o.Amount, &o.Currency, &o.Description, &o.Status, &o.CreatedAt, &o.UpdatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, orders.Errorf(orders.ENOTFOUND, "order not found")
		}
		return nil, err
	}
	o.ID = id.String()
	o.CreatedAt = o.CreatedAt.UTC()
	o.UpdatedAt = o.UpdatedAt.UTC()
	return &o, nil
}

// CreateOrder validates n, then stores a new order and its OrderCreated event
// in one transaction. With a RequestID the same user already used, it returns
// the original order and writes nothing; if the other fields differ it fails
// with EEXISTS.
func (s *OrderService) CreateOrder(ctx context.Context, n orders.NewOrder) (*orders.Order, error) {
	if n.Currency == "" {
		n.Currency = s.defaultCurrency
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("new order id: %w", err)
	}
	now := s.db.Now()
	o := &orders.Order{ID: id.String(), UserID: n.UserID, Amount: n.Amount, Currency: n.Currency,
		Description: n.Description, Status: orders.StatusNew, CreatedAt: now, UpdatedAt: now}
	hash := requestHash(n)
	var requestID *string
	if n.RequestID != "" {
		requestID = &n.RequestID
	}

	created, err := s.insertOrder(ctx, o, requestID, hash)
	if err != nil {
		return nil, fmt.Errorf("create order: %w", err)
	}
	if created {
		s.db.signalOutbox()
		return o, nil
	}
	// The request_id was used before: a retry gets the original order.
	var storedHash []byte
	prev, err := scanOrder(s.db.Pool.QueryRow(ctx, `
		SELECT `+orderColumns+`, request_hash FROM orders WHERE user_id = $1 AND request_id = $2`,
		n.UserID, n.RequestID), &storedHash)
	if err != nil {
		return nil, fmt.Errorf("create order: load order by request_id: %w", classify(err))
	}
	if !bytes.Equal(storedHash, hash) {
		return nil, fmt.Errorf("create order: %w",
			orders.Errorf(orders.EEXISTS, "request_id %q was already used for a different order", n.RequestID))
	}
	return prev, nil
}

// insertOrderSQL inserts an order and, only when the order row was
// inserted, its OrderCreated outbox row: one statement, so one round trip
// and atomic without an explicit transaction. It affects no row when the
// user's request_id was used before.
const insertOrderSQL = `
	WITH o AS (
		INSERT INTO orders (id, user_id, amount, currency, description, status, request_id, request_hash, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
		ON CONFLICT (user_id, request_id) WHERE request_id IS NOT NULL DO NOTHING
		RETURNING id
	)
	INSERT INTO outbox (event_id, event_type, topic, key, key_bytes, headers, payload)
	SELECT $10, $11, $12, $13, $14, $15, $16 FROM o`

// insertOrder stores o and its OrderCreated event, reporting false when the
// user's requestID was used before (nothing is then written).
func (s *OrderService) insertOrder(ctx context.Context, o *orders.Order, requestID *string, hash []byte) (bool, error) {
	events := []orders.Event{o.Created()}
	ctx, span := s.writer.startSpan(ctx, events)
	defer span.End()
	msgs, err := s.writer.messages(ctx, events, nil)
	if err != nil {
		return false, err
	}
	m := msgs[0]
	headers, err := encodeHeaders(m.Headers)
	if err != nil {
		return false, fmt.Errorf("encode outbox headers: %w", err)
	}
	key, keyBytes := splitKey(m.Key)
	// string(o.Status): pgx encodes a plain string directly, a named string
	// type through reflection.
	tag, err := s.db.Pool.Exec(ctx, insertOrderSQL,
		o.ID, o.UserID, o.Amount, o.Currency, o.Description, string(o.Status), requestID, hash, o.CreatedAt,
		m.EventID, m.EventType, m.Topic, key, keyBytes, headers, m.Payload)
	if err != nil {
		return false, fmt.Errorf("insert order and its event: %w", classify(err))
	}
	return tag.RowsAffected() == 1, nil
}

// requestHash fingerprints the fields a retry must repeat exactly.
func requestHash(n orders.NewOrder) []byte {
	h := sha256.New()
	var amount [8]byte
	binary.BigEndian.PutUint64(amount[:], uint64(n.Amount))
	h.Write(amount[:])
	h.Write([]byte(n.Currency))
	h.Write([]byte{0})
	h.Write([]byte(n.Description))
	return h.Sum(nil)
}

// The pages of GetOrders, read through the orders_user_created index.
const (
	listOrdersSQL = `
		SELECT ` + orderColumns + ` FROM orders
		WHERE user_id = $1
		ORDER BY created_at DESC, id DESC
		LIMIT $2`
	listOrdersAfterSQL = `
		SELECT ` + orderColumns + ` FROM orders
		WHERE user_id = $1 AND (created_at, id) < ($2, $3)
		ORDER BY created_at DESC, id DESC
		LIMIT $4`
)

// GetOrders returns up to limit orders of userID, newest first, starting
// after cursor (nil: from the newest). next is nil on the last page.
func (s *OrderService) GetOrders(ctx context.Context, userID string, limit int, after *orders.Cursor) (list []*orders.Order, next *orders.Cursor, err error) {
	var rows pgx.Rows
	if after == nil {
		rows, err = s.db.Pool.Query(ctx, listOrdersSQL, userID, limit+1)
	} else {
		rows, err = s.db.Pool.Query(ctx, listOrdersAfterSQL, userID, after.CreatedAt, after.ID, limit+1)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list orders: %w", classify(err))
	}
	defer rows.Close()
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("scan order: %w", err)
		}
		list = append(list, o)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list orders: %w", classify(err))
	}
	if len(list) > limit {
		list = list[:limit]
		last := list[limit-1]
		next = &orders.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	return list, next, nil
}

// GetOrderStatus returns the status of the order with the given id and the
// user it belongs to, so that the caller can hide other users' orders; an
// unknown id is ENOTFOUND.
func (s *OrderService) GetOrderStatus(ctx context.Context, id string) (status orders.Status, userID string, err error) {
	err = s.db.Pool.QueryRow(ctx, `SELECT status, user_id FROM orders WHERE id = $1`, id).Scan(&status, &userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", orders.Errorf(orders.ENOTFOUND, "order not found")
	}
	if err != nil {
		return "", "", fmt.Errorf("get order status: %w", classify(err))
	}
	return status, userID, nil
}

// MarkOrderFinished finishes a new order and writes its OrderFinished event
// in one transaction, with the order row locked so concurrent calls emit one
// event. A finished order is returned unchanged; a cancelled one is ECONFLICT.
func (s *OrderService) MarkOrderFinished(ctx context.Context, id string) (*orders.Order, error) {
	var o *orders.Order
	err := s.db.InTx(ctx, true, func(tx pgx.Tx) error {
		var err error
		o, err = lockOrder(ctx, tx, id)
		if err != nil {
			return err
		}
		changed, err := o.Finish(s.db.Now())
		if err != nil || !changed {
			return err
		}
		if err := updateStatus(ctx, tx, o); err != nil {
			return err
		}
		return s.writer.WriteOrder(ctx, tx, o.Finished())
	})
	if err != nil {
		return nil, fmt.Errorf("mark order finished: %w", err)
	}
	return o, nil
}

// ApplyPayments applies ps inside tx, each in turn: success finishes its
// order, failure cancels it, each writing its event; a result for an order
// already in that final state changes nothing. It takes a fixed number of
// statements whatever their number:
// it locks all their orders at once, in id order so that concurrent callers
// cannot deadlock, applies the transitions in order, then updates the
// changed orders and writes their events, in the order they happened. The
// first payment that cannot apply fails the call with ENOTFOUND (unknown
// order) or ECONFLICT (a transition the order's state refuses); tx must then
// be rolled back.
func (s *OrderService) ApplyPayments(ctx context.Context, tx pgx.Tx, ps []orders.Payment) error {
	ids := make([]string, 0, len(ps))
	keys := make([]string, len(ps))
	seen := make(map[string]bool, len(ps))
	for i, p := range ps {
		id, err := uuid.Parse(p.Result.OrderID)
		if err != nil {
			return fmt.Errorf("lock order %s: %w", p.Result.OrderID, orders.Errorf(orders.ENOTFOUND, "order not found"))
		}
		keys[i] = id.String()
		if !seen[keys[i]] {
			seen[keys[i]] = true
			ids = append(ids, keys[i])
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return fmt.Errorf("lock %d orders: %w", len(ids), err)
	}
	locked, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*orders.Order, error) { return scanOrder(row) })
	if err != nil {
		return fmt.Errorf("lock %d orders: %w", len(ids), err)
	}
	byID := make(map[string]*orders.Order, len(locked))
	for _, o := range locked {
		byID[o.ID] = o
	}
	now := s.db.Now()
	var changed []*orders.Order
	var events []orders.Event
	var traceparents []string
	for i, p := range ps {
		o := byID[keys[i]]
		if o == nil {
			return fmt.Errorf("lock order %s: %w", p.Result.OrderID, orders.Errorf(orders.ENOTFOUND, "order not found"))
		}
		var ok bool
		if p.Succeeded {
			ok, err = o.Finish(now)
		} else {
			ok, err = o.Cancel(now)
		}
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		changed = append(changed, o) // only a new order changes, so once at most
		traceparents = append(traceparents, p.TraceParent)
		if p.Succeeded {
			events = append(events, o.Finished())
		} else {
			events = append(events, o.Cancelled(p.Result.Reason))
		}
	}
	if len(changed) == 0 {
		return nil
	}
	cids, statuses, times := make([]string, len(changed)), make([]string, len(changed)), make([]time.Time, len(changed))
	for i, o := range changed {
		cids[i], statuses[i], times[i] = o.ID, string(o.Status), o.UpdatedAt
	}
	_, err = tx.Exec(ctx, `
		UPDATE orders SET status = u.status, updated_at = u.updated_at
		FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS u(id, status, updated_at)
		WHERE orders.id = u.id`, cids, statuses, times)
	if err != nil {
		return fmt.Errorf("update %d orders' status: %w", len(changed), err)
	}
	if !slices.ContainsFunc(traceparents, func(tp string) bool { return tp != "" }) {
		traceparents = nil
	}
	return s.writer.write(ctx, tx, events, traceparents)
}

func lockOrder(ctx context.Context, tx pgx.Tx, id string) (*orders.Order, error) {
	o, err := scanOrder(tx.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = $1 FOR UPDATE`, id))
	if err != nil {
		return nil, fmt.Errorf("lock order %s: %w", id, err)
	}
	return o, nil
}

func updateStatus(ctx context.Context, tx pgx.Tx, o *orders.Order) error {
	_, err := tx.Exec(ctx, `UPDATE orders SET status = $2, updated_at = $3 WHERE id = $1`, o.ID, o.Status, o.UpdatedAt)
	if err != nil {
		return fmt.Errorf("update order %s status: %w", o.ID, err)
	}
	return nil
}
