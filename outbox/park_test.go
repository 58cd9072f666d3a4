package outbox

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/postgres/pgtest"
)

const dlqTopic = "payments.events.dlq"

// TestOversizeRowIsParked: a dead letter larger than the service producer's
// record limit (kafka/client.go) sits among normal rows. The normal rows are
// published once each and marked sent; the oversize row is parked with its
// error, and so is a later row of the same key (it must not overtake it);
// commits after them keep flowing. Re-driving the key claims both again, in
// order.
func TestOversizeRowIsParked(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	k := newKafka(t)
	dlqTopic := k.Name(dlqTopic)
	k.CreateTopics(4, dlqTopic)
	svc := newService(db, k.topic)
	producer, err := kafka.NewClient(kafka.Config{Brokers: k.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	w, _ := newWorker(t, db, producer, Options{PollInterval: 100 * time.Millisecond})
	c := collectWith(t, k.Addr(), kgo.ConsumeTopics(k.topic, dlqTopic))

	before := createOrder(t, svc, "before")
	bigID, bigEvent := insertOutboxRow(t, db, dlqTopic, "order-x", bytes.Repeat([]byte("x"), 1_000_100))
	sameKeyID, sameKeyEvent := insertOutboxRow(t, db, dlqTopic, "order-x", []byte(`{"small":true}`))
	after := createOrder(t, svc, "after")
	start(t, w)

	for _, o := range []string{before.ID, after.ID} {
		poll.Eventually(t, 10*time.Second, "row of "+o+" marked sent", func() bool { return outboxRows(t, db, "key = $1", o)[0].Sent })
	}
	poll.Eventually(t, 10*time.Second, "oversize row parked", func() bool { return parkState(t, db, bigID).Parked })
	big := parkState(t, db, bigID)
	if big.Sent || !strings.Contains(big.LastError, "MESSAGE_TOO_LARGE") {
		t.Errorf("oversize row: %+v; want parked, unsent, last_error naming MESSAGE_TOO_LARGE", big)
	}
	poll.Eventually(t, 10*time.Second, "later row of the same key parked", func() bool { return parkState(t, db, sameKeyID).Parked })
	if s := parkState(t, db, sameKeyID); s.Sent || !strings.Contains(s.LastError, "parked") {
		t.Errorf("later row of the parked key: %+v; want parked behind the oversize row", s)
	}

	later := createOrder(t, svc, "later")
	poll.Eventually(t, 10*time.Second, "row of a later order marked sent", func() bool { return outboxRows(t, db, "key = $1", later.ID)[0].Sent })
	for _, o := range []string{before.ID, after.ID, later.ID} {
		ev := outboxRows(t, db, "key = $1", o)[0].EventID
		poll.Eventually(t, 5*time.Second, "record of "+o, func() bool { return len(c.byEventID(ev)) > 0 })
		if n := len(c.byEventID(ev)); n != 1 {
			t.Errorf("%d copies of order %s's OrderCreated in Kafka, want 1", n, o)
		}
	}
	if n := len(c.byEventID(bigEvent)) + len(c.byEventID(sameKeyEvent)); n != 0 {
		t.Errorf("%d records of the parked key in Kafka, want 0", n)
	}
	if got := testutil.ToFloat64(w.m.parked); got != 2 {
		t.Errorf("orders_outbox_parked_total = %v, want 2", got)
	}
	poll.Eventually(t, 10*time.Second, "parked gauge", func() bool { return testutil.ToFloat64(w.m.parkedNow) == 2 })

	// Re-driving the small row brings its key back in order: the oversize
	// row is parked again (it still cannot be produced), the small one
	// stays parked behind it, and nothing of the key reaches Kafka.
	n, err := db.RedriveOutbox(context.Background(), []int64{sameKeyID})
	if err != nil || n != 2 {
		t.Fatalf("RedriveOutbox = %d, %v; want 2 rows (the key's parked rows)", n, err)
	}
	poll.Eventually(t, 10*time.Second, "key parked again", func() bool {
		return parkState(t, db, bigID).Parked && parkState(t, db, sameKeyID).Parked
	})
	if n := len(c.byEventID(sameKeyEvent)); n != 0 {
		t.Errorf("the small row overtook the oversize one of its key after the re-drive: %d copies", n)
	}
}

// TestUnauthorizedTopicIsParked: rows for a topic the relay's user may not
// write (TOPIC_AUTHORIZATION_FAILED, which Kafka never retries) are parked;
// the other orders' events around them are published once each.
// kfake in both modes: the test needs users and ACLs the cluster lacks.
func TestUnauthorizedTopicIsParked(t *testing.T) {
	t.Parallel()
	const forbidden = "orders.forbidden"
	db := pgtest.NewDB(t)
	svc := newService(db, topic)
	cluster := newFakeCluster(t, kfake.SeedTopics(4, forbidden), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin-secret"),
		kfake.User("PLAIN", "relay", "relay-secret",
			kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: topic, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationWrite, Allow: true},
			kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: forbidden, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationDescribe, Allow: true},
			kfake.ACL{Resource: kmsg.ACLResourceTypeCluster, Name: "kafka-cluster", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationIdempotentWrite, Allow: true},
		))
	addr := cluster.ListenAddrs()[0]
	producer, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.SASL(plain.Auth{User: "relay", Pass: "relay-secret"}.AsMechanism()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	w, _ := newWorker(t, db, producer, Options{PollInterval: 100 * time.Millisecond})
	c := collectWith(t, addr, kgo.ConsumeTopics(topic, forbidden), kgo.SASL(plain.Auth{User: "admin", Pass: "admin-secret"}.AsMechanism()))

	before := createOrder(t, svc, "before")
	deniedID, deniedEvent := insertOutboxRow(t, db, forbidden, "order-y", []byte(`{}`))
	after := createOrder(t, svc, "after")
	start(t, w)

	for _, o := range []string{before.ID, after.ID} {
		poll.Eventually(t, 10*time.Second, "row of "+o+" marked sent", func() bool { return outboxRows(t, db, "key = $1", o)[0].Sent })
	}
	poll.Eventually(t, 10*time.Second, "row for the forbidden topic parked", func() bool { return parkState(t, db, deniedID).Parked })
	if s := parkState(t, db, deniedID); s.Sent || !strings.Contains(s.LastError, "TOPIC_AUTHORIZATION_FAILED") {
		t.Errorf("forbidden row: %+v; want parked, unsent, last_error naming TOPIC_AUTHORIZATION_FAILED", s)
	}
	for _, o := range []string{before.ID, after.ID} {
		ev := outboxRows(t, db, "key = $1", o)[0].EventID
		poll.Eventually(t, 5*time.Second, "record of "+o, func() bool { return len(c.byEventID(ev)) > 0 })
		if n := len(c.byEventID(ev)); n != 1 {
			t.Errorf("%d copies of order %s's OrderCreated in Kafka, want 1", n, o)
		}
	}
	if n := len(c.byEventID(deniedEvent)); n != 0 {
		t.Errorf("%d records in the forbidden topic, want 0", n)
	}
	var parked []postgres.ParkedOutboxRow
	if parked, err = db.ListParkedOutbox(context.Background(), 10); err != nil || len(parked) != 1 || parked[0].ID != deniedID {
		t.Errorf("ListParkedOutbox = %+v, %v; want the forbidden row", parked, err)
	}
}

// TestNullAndBinaryKeysPublishedAndParked: the relay publishes each row's
// key as it is stored, a null key as null and bytes that are not text as
// those bytes. A row with a binary key that is parked holds back the later
// rows of the same bytes; a parked row with a null key holds back nothing,
// since Kafka keeps no order among null-keyed records.
func TestNullAndBinaryKeysPublishedAndParked(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	cluster := newFakeCluster(t, kfake.SeedTopics(4, dlqTopic))
	addr := cluster.ListenAddrs()[0]
	producer, err := kafka.NewClient(kafka.Config{Brokers: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	w, _ := newWorker(t, db, producer, Options{PollInterval: 100 * time.Millisecond})
	c := collectWith(t, addr, kgo.ConsumeTopics(dlqTopic))

	big, small := bytes.Repeat([]byte("x"), 1_000_100), []byte(`{}`)
	binKey := []byte{0xff, 0x00, 0x01}
	rows := []struct {
		name    string
		key     []byte
		payload []byte
		parked  bool
	}{
		{"null key, too large", nil, big, true},
		{"null key, after it", nil, small, false},
		{"binary key, too large", binKey, big, true},
		{"same binary key, after it", binKey, small, true},
		{"other binary key", []byte{0xff, 0x00, 0x02}, small, false},
		{"empty key", []byte{}, small, false},
		{"text key", []byte("order-1"), small, false},
	}
	msgs := make([]postgres.OutboxMessage, len(rows))
	for i, r := range rows {
		id := uuid.NewString()
		msgs[i] = postgres.OutboxMessage{EventID: id, EventType: "test", Topic: dlqTopic, Key: r.key,
			Headers: []postgres.Header{{Key: "ce_id", Value: []byte(id)}}, Payload: r.payload}
	}
	ctx := context.Background()
	if err := db.InTx(ctx, false, func(tx pgx.Tx) error { return postgres.InsertOutbox(ctx, tx, msgs...) }); err != nil {
		t.Fatal(err)
	}
	start(t, w)

	for i, r := range rows {
		if r.parked {
			poll.Eventually(t, 10*time.Second, r.name+" parked", func() bool {
				var parked bool
				err := db.Pool.QueryRow(ctx, `SELECT parked_at IS NOT NULL FROM outbox WHERE event_id = $1`, msgs[i].EventID).Scan(&parked)
				return err == nil && parked
			})
			continue
		}
		poll.Eventually(t, 10*time.Second, r.name+" published", func() bool { return len(c.byEventID(msgs[i].EventID)) > 0 })
		got := c.byEventID(msgs[i].EventID)[0].Key
		if (got == nil) != (r.key == nil) || !bytes.Equal(got, r.key) {
			t.Errorf("%s: published key %#v, want %#v", r.name, got, r.key)
		}
	}
	for i, r := range rows {
		if n := len(c.byEventID(msgs[i].EventID)); r.parked && n != 0 {
			t.Errorf("%s: %d records in Kafka, want it parked", r.name, n)
		}
	}
}
