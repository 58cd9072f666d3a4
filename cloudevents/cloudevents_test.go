package cloudevents_test

import (
	"strings"
	"testing"
	"time"

	"github.com/acme/orders-service/cloudevents"
)

// recordHeader stands for the header types of the callers (kgo.RecordHeader,
// postgres.Header): any struct of that shape.
type recordHeader struct {
	Key   string
	Value []byte
}

func TestHeadersRoundTrip(t *testing.T) {
	e := cloudevents.Event{
		ID:          "0b7e2c7e-6f5c-4f43-9a52-9b6a3e0c1d2f",
		Type:        "orders.v1.OrderCreated",
		Source:      "orders-service",
		Time:        time.Date(2026, 3, 4, 5, 6, 7, 891000, time.FixedZone("X", 3600)),
		DataSchema:  cloudevents.DataSchemaURI("orders.v1.OrderCreated"),
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	hs := cloudevents.AppendHeaders([]recordHeader(nil), e)
	want := []recordHeader{
		{"ce_specversion", []byte("1.0")},
		{"ce_id", []byte(e.ID)},
		{"ce_type", []byte(e.Type)},
		{"ce_source", []byte(e.Source)},
		{"ce_time", []byte("2026-03-04T04:06:07.000891Z")},
		{"content-type", []byte("application/json")},
		{"ce_dataschema", []byte("https://github.com/acme/orders-service/blob/main/api/schemas/orders.v1.OrderCreated.json")},
		{"traceparent", []byte(e.TraceParent)},
	}
	if len(hs) != len(want) {
		t.Fatalf("got %d headers, want %d: %q", len(hs), len(want), hs)
	}
	for i := range want {
		if hs[i].Key != want[i].Key || string(hs[i].Value) != string(want[i].Value) {
			t.Errorf("header %d = %s: %q, want %s: %q", i, hs[i].Key, hs[i].Value, want[i].Key, want[i].Value)
		}
	}
	got := cloudevents.Parse(hs)
	if got.ID != e.ID || got.Type != e.Type || got.Source != e.Source || got.DataSchema != e.DataSchema || got.TraceParent != e.TraceParent || !got.Time.Equal(e.Time) {
		t.Fatalf("Parse = %+v, want %+v", got, e)
	}

	prefix := []recordHeader{{Key: "x", Value: []byte("y")}}
	noTrace := cloudevents.AppendHeaders(prefix, cloudevents.Event{ID: "x", Time: e.Time})
	if len(noTrace) != 7 || noTrace[0].Key != "x" {
		t.Fatalf("AppendHeaders did not append to its argument: %q", noTrace)
	}
	if _, ok := cloudevents.Lookup(noTrace, cloudevents.HeaderTraceParent); ok {
		t.Error("traceparent header present without a trace")
	}
	if _, ok := cloudevents.Lookup(noTrace, cloudevents.HeaderDataSchema); ok {
		t.Error("ce_dataschema header present without a schema")
	}
	if got := string(cloudevents.AppendHeaders([]recordHeader(nil), cloudevents.Event{Time: e.Time.Truncate(time.Second)})[4].Value); got != "2026-03-04T04:06:07Z" {
		t.Errorf("ce_time of a whole second = %q, want no fraction", got)
	}
}

func TestParseToleratesMissingAndBadHeaders(t *testing.T) {
	got := cloudevents.Parse([]recordHeader{{Key: cloudevents.HeaderType, Value: []byte("t")}, {Key: cloudevents.HeaderTime, Value: []byte("yesterday")}})
	if got != (cloudevents.Event{Type: "t"}) {
		t.Fatalf("Parse = %+v, want only Type set", got)
	}
}

func TestLookupTakesTheLastHeader(t *testing.T) {
	hs := []recordHeader{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}, {Key: "a", Value: []byte("3")}, {Key: "e"}}
	for _, tc := range []struct {
		key, want string
		ok        bool
	}{{"a", "3", true}, {"b", "2", true}, {"e", "", true}, {"c", "", false}} {
		if got, ok := cloudevents.Lookup(hs, tc.key); got != tc.want || ok != tc.ok {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestMessageID(t *testing.T) {
	pos := cloudevents.Position{Topic: "payments.events", Partition: 2, Offset: 7}
	for _, tc := range []struct {
		name      string
		hs        []recordHeader
		id, alias string
	}{
		{"ce_id", []recordHeader{{Key: "ce_id", Value: []byte("evt-1")}}, "evt-1", ""},
		{"last ce_id", []recordHeader{{Key: "ce_id", Value: []byte("evt-1")}, {Key: "ce_id", Value: []byte("evt-2")}}, "evt-2", ""},
		{"no headers", nil, "payments.events/2/7", ""},
		{"empty ce_id", []recordHeader{{Key: "ce_id"}}, "payments.events/2/7", ""},
		{"longest ce_id", []recordHeader{{Key: "ce_id", Value: []byte(strings.Repeat("y", cloudevents.MaxMessageIDLen))}}, strings.Repeat("y", cloudevents.MaxMessageIDLen), ""},
		{"too long", []recordHeader{{Key: "ce_id", Value: []byte(strings.Repeat("x", cloudevents.MaxMessageIDLen+1))}}, "payments.events/2/7", ""},
		{"not UTF-8", []recordHeader{{Key: "ce_id", Value: []byte("\xff\xfe")}}, "payments.events/2/7", ""},
		{"NUL", []recordHeader{{Key: "ce_id", Value: []byte("a\x00b")}}, "payments.events/2/7", ""},
		{"another record's position", []recordHeader{{Key: "ce_id", Value: []byte("payments.events/2/8")}}, "payments.events/2/7", "payments.events/2/8"},
		{"slash, too long", []recordHeader{{Key: "ce_id", Value: []byte("/" + strings.Repeat("x", cloudevents.MaxMessageIDLen))}}, "payments.events/2/7", ""},
	} {
		id, alias := cloudevents.MessageID(pos, tc.hs)
		if id != tc.id || alias != tc.alias {
			t.Errorf("%s: MessageID = %q, %q; want %q, %q", tc.name, id, alias, tc.id, tc.alias)
		}
	}
}

func TestDeadLetter(t *testing.T) {
	pos := cloudevents.Position{Topic: "payments.events", Partition: 3, Offset: 42}
	hs := []recordHeader{
		{Key: "ce_id", Value: []byte("evt-9")},
		{Key: "dlq_error", Value: []byte("an earlier failure")},
		{Key: "ce_type", Value: []byte("payments.v1.PaymentSucceeded")},
		{Key: "dlq_original_offset", Value: []byte("1")},
		{Key: "dlq_truncated", Value: []byte("5")},
		{Key: "dlq_custom", Value: []byte("kept")},
	}
	orig := append([]recordHeader(nil), hs...)
	value := []byte(`{"bad"`)
	unlimited := func([]recordHeader) int { return 1 << 20 }
	v, got := cloudevents.DeadLetter(pos, value, hs, "decode data: unexpected end of JSON input", unlimited)
	if string(v) != `{"bad"` {
		t.Errorf("value = %q, want the original", v)
	}
	want := []recordHeader{
		{"ce_id", []byte("evt-9")},
		{"ce_type", []byte("payments.v1.PaymentSucceeded")},
		{"dlq_custom", []byte("kept")},
		{"dlq_error", []byte("decode data: unexpected end of JSON input")},
		{"dlq_original_topic", []byte("payments.events")},
		{"dlq_original_partition", []byte("3")},
		{"dlq_original_offset", []byte("42")},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d headers, want %d: %q", len(got), len(want), got)
	}
	for i := range want {
		if got[i].Key != want[i].Key || string(got[i].Value) != string(want[i].Value) {
			t.Errorf("header %d = %s: %q, want %s: %q", i, got[i].Key, got[i].Value, want[i].Key, want[i].Value)
		}
	}
	for i := range orig {
		if hs[i].Key != orig[i].Key || string(hs[i].Value) != string(orig[i].Value) {
			t.Fatalf("DeadLetter modified its headers: %q", hs)
		}
	}
}

// TestDeadLetterTruncates: a value over the limit is cut to the limit the
// headers with dlq_truncated allow, and dlq_truncated holds its length.
func TestDeadLetterTruncates(t *testing.T) {
	pos := cloudevents.Position{Topic: "t", Partition: 0, Offset: 1}
	value := []byte(strings.Repeat("v", 100))
	var sawTruncated bool
	limit := func(hs []recordHeader) int {
		_, sawTruncated = cloudevents.Lookup(hs, cloudevents.HeaderDLQTruncated)
		if sawTruncated {
			return 40
		}
		return 50
	}
	for _, tc := range []struct {
		name      string
		value     []byte
		wantLen   int
		truncated string
	}{
		{"fits", value[:50], 50, ""},
		{"over", value, 40, "100"},
	} {
		v, hs := cloudevents.DeadLetter(pos, tc.value, []recordHeader(nil), "reason", limit)
		got, _ := cloudevents.Lookup(hs, cloudevents.HeaderDLQTruncated)
		if len(v) != tc.wantLen || got != tc.truncated {
			t.Errorf("%s: value of %d bytes, dlq_truncated %q; want %d, %q", tc.name, len(v), got, tc.wantLen, tc.truncated)
		}
	}
	v, _ := cloudevents.DeadLetter(pos, value, []recordHeader(nil), "reason", func([]recordHeader) int { return -1 })
	if len(v) != 0 {
		t.Errorf("value of %d bytes when nothing fits, want empty", len(v))
	}
}
