package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/acme/orders-service/postgres"
)

// topicPartition names one partition of a topic.
type topicPartition struct {
	topic     string
	partition int32
}

// Holding back a partition. When one partition of a topic has no working
// leader, every batch with a record of it (with a new key per order, nearly
// every batch) would wait the produce timeout, and with transactions could
// not commit, so the other partitions' records in it would wait too. The
// relay therefore holds such a partition back as a whole: rows whose key
// maps to it are not produced, their keys wait (the claim leaves them out),
// and every other row goes on. A partition is held only on evidence about
// that partition:
//
//   - its records failed with an error of the partition (no leader, not the
//     leader, unknown partition, too few in-sync replicas), or
//   - its records failed or stayed unanswered while Kafka acknowledged
//     records of other partitions in the same batch, or
//   - they failed or stayed unanswered and a fresh metadata request shows
//     the partition without a leader, or its leader does not answer.
//
// A batch in which nothing was acknowledged and whose partitions show no
// such sign is a failure of Kafka as a whole: the relay backs off as
// before and holds nothing.
//
// A hold ends on fresh evidence: while any partition is held, a poller asks
// the cluster's metadata every second (a request of its own, not the
// client's cache), and releases a partition whose leader is back and
// answers; the waits of its keys end, so the next batch carries its rows in
// id order; if they fail again it is held again, for at least twice as long
// before the next release. Every hold ends after maxHold whatever the
// metadata says, so a hold never outlives its cause: the next batch shows
// whether the partition is still down.
//
// A record's partition is known before it is produced: the producer's
// partitioner for keyed records (murmur2 over the topic's partition count,
// kgo's default and Kafka's), with the count from a metadata request.
// Null-keyed rows, which the client may put on any partition, are never
// held back.
type partitions struct {
	cl      atomic.Pointer[kgo.Client] // asks the metadata; nil: holding is off
	log     *slog.Logger
	waits   *waits
	onHeld  func(n int) // reports how many partitions are held
	release func()      // called after a release, to wake the publishers

	minHold, maxHold time.Duration
	pollEvery        time.Duration // the poller's interval while something is held

	wake chan struct{} // starts the poller

	mu       sync.Mutex
	held     map[topicPartition]*partitionHold
	released map[topicPartition]released
	meta     map[string]topicMeta
}

// partitionHold is one held partition.
type partitionHold struct {
	since    time.Time
	minUntil time.Time // not released before this, whatever the metadata says
	maxUntil time.Time // released at this, whatever the metadata says
	strikes  int       // holds in a row, each released and failed again soon after
	keys     map[string]postgres.OutboxRecord
}

// released is when a partition was last released, and after how many
// holds in a row.
type released struct {
	at      time.Time
	strikes int
}

// topicMeta is a topic's partitions as a metadata request showed them.
type topicMeta struct {
	at    time.Time
	parts []kmsg.MetadataResponseTopicPartition // by partition number
}

const (
	// countTTL is how long a topic's partition count is used before it is
	// asked again.
	countTTL = 10 * time.Second
	// checkTTL is how long a topic's metadata answers whether a partition
	// has a leader, so that lanes failing at once ask once.
	checkTTL = 500 * time.Millisecond
	// strikeWindow: a partition held again within this of its release was
	// released too early: its next hold lasts at least twice as long.
	strikeWindow = time.Minute
	// askTimeout bounds one metadata request or leader probe.
	askTimeout = time.Second
)

func newPartitions(cl *kgo.Client, log *slog.Logger, w *waits) *partitions {
	s := &partitions{
		log: log, waits: w, onHeld: func(int) {}, release: func() {},
		minHold: time.Second, maxHold: 30 * time.Second, pollEvery: time.Second,
		wake:     make(chan struct{}, 1),
		held:     map[topicPartition]*partitionHold{},
		released: map[topicPartition]released{},
		meta:     map[string]topicMeta{},
	}
	s.cl.Store(cl)
	return s
}

// on reports whether the relay holds partitions back at all: it needs a
// *kgo.Client to ask the cluster's metadata.
func (s *partitions) on() bool { return s != nil && s.cl.Load() != nil }

// isHeld reports whether tp is held.
func (s *partitions) isHeld(tp topicPartition) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[tp] != nil
}

// anyHeld reports whether a partition is held.
func (s *partitions) anyHeld() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held) > 0
}

