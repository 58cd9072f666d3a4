package outbox

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// topicPartition names one partition of a topic.
type topicPartition struct {
	topic     string
	partition int32
}

// partitions is the relay's per-partition state across batches: the
// partitions whose records failed retriably for a cause of the partition
// (no leader, no answer), each held back with its own backoff. While a
// partition is held, a batch produces none of the rows whose key maps to it:
// they stay unsent and their keys wait until the hold ends (waits), so one
// dead partition costs other keys nothing, not a produce timeout per new key
// of it. When the hold ends, one batch probes the partition with its rows,
// unless the cluster's metadata still shows it without a leader. It is
// shared by a replica's publishers.
type partitions struct {
	min, max time.Duration
	probeFor time.Duration // how long a probing batch may take before another may probe

	mu   sync.Mutex
	held map[topicPartition]*partitionHold
	meta map[string]topicMeta
}

// partitionHold is one held partition.
type partitionHold struct {
	until   time.Time     // its rows are produced again (by one probing batch) after this
	backoff time.Duration // the hold after the last failure
	probe   time.Time     // a batch is probing it until this
}

// topicMeta is what the cluster's metadata said of a topic, and when.
type topicMeta struct {
	n          int            // partitions
	leaderless map[int32]bool // partitions without a leader (or with an error)
	at         time.Time
}

// metaTTL is how long a topic's metadata is used before it is asked again.
const metaTTL = time.Second

func newPartitions(min, max, probeFor time.Duration) *partitions {
	return &partitions{min: min, max: max, probeFor: probeFor,
		held: map[topicPartition]*partitionHold{}, meta: map[string]topicMeta{}}
}

// anyHeld reports whether a partition is held.
func (s *partitions) anyHeld() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held) > 0
}

// fail holds tp: twice its last hold, from min to max. It returns when the
// hold ends.
func (s *partitions) fail(tp topicPartition, now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[tp]
	if h == nil {
		h = &partitionHold{}
		s.held[tp] = h
	}
	h.backoff = min(max(2*h.backoff, s.min), s.max)
	h.until = now.Add(h.backoff)
	h.probe = time.Time{}
	return h.until
}

// ok ends tp's hold: Kafka took a record of it.
func (s *partitions) ok(tp topicPartition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.held, tp)
}

// clear ends every hold (Kafka answers again after not answering at all).
func (s *partitions) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.held)
}

// heldUntil returns until when tp's rows are held back at now, zero when
// they are produced. A hold that ended makes the caller's batch the probe
// (no other batch produces the partition's rows meanwhile), unless the
// metadata shows the partition still without a leader: then it is held
// again, with a longer backoff, without a record produced.
func (s *partitions) heldUntil(tp topicPartition, leaderless bool, now time.Time, probing map[topicPartition]bool) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[tp]
	switch {
	case h == nil || probing[tp]:
		return time.Time{}
	case now.Before(h.until):
		return h.until
	case now.Before(h.probe):
		return h.probe
	case leaderless:
		h.backoff = min(max(2*h.backoff, s.min), s.max)
		h.until = now.Add(h.backoff)
		return h.until
	}
	h.probe = now.Add(s.probeFor)
	probing[tp] = true
	return time.Time{}
}

// topic returns topic's partition count and leaderless partitions, from
// metadata at most metaTTL old, asked of cl when older; n is 0 when unknown.
func (s *partitions) topic(ctx context.Context, cl *kgo.Client, topic string, now time.Time) topicMeta {
	s.mu.Lock()
	m, ok := s.meta[topic]
	s.mu.Unlock()
	if ok && now.Sub(m.at) < metaTTL || cl == nil {
		return m
	}
	mctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	md, err := kadm.NewClient(cl).Metadata(mctx, topic)
	td, found := md.Topics[topic]
	if err != nil || !found || td.Err != nil || len(td.Partitions) == 0 {
		return m // keep what was known
	}
	m = topicMeta{n: len(td.Partitions), leaderless: map[int32]bool{}, at: now}
	for p, pd := range td.Partitions {
		if pd.Leader < 0 || pd.Err != nil {
			m.leaderless[p] = true
		}
	}
	s.mu.Lock()
	s.meta[topic] = m
	s.mu.Unlock()
	return m
}

// hold marks, before producing, the rows of b whose key maps to a held
// partition: they are not produced (outcome.held). The mapping is the
// producer's own for keyed records (the Kafka hasher, murmur2, over the
// topic's partitions, as kgo's default partitioner maps them), with the
// partition count from the cluster's metadata. Null-keyed rows, which the
// client may put on any partition, are produced.
func (s *partitions) hold(ctx context.Context, cl *kgo.Client, b *batch, now time.Time) {
	if !s.anyHeld() {
		return
	}
	byKey := kgo.StickyKeyPartitioner(nil).ForTopic("")
	probing := map[topicPartition]bool{}
	metas := map[string]topicMeta{}
	for i, r := range b.recs {
		if b.outs[i].parkErr != "" || r.Key == nil {
			continue
		}
		m, ok := metas[r.Topic]
		if !ok {
			m = s.topic(ctx, cl, r.Topic, now)
			metas[r.Topic] = m
		}
		if m.n == 0 {
			continue
		}
		p := int32(byKey.Partition(&kgo.Record{Topic: r.Topic, Key: r.Key}, m.n))
		b.outs[i].held = s.heldUntil(topicPartition{r.Topic, p}, m.leaderless[p], now, probing)
	}
}

// partitionOf returns the partition the client puts r on: the Kafka
// hasher over the topic's partition count; false for a null key or an
// unknown count.
func (s *partitions) partitionOf(ctx context.Context, cl *kgo.Client, topic string, key []byte, now time.Time) (int32, bool) {
	if key == nil {
		return 0, false
	}
	m := s.topic(ctx, cl, topic, now)
	if m.n == 0 {
		return 0, false
	}
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic(topic).Partition(&kgo.Record{Topic: topic, Key: key}, m.n)), true
}

// partitionCause reports whether a record that failed with err (nil: it had
// no outcome) failed for a cause of its partition, which holds the partition
// back, rather than of its key or of the whole client.
func partitionCause(err error) bool {
	if err == nil || errors.Is(err, errUnresolved) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrRecordTimeout) {
		return true
	}
	for _, e := range []error{kerr.NotLeaderForPartition, kerr.LeaderNotAvailable, kerr.UnknownTopicOrPartition,
		kerr.RequestTimedOut, kerr.NotEnoughReplicas, kerr.NotEnoughReplicasAfterAppend, kerr.KafkaStorageError,
		kerr.FencedLeaderEpoch, kerr.UnknownLeaderEpoch, kerr.OffsetNotAvailable} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
