package inbox_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/outbox"
)

// startRelay runs the outbox relay with the service's producer settings.
func (e *env) startRelay() {
	e.t.Helper()
	producer, err := kafka.NewClient(kafka.Config{Brokers: e.brokers})
	if err != nil {
		e.t.Fatal(err)
	}
	relay := outbox.New(outbox.Deps{Store: e.db, Producer: producer, Logger: e.log},
		outbox.Options{Wake: e.db.OutboxWritten(), PollInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); relay.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done; producer.Close() })
}

// readDLQ reads n records from the dead-letter topic, failing the test when
// they do not arrive within timeout.
func (e *env) readDLQ(n int, timeout time.Duration) []*kgo.Record {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(e.dlqTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(8<<20))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			e.t.Fatalf("%d of %d dead letters on %s within %s", len(recs), n, e.dlqTopic, timeout)
		}
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// wireSize is the record's size as the producer counts it against its
// batch limit: the record batch header and the record as a batch's first.
func wireSize(r *kgo.Record) int {
	varint := func(n int) int { return binary.PutVarint(make([]byte, binary.MaxVarintLen64), int64(n)) }
	l := 3 + varint(len(r.Key)) + len(r.Key) + varint(len(r.Value)) + len(r.Value) + varint(len(r.Headers))
	if r.Key == nil {
		l = 3 + varint(-1) + varint(len(r.Value)) + len(r.Value) + varint(len(r.Headers))
	}
	for _, h := range r.Headers {
		l += varint(len(h.Key)) + len(h.Key) + varint(len(h.Value)) + len(h.Value)
	}
	return 61 + varint(l) + l
}

// TestOversizeDeadLetterCutToFit: a payment record just under the broker's
// limit that is dead-lettered gets a DLQ copy whose value is cut to fit the
// producer's record limit, with dlq_truncated giving the original size; its
// headers are all kept. The inbox row keeps the whole payload.
func TestOversizeDeadLetterCutToFit(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	for _, size := range []int{1_000_100, 1_040_000} {
		rec := paymentRecord(e.createOrder(100), "big-"+strconv.Itoa(size), "payments.v1.PaymentRefunded")
		rec.Value = bytes.Repeat([]byte("x"), size)
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(e.inboxTopic), kgo.ProducerBatchMaxBytes(1_100_000))
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		cl.Close()
	}
	c, _ := e.startConsumer(m, inbox.ConsumerOptions{}, nil)
	e.startProcessor(m, inbox.ProcessorOptions{Wake: c.Stored()})
	poll.Eventually(t, waitLong, "two dead", func() bool { return testutil.ToFloat64(m.Dead) == 2 })
	e.startRelay()

	for _, r := range e.readDLQ(2, 30*time.Second) {
		id := header(r, "ce_id")
		size, _ := strconv.Atoi(id[len("big-"):])
		if got := wireSize(r); got > 1_000_012 {
			t.Errorf("%s: DLQ record of %d bytes, over the producer's limit", id, got)
		}
		if header(r, "dlq_truncated") != strconv.Itoa(size) {
			t.Errorf("%s: dlq_truncated = %q, want %d", id, header(r, "dlq_truncated"), size)
		}
		if len(r.Value) < 990_000 || !bytes.Equal(r.Value, bytes.Repeat([]byte("x"), len(r.Value))) {
			t.Errorf("%s: DLQ value of %d bytes, want the original's first ~1 MB", id, len(r.Value))
		}
		for _, h := range []string{"ce_specversion", "ce_type", "ce_source", "content-type", "ce_id",
			"dlq_error", "dlq_original_topic", "dlq_original_partition", "dlq_original_offset"} {
			if header(r, h) == "" {
				t.Errorf("%s: DLQ copy lacks header %s", id, h)
			}
		}
		if n := e.count(`SELECT length(payload) FROM inbox WHERE message_id = $1`, id); n != size {
			t.Errorf("%s: inbox payload of %d bytes, want the whole %d", id, n, size)
		}
	}
}