// metadata returns topic's partitions from a metadata request at most
// maxAge old, asking the cluster when older; nil when it cannot be had.
func (s *partitions) metadata(ctx context.Context, topic string, maxAge time.Duration) []kmsg.MetadataResponseTopicPartition {
	s.mu.Lock()
	m, ok := s.meta[topic]
	s.mu.Unlock()
	if ok && time.Since(m.at) < maxAge {
		return m.parts
	}
	if fresh := s.ask(ctx, topic); fresh != nil {
		return fresh
	}
	if ok && maxAge == countTTL {
		return m.parts // a count is still right when the cluster does not answer
	}
	return nil
}

// ask requests topic's metadata from the cluster (never the client's
// cache) and keeps it; nil when the cluster does not answer or knows no
// such topic.
func (s *partitions) ask(ctx context.Context, topic string) []kmsg.MetadataResponseTopicPartition {
	actx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(actx, s.cl.Load())
	if err != nil || len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) == 0 {
		return nil
	}
	parts := make([]kmsg.MetadataResponseTopicPartition, len(resp.Topics[0].Partitions))
	for _, p := range resp.Topics[0].Partitions {
		if p.Partition < 0 || int(p.Partition) >= len(parts) {
			return nil
		}
		parts[p.Partition] = p
	}
	s.mu.Lock()
	s.meta[topic] = topicMeta{at: time.Now(), parts: parts}
	s.mu.Unlock()
	return parts
}

// partitionOf returns the partition the producer puts a record of topic and
// key on; false for a null key or when the topic's partition count is
// unknown.
func (s *partitions) partitionOf(ctx context.Context, topic string, key []byte) (int32, bool) {
	if key == nil {
		return -1, false
	}
	parts := s.metadata(ctx, topic, countTTL)
	if len(parts) == 0 {
		return -1, false
	}
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic(topic).Partition(&kgo.Record{Topic: topic, Key: key}, len(parts))), true
}

// leaderless reports whether fresh metadata shows tp without a leader, or
// with a leader that does not answer. It reports false when the metadata
// cannot be had: no evidence about the partition.
func (s *partitions) leaderless(ctx context.Context, tp topicPartition) bool {
	parts := s.metadata(ctx, tp.topic, checkTTL)
	if parts == nil {
		return false
	}
	if int(tp.partition) >= len(parts) {
		return true // the partition is gone
	}
	p := parts[tp.partition]
	if p.Leader < 0 || p.ErrorCode != 0 {
		return true
	}
	return !s.answers(ctx, p.Leader)
}

// answers reports whether broker node answers a request.
func (s *partitions) answers(ctx context.Context, node int32) bool {
	actx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{} // none: only whether it answers
	_, err := s.cl.Load().Broker(int(node)).Request(actx, req)
	return err == nil
}

// mark marks, before producing, the rows of b whose key maps to a held
// partition: they are not produced, and their keys wait until the hold
// ends.
func (s *partitions) mark(ctx context.Context, b *batch) {
	if !s.on() || !s.anyHeld() {
		return
	}
	for i, r := range b.recs {
		if b.outs[i].parkErr != "" {
			continue
		}
		if p, ok := s.partitionOf(ctx, r.Topic, r.Key); ok && s.isHeld(topicPartition{r.Topic, p}) {
			b.outs[i].held = true
			b.outs[i].partition = p
		}
	}
}

// partitionSpecific reports whether err is an error Kafka returns for one
// partition: it says nothing of the others.
func partitionSpecific(err error) bool {
	for _, e := range []error{kerr.NotLeaderForPartition, kerr.LeaderNotAvailable, kerr.UnknownTopicOrPartition,
		kerr.NotEnoughReplicas, kerr.NotEnoughReplicasAfterAppend, kerr.KafkaStorageError,
		kerr.FencedLeaderEpoch, kerr.UnknownLeaderEpoch} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// unanswered reports whether a record that failed with err (nil: it has
// no outcome yet) may have failed for a cause of its partition: it had no
// answer, or an error of the partition. An error of the producer or its
// transaction (fenced, aborted) says nothing of the partition.
func unanswered(err error) bool {
	return err == nil || errors.Is(err, errUnresolved) || errors.Is(err, errStalledRecord) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrRecordTimeout) || errors.Is(err, kgo.ErrRecordRetries) ||
		partitionSpecific(err)
}

