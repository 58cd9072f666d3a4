// Package inbox receives payment results from Kafka and applies them to
// orders exactly once. The Consumer (the design's InboxConsumer) stores every
// record in the inbox table (deduplicated on its ce_id) and commits Kafka
// offsets only after the rows are durable; the Processor (InboxProcessor)
// applies stored messages, retrying those that may apply later and
// dead-lettering those that never can.
package inbox

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
)

// ClientOptions returns the kgo options a Consumer's client needs on
// top of the connection options: membership of group, consuming topic from
// its start when the group has no offsets, offsets committed only by the
// consumer, rebalances held while a polled batch is being stored, and only
// committed records of transactional producers.
func ClientOptions(group, topic string) []kgo.Opt {
	return kafka.CommitAfterWorkOptions(group, topic)
}

// ConsumerStore is the inbox table as the Consumer uses it (*postgres.DB).
type ConsumerStore interface {
	// InsertInbox stores msgs durably, skipping those already stored, and
	// returns how many were new.
	InsertInbox(ctx context.Context, msgs []postgres.InboxMessage) (int64, error)
}

// ConsumerDeps are what a Consumer works with. Client and Store are
// required.
type ConsumerDeps struct {
	Client  *kgo.Client // built with ClientOptions; the caller owns and closes it after Run returns
	Store   ConsumerStore
	Metrics *Metrics // from NewMetrics, shared with the Processor; nil: unregistered ones
	Logger  *slog.Logger
}

// ConsumerOptions tune a Consumer; zero values take the defaults.
type ConsumerOptions struct {
	MaxPollRecords int           // records per poll and per INSERT; default 500
	RetryMin       time.Duration // first wait after a database error; default 100ms
	RetryMax       time.Duration // longest wait between insert attempts; default 5s
}

func (c ConsumerOptions) withDefaults() ConsumerOptions {
	if c.MaxPollRecords <= 0 {
		c.MaxPollRecords = 500
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(5*time.Second, c.RetryMin)
	}
	return c
}

// Consumer copies records of the inbox topic into the inbox table. Per
// poll it inserts all records in one statement, then commits their offsets,
// then allows rebalances: a crash or rebalance at any point leads at worst
// to redelivery, which the inbox deduplicates on the message id.
type Consumer struct {
	client  *kgo.Client
	db      ConsumerStore
	metrics *Metrics
	log     *slog.Logger
	cfg     ConsumerOptions
	stored  chan struct{}
	// uncommitted is set while a commit of stored records failed: the next
	// commit takes every polled offset, and a poll waits at most RetryMax
	// before committing them again, so a partition whose records stopped
	// coming does not stay behind in the group.
	uncommitted bool

	// beforeCommit, when set by tests, runs after the insert and before the
	// offset commit; an error ends Run there, as a crash would.
	beforeCommit func() error
}

// InboxConsumer is the name the design gives the Consumer.
type InboxConsumer = Consumer

// NewConsumer returns a consumer reading through d.Client into d.Store. A
// nil d.Logger logs to slog.Default().
func NewConsumer(d ConsumerDeps, o ConsumerOptions) *Consumer {
	m := d.Metrics
	if m == nil {
		m = newMetrics()
	}
	return &Consumer{client: d.Client, db: d.Store, metrics: m,
		log: cmp.Or(d.Logger, slog.Default()).With("component", "inbox-consumer"),
		cfg: o.withDefaults(), stored: make(chan struct{}, 1)}
}

// Stored delivers a value after new rows were committed to the inbox; pass
// it to the Processor as its ProcessorOptions.Wake. Signals coalesce.
func (c *Consumer) Stored() <-chan struct{} { return c.stored }

