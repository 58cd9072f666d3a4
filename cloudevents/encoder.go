package cloudevents

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/acme/orders-service"
)

// Message is one encoded event: the record to publish, and its identity.
type Message[H Header] struct {
	ID      string // ce_id
	Type    string // ce_type
	Key     []byte
	Headers []H
	Value   []byte
}

// Encoder encodes the service's domain events as CloudEvents in Kafka
// binary mode, with headers of type H.
type Encoder[H Header] struct {
	Source string // ce_source
	// TraceParent returns the trace of ctx, which an event continues when
	// Encode is given none; optional.
	TraceParent func(ctx context.Context) string
}

// Encode returns the record of ev: key = its order id, value = its JSON
// data, headers = AppendHeaders with a new UUIDv7 as ce_id, ev's type,
// e.Source, time now, the type's DataSchemaURI and traceParent (when empty,
// e.TraceParent(ctx)).
func (e Encoder[H]) Encode(ctx context.Context, ev orders.Event, traceParent string, now time.Time) (Message[H], error) {
	value, err := json.Marshal(ev)
	if err != nil {
		return Message[H]{}, fmt.Errorf("encode %s: %w", ev.EventType(), err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Message[H]{}, fmt.Errorf("new event id: %w", err)
	}
	if traceParent == "" && e.TraceParent != nil {
		traceParent = e.TraceParent(ctx)
	}
	ce := Event{ID: id.String(), Type: ev.EventType(), Source: e.Source, Time: now, DataSchema: DataSchemaURI(ev.EventType()), TraceParent: traceParent}
	return Message[H]{
		ID:      ce.ID,
		Type:    ce.Type,
		Key:     []byte(ev.EventOrderID()),
		Headers: AppendHeaders(make([]H, 0, 8), ce),
		Value:   value,
	}, nil
}