// stuck returns, of the rows idx of b that failed retriably or have no
// outcome, the partitions for which there is evidence that they, not Kafka
// as a whole, are the cause (see partitions), with those rows' indexes;
// rest is how many of idx are not among them. A batch cut early (a second
// after the rest was acknowledged) takes those acknowledgements for no
// evidence: a partition slower than the others may only be busy, so its
// leader is asked.
func (s *partitions) stuck(ctx context.Context, b *batch, idx []int, early bool) (held map[topicPartition][]int, rest int) {
	acked := map[topicPartition]bool{}
	for i, o := range b.outs {
		if !o.acked.IsZero() && o.partition >= 0 {
			acked[topicPartition{b.recs[i].Topic, o.partition}] = true
		}
	}
	byPart := map[topicPartition][]int{}
	specific := map[topicPartition]bool{}
	for _, i := range idx {
		r, o := b.recs[i], b.outs[i]
		p := o.partition
		if !unanswered(o.err) {
			rest++
			continue
		}
		if p < 0 {
			var ok bool
			if p, ok = s.partitionOf(ctx, r.Topic, r.Key); !ok {
				rest++
				continue
			}
		}
		tp := topicPartition{r.Topic, p}
		byPart[tp] = append(byPart[tp], i)
		if partitionSpecific(o.err) {
			specific[tp] = true
		}
	}
	held = map[topicPartition][]int{}
	for tp, is := range byPart {
		otherAcked := false
		for a := range acked {
			otherAcked = otherAcked || a != tp
		}
		if specific[tp] || (otherAcked && !early) || s.isHeld(tp) || s.leaderless(ctx, tp) {
			held[tp] = is
		} else {
			rest += len(is)
		}
	}
	return held, rest
}

