package postgres

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/telemetry"
)

// Header is one Kafka record header. It is stored in jsonb as
// {"key","value"} when the value is text, else as {"key","value_base64"}.
type Header struct {
	Key   string
	Value []byte
}

type jsonHeader struct {
	Key         string  `json:"key"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
}

// MarshalJSON stores text values readably and anything else losslessly.
func (h Header) MarshalJSON() ([]byte, error) {
	j := jsonHeader{Key: h.Key}
	if utf8.Valid(h.Value) && !containsNUL(h.Value) {
		v := string(h.Value)
		j.Value = &v
	} else {
		v := base64.StdEncoding.EncodeToString(h.Value)
		j.ValueBase64 = &v
	}
	return json.Marshal(j)
}

// UnmarshalJSON reverses MarshalJSON.
func (h *Header) UnmarshalJSON(b []byte) error {
	var j jsonHeader
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	h.Key = j.Key
	switch {
	case j.Value != nil:
		h.Value = []byte(*j.Value)
	case j.ValueBase64 != nil:
		v, err := base64.StdEncoding.DecodeString(*j.ValueBase64)
		if err != nil {
			return fmt.Errorf("header %q: %w", j.Key, err)
		}
		h.Value = v
	default:
		h.Value = nil
	}
	return nil
}

// encodeHeaders encodes hs for a jsonb column as json.Marshal would (an
// array of Header.MarshalJSON objects, null for a nil slice), without
// reflection: it runs for every event written.
func encodeHeaders(hs []Header) ([]byte, error) {
	if hs == nil {
		return []byte("null"), nil
	}
	size := 2
	for _, h := range hs {
		size += len(`{"key":"","value_base64":""},`) + len(h.Key) + 2*len(h.Value)
	}
	b := make([]byte, 0, size)
	b = append(b, '[')
	for i, h := range hs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"key":`...)
		b = appendJSONString(b, h.Key)
		if utf8.Valid(h.Value) && !containsNUL(h.Value) {
			b = append(b, `,"value":`...)
			b = appendJSONString(b, h.Value)
		} else {
			b = append(b, `,"value_base64":"`...)
			b = base64.StdEncoding.AppendEncode(b, h.Value)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as with encoding/json.
func appendJSONString[S string | []byte](b []byte, s S) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := decodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, "\ufffd"...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c >= 0x20:
			b = append(b, c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
	}
	return append(b, '"')
}

func decodeRune[S string | []byte](s S) (rune, int) {
	switch v := any(s).(type) {
	case string:
		return utf8.DecodeRuneInString(v)
	case []byte:
		return utf8.DecodeRune(v)
	}
	panic("unreachable")
}

// headerList decodes a jsonb column written by encodeHeaders (decodeHeaders).
type headerList []Header

func containsNUL(b []byte) bool {
	for _, c := range b {
		if c == 0 {
			return true
		}
	}
	return false
}

// OutboxMessage is one record waiting in the outbox for the relay.
type OutboxMessage struct {
	EventID   string // ce_id, or a fresh UUID for records that carry their own headers
	EventType string
	Topic     string
	Key       []byte // the record key as it is published; nil is a null key
	Headers   []Header
	Payload   []byte
}

// splitKey stores a record key in the outbox's two key columns: a text key
// in key, bytes that are not valid UTF-8 or contain NUL (which a text column
// cannot hold) in key_bytes, and neither for a null key (nil).
func splitKey(k []byte) (text *string, bin []byte) {
	switch {
	case k == nil:
		return nil, nil
	case utf8.Valid(k) && !containsNUL(k):
		s := string(k)
		return &s, nil
	default:
		return nil, k
	}
}

// joinKey reverses splitKey.
func joinKey(text *string, bin []byte) []byte {
	switch {
	case text != nil:
		return append([]byte{}, *text...)
	case bin != nil:
		return bin
	default:
		return nil
	}
}

