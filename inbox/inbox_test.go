package inbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres"
)

const waitLong = 15 * time.Second

func TestSameCeIDStoredOnceAppliedOnce(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	orderID := e.createOrder(100)
	rec := succeeded(orderID)
	again := paymentRecord(orderID, string(rec.Headers[len(rec.Headers)-1].Value), orders.TypePaymentSucceeded)
	e.produce(rec, again)

	c, _ := e.startConsumer(m, inbox.ConsumerOptions{}, nil)
	e.startProcessor(m, inbox.ProcessorOptions{Wake: c.Stored()})
	poll.Eventually(t, waitLong, "both records received and one processed", func() bool {
		return testutil.ToFloat64(m.Received) == 2 && testutil.ToFloat64(m.Processed) == 1
	})
	if got := testutil.ToFloat64(m.Duplicates); got != 1 {
		t.Errorf("duplicates = %v, want 1", got)
	}
	if n := e.count(`SELECT count(*) FROM inbox`); n != 1 {
		t.Errorf("inbox rows = %d, want 1", n)
	}
	if s := e.status(orderID); s != orders.StatusFinished {
		t.Errorf("status = %s, want finished", s)
	}
	if n := e.events(orderID, orders.TypeOrderFinished); n != 1 {
		t.Errorf("OrderFinished events = %d, want 1", n)
	}
}

func TestRedeliveryAfterCrashBeforeCommitAppliesOnce(t *testing.T) {
	e := newEnv(t)
	var ids []string
	var recs []*kgo.Record
	for range 6 {
		id := e.createOrder(100)
		ids = append(ids, id)
		recs = append(recs, succeeded(id))
	}
	e.produce(recs...)

	// The first consumer stores its first poll, then "crashes" before
	// committing the offsets.
	crash := errors.New("crash before commit")
	first := newMetrics(t)
	_, r1 := e.startConsumer(first, inbox.ConsumerOptions{}, func(c *inbox.Consumer, _ context.CancelFunc) {
		inbox.SetBeforeCommit(c, func() error { return crash })
	})
	var runErr error
	poll.Eventually(t, waitLong, "first consumer to crash", func() bool {
		select {
		case runErr = <-r1.done:
			r1.done <- runErr
			return true
		default:
			return false
		}
	})
	if !errors.Is(runErr, crash) {
		t.Fatalf("first consumer returned %v, want the crash", runErr)
	}
	r1.stop()
	stored := e.count(`SELECT count(*) FROM inbox`)
	if stored == 0 {
		t.Fatal("first consumer stored nothing")
	}

	second := newMetrics(t)
	c, _ := e.startConsumer(second, inbox.ConsumerOptions{}, nil)
	e.startProcessor(second, inbox.ProcessorOptions{Wake: c.Stored()})
	poll.Eventually(t, waitLong, "all payments applied", func() bool {
		return testutil.ToFloat64(second.Processed) == float64(len(ids)) &&
			testutil.ToFloat64(second.Received) == float64(len(ids))
	})
	if got := testutil.ToFloat64(second.Duplicates); got != float64(stored) {
		t.Errorf("redelivered duplicates = %v, want %d (the uncommitted rows)", got, stored)
	}
	if n := e.count(`SELECT count(*) FROM inbox`); n != len(ids) {
		t.Errorf("inbox rows = %d, want %d", n, len(ids))
	}
	for _, id := range ids {
		if n := e.events(id, orders.TypeOrderFinished); n != 1 {
			t.Errorf("order %s: OrderFinished events = %d, want 1", id, n)
		}
	}
}