// hold holds tp back (again) and makes the keys of b's rows idx wait until
// the hold ends.
func (s *partitions) hold(tp topicPartition, b *batch, idx []int, cause error, now time.Time) {
	s.mu.Lock()
	h := s.held[tp]
	if h == nil {
		strikes := 0
		if r, ok := s.released[tp]; ok && now.Sub(r.at) < strikeWindow {
			strikes = r.strikes + 1
		}
		h = &partitionHold{since: now, strikes: strikes, keys: map[string]postgres.OutboxRecord{},
			minUntil: now.Add(min(s.minHold<<min(strikes, 16), s.maxHold)), maxUntil: now.Add(s.maxHold)}
		s.held[tp] = h
		s.onHeld(len(s.held))
		s.log.Warn("outbox holding back a partition: its records fail while Kafka answers for others; its rows wait, every other partition's go on",
			"topic", tp.topic, "partition", tp.partition, "error", cause, "released_no_earlier_than", h.minUntil, "released_at_latest", h.maxUntil)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	until := h.maxUntil
	for _, i := range idx {
		r := b.recs[i]
		h.keys[keyOf(r)] = r
	}
	s.mu.Unlock()
	for _, i := range idx {
		s.waits.holdUntil(b.recs[i], until)
	}
}

// heldRows makes the keys of b's rows idx, which mark left unproduced,
// wait with their partition's hold; a hold released meanwhile leaves them
// free, to be claimed again.
func (s *partitions) heldRows(b *batch, idx []int) {
	var until []time.Time
	s.mu.Lock()
	for _, i := range idx {
		r := b.recs[i]
		h := s.held[topicPartition{r.Topic, b.outs[i].partition}]
		if h == nil {
			until = append(until, time.Time{})
			continue
		}
		h.keys[keyOf(r)] = r
		until = append(until, h.maxUntil)
	}
	s.mu.Unlock()
	for j, i := range idx {
		if !until[j].IsZero() {
			s.waits.holdUntil(b.recs[i], until[j])
		}
	}
}

// poll runs until ctx ends: while a partition is held, every pollEvery it
// releases the partitions whose leader is back and answers (at the
// earliest minUntil) and those held for maxHold.
func (s *partitions) poll(ctx context.Context) {
	if !s.on() {
		return
	}
	t := time.NewTicker(s.pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		for s.anyHeld() {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			s.check(ctx, time.Now())
		}
	}
}

// check releases the held partitions that fresh metadata shows with a
// leader that answers, and those held for maxHold.
func (s *partitions) check(ctx context.Context, now time.Time) {
	s.mu.Lock()
	topics := map[string]bool{}
	var due []topicPartition
	for tp, h := range s.held {
		topics[tp.topic] = true
		if !now.Before(h.minUntil) {
			due = append(due, tp)
		}
	}
	s.mu.Unlock()
	fresh := map[string][]kmsg.MetadataResponseTopicPartition{}
	for topic := range topics {
		fresh[topic] = s.ask(ctx, topic) // also keeps the partition counts fresh
	}
	for _, tp := range due {
		s.mu.Lock()
		h := s.held[tp]
		s.mu.Unlock()
		if h == nil {
			continue
		}
		parts := fresh[tp.topic]
		known := int(tp.partition) < len(parts)
		up := known && parts[tp.partition].Leader >= 0 && parts[tp.partition].ErrorCode == 0 &&
			s.answers(ctx, parts[tp.partition].Leader)
		switch {
		case up:
			s.releaseHold(tp, h, fmt.Sprintf("its leader, broker %d, answers", parts[tp.partition].Leader), now)
		case now.Before(h.maxUntil):
		case known:
			// Fresh metadata shows the cause still there: a batch would
			// only wait the produce timeout to learn it again.
			s.mu.Lock()
			h.maxUntil = now.Add(s.maxHold)
			s.mu.Unlock()
			s.log.Warn("outbox partition still without a leader that answers; held on",
				"topic", tp.topic, "partition", tp.partition, "leader", parts[tp.partition].Leader, "held_for", now.Sub(h.since).Round(time.Millisecond))
		default:
			s.releaseHold(tp, h, fmt.Sprintf("held for %s without metadata about it; the next batch shows whether it is still down", s.maxHold), now)
		}
	}
}

// releaseHold ends tp's hold: the waits of its keys end, so the next batch
// of their lanes carries their rows.
func (s *partitions) releaseHold(tp topicPartition, h *partitionHold, reason string, now time.Time) {
	s.mu.Lock()
	if s.held[tp] != h {
		s.mu.Unlock()
		return
	}
	delete(s.held, tp)
	s.released[tp] = released{at: now, strikes: h.strikes}
	for k, r := range s.released {
		if now.Sub(r.at) > strikeWindow {
			delete(s.released, k)
		}
	}
	n := len(s.held)
	s.onHeld(n)
	s.mu.Unlock()
	for _, r := range h.keys {
		s.waits.done(r)
	}
	s.log.Info("outbox releasing a held partition: its rows are published again",
		"topic", tp.topic, "partition", tp.partition, "reason", reason, "held_for", now.Sub(h.since).Round(time.Millisecond), "keys", len(h.keys))
	s.release()
}

// allHeld reports whether the rows idx of b are all of partitions held
// back.
func (s *partitions) allHeld(ctx context.Context, b *batch, idx []int) bool {
	if !s.on() {
		return false
	}
	for _, i := range idx {
		r := b.recs[i]
		p, ok := s.partitionOf(ctx, r.Topic, r.Key)
		if !ok || !s.isHeld(topicPartition{r.Topic, p}) {
			return false
		}
	}
	return true
}

// holdCut holds back, as soon as a batch gave up on its records without an
// outcome, the partitions they give evidence against, so that batches of
// other lanes leave their rows out at once, not only once this one ends.
func (s *partitions) holdCut(ctx context.Context, b *batch) {
	if !s.on() {
		return
	}
	var idx []int
	for i, o := range b.outs {
		if errors.Is(o.err, errStalledRecord) {
			idx = append(idx, i)
		}
	}
	held, _ := s.stuck(ctx, b, idx, true)
	now := time.Now()
	for tp, is := range held {
		s.hold(tp, b, is, errStalledRecord, now)
	}
}

// settle holds back, after a batch, the partitions its failed rows give
// evidence against, makes the keys of its held rows wait with their
// partition, and, when every failure is of a held partition, tells the
// relay not to back off: Kafka answered for the rest.
func (s *partitions) settle(ctx context.Context, b *batch, st settled, res *batchResult, now time.Time) {
	if !s.on() {
		return
	}
	if len(st.held) > 0 {
		s.heldRows(b, st.held)
	}
	if len(st.waiting) == 0 {
		return
	}
	held, rest := s.stuck(ctx, b, st.waiting, b.cut)
	for tp, is := range held {
		s.hold(tp, b, is, cmp.Or(b.outs[is[0]].err, errUnresolved), now)
	}
	if rest == 0 && len(held) > 0 {
		res.noAnswer = false
	}
}
