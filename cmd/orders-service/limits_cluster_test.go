//go:build kafkacluster

package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres/pgtest"
)

// brokerMessageMaxBytes is Apache Kafka's default message.max.bytes, which
// deploy/kafka/server.properties keeps.
const brokerMessageMaxBytes = 1048588

// outboxHeaders encodes CloudEvents headers as the outbox stores them.
func outboxHeaders(id, typ string) string {
	h := func(k, v string) string {
		return fmt.Sprintf(`{"key":%q,"value_base64":%q}`, k, base64.StdEncoding.EncodeToString([]byte(v)))
	}
	return "[" + strings.Join([]string{h("ce_specversion", "1.0"), h("ce_id", id), h("ce_type", typ),
		h("ce_source", "limits-test"), h("ce_time", time.Now().UTC().Format(time.RFC3339)), h("content-type", "application/json")}, ",") + "]"
}

// TestClusterSizeLimits (issue 9, 3e): a payments record just under the
// broker's message.max.bytes that must be dead-lettered, an order event
// just under the producer's record limit and one over it, among ordinary
// orders and payments. The dead letter reaches the DLQ cut to fit, the
// near-limit event is published whole, the oversize one is parked, and
// every other order is created, paid and published.
func TestClusterSizeLimits(t *testing.T) {
	c := needCluster(t)
	dsn := pgtest.NewEmptyDSN(t)
	names := uniqueNames("limits")
	env := c.replicaEnv(dsn, names)
	r := startReplica(t, "replica-1", env)
	startSimulator(t, c, names)
	topic, payments, dlq := names["KAFKA_TOPIC"], names["KAFKA_INBOX_TOPIC"], names["KAFKA_DLQ_TOPIC"]

	stop := make(chan struct{})
	close(stop)
	ids := startLoad(t, 50, false, stop, r).wait(t)

	// Order events written straight into the outbox, as a bigger event
	// type would be: one just under the producer's limit, one over it.
	nearKey, overKey := uuid.NewString(), uuid.NewString()
	nearID, overID := uuid.NewString(), uuid.NewString()
	nearLen := kafka.ProducerBatchMaxBytes - 2000
	overLen := kafka.ProducerBatchMaxBytes + 100
	for _, row := range []struct {
		id, key string
		n       int
	}{{nearID, nearKey, nearLen}, {overID, overKey, overLen}} {
		if n := queryInt(t, dsn, `WITH w AS (INSERT INTO outbox (event_id, event_type, topic, key, headers, payload)
			VALUES ($1, $2, $3, $4, $5::jsonb, convert_to('{"pad":"' || repeat('x', $6) || '"}', 'UTF8')) RETURNING 1) SELECT count(*) FROM w`,
			row.id, typeCreated, topic, row.key, outboxHeaders(row.id, typeCreated), row.n-10); n != 1 {
			t.Fatalf("inserted %d rows", n)
		}
	}

	// A payment the inbox can never apply (unknown ce_type), just under the
	// broker's limit, then more orders and their payments.
	producer, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.ProducerBatchMaxBytes(brokerMessageMaxBytes),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	bigID := uuid.NewString()
	big := &kgo.Record{Topic: payments, Key: []byte(ids[0]),
		Headers: cloudevents.AppendHeaders([]kgo.RecordHeader(nil), cloudevents.Event{ID: bigID, Type: "payments.v1.PaymentRefunded", Source: "limits-test", Time: time.Now()})}
	size := len(big.Key)
	for _, h := range big.Headers {
		size += len(h.Key) + len(h.Value)
	}
	big.Value = []byte(`{"order_id":"` + ids[0] + `","pad":"` + strings.Repeat("y", brokerMessageMaxBytes-size-200) + `"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := producer.ProduceSync(ctx, big).FirstErr(); err != nil {
		t.Fatalf("producing a %d-byte payment under the broker's message.max.bytes: %v", len(big.Value), err)
	}
	ids = append(ids, startLoad(t, 50, false, stop, r).wait(t)...)

	poll.Eventually(t, 120*time.Second, "every order paid", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM orders WHERE status = 'finished'`) == len(ids)
	})
	poll.Eventually(t, 60*time.Second, "the oversize payment dead", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM inbox WHERE message_id = $1 AND dead`, bigID) == 1
	})
	poll.Eventually(t, 60*time.Second, "the outbox settled: the near-limit event sent, the oversize one parked, nothing else left", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent AND parked_at IS NULL`) == 0
	})
	if n := queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE event_id = $1 AND parked_at IS NOT NULL`, overID); n != 1 {
		t.Fatalf("the event over the producer's limit is not parked")
	}
	if n := queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL`); n != 1 {
		t.Fatalf("%d parked outbox rows, want only the oversize one", n)
	}

	var dead []record
	poll.Eventually(t, 60*time.Second, "the dead letter in the DLQ", func() bool {
		dead = c.readAll(t, dlq)
		return len(dead) > 0
	})
	if len(dead) != 1 || dead[0].id != bigID || dead[0].headers[cloudevents.HeaderDLQTruncated] == "" || dead[0].size > kafka.ProducerBatchMaxBytes {
		t.Fatalf("DLQ holds %d records, first ce_id %q, %d bytes, headers %v", len(dead), dead[0].id, dead[0].size, dead[0].headers)
	}

	var events []record
	var near *record
	for _, rec := range c.readAll(t, topic) {
		switch rec.key {
		case nearKey:
			near = &rec
		case overKey:
			t.Fatalf("the event over the producer's limit reached Kafka (%d bytes)", rec.size)
		default:
			events = append(events, rec)
		}
	}
	if near == nil || len(near.value) != nearLen {
		t.Fatalf("the near-limit event is missing or cut: %v", near)
	}
	st := checkOrderEvents(t, events, ids, typeCreated, typeFinished)
	t.Logf("SUMMARY size limits: orders=%d events=%d duplicates=%d dlq_record=%d bytes (payment of %d bytes, truncated header %s) near_limit_event=%d bytes parked_event=%d bytes",
		len(ids), st.events, st.duplicates, dead[0].size, len(big.Value), dead[0].headers[cloudevents.HeaderDLQTruncated], len(near.value), overLen)
}
