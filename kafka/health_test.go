package kafka

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acme/orders-service/internal/poll"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A broker that stops answering produce requests is reported by
// ProduceHealth once records wait longer than Stall, and a closed producer's
// abandoned records keep it reported until a record is acknowledged again.
func TestProduceHealthFollowsAcknowledgements(t *testing.T) {
	b := startKfake(t, kfake.DefaultNumPartitions(1))
	h := &ProduceHealth{Stall: 300 * time.Millisecond}
	cfg := Config{Brokers: []string{b.Addr()}}
	cl := newClient(t, cfg, kgo.WithHooks(h), kgo.DefaultProduceTopic("health"))
	if err := EnsureTopics(testContext(t, 10*time.Second), cl, 1, -1, "health"); err != nil {
		t.Fatal(err)
	}
	produceOne(t, cl, &kgo.Record{Value: []byte("a")})
	if err := h.Err(time.Now()); err != nil {
		t.Fatalf("after an acknowledged record: %v", err)
	}

	// The broker holds the next produce request until the test ends.
	release := make(chan struct{})
	var held atomic.Bool
	b.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if held.CompareAndSwap(false, true) {
			b.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	t.Cleanup(func() { close(release) })
	cl.Produce(context.Background(), &kgo.Record{Value: []byte("b")}, nil)
	if err := h.Err(time.Now()); err != nil {
		t.Fatalf("a record just produced already reported: %v", err)
	}
	poll.Eventually(t, 10*time.Second, "the record without acknowledgement reported", func() bool { return h.Err(time.Now()) != nil })
	cl.Close()
	if err := h.Err(time.Now()); err == nil {
		t.Fatal("the closed producer's abandoned record is not reported")
	}
}

// A record refused for its own content is an answer from Kafka, not a sign
// it is unavailable; other failures count until a record is acknowledged.
func TestProduceHealthRecordRejectionIsAnAnswer(t *testing.T) {
	var h ProduceHealth
	h.OnProduceRecordBuffered(nil)
	h.OnProduceRecordUnbuffered(nil, fmt.Errorf("produce: %w", kerr.MessageTooLarge))
	if err := h.Err(time.Now()); err != nil {
		t.Fatalf("after MESSAGE_TOO_LARGE: %v, want nil", err)
	}
	h.OnProduceRecordBuffered(nil)
	h.OnProduceRecordUnbuffered(nil, kerr.NotEnoughReplicas)
	if err := h.Err(time.Now()); err == nil {
		t.Fatal("after NOT_ENOUGH_REPLICAS: nil, want an error")
	}
	h.OnProduceRecordBuffered(nil)
	h.OnProduceRecordUnbuffered(nil, kerr.RecordListTooLarge)
	if err := h.Err(time.Now()); err != nil {
		t.Fatalf("after RECORD_LIST_TOO_LARGE: %v, want nil", err)
	}
}