// InsertOutbox adds msgs to the outbox inside tx, in one statement, in the
// order given. The caller commits, then the relay publishes them in
// insertion order.
func InsertOutbox(ctx context.Context, tx pgx.Tx, msgs ...OutboxMessage) error {
	if len(msgs) == 1 {
		m := msgs[0]
		headers, err := encodeHeaders(m.Headers)
		if err != nil {
			return fmt.Errorf("encode outbox headers: %w", err)
		}
		key, keyBytes := splitKey(m.Key)
		_, err = tx.Exec(ctx, `
			INSERT INTO outbox (event_id, event_type, topic, key, key_bytes, headers, payload)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			m.EventID, m.EventType, m.Topic, key, keyBytes, headers, m.Payload)
		if err != nil {
			return fmt.Errorf("insert outbox row: %w", err)
		}
		return nil
	}
	n := len(msgs)
	ids, types, topics, headers := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	keys, keyBytes, payloads := make([]*string, n), make([][]byte, n), make([][]byte, n)
	for i, m := range msgs {
		h, err := encodeHeaders(m.Headers)
		if err != nil {
			return fmt.Errorf("encode outbox headers: %w", err)
		}
		ids[i], types[i], topics[i], headers[i], payloads[i] = m.EventID, m.EventType, m.Topic, string(h), m.Payload
		keys[i], keyBytes[i] = splitKey(m.Key)
	}
	// Rows are inserted, and so numbered, in the order of the SELECT.
	_, err := tx.Exec(ctx, `
		INSERT INTO outbox (event_id, event_type, topic, key, key_bytes, headers, payload)
		SELECT m.event_id::uuid, m.event_type, m.topic, m.key, m.key_bytes, m.headers::jsonb, m.payload
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::bytea[]) WITH ORDINALITY
			AS m(event_id, event_type, topic, key, key_bytes, headers, payload, ord)
		ORDER BY m.ord`, ids, types, topics, keys, keyBytes, headers, payloads)
	if err != nil {
		return fmt.Errorf("insert %d outbox rows: %w", n, err)
	}
	return nil
}

// EventEncoder encodes a domain event as the record the relay publishes,
// continuing the trace traceParent or, when empty, ctx's; in the service,
// cloudevents.Encoder.
type EventEncoder interface {
	Encode(ctx context.Context, ev orders.Event, traceParent string, now time.Time) (cloudevents.Message[Header], error)
}

// OrderWriter writes order events, encoded by its EventEncoder, into the
// outbox.
type OrderWriter struct {
	Topic   string // KAFKA_TOPIC
	Encoder EventEncoder
	now     func() time.Time
}

// NewOrderWriter returns a writer of events to topic, encoded by enc.
func NewOrderWriter(topic string, enc EventEncoder) *OrderWriter {
	return &OrderWriter{Topic: topic, Encoder: enc, now: time.Now}
}

// WriteOrder serialises events into outbox rows inside the caller's
// transaction tx, in one statement and in the order given, as its
// EventEncoder encodes them. The rows carry the trace of the "outbox.write"
// span it starts under ctx.
func (w *OrderWriter) WriteOrder(ctx context.Context, tx pgx.Tx, events ...orders.Event) error {
	return w.write(ctx, tx, events, nil)
}

// write is WriteOrder where traceparents, when not nil, gives each event the
// trace it continues (its traceparent header) instead of ctx's.
func (w *OrderWriter) write(ctx context.Context, tx pgx.Tx, events []orders.Event, traceparents []string) error {
	if len(events) == 0 {
		return nil
	}
	ctx, span := w.startSpan(ctx, events)
	defer span.End()
	msgs, err := w.messages(ctx, events, traceparents)
	if err != nil {
		return err
	}
	return InsertOutbox(ctx, tx, msgs...)
}

// startSpan starts the "outbox.write" span whose trace the events' rows
// carry. Its attributes are built only when it is recorded: without an
// exporter, for every order written, they would be thrown away.
func (w *OrderWriter) startSpan(ctx context.Context, events []orders.Event) (context.Context, trace.Span) {
	ctx, span := telemetry.Tracer().Start(ctx, "outbox.write")
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("orders.event_count", len(events)))
		if len(events) == 1 {
			span.SetAttributes(attribute.String("orders.order_id", events[0].EventOrderID()),
				attribute.String("cloudevents.event_type", events[0].EventType()))
		}
	}
	return ctx, span
}

// messages encodes events as outbox messages, each continuing the trace
// traceparents[i] when set, else ctx's.
func (w *OrderWriter) messages(ctx context.Context, events []orders.Event, traceparents []string) ([]OutboxMessage, error) {
	now := w.now()
	msgs := make([]OutboxMessage, len(events))
	for i, ev := range events {
		var tp string
		if traceparents != nil {
			tp = traceparents[i]
		}
		m, err := w.Encoder.Encode(ctx, ev, tp, now)
		if err != nil {
			return nil, err
		}
		msgs[i] = OutboxMessage{EventID: m.ID, EventType: m.Type, Topic: w.Topic, Key: m.Key, Headers: m.Headers, Payload: m.Value}
	}
	return msgs, nil
}
