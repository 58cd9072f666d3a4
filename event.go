package orders

import "time"

// CloudEvents types the service emits (orders.v1.*) and consumes (payments.v1.*).
const (
	TypeOrderCreated     = "orders.v1.OrderCreated"
	TypeOrderFinished    = "orders.v1.OrderFinished"
	TypeOrderCancelled   = "orders.v1.OrderCancelled"
	TypePaymentSucceeded = "payments.v1.PaymentSucceeded"
	TypePaymentFailed    = "payments.v1.PaymentFailed"
)

// Event is the data of an event about one order. Its JSON encoding is the
// Kafka record value; the order id is the record key.
type Event interface {
	EventType() string
	EventOrderID() string
}

// OrderCreated is emitted when an order is created.
type OrderCreated struct {
	OrderID     string    `json:"order_id"`
	UserID      string    `json:"user_id"`
	Amount      int64     `json:"amount"`
	Currency    string    `json:"currency"`
	Description string    `json:"description"`
	Status      Status    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
}

// OrderFinished is emitted when an order becomes finished.
type OrderFinished struct {
	OrderID   string    `json:"order_id"`
	UserID    string    `json:"user_id"`
	Status    Status    `json:"status"`
	UpdatedAt time.Time `json:"updated_at"`
}

// OrderCancelled is emitted when an order becomes cancelled.
type OrderCancelled struct {
	OrderID   string    `json:"order_id"`
	UserID    string    `json:"user_id"`
	Status    Status    `json:"status"`
	UpdatedAt time.Time `json:"updated_at"`
	Reason    string    `json:"reason"`
}

func (e OrderCreated) EventType() string     { return TypeOrderCreated }
func (e OrderFinished) EventType() string    { return TypeOrderFinished }
func (e OrderCancelled) EventType() string   { return TypeOrderCancelled }
func (e OrderCreated) EventOrderID() string  { return e.OrderID }
func (e OrderFinished) EventOrderID() string { return e.OrderID }
func (e OrderCancelled) EventOrderID() string {
	return e.OrderID
}

// Created returns the OrderCreated event of o.
func (o *Order) Created() OrderCreated {
	return OrderCreated{OrderID: o.ID, UserID: o.UserID, Amount: o.Amount, Currency: o.Currency,
		Description: o.Description, Status: o.Status, CreatedAt: o.CreatedAt}
}

// Finished returns the OrderFinished event of o.
func (o *Order) Finished() OrderFinished {
	return OrderFinished{OrderID: o.ID, UserID: o.UserID, Status: o.Status, UpdatedAt: o.UpdatedAt}
}

// Cancelled returns the OrderCancelled event of o with the given reason.
func (o *Order) Cancelled(reason string) OrderCancelled {
	return OrderCancelled{OrderID: o.ID, UserID: o.UserID, Status: o.Status, UpdatedAt: o.UpdatedAt, Reason: reason}
}

// PaymentResult is the data of an inbound payments.v1.* event.
type PaymentResult struct {
	OrderID   string `json:"order_id"`
	PaymentID string `json:"payment_id"`
	Reason    string `json:"reason,omitempty"`
}

// Payment is one payment result to apply to its order: a
// payments.v1.PaymentSucceeded when Succeeded, else a
// payments.v1.PaymentFailed.
type Payment struct {
	Succeeded bool
	Result    PaymentResult
	// TraceParent, when set, is the trace the resulting event continues
	// (its traceparent header); otherwise the event takes the caller's.
	TraceParent string
}
