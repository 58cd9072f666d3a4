package kafka

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ProduceHealth watches the records of the producers it is hooked into
// (kgo.WithHooks) and tells whether Kafka acknowledges them. A broker that
// answers pings is not enough: with fewer in-sync replicas than
// min.insync.replicas, or partitions without a leader, every produce waits
// or fails while Ping succeeds. The zero value is ready to use.
type ProduceHealth struct {
	// Stall is how long records may wait without any acknowledgement
	// before Err reports Kafka unavailable; zero means 10s.
	Stall time.Duration

	mu       sync.Mutex
	inflight int       // records buffered and without an outcome
	progress time.Time // last acknowledgement, or when records began to wait
	lastErr  error     // the latest outcome when it was a failure
}

var (
	_ kgo.HookProduceRecordBuffered   = (*ProduceHealth)(nil)
	_ kgo.HookProduceRecordUnbuffered = (*ProduceHealth)(nil)
)

// OnProduceRecordBuffered implements kgo.HookProduceRecordBuffered.
func (h *ProduceHealth) OnProduceRecordBuffered(*kgo.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inflight == 0 {
		h.progress = time.Now()
	}
	h.inflight++
}

// OnProduceRecordUnbuffered implements kgo.HookProduceRecordUnbuffered.
func (h *ProduceHealth) OnProduceRecordUnbuffered(_ *kgo.Record, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inflight--
	if err != nil && !recordRejected(err) {
		h.lastErr = err
		return
	}
	h.lastErr = nil
	h.progress = time.Now()
}

// recordRejected reports whether err is a broker's (or the producer's)
// refusal of one record for what it holds: too large or malformed. Such an
// answer says Kafka is available; the record is the problem, and it stays
// refused however long Kafka is healthy (the relay parks it), so it must not
// count as a failure until some other record is acknowledged.
func recordRejected(err error) bool {
	for _, e := range []error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord, kerr.CorruptMessage} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Err returns nil while produced records are acknowledged, or nothing is
// produced; otherwise why Kafka counts as unavailable: records waited
// longer than Stall with no acknowledgement, or the latest outcome was a
// failure with none acknowledged since. A record refused for its own content
// (too large, malformed) counts as an answer, not a failure.
func (h *ProduceHealth) Err(now time.Time) error {
	stall := h.Stall
	if stall <= 0 {
		stall = 10 * time.Second
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inflight > 0 && now.Sub(h.progress) > stall {
		return fmt.Errorf("%d produced records without acknowledgement for %v", h.inflight, now.Sub(h.progress).Round(time.Second))
	}
	if h.lastErr != nil {
		return fmt.Errorf("last produce failed: %w", h.lastErr)
	}
	return nil
}