// TestDeadLetterKeepsNullAndBinaryKeys: the DLQ copy of a dead-lettered
// payment record has the original's key exactly: a null key stays null (so
// such records spread over the partitions instead of sharing the empty
// key's), an empty key stays empty, and a key that is not text (bytes ff 00
// 01) is the same bytes, not moved into a header.
func TestDeadLetterKeepsNullAndBinaryKeys(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	keys := map[string][]byte{
		"null-key":   nil,
		"empty-key":  {},
		"binary-key": {0xff, 0x00, 0x01},
		"text-key":   []byte("order-7"),
	}
	var recs []*kgo.Record
	for id, key := range keys {
		rec := paymentRecord(e.createOrder(100), id, "payments.v1.PaymentRefunded")
		rec.Key = key
		recs = append(recs, rec)
	}
	e.produce(recs...)
	c, _ := e.startConsumer(m, inbox.ConsumerOptions{}, nil)
	e.startProcessor(m, inbox.ProcessorOptions{Wake: c.Stored()})
	poll.Eventually(t, waitLong, "four dead", func() bool { return testutil.ToFloat64(m.Dead) == 4 })
	e.startRelay()

	for _, r := range e.readDLQ(len(keys), 30*time.Second) {
		id := header(r, "ce_id")
		want, ok := keys[id]
		if !ok {
			t.Errorf("unexpected DLQ record %q", id)
			continue
		}
		if (r.Key == nil) != (want == nil) || !bytes.Equal(r.Key, want) {
			t.Errorf("%s: DLQ key %#v, want %#v", id, r.Key, want)
		}
		if v := header(r, "dlq_original_key_base64"); v != "" {
			t.Errorf("%s: DLQ copy has dlq_original_key_base64 %q; the key itself is the original", id, v)
		}
	}
}

// TestDeadLetteredAgainCarriesOneDLQSet: a record that already carries
// dlq_* headers (a DLQ copy published to the inbox topic again) and fails is
// dead-lettered with only the current set: the earlier dlq_error,
// dlq_original_* and dlq_truncated headers are replaced, every other header
// is kept.
func TestDeadLetteredAgainCarriesOneDLQSet(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	rec := paymentRecord(e.createOrder(100), "replayed-1", "payments.v1.PaymentRefunded")
	rec.Headers = append(rec.Headers,
		kgo.RecordHeader{Key: "dlq_error", Value: []byte("an earlier failure")},
		kgo.RecordHeader{Key: "dlq_original_topic", Value: []byte("elsewhere")},
		kgo.RecordHeader{Key: "dlq_original_partition", Value: []byte("9")},
		kgo.RecordHeader{Key: "dlq_original_offset", Value: []byte("99")},
		kgo.RecordHeader{Key: "dlq_truncated", Value: []byte("123")},
		kgo.RecordHeader{Key: "x-keep", Value: []byte("kept")},
	)
	rec = e.produce(rec)[0]
	c, _ := e.startConsumer(m, inbox.ConsumerOptions{}, nil)
	e.startProcessor(m, inbox.ProcessorOptions{Wake: c.Stored()})
	poll.Eventually(t, waitLong, "the record dead", func() bool { return testutil.ToFloat64(m.Dead) == 1 })
	e.startRelay()

	r := e.readDLQ(1, 30*time.Second)[0]
	count := map[string]int{}
	for _, h := range r.Headers {
		count[h.Key]++
	}
	for _, k := range []string{"dlq_error", "dlq_original_topic", "dlq_original_partition", "dlq_original_offset", "x-keep", "ce_id"} {
		if count[k] != 1 {
			t.Errorf("DLQ copy has %d %s headers, want 1: %q", count[k], k, r.Headers)
		}
	}
	if count["dlq_truncated"] != 0 {
		t.Errorf("DLQ copy keeps the earlier dlq_truncated: %q", r.Headers)
	}
	want := map[string]string{
		"dlq_original_topic":     rec.Topic,
		"dlq_original_partition": strconv.Itoa(int(rec.Partition)),
		"dlq_original_offset":    strconv.FormatInt(rec.Offset, 10),
		"x-keep":                 "kept",
	}
	for k, v := range want {
		if got := header(r, k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if got := header(r, "dlq_error"); got == "an earlier failure" || got == "" {
		t.Errorf("dlq_error = %q, want this failure's", got)
	}
}
