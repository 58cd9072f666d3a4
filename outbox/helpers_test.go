package outbox

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/internal/kafkatest"
	"github.com/acme/orders-service/postgres"
)

// topic is the events topic on a kfake broker; on a real cluster each test
// has its own (testKafka.topic).
const topic = "orders.events"

// newService returns an OrderService whose events go to topic.
func newService(db *postgres.DB, topic string) *postgres.OrderService {
	return postgres.NewOrderService(db, postgres.NewOrderWriter(topic, cloudevents.Encoder[postgres.Header]{Source: "orders-service/test"}), "USD")
}

// testKafka is one test's Kafka: the real cluster of KAFKA_TEST_BROKERS or a
// kfake broker of the test's own.
type testKafka struct {
	*kafkatest.Cluster
	topic string // the events topic, unique to the test on a real cluster
}

// newKafka returns the test's Kafka with its events topic created with 4
// partitions.
func newKafka(t *testing.T) *testKafka {
	t.Helper()
	c := kafkatest.New(t)
	k := &testKafka{Cluster: c, topic: c.Name(topic)}
	c.CreateTopics(4, k.topic)
	return k
}

// newFakeCluster returns a kfake broker with the events topic in both test
// modes, for tests that steer the broker in ways a real cluster cannot be
// (ListenFn, ControlKey, kfake's users and ACLs).
func newFakeCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	return kafkatest.Fake(t, append([]kfake.Opt{kfake.SeedTopics(4, topic)}, opts...)...).Fake
}

// newProducer returns a client configured like the service's: idempotent,
// acks from all in-sync replicas (the franz-go defaults).
func newProducer(t *testing.T, addr string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// warmUp produces one record (with no ce_id, so no test mistakes it for an
// event) to topic through p and waits for its acknowledgement: p is then
// connected, has the topic's metadata and its producer id, so its next
// produce request goes out at once.
func warmUp(t *testing.T, p *kgo.Client, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("warm-up")}).FirstErr(); err != nil {
		t.Fatalf("warming up the producer: %v", err)
	}
}

func newWorker(t *testing.T, db *postgres.DB, p Producer, cfg Options) (*Relay, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Wake == nil {
		cfg.Wake = db.OutboxWritten()
	}
	w := New(Deps{Store: db, Producer: p, Metrics: m,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))}, cfg)
	return w, reg
}

// unshared makes w try every lane, as a relay does while its lane-sharing
// session is unavailable, so that a test can put two relays in one lane.
func unshared(w *Relay) *Relay {
	w.db = noSharing{w.db}
	return w
}

type noSharing struct{ Store }

func (noSharing) NewLaneOwner(context.Context) (*postgres.LaneOwner, error) {
	return nil, errors.New("lane sharing off in this test")
}

// start runs w until the returned stop is called (or the test ends) and
// fails the test if Run does not return promptly after that.
func start(t *testing.T, w *Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// collector consumes topics from the start in the background.
type collector struct {
	mu   sync.Mutex
	recs []*kgo.Record
}

// collect consumes topic from the start in the background.
func collect(t *testing.T, addr, topic string) *collector {
	t.Helper()
	return collectWith(t, addr, kgo.ConsumeTopics(topic))
}

// collectWith consumes from the start with opts (which name the topics and
// any credentials) in the background.
func collectWith(t *testing.T, addr string, opts ...kgo.Opt) *collector {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			c.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) { c.recs = append(c.recs, r) })
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		cl.Close()
	})
	return c
}

func (c *collector) records() []*kgo.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*kgo.Record(nil), c.recs...)
}

// byEventID returns the records carrying ce_id id.
func (c *collector) byEventID(id string) []*kgo.Record {
	var out []*kgo.Record
	for _, r := range c.records() {
		if header(r, "ce_id") == id {
			out = append(out, r)
		}
	}
	return out
}

func header(r *kgo.Record, key string) string {
	v, _ := cloudevents.Lookup(r.Headers, key)
	return v
}

type outboxRow struct {
	ID        int64
	EventID   string
	EventType string
	Key       string
	Headers   []postgres.Header
	Payload   []byte
	Sent      bool
}

