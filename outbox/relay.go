// Package outbox relays the transactional outbox to Kafka. Rows are spread
// over lanes by key (postgres.OutboxLanes); the Relay runs publishers that
// take free lanes, each batch under its lane's lock, so one key's rows are
// published in id order while lanes publish in parallel, in any number of
// replicas. A row is marked sent only after Kafka acknowledged it, and sent
// rows are deleted after a retention period.
//
// The relay in files: relay.go (this: settings, Run), lanes.go (the loop
// that hands free lanes to publishers), publisher.go (one batch of one
// lane: claim, produce, settle), keys.go (the per-key state: open, parked,
// waiting), partitions.go (the partitions held back), retention.go
// (retention and gauges).
package outbox

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/internal/periodic"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/postgres"
)

// Store is the outbox table as the relay uses it (*postgres.DB).
type Store interface {
	// PublishOutboxLane claims a batch of lane under the lane's lock,
	// leaving out skip, calls publish with it and the lane's generation
	// while holding the claim, and parks and marks the rows (and moves the
	// lane to its next generation) as publish says, in one transaction;
	// busy: another publisher holds the lane.
	PublishOutboxLane(ctx context.Context, lane, limit int, idle time.Duration, skip postgres.OutboxSkip,
		publish func(recs []postgres.OutboxRecord, firstParked map[string]int64, generation int) (postgres.OutboxMarks, error)) (busy bool, err error)
	ActiveOutboxLanes(ctx context.Context) ([]int, error)
	// NewLaneOwner opens the session by which this relay holds its share
	// of the lanes (share.go).
	NewLaneOwner(ctx context.Context) (*postgres.LaneOwner, error)
	DeleteSentOutbox(ctx context.Context, olderThan time.Duration, limit int) (int64, error)
	CountUnsentOutbox(ctx context.Context, limit int) (int64, error)
	OldestUnsentOutboxAge(ctx context.Context) (time.Duration, error)
	CountParkedOutbox(ctx context.Context, limit int) (int64, error)
}

// Producer is what the relay needs of *kgo.Client: asynchronous produce
// with a promise called once per record, Flush, which sends buffered
// records at once instead of after the client's linger and returns when
// they all have an outcome or ctx ends, and Close, which abandons records
// still buffered so they are never sent again. The client's settings
// (acks=all, idempotence) are the caller's.
type Producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	Flush(ctx context.Context) error
	Close()
}

// ErrStalled is returned by Run when records stayed without an outcome for
// ResolveTimeout past ProduceTimeout and the relay has no NewProducer to
// replace its producer with: it stopped publishing for good.
var ErrStalled = errors.New("outbox relay stopped: Kafka gave no outcome for produced records")

// Deps are what a Relay works with. Store and Producer are required.
type Deps struct {
	Store    Store
	Producer Producer // normally a *kgo.Client
	Metrics  *Metrics // from NewMetrics; nil: unregistered ones
	Logger   *slog.Logger
}

// Options tune a Relay. Zero values take the defaults shown.
type Options struct {
	// Wake delivers a value after local commits that wrote outbox rows
	// (postgres.DB.OutboxWritten), so the relay publishes at once instead of
	// after PollInterval. Nil: the relay polls only.
	Wake <-chan struct{}
	// Publishers is how many lanes this relay publishes at once (1). With
	// more than one, each publisher has its own producer from NewProducer
	// (without it they share Deps.Producer).
	Publishers     int
	BatchSize      int           // rows per publishing transaction (1000)
	PollInterval   time.Duration // wait for other replicas' commits (500ms)
	BatchDelay     time.Duration // after a batch with rows, wait this long after the next commit for more to join (2ms)
	ProduceTimeout time.Duration // bound on one batch's acknowledgements (10s)
	// ResolveTimeout is how much longer than ProduceTimeout a publisher
	// keeps its claim (transaction and lane lock) while records it sent have
	// no outcome, so no other publisher publishes in the lane behind them
	// (3 x ProduceTimeout). After it, the publisher closes its producer,
	// whose records then can never be sent again, marks the records Kafka
	// did acknowledge (never a key's row after an earlier one without an
	// outcome), releases the claim, and goes on with a producer from
	// NewProducer; without NewProducer, Run returns ErrStalled.
	ResolveTimeout time.Duration
	// NewProducer makes a producer. When it is set the relay owns its
	// producers: it closes the one it gives up on and, when Run returns,
	// those in use, the one given in Deps included. Nil: see ResolveTimeout.
	NewProducer func() (Producer, error)
	// NewLaneProducer, when set, turns on Kafka transactions: each lane
	// publishes through a producer of its own, made by
	// NewLaneProducer(ctx, lane, generation) with the transactional id
	// TransactionalID(prefix, lane, generation), one transaction per batch,
	// and rows are marked sent only after it committed. It must fence every
	// older producer of that id before it returns (kafka.NewTransactionalClient)
	// and return an error wrapping kafka.ErrTransactionStuck when the id's
	// last transaction cannot finish: the lane then moves to its next
	// generation (see laneProducer). The relay owns these producers.
	// Deps.Producer then only tells whether Kafka answers.
	NewLaneProducer func(ctx context.Context, lane, generation int) (TxProducer, error)
	// StallTimeout, with transactions, is how long records of a batch may
	// stay without an outcome after Kafka acknowledged the batch's last
	// other record (1s). Past it the batch is cut: its transaction is
	// aborted, the keys of the records without an outcome wait (keys.go),
	// and the other rows are published again at once. So a partition that
	// lost its leader holds a batch for about this long, not ProduceTimeout.
	// Without transactions records in flight cannot be given up one by one
	// and a batch waits ProduceTimeout.
	StallTimeout time.Duration
	// DrainTimeout bounds the final drain: when Run's ctx ends, the relay
	// goes on publishing the rows committed until then for at most this
	// long (5s) while Kafka takes them, then returns. Negative: no drain.
	DrainTimeout time.Duration
	// MaxRecordBytes is the producer's limit on one record batch
	// (kgo.ProducerBatchMaxBytes, 1000012): a row whose record cannot fit is
	// parked before it is produced.
	MaxRecordBytes    int
	Retention         time.Duration // age after which sent rows are deleted (168h)
	RetentionInterval time.Duration // how often retention runs (1m)
	RetentionBatch    int           // rows per DELETE statement (1000)
	GaugeInterval     time.Duration // refresh of the unsent and oldest-age gauges (5s)
}