// Run consumes until ctx ends, then returns nil. Records whose rows were not
// yet committed are left uncommitted in Kafka and will be delivered again.
func (c *Consumer) Run(ctx context.Context) error {
	c.log.Info("inbox consumer started", "max_poll_records", c.cfg.MaxPollRecords)
	defer c.log.Info("inbox consumer stopped")
	for {
		pollCtx, cancelPoll := ctx, context.CancelFunc(func() {})
		if c.uncommitted {
			pollCtx, cancelPoll = context.WithTimeout(ctx, c.cfg.RetryMax)
		}
		fetches := c.client.PollRecords(pollCtx, c.cfg.MaxPollRecords)
		retryCommit := pollCtx.Err() != nil && ctx.Err() == nil && len(fetches.Records()) == 0
		cancelPoll()
		if fetches.IsClientClosed() {
			return nil
		}
		if ctx.Err() != nil {
			c.client.AllowRebalance()
			return nil
		}
		if retryCommit {
			c.commit(ctx, nil)
			c.client.AllowRebalance()
			continue
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			c.log.Warn("inbox fetch failed", "topic", topic, "partition", partition, "error", err)
		})
		records := fetches.Records()
		err := c.handle(ctx, records)
		c.client.AllowRebalance()
		if err != nil {
			return err
		}
		if len(records) == 0 && len(fetches.Errors()) > 0 && !sleep(ctx, c.cfg.RetryMin) {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// sleep waits for d and reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// handle stores records durably, then commits their offsets. It returns nil
// when ctx ends before the rows are stored: nothing is committed then.
func (c *Consumer) handle(ctx context.Context, records []*kgo.Record) error {
	if len(records) == 0 {
		return nil
	}
	msgs := make([]postgres.InboxMessage, len(records))
	for i, r := range records {
		msgs[i] = messageFromRecord(r)
	}
	inserted, ok := c.store(ctx, msgs)
	if !ok {
		return nil
	}
	c.metrics.Received.Add(float64(len(msgs)))
	c.metrics.Duplicates.Add(float64(int64(len(msgs)) - inserted))
	if inserted > 0 {
		select {
		case c.stored <- struct{}{}:
		default:
		}
	}
	if c.beforeCommit != nil {
		if err := c.beforeCommit(); err != nil {
			return err
		}
	}
	c.commit(ctx, records)
	return nil
}

// commit commits the offsets of records, whose rows are durable, or, after a
// failed commit, every offset polled so far (all of them stored: a poll is
// stored before the next). It commits even when ctx has just ended, so a
// clean shutdown does not cause redelivery.
func (c *Consumer) commit(ctx context.Context, records []*kgo.Record) {
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var err error
	if c.uncommitted {
		err = c.client.CommitUncommittedOffsets(commitCtx)
	} else {
		err = c.client.CommitRecords(commitCtx, records...)
	}
	if err != nil {
		c.log.Warn("commit inbox offsets failed; retrying with the next poll or within the retry interval (records stored, redelivery is deduplicated)",
			"records", len(records), "error", err)
	}
	c.uncommitted = err != nil
}

// store inserts msgs, retrying with capped backoff until it succeeds or ctx
// ends (ok=false).
func (c *Consumer) store(ctx context.Context, msgs []postgres.InboxMessage) (inserted int64, ok bool) {
	wait := c.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		inserted, err := c.db.InsertInbox(ctx, msgs)
		if err == nil {
			return inserted, true
		}
		if ctx.Err() != nil {
			return 0, false
		}
		c.log.Warn("store inbox records failed; retrying", "records", len(msgs), "attempt", attempt,
			"retry_in", wait, "error", err)
		if !sleep(ctx, wait) {
			return 0, false
		}
		wait = min(2*wait, c.cfg.RetryMax)
	}
}

// messageFromRecord maps a record to its inbox row. Text columns are made
// valid text so that no record can make the batch insert fail. The message
// id follows cloudevents.MessageID; its alias keeps a record stored by a
// version before that rule recognised when it is delivered again.
func messageFromRecord(r *kgo.Record) postgres.InboxMessage {
	m := postgres.InboxMessage{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Key:       r.Key,
		Payload:   r.Value,
		Headers:   make([]postgres.Header, 0, len(r.Headers)),
	}
	for _, h := range r.Headers {
		m.Headers = append(m.Headers, postgres.Header{Key: validText(h.Key), Value: h.Value})
	}
	typ, _ := cloudevents.Lookup(r.Headers, cloudevents.HeaderType)
	m.EventType = validText(typ)
	m.MessageID, m.AliasID = cloudevents.MessageID(cloudevents.Position{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}, r.Headers)
	return m
}

// validText returns s as valid UTF-8 without NUL characters, which
// PostgreSQL text and jsonb cannot hold.
func validText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// CloseClient ends the membership of a consumer client built with
// ClientOptions and closes it, within timeout whatever the group is doing
// (kgo's Close waits for an in-flight join without a deadline). A static
// member (instanceID set; kgo.InstanceID) leaves the group explicitly, so
// that its partitions move at once instead of after the session timeout; a
// crashed one keeps its place, and its restart takes it back without a
// rebalance. Call it after Run returned.
func CloseClient(cl *kgo.Client, group, instanceID string, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cl.AllowRebalance()
	if err := cl.LeaveGroupContext(ctx); err != nil {
		log.Warn("leaving the consumer group did not finish", "group", group, "error", err)
	}
	if instanceID != "" && ctx.Err() == nil {
		req := kmsg.NewPtrLeaveGroupRequest()
		req.Group = group
		member := kmsg.NewLeaveGroupRequestMember()
		member.InstanceID = &instanceID
		member.Reason = kmsg.StringPtr("orders-service shutting down")
		req.Members = append(req.Members, member)
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
			for _, m := range resp.Members {
				err = errors.Join(err, kerr.ErrorForCode(m.ErrorCode))
			}
		}
		if err != nil {
			log.Warn("static member could not leave the consumer group; its partitions move after the session timeout",
				"group", group, "instance_id", instanceID, "error", err)
		}
	}
	closed := make(chan struct{})
	go func() { cl.Close(); close(closed) }()
	select {
	case <-closed:
	case <-ctx.Done():
		log.Warn("consumer client did not close in time; leaving it to the process exit", "timeout", timeout)
	}
}
