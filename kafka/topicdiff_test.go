package kafka

import (
	"slices"
	"testing"
	"time"

	"github.com/acme/orders-service/internal/kafkatest"
)

// TestEnsureTopicsClusterDefaultReplication: -1 creates topics with the
// cluster's default replication (3 on make kafka-up's cluster, 1 on the
// one-node kfake, which claims a default of 3 it cannot honour), and an
// existing topic with other settings is reported, not changed.
func TestEnsureTopicsClusterDefaultReplication(t *testing.T) {
	cluster := kafkatest.New(t)
	cl := newClient(t, Config{Brokers: cluster.Brokers})
	ctx := testContext(t, 60*time.Second)
	created, existing := cluster.Name("created"), cluster.Name("existing")
	cluster.DeleteAtEnd(created)
	cluster.CreateTopics(2, existing)

	if err := EnsureTopics(ctx, cl, 4, -1, created, existing); err != nil {
		t.Fatalf("EnsureTopics: %v", err)
	}
	wantRF := 1
	if cluster.Real() {
		wantRF = 3
	}
	if got := partitionReplicas(t, cl, created); got != wantRF {
		t.Fatalf("created topic has %d replicas, want the cluster default %d", got, wantRF)
	}
	diffs, err := TopicDifferences(ctx, cl, 4, -1, created, existing)
	if err != nil {
		t.Fatalf("TopicDifferences: %v", err)
	}
	want := []TopicDifference{{Topic: existing, Setting: "partitions", Have: 2, Want: 4}}
	if !slices.Equal(diffs, want) {
		t.Fatalf("differences = %+v, want %+v", diffs, want)
	}
	if got := partitionCounts(t, cl, existing)[existing]; got != 2 {
		t.Fatalf("existing topic has %d partitions after EnsureTopics, want its own 2", got)
	}

	diffs, err = TopicDifferences(ctx, cl, 4, int16(wantRF+1), created)
	if err != nil {
		t.Fatalf("TopicDifferences: %v", err)
	}
	want = []TopicDifference{{Topic: created, Setting: "replication factor", Have: wantRF, Want: wantRF + 1}}
	if !slices.Equal(diffs, want) {
		t.Fatalf("differences with replication %d = %+v, want %+v", wantRF+1, diffs, want)
	}
}