func (c Options) withDefaults() Options {
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	if c.Publishers <= 0 {
		c.Publishers = 1
	}
	c.Publishers = min(c.Publishers, postgres.OutboxLanes)
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.RetentionBatch <= 0 {
		c.RetentionBatch = 1000
	}
	for _, d := range []*time.Duration{&c.PollInterval, &c.BatchDelay, &c.ProduceTimeout, &c.ResolveTimeout,
		&c.Retention, &c.RetentionInterval, &c.GaugeInterval} {
		*d = max(*d, 0)
	}
	setDur(&c.PollInterval, 500*time.Millisecond)
	setDur(&c.BatchDelay, 2*time.Millisecond)
	setDur(&c.ProduceTimeout, 10*time.Second)
	setDur(&c.ResolveTimeout, 3*c.ProduceTimeout)
	c.StallTimeout = max(c.StallTimeout, 0)
	setDur(&c.StallTimeout, time.Second)
	setDur(&c.DrainTimeout, 5*time.Second)
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = kafka.ProducerBatchMaxBytes
	}
	setDur(&c.Retention, 7*24*time.Hour)
	setDur(&c.RetentionInterval, time.Minute)
	setDur(&c.GaugeInterval, 5*time.Second)
	return c
}

const (
	// failGrace is how long past ProduceTimeout the relay waits for the
	// client to fail the records it timed out, for an accurate error.
	failGrace = 250 * time.Millisecond
	// idleGrace is how long past ProduceTimeout the server lets a publishing
	// transaction sit idle before it ends the session and frees the lane.
	idleGrace = 10 * time.Second
	// endFloor is the least time a batch's transaction gets to end (to
	// commit, then to abort if the commit fails) after its deadline:
	// twice endFloor and failGrace fit in idleGrace, so the publishing
	// PostgreSQL transaction outlives the Kafka one.
	endFloor = idleGrace / 4
	// gaugeCountCap bounds the unsent count query.
	gaugeCountCap = 100000
)

// Relay is the outbox relay (the design's OutboxWorker). Any number of
// replicas may run one on the same database: a lane's advisory lock lets one
// publisher at a time publish in it, so one order's events reach Kafka in
// the order they were written, and a key whose record fails retriably waits
// alone. Delivery is at least once: a row is marked sent only after Kafka
// acknowledged it, and a failure before the mark commits republishes it
// later with the same ce_id.
type Relay struct {
	db    Store
	cfg   Options
	log   *slog.Logger
	m     *Metrics
	waits *waits
	parts *partitions

	pubs         []*publisher
	taken        [postgres.OutboxLanes]atomic.Bool // lanes a publisher of this relay is in
	owned        [postgres.OutboxLanes]atomic.Bool // this relay's share of the lanes (share.go)
	owner        *postgres.LaneOwner               // the session holding them, used by shareLanes only
	ownerOK      atomic.Bool                       // owner holds this relay's share; false: every lane is tried
	shareFailing bool                              // shareLanes logged that sharing is unavailable
	members      atomic.Int64                      // relays sharing the lanes, this one included; 0: unknown
	lanes        [postgres.OutboxLanes]TxProducer  // each lane's transactional producer, used by the publisher in it
	laneGens     [postgres.OutboxLanes]int         // the generation of each lane's producer
	kick         kicker
	active       activeLanes

	minBackoff, maxBackoff time.Duration
	probeInterval          time.Duration // how often a backoff after a Kafka failure asks whether the broker answers
	lockBusy               atomic.Int64  // attempts that found a lane (or the outbox) taken
	awaiting               atomic.Bool   // a publisher holds its claim past ProduceTimeout for records without an outcome
	backingOff             atomic.Int64  // the backoff under way after a failed batch, in nanoseconds; 0 when none
	stalled                atomic.Bool   // gave up on a producer with no way to replace it
}