func TestConsumerRetriesWhileDatabaseFailsAndCommitsAfter(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	ctx := context.Background()
	var failures atomic.Int32
	e.log = slog.New(counting{e.log.Handler(), "store inbox records failed; retrying", &failures})
	orderID := e.createOrder(100)
	e.produce(succeeded(orderID))
	if _, err := e.db.Pool.Exec(ctx, `ALTER TABLE inbox RENAME TO inbox_away`); err != nil {
		t.Fatal(err)
	}
	c, _ := e.startConsumer(m, inbox.ConsumerOptions{RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond}, nil)
	poll.Eventually(t, waitLong, "failed inserts", func() bool { return failures.Load() >= 3 })

	admClient, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer admClient.Close()
	adm := kadm.NewClient(admClient)
	offsets, err := adm.FetchOffsets(ctx, e.group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offsets.Lookup(e.inboxTopic, 0); ok && o.At >= 0 {
		t.Fatalf("offset %d committed while the database was failing", o.At)
	}
	if _, err := e.db.Pool.Exec(ctx, `ALTER TABLE inbox_away RENAME TO inbox`); err != nil {
		t.Fatal(err)
	}
	e.startProcessor(m, inbox.ProcessorOptions{Wake: c.Stored()})
	poll.Eventually(t, waitLong, "the payment applied", func() bool { return testutil.ToFloat64(m.Processed) == 1 })
	poll.Eventually(t, waitLong, "the offset committed", func() bool {
		offsets, err := adm.FetchOffsets(ctx, e.group)
		o, ok := offsets.Lookup(e.inboxTopic, 0)
		return err == nil && ok && o.At == 1
	})
	if testutil.ToFloat64(m.Received) != 1 || e.events(orderID, orders.TypeOrderFinished) != 1 {
		t.Errorf("received %v, OrderFinished events %d; want 1 and 1", testutil.ToFloat64(m.Received),
			e.events(orderID, orders.TypeOrderFinished))
	}
}

func TestPoisonRecordsDeadLetteredAtOnceOthersApplied(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	a, b := e.createOrder(100), e.createOrder(200)

	badJSON := paymentRecord(a, "bad-json", orders.TypePaymentSucceeded)
	badJSON.Value = []byte(`{"order_id":`)
	unknownType := paymentRecord(a, "unknown-type", "payments.v1.PaymentRefunded")
	noOrderID := paymentRecord(a, "no-order-id", orders.TypePaymentSucceeded)
	noOrderID.Value = []byte(`{"payment_id":"p1"}`)
	notObject := paymentRecord(a, "not-object", orders.TypePaymentFailed)
	notObject.Value = []byte(`["x"]`)
	badText := paymentRecord(a, "bad-text", "\xff\x00")
	badText.Key = []byte{0xff, 0x00, 0x01}
	conflict := paymentRecord(a, "conflict", orders.TypePaymentFailed) // a is finished by then

	recs := e.produce(succeeded(a), badJSON, unknownType, noOrderID, notObject, badText, conflict, succeeded(b))
	c, _ := e.startConsumer(m, inbox.ConsumerOptions{}, nil)
	e.startProcessor(m, inbox.ProcessorOptions{Wake: c.Stored()})
	poll.Eventually(t, waitLong, "two applied, six dead", func() bool {
		return testutil.ToFloat64(m.Processed) == 2 && testutil.ToFloat64(m.Dead) == 6
	})
	if e.status(a) != orders.StatusFinished || e.status(b) != orders.StatusFinished {
		t.Errorf("statuses a=%s b=%s, want both finished", e.status(a), e.status(b))
	}
	if n := e.events(a, orders.TypeOrderCancelled); n != 0 {
		t.Errorf("conflicting PaymentFailed cancelled the finished order: %d events", n)
	}

	wantErr := map[string]string{
		"bad-json":     "undecodable data",
		"unknown-type": `unknown ce_type "payments.v1.PaymentRefunded"`,
		"no-order-id":  "no order_id",
		"not-object":   "not a JSON object",
		"bad-text":     "unknown ce_type",
		"conflict":     "conflict",
	}
	for _, rec := range recs[1:7] {
		id := header(rec, "ce_id")
		row, ok := e.row(id)
		if !ok || !row.dead || row.processed || row.attempts != 1 || row.lastError == nil ||
			!strings.Contains(*row.lastError, wantErr[id]) {
			t.Errorf("%s: row = %+v (found %v), last_error = %v, want dead at once with %q",
				id, row, ok, deref(row.lastError), wantErr[id])
		}
		var key []byte
		var headers []postgres.Header
		var payload []byte
		err := e.db.Pool.QueryRow(context.Background(), `
			SELECT coalesce(convert_to(key, 'UTF8'), key_bytes), headers, payload FROM outbox
			WHERE topic = $1 AND headers @> jsonb_build_array(jsonb_build_object('key', 'ce_id', 'value', $2::text))`,
			e.dlqTopic, id).Scan(&key, &headers, &payload)
		if err != nil {
			t.Errorf("%s: dead-letter outbox row: %v", id, err)
			continue
		}
		got := map[string]string{}
		for _, h := range headers {
			got[h.Key] = string(h.Value)
		}
		for _, h := range rec.Headers {
			if got[h.Key] != string(h.Value) {
				t.Errorf("%s: DLQ header %q = %q, want original %q", id, h.Key, got[h.Key], h.Value)
			}
		}
		if got["dlq_original_topic"] != e.inboxTopic || got["dlq_original_partition"] != fmt.Sprint(rec.Partition) ||
			got["dlq_original_offset"] != fmt.Sprint(rec.Offset) || !strings.Contains(got["dlq_error"], wantErr[id]) {
			t.Errorf("%s: dlq headers = %v", id, got)
		}
		if string(payload) != string(rec.Value) {
			t.Errorf("%s: DLQ payload %q, want original %q", id, payload, rec.Value)
		}
		if !bytes.Equal(key, rec.Key) {
			t.Errorf("%s: DLQ key %q, want %q", id, key, rec.Key)
		}
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE topic = $1`, e.dlqTopic); n != 6 {
		t.Errorf("DLQ outbox rows = %d, want 6", n)
	}
}

func TestUnknownOrderRetriedThenDead(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	msg := paymentMessage(uuid.NewString())
	e.store(msg)
	e.startProcessor(m, inbox.ProcessorOptions{MaxAttempts: 4, RetryBase: time.Millisecond, RetryMax: 4 * time.Millisecond})
	poll.Eventually(t, waitLong, "dead after max attempts", func() bool {
		row, _ := e.row(msg.MessageID)
		return row.dead
	})
	row, _ := e.row(msg.MessageID)
	if row.attempts != 4 || row.processed || !strings.Contains(deref(row.lastError), "gave up after 4 attempts") ||
		!strings.Contains(deref(row.lastError), "not found") {
		t.Errorf("row = %+v, last_error %q", row, deref(row.lastError))
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE topic = $1`, e.dlqTopic); n != 1 {
		t.Errorf("DLQ outbox rows = %d, want 1", n)
	}
	if got := testutil.ToFloat64(m.Dead); got != 1 {
		t.Errorf("dead metric = %v, want 1", got)
	}
}

func TestUnknownOrderAppliedWhenItAppears(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	orderID := uuid.NewString()
	msg := paymentMessage(orderID)
	e.store(msg)
	e.startProcessor(m, inbox.ProcessorOptions{MaxAttempts: 1000, RetryBase: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond})
	poll.Eventually(t, waitLong, "two failed attempts", func() bool {
		row, _ := e.row(msg.MessageID)
		return row.attempts >= 2
	})
	e.insertOrder(orderID)
	poll.Eventually(t, waitLong, "the payment applied", func() bool {
		row, _ := e.row(msg.MessageID)
		return row.processed
	})
	row, _ := e.row(msg.MessageID)
	if row.dead || row.attempts < 3 {
		t.Errorf("row = %+v, want processed after retries", row)
	}
	if e.status(orderID) != orders.StatusFinished || e.events(orderID, orders.TypeOrderFinished) != 1 {
		t.Errorf("status %s, OrderFinished events %d", e.status(orderID), e.events(orderID, orders.TypeOrderFinished))
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE topic = $1`, e.dlqTopic); n != 0 {
		t.Errorf("DLQ outbox rows = %d, want 0", n)
	}
}

func TestRecordIdentifiedByPositionWithoutUsableCeID(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	a, b, c := e.createOrder(100), e.createOrder(100), e.createOrder(100)
	noID := paymentRecord(a, "", orders.TypePaymentSucceeded)
	noID.Partition = 2
	tooLong := paymentRecord(b, strings.Repeat("x", cloudevents.MaxMessageIDLen+1), orders.TypePaymentSucceeded)
	tooLong.Partition = 1
	notText := paymentRecord(c, "\xff\xfe", orders.TypePaymentSucceeded)
	longest := strings.Repeat("y", cloudevents.MaxMessageIDLen)
	exact := paymentRecord(e.createOrder(100), longest, orders.TypePaymentSucceeded)
	recs := e.produce(noID, tooLong, notText, exact)

	cons, _ := e.startConsumer(m, inbox.ConsumerOptions{}, nil)
	e.startProcessor(m, inbox.ProcessorOptions{Wake: cons.Stored()})
	poll.Eventually(t, waitLong, "four applied", func() bool { return testutil.ToFloat64(m.Processed) == 4 })
	for _, r := range recs[:3] {
		id := fmt.Sprintf("%s/%d/%d", e.inboxTopic, r.Partition, r.Offset)
		if row, ok := e.row(id); !ok || !row.processed {
			t.Errorf("no processed row %q (found %v)", id, ok)
		}
	}
	if _, ok := e.row(longest); !ok {
		t.Errorf("a ce_id of exactly %d bytes was not used as message id", cloudevents.MaxMessageIDLen)
	}
	var headers []postgres.Header
	e.db.Pool.QueryRow(context.Background(), `SELECT headers FROM inbox WHERE message_id = $1`,
		fmt.Sprintf("%s/%d/%d", e.inboxTopic, notText.Partition, notText.Offset)).Scan(&headers)
	if v := headerValue(headers, "ce_id"); v != "\xff\xfe" {
		t.Errorf("binary ce_id header stored as %q, want it kept byte for byte", v)
	}
}

func TestConsumerAndProcessorKilledMidBatch(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	const n = 40
	var ids []string
	var recs []*kgo.Record
	for i := range n {
		id := e.createOrder(100)
		ids = append(ids, id)
		r := succeeded(id)
		r.Partition = int32(i % 3)
		recs = append(recs, r)
	}
	e.produce(recs...)
	// Every record again, as a producer retry would.
	var dups []*kgo.Record
	for _, r := range recs {
		d := paymentRecord(string(r.Key), header(r, "ce_id"), orders.TypePaymentSucceeded)
		d.Partition = r.Partition
		dups = append(dups, d)
	}
	e.produce(dups...)

	// The first consumer commits two polls and is killed in its third, after
	// storing and before committing; the first processor is cancelled while
	// it works through small batches.
	killed := errors.New("killed")
	var polls atomic.Int32
	_, r1 := e.startConsumer(m, inbox.ConsumerOptions{MaxPollRecords: 4}, func(c *inbox.Consumer, cancel context.CancelFunc) {
		inbox.SetBeforeCommit(c, func() error {
			if polls.Add(1) == 3 {
				cancel()
				return killed
			}
			return nil
		})
	})
	_, p1 := e.startProcessor(m, inbox.ProcessorOptions{BatchSize: 3})
	poll.Eventually(t, waitLong, "first consumer killed", func() bool { return polls.Load() >= 3 })
	if err := r1.stop(); !errors.Is(err, killed) {
		t.Fatalf("first consumer returned %v, want it killed", err)
	}
	poll.Eventually(t, waitLong, "some payments applied", func() bool { return testutil.ToFloat64(m.Processed) >= 3 })
	if err := p1.stop(); err != nil {
		t.Fatal(err)
	}

	c2, _ := e.startConsumer(m, inbox.ConsumerOptions{MaxPollRecords: 7}, nil)
	e.startProcessor(m, inbox.ProcessorOptions{Wake: c2.Stored(), BatchSize: 5})
	poll.Eventually(t, waitLong, "every payment applied", func() bool { return testutil.ToFloat64(m.Processed) == n })
	if got := testutil.ToFloat64(m.Received) - testutil.ToFloat64(m.Duplicates); got != n {
		t.Errorf("received - duplicates = %v, want %d", got, n)
	}
	if got := e.count(`SELECT count(*) FROM inbox WHERE processed AND NOT dead`); got != n {
		t.Errorf("processed inbox rows = %d, want %d", got, n)
	}
	for _, id := range ids {
		if got := e.events(id, orders.TypeOrderFinished); got != 1 {
			t.Errorf("order %s: OrderFinished events = %d, want 1", id, got)
		}
	}
}

func TestRedriveRequeuesDeadRows(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	ctx := context.Background()
	first, second := uuid.NewString(), uuid.NewString()
	m1, m2 := paymentMessage(first), paymentMessage(second)
	e.store(m1, m2)
	_, p := e.startProcessor(m, inbox.ProcessorOptions{MaxAttempts: 1})
	poll.Eventually(t, waitLong, "both dead", func() bool { return testutil.ToFloat64(m.Dead) == 2 })
	p.stop()

	e.insertOrder(first)
	e.insertOrder(second)
	n, err := postgres.Redrive(ctx, e.db, []string{m1.MessageID})
	if err != nil || n != 1 {
		t.Fatalf("redrive one = %d, %v; want 1", n, err)
	}
	if row, _ := e.row(m2.MessageID); !row.dead {
		t.Errorf("redriving %s touched %s: %+v", m1.MessageID, m2.MessageID, row)
	}
	if row, _ := e.row(m1.MessageID); row.dead || row.attempts != 0 || row.lastError == nil {
		t.Errorf("redriven row = %+v, want pending, attempts 0, last_error kept", row)
	}
	n, err = postgres.Redrive(ctx, e.db, nil)
	if err != nil || n != 1 {
		t.Fatalf("redrive all = %d, %v; want 1", n, err)
	}
	e.startProcessor(m, inbox.ProcessorOptions{MaxAttempts: 1})
	poll.Eventually(t, waitLong, "both applied", func() bool { return testutil.ToFloat64(m.Processed) == 2 })
	for _, id := range []string{first, second} {
		if e.status(id) != orders.StatusFinished || e.events(id, orders.TypeOrderFinished) != 1 {
			t.Errorf("order %s: status %s, OrderFinished events %d", id, e.status(id), e.events(id, orders.TypeOrderFinished))
		}
	}
	if n, _ := postgres.Redrive(ctx, e.db, nil); n != 0 {
		t.Errorf("redrive with no dead rows = %d, want 0", n)
	}
}

func TestMetricsRegisteredAndMoving(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	m, err := inbox.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inbox.NewMetrics(reg); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
	ids := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	for _, id := range ids {
		e.store(paymentMessage(id))
	}
	// Unknown orders: all three stay pending, rescheduled far ahead.
	_, p := e.startProcessor(m, inbox.ProcessorOptions{RetryBase: time.Hour, GaugeInterval: time.Millisecond})
	poll.Eventually(t, waitLong, "gauge at 3", func() bool { return testutil.ToFloat64(m.Unprocessed) == 3 })
	p.stop()
	for _, id := range ids {
		e.insertOrder(id)
	}
	if _, err := e.db.Pool.Exec(context.Background(), `UPDATE inbox SET next_attempt_at = now()`); err != nil {
		t.Fatal(err)
	}
	e.startProcessor(m, inbox.ProcessorOptions{GaugeInterval: time.Millisecond})
	poll.Eventually(t, waitLong, "three processed and gauge at 0", func() bool {
		return testutil.ToFloat64(m.Processed) == 3 && testutil.ToFloat64(m.Unprocessed) == 0
	})
	names := []string{"orders_inbox_received_total", "orders_inbox_duplicates_total", "orders_inbox_processed_total",
		"orders_inbox_dead_total", "orders_inbox_unprocessed"}
	if n, err := testutil.GatherAndCount(reg, names...); err != nil || n != len(names) {
		t.Errorf("gathered %d of %d inbox metrics: %v", n, len(names), err)
	}
}

func TestRetentionDeletesOnlyOldProcessedRows(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var old []postgres.InboxMessage
	for range 5 {
		old = append(old, paymentMessage(uuid.NewString()))
	}
	recent, dead, pending := paymentMessage(uuid.NewString()), paymentMessage(uuid.NewString()), paymentMessage(uuid.NewString())
	e.store(append(old, recent, dead, pending)...)
	for _, msg := range old {
		e.db.Pool.Exec(ctx, `UPDATE inbox SET processed = true, processed_at = now() - interval '400 hours' WHERE message_id = $1`, msg.MessageID)
	}
	e.db.Pool.Exec(ctx, `UPDATE inbox SET processed = true, processed_at = now() - interval '1 hour' WHERE message_id = $1`, recent.MessageID)
	e.db.Pool.Exec(ctx, `UPDATE inbox SET dead = true, created_at = now() - interval '400 hours' WHERE message_id = $1`, dead.MessageID)

	p := inbox.NewProcessor(inbox.ProcessorDeps{Store: e.db, Applier: e.svc, Metrics: newMetrics(t), Logger: testLogger(t)}, inbox.ProcessorOptions{DLQTopic: e.dlqTopic, RetentionBatch: 2})
	n, _, err := p.DeleteExpired(ctx)
	if err != nil || n != 5 {
		t.Fatalf("deleted %d, %v; want 5", n, err)
	}
	for _, msg := range []postgres.InboxMessage{recent, dead, pending} {
		if _, ok := e.row(msg.MessageID); !ok {
			t.Errorf("row %s was deleted", msg.MessageID)
		}
	}
	if got := e.count(`SELECT count(*) FROM inbox`); got != 3 {
		t.Errorf("rows left = %d, want 3", got)
	}
}

func TestBackoffSchedule(t *testing.T) {
	var total time.Duration
	for n := 1; n < 10; n++ { // the tenth failed attempt is final
		total += inbox.Backoff(n, time.Second, time.Minute)
	}
	if inbox.Backoff(1, time.Second, time.Minute) != time.Second || inbox.Backoff(7, time.Second, time.Minute) != time.Minute ||
		inbox.Backoff(100, time.Second, time.Minute) != time.Minute {
		t.Error("backoff does not start at 1s and cap at 60s")
	}
	if total < 3*time.Minute || total > 6*time.Minute {
		t.Errorf("ten attempts span %s, want about five minutes", total)
	}
}

func header(r *kgo.Record, key string) string {
	v, _ := cloudevents.Lookup(r.Headers, key)
	return v
}

func headerValue(hs []postgres.Header, key string) string {
	v, _ := cloudevents.Lookup(hs, key)
	return v
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestFailingRowRedoesBatchRowByRow: a batch whose rows all apply is applied
// in one pass; a batch with a row that cannot apply yet is rolled back and
// redone row by row, so the other rows are applied exactly once and only the
// failing row is rescheduled.
func TestFailingRowRedoesBatchRowByRow(t *testing.T) {
	e := newEnv(t)
	var redone atomic.Int32
	e.log = slog.New(counting{e.log.Handler(), "inbox batch redone row by row", &redone})
	m := newMetrics(t)
	p := inbox.NewProcessor(inbox.ProcessorDeps{Store: e.db, Applier: e.svc, Metrics: m, Logger: e.log}, inbox.ProcessorOptions{DLQTopic: e.dlqTopic})
	ctx := context.Background()

	a, b := e.createOrder(100), e.createOrder(200)
	e.store(paymentMessage(a), paymentMessage(b))
	if n, err := p.ProcessBatch(ctx); err != nil || n != 2 {
		t.Fatalf("clean batch: ProcessBatch = %d, %v; want 2 rows", n, err)
	}
	if redone.Load() != 0 {
		t.Errorf("clean batch was redone row by row")
	}

	c, d := e.createOrder(300), e.createOrder(400)
	unknown := paymentMessage(uuid.NewString())
	e.store(paymentMessage(c), unknown, paymentMessage(d))
	if n, err := p.ProcessBatch(ctx); err != nil || n != 3 {
		t.Fatalf("batch with a failing row: ProcessBatch = %d, %v; want 3 rows", n, err)
	}
	if redone.Load() != 1 {
		t.Errorf("batch with a failing row redone %d times, want once", redone.Load())
	}
	for _, id := range []string{a, b, c, d} {
		if s, n := e.status(id), e.events(id, orders.TypeOrderFinished); s != orders.StatusFinished || n != 1 {
			t.Errorf("order %s: status %s with %d OrderFinished events, want finished with 1", id, s, n)
		}
	}
	row, _ := e.row(unknown.MessageID)
	if row.processed || row.dead || row.attempts != 1 || !strings.Contains(deref(row.lastError), "not found") {
		t.Errorf("failing row = %+v, last_error %q; want rescheduled after one attempt", row, deref(row.lastError))
	}
	if got := testutil.ToFloat64(m.Processed); got != 4 {
		t.Errorf("processed metric = %v, want 4", got)
	}
	if n := e.count(`SELECT count(*) FROM inbox WHERE processed`); n != 4 {
		t.Errorf("%d rows marked processed, want 4", n)
	}
}
