package kafka

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/acme/orders-service/internal/kafkatest"
)

// TestCompressionOnTheWire produces with each KAFKA_COMPRESSION value, reads
// the stored record batch raw from the partition leader and checks the codec
// bits of its attributes, then consumes the record back. The default (empty)
// must write uncompressed batches: franz-go's own default is snappy.
func TestCompressionOnTheWire(t *testing.T) {
	cluster := kafkatest.New(t)
	for _, tt := range []struct {
		setting string
		codec   int16 // record batch attributes & 0x07
	}{
		{"", 0}, {"none", 0}, {"gzip", 1}, {"snappy", 2}, {"lz4", 3}, {"ZSTD", 4},
	} {
		name := tt.setting
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			topic := cluster.Name("compression-" + strings.ToLower(name))
			cluster.CreateTopics(1, topic)
			cfg := Config{Brokers: cluster.Brokers, Compression: tt.setting}
			value := []byte(strings.Repeat(`{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab"}`, 20))
			produceOne(t, newClient(t, cfg), &kgo.Record{Topic: topic, Value: value})

			if got := storedCodec(t, cluster.Brokers, topic); got != tt.codec {
				t.Errorf("stored batch codec = %d, want %d for KAFKA_COMPRESSION=%q", got, tt.codec, tt.setting)
			}
			recs := consumeN(t, Config{Brokers: cluster.Brokers}, topic, 1)
			if string(recs[0].Value) != string(value) {
				t.Errorf("consumed value differs from the produced one")
			}
		})
	}
}

// storedCodec fetches partition 0 of topic from its leader with a raw Fetch
// request and returns the codec bits of the first record batch's attributes.
func storedCodec(t *testing.T, brokers []string, topic string) int16 {
	t.Helper()
	// Fetch v12 names topics; v13+ would need topic ids.
	cl := newClient(t, Config{Brokers: brokers}, kgo.MaxVersions(kversion.V3_0_0()))
	ctx := testContext(t, 20*time.Second)
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	leader := md.Topics[topic].Partitions[0].Leader

	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = 500
	req.MaxBytes = 1 << 20
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = topic
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.Partition = 0
	fp.PartitionMaxBytes = 1 << 20
	fp.LogStartOffset = -1
	fp.CurrentLeaderEpoch = -1
	ft.Partitions = append(ft.Partitions, fp)
	req.Topics = append(req.Topics, ft)

	resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
	if err != nil {
		t.Fatalf("fetch from broker %d: %v", leader, err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("fetch response has %d topics", len(resp.Topics))
	}
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != 0 {
		t.Fatalf("fetch %s/0: error code %d", topic, p.ErrorCode)
	}
	raw := p.RecordBatches
	if len(raw) < 12 {
		t.Fatalf("fetch %s/0: %d bytes of record batches, want one batch", topic, len(raw))
	}
	size := 12 + int(binary.BigEndian.Uint32(raw[8:12]))
	if size > len(raw) {
		t.Fatalf("fetch %s/0: truncated batch of %d bytes (have %d)", topic, size, len(raw))
	}
	var batch kmsg.RecordBatch
	if err := batch.ReadFrom(raw[:size]); err != nil {
		t.Fatalf("decode record batch: %v", err)
	}
	if batch.Magic != 2 || batch.NumRecords != 1 {
		t.Fatalf("record batch magic %d with %d records, want magic 2 with 1", batch.Magic, batch.NumRecords)
	}
	return batch.Attributes & 0x07
}

func TestCompressionSettingValidated(t *testing.T) {
	for _, v := range []string{"brotli", "no", "snappy "} {
		err := Config{Brokers: []string{"h:1"}, Compression: v}.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "KAFKA_COMPRESSION: ") || !strings.Contains(err.Error(), "none, gzip, snappy, lz4 or zstd") {
			t.Errorf("Compression %q: got %v, want a KAFKA_COMPRESSION error listing the codecs", v, err)
		}
	}
}