// OutboxWorker is the name the design gives the Relay.
type OutboxWorker = Relay

// New returns a relay publishing d.Store's outbox through d.Producer. A nil
// d.Logger logs to slog.Default().
func New(d Deps, o Options) *Relay {
	log := cmp.Or(d.Logger, slog.Default())
	m := d.Metrics
	if m == nil {
		m = newMetrics()
	}
	w := &Relay{
		db:            d.Store,
		cfg:           o.withDefaults(),
		log:           log.With("component", "outbox"),
		m:             m,
		minBackoff:    100 * time.Millisecond,
		maxBackoff:    5 * time.Second,
		probeInterval: 100 * time.Millisecond,
	}
	w.waits = newWaits(w.minBackoff, w.maxBackoff)
	cl, _ := d.Producer.(*kgo.Client)
	w.parts = newPartitions(cl, w.log, w.waits)
	w.parts.onHeld = func(n int) { m.heldPartitions.Set(float64(n)) }
	w.parts.release = w.kick.kick
	w.pubs = []*publisher{{w: w, producer: d.Producer}}
	return w
}

// Run publishes the outbox, applies retention and refreshes the gauges until
// ctx is cancelled, then drains what was committed until then for up to
// DrainTimeout. A batch in flight is finished first, which takes at most
// ProduceTimeout plus ResolveTimeout plus a few seconds. Failures are logged
// and retried; Run returns nil once stopped, or ErrStalled (see
// ResolveTimeout).
func (w *Relay) Run(ctx context.Context) error {
	w.log.Info("outbox worker starting", "publishers", w.cfg.Publishers, "lanes", postgres.OutboxLanes,
		"batch_size", w.cfg.BatchSize, "poll_interval", w.cfg.PollInterval,
		"produce_timeout", w.cfg.ProduceTimeout, "resolve_timeout", w.cfg.ResolveTimeout, "retention", w.cfg.Retention)
	if err := w.startPublishers(); err != nil {
		return err
	}
	defer w.closeLaneProducers()
	if w.cfg.NewProducer != nil {
		defer func() {
			closed := map[Producer]bool{}
			for _, p := range w.pubs {
				if !closed[p.producer] {
					closed[p.producer] = true
					p.producer.Close()
				}
			}
		}()
	}
	bg, cancel := context.WithCancel(ctx)
	defer cancel()
	w.shareLanes(ctx)
	defer w.closeOwner()
	var wg sync.WaitGroup
	wg.Go(func() { w.parts.poll(bg) })
	wg.Go(func() {
		periodic.Run(bg, min(w.cfg.PollInterval, shareInterval), func(ctx context.Context) error { w.shareLanes(ctx); return nil }, nil)
	})
	wg.Go(func() {
		periodic.Run(bg, w.cfg.RetentionInterval, w.retention, func(err error) {
			w.log.Warn("outbox retention failed, will retry", "error", err)
		})
	})
	wg.Go(func() {
		periodic.Run(bg, w.cfg.GaugeInterval, w.refreshGauges, func(err error) {
			w.log.Warn("outbox gauges not refreshed", "error", err)
		})
	})
	err := w.publishLoop(ctx)
	cancel()
	wg.Wait()
	if err != nil {
		w.log.Error("outbox worker stopped publishing", "error", err)
		return err
	}
	w.log.Info("outbox worker stopped")
	return nil
}

// startPublishers makes the publishers past the first, each with a
// producer of its own when NewProducer is set.
func (w *Relay) startPublishers() error {
	for len(w.pubs) < w.cfg.Publishers {
		p := w.pubs[0].producer
		if w.cfg.NewProducer != nil && w.cfg.NewLaneProducer == nil {
			var err error
			if p, err = w.cfg.NewProducer(); err != nil {
				return errors.Join(errors.New("outbox publisher producer"), err)
			}
		}
		w.pubs = append(w.pubs, &publisher{w: w, producer: p})
	}
	return nil
}
