package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestCloudEventHeadersRoundTrip(t *testing.T) {
	e := CloudEvent{
		ID:          "0b7e2c7e-6f5c-4f43-9a52-9b6a3e0c1d2f",
		Type:        "orders.v1.OrderCreated",
		Source:      "orders-service",
		Time:        time.Date(2026, 3, 4, 5, 6, 7, 891000, time.FixedZone("X", 3600)),
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	r := &kgo.Record{Headers: e.Headers()}
	want := map[string]string{
		"ce_specversion": "1.0",
		"ce_id":          e.ID,
		"ce_type":        e.Type,
		"ce_source":      e.Source,
		"ce_time":        "2026-03-04T04:06:07.000891Z",
		"content-type":   "application/json",
		"traceparent":    e.TraceParent,
	}
	if len(r.Headers) != len(want) {
		t.Fatalf("got %d headers, want %d: %v", len(r.Headers), len(want), r.Headers)
	}
	for k, v := range want {
		if got, ok := Header(r, k); !ok || got != v {
			t.Errorf("header %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	got := CloudEventOf(r)
	if got.ID != e.ID || got.Type != e.Type || got.Source != e.Source || got.TraceParent != e.TraceParent || !got.Time.Equal(e.Time) {
		t.Fatalf("CloudEventOf = %+v, want %+v", got, e)
	}

	noTrace := CloudEvent{ID: "x", Time: e.Time}.Headers()
	if _, ok := Header(&kgo.Record{Headers: noTrace}, HeaderTraceParent); ok {
		t.Error("traceparent header present without a trace")
	}
}

func TestCloudEventOfToleratesMissingAndBadHeaders(t *testing.T) {
	r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: HeaderType, Value: []byte("t")}, {Key: HeaderTime, Value: []byte("yesterday")}}}
	got := CloudEventOf(r)
	if got.Type != "t" || got.ID != "" || !got.Time.IsZero() {
		t.Fatalf("CloudEventOf = %+v, want only Type set", got)
	}
}

func TestMessageID(t *testing.T) {
	withID := &kgo.Record{Topic: "payments.events", Partition: 2, Offset: 7, Headers: []kgo.RecordHeader{{Key: HeaderID, Value: []byte("evt-1")}}}
	if got := MessageID(withID); got != "evt-1" {
		t.Errorf("MessageID with ce_id = %q, want evt-1", got)
	}
	for _, hs := range [][]kgo.RecordHeader{nil, {{Key: HeaderID}}} {
		r := &kgo.Record{Topic: "payments.events", Partition: 2, Offset: 7, Headers: hs}
		if got := MessageID(r); got != "payments.events/2/7" {
			t.Errorf("MessageID without ce_id = %q, want payments.events/2/7", got)
		}
	}
}

func TestSetHeader(t *testing.T) {
	hs := []kgo.RecordHeader{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}, {Key: "a", Value: []byte("3")}}
	orig := append([]kgo.RecordHeader(nil), hs...)
	got := SetHeader(hs, "a", "x")
	if len(got) != 2 || got[0].Key != "a" || string(got[0].Value) != "x" || got[1].Key != "b" {
		t.Fatalf("SetHeader replace = %v", got)
	}
	if string(hs[0].Value) != string(orig[0].Value) || len(hs) != 3 {
		t.Fatalf("SetHeader modified its input: %v", hs)
	}
	got = SetHeader(hs, "c", "y")
	if len(got) != 4 || got[3].Key != "c" || string(got[3].Value) != "y" {
		t.Fatalf("SetHeader append = %v", got)
	}
}

func TestDeadLetter(t *testing.T) {
	r := &kgo.Record{
		Topic: "payments.events", Partition: 3, Offset: 42,
		Key: []byte("order-1"), Value: []byte(`{"bad"`),
		Headers: []kgo.RecordHeader{
			{Key: HeaderID, Value: []byte("evt-9")},
			{Key: HeaderType, Value: []byte("payments.v1.PaymentSucceeded")},
			{Key: HeaderDLQError, Value: []byte("an earlier failure")},
		},
	}
	d := DeadLetter(r, "payments.events.dlq", "decode data: unexpected end of JSON input")
	if d.Topic != "payments.events.dlq" || string(d.Key) != "order-1" || string(d.Value) != `{"bad"` {
		t.Fatalf("dead letter = %+v", d)
	}
	want := map[string]string{
		HeaderID:                   "evt-9",
		HeaderType:                 "payments.v1.PaymentSucceeded",
		HeaderDLQError:             "decode data: unexpected end of JSON input",
		HeaderDLQOriginalTopic:     "payments.events",
		HeaderDLQOriginalPartition: "3",
		HeaderDLQOriginalOffset:    "42",
	}
	if len(d.Headers) != len(want) {
		t.Fatalf("got %d headers, want %d: %v", len(d.Headers), len(want), d.Headers)
	}
	for k, v := range want {
		if got, _ := Header(d, k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if len(r.Headers) != 3 || r.Topic != "payments.events" {
		t.Errorf("DeadLetter modified the original record: %+v", r)
	}
}

// TestMaxValueLenFitsProducerBatch: a record with a value of MaxValueLen
// bytes is produced; two bytes more fail with MESSAGE_TOO_LARGE.
func TestMaxValueLenFitsProducerBatch(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": "2000000"}))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	for _, tc := range []struct {
		key     []byte
		headers []kgo.RecordHeader
	}{
		{nil, nil},
		{[]byte("0190f5e4-8c1a-7b3e-9f00-1234567890ab"), []kgo.RecordHeader{{Key: "ce_id", Value: []byte("x")}}},
		{[]byte{}, []kgo.RecordHeader{{Key: "big", Value: make([]byte, 5000)}, {Key: "dlq_truncated", Value: []byte("1040000")}}},
	} {
		n := MaxValueLen(tc.key, tc.headers)
		if n < ProducerBatchMaxBytes-10_000 {
			t.Fatalf("MaxValueLen = %d, far below the limit", n)
		}
		for _, v := range []int{n, n + 2} { // conservative by at most a byte
			cl, err := NewClient(Config{Brokers: cluster.ListenAddrs()})
			if err != nil {
				t.Fatal(err)
			}
			r := &kgo.Record{Topic: "t", Key: tc.key, Value: make([]byte, v), Headers: tc.headers}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = cl.ProduceSync(ctx, r).FirstErr()
			cancel()
			cl.Close()
			tooLarge := errors.Is(err, kerr.MessageTooLarge)
			if tooLarge != (v > n) {
				t.Errorf("key %q, %d headers, value of %d bytes (MaxValueLen %d): produce error %v", tc.key, len(tc.headers), v, n, err)
			}
		}
	}
}
