package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/acme/orders-service/internal/kafkatest"
	"github.com/acme/orders-service/kafka"
)

// A topic the broker does not know yet is asked for again until it is
// there with all its partitions, instead of listing a partition -1.
func TestEndOffsetsWaitsForTheTopic(t *testing.T) {
	c := kafkatest.New(t)
	topic := c.Name("ack.endoffsets")
	cl, err := kafka.NewClient(kafka.Config{Brokers: c.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = endOffsets(ctx, adm, topic, 6)
	cancel()
	if err == nil || !strings.Contains(err.Error(), topic) {
		t.Fatalf("unknown topic: err = %v, want an error naming %s", err, topic)
	}

	type result struct {
		ends kadm.ListedOffsets
		err  error
	}
	done := make(chan result, 1)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		ends, err := endOffsets(ctx, adm, topic, 6)
		done <- result{ends, err}
	}()
	c.CreateTopics(6, topic)
	r := <-done
	if r.err != nil {
		t.Fatalf("after the topic was created: %v", r.err)
	}
	r.ends.Each(func(o kadm.ListedOffset) {
		if o.Partition < 0 || o.Partition >= 6 || o.Offset != 0 {
			t.Errorf("listed %+v, want partitions 0 to 5 at offset 0", o)
		}
	})
}