func outboxRows(t *testing.T, db *postgres.DB, where string, args ...any) []outboxRow {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(),
		`SELECT id, event_id::text, event_type, key, headers, payload, sent FROM outbox WHERE `+where+` ORDER BY id`, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.ID, &r.EventID, &r.EventType, &r.Key, &r.Headers, &r.Payload, &r.Sent); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func countUnsent(t *testing.T, db *postgres.DB) int64 {
	t.Helper()
	n, err := db.CountUnsentOutbox(context.Background(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// insertOutboxRow writes an outbox row as OrderWriter would, with a payload
// of the caller's choosing, and returns its id and event id.
func insertOutboxRow(t *testing.T, db *postgres.DB, topic, key string, payload []byte) (id int64, eventID string) {
	t.Helper()
	err := db.Pool.QueryRow(context.Background(), `
		WITH e AS (SELECT gen_random_uuid() AS id)
		INSERT INTO outbox (event_id, event_type, topic, key, headers, payload)
		SELECT e.id, 'test', $1, $2, jsonb_build_array(jsonb_build_object('key', 'ce_id', 'value', e.id::text)), $3 FROM e
		RETURNING id, event_id::text`, topic, key, payload).Scan(&id, &eventID)
	if err != nil {
		t.Fatal(err)
	}
	return id, eventID
}

// parkedRow is an outbox row's parking state.
type parkedRow struct {
	Parked    bool
	Sent      bool
	LastError string
}

func parkState(t *testing.T, db *postgres.DB, id int64) parkedRow {
	t.Helper()
	var r parkedRow
	err := db.Pool.QueryRow(context.Background(),
		`SELECT parked_at IS NOT NULL, sent, coalesce(last_error, '') FROM outbox WHERE id = $1`, id).Scan(&r.Parked, &r.Sent, &r.LastError)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// readCommitted reads topic at addr from the start with a new
// read_committed client until it has read every one of events, and returns
// the records read. If one is missing after timeout it fails t, first
// logging what the broker holds: the missing record's partition and offset
// (read uncommitted), each partition's high watermark and last stable
// offset, the producers with a transaction open there, and the last offset
// read in each partition.
func readCommitted(t *testing.T, addr, topic string, timeout time.Duration, events []string) *collector {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := &collector{}
	missing := func() string {
		for _, e := range events {
			if len(c.byEventID(e)) == 0 {
				return e
			}
		}
		return ""
	}
	// A reader that reads nothing for a third of timeout is replaced once,
	// from the start: in a few loaded CI runs a reader of the kfake broker
	// stalled while the records were there to read. Records the broker
	// does not serve read_committed stay missing for the new reader too.
	for attempt := 0; ; attempt++ {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		c.recs = nil
		progress := time.Now()
		for e := missing(); e != ""; e = missing() {
			if ctx.Err() != nil {
				cl.Close()
				explainUnread(t, c, addr, topic, e)
				t.Fatalf("timed out after %s reading record %s read_committed", timeout, e)
			}
			if attempt == 0 && time.Since(progress) > timeout/3 {
				t.Logf("read_committed reader read nothing for %s (missing %s); reading again with a new one", timeout/3, e)
				break
			}
			n := len(c.recs)
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) { c.recs = append(c.recs, r) })
			pcancel()
			if len(c.recs) > n {
				progress = time.Now()
			}
		}
		cl.Close()
		if missing() == "" {
			return c
		}
	}
}

func explainUnread(t *testing.T, c *collector, addr, topic, event string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Logf("explain: %v", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	hwm, err1 := adm.ListEndOffsets(ctx, topic)
	lso, err2 := adm.ListCommittedOffsets(ctx, topic)
	producers, err3 := adm.DescribeProducers(ctx, kadm.TopicsSet{topic: {0: {}, 1: {}, 2: {}, 3: {}}})
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Logf("explain: %v", err)
	}
	lastRead := map[int32]int64{}
	for _, r := range c.records() {
		lastRead[r.Partition] = max(lastRead[r.Partition], r.Offset)
	}
	hwm.Each(func(o kadm.ListedOffset) {
		l, _ := lso.Lookup(topic, o.Partition)
		t.Logf("explain: partition %d: high watermark %d, last stable offset %d, collector read up to %d", o.Partition, o.Offset, l.Offset, lastRead[o.Partition])
	})
	producers.EachProducer(func(p kadm.DescribedProducer) {
		t.Logf("explain: partition %d producer %d epoch %d transaction start offset %d", p.Partition, p.ProducerID, p.ProducerEpoch, p.CurrentTxnStartOffset)
	})
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		var found *kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			if header(r, "ce_id") == event {
				found = r
			}
		})
		if found != nil {
			t.Logf("explain: record %s is at partition %d offset %d (producer %d epoch %d)", event, found.Partition, found.Offset, found.ProducerID, found.ProducerEpoch)
			explainFetch(t, ctx, cl, topic, found.Partition)
			return
		}
	}
	t.Logf("explain: record %s not found read uncommitted either", event)
}

// explainFetch logs a read_committed fetch of partition from its start as
// the broker answers it: its error, offsets and aborted transactions, and
// each record batch's offsets, producer and kind.
func explainFetch(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, partition int32) {
	t.Helper()
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		t.Logf("explain: metadata: %v", err)
		return
	}
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes, req.IsolationLevel, req.SessionEpoch = -1, 100, 1, 1<<20, 1, -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, md.Topics[topic].ID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LogStartOffset = partition, 0, 1<<20, -1, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Logf("explain: fetch: %v", err)
		return
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			t.Logf("explain: read_committed fetch of partition %d: error %v, high watermark %d, last stable offset %d, aborted transactions %+v",
				rp.Partition, kerr.ErrorForCode(rp.ErrorCode), rp.HighWatermark, rp.LastStableOffset, rp.AbortedTransactions)
			for raw := rp.RecordBatches; len(raw) > 0; {
				var b kmsg.RecordBatch
				if err := b.ReadFrom(raw); err != nil {
					t.Logf("explain: batch: %v", err)
					break
				}
				t.Logf("explain: batch offsets %d-%d producer %d epoch %d transactional %v control %v records %d",
					b.FirstOffset, b.FirstOffset+int64(b.LastOffsetDelta), b.ProducerID, b.ProducerEpoch,
					b.Attributes&0x10 != 0, b.Attributes&0x20 != 0, b.NumRecords)
				raw = raw[min(len(raw), 12+int(b.Length)):]
			}
		}
	}
}
