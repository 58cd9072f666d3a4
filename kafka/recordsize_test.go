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
