// Package paymentsim simulates payments-service: it answers every
// orders.v1.OrderCreated event with a payments.v1.PaymentSucceeded or, above
// a configured amount, a payments.v1.PaymentFailed, as CloudEvents in Kafka
// binary mode. Its answers are deterministic per order, so a redelivered
// OrderCreated yields the same ce_id and the service's inbox drops the copy.
package paymentsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/cloudevents"
	"github.com/acme/orders-service/kafka"
)

// Source is the ce_source of the simulator's events.
const Source = "payments-sim"

// DeclineReason is the reason of a PaymentFailed above Config.DeclineAbove.
const DeclineReason = "amount above limit"

// namespace scopes the simulator's name-based (v5) UUIDs.
var namespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:acme:orders-service:payments-sim"))

// ClientOptions returns the kgo options the simulator's client needs on top
// of the connection options: membership of group (default payments-sim)
// consuming inTopic from its start, with offsets committed only by Run.
func ClientOptions(group, inTopic string) []kgo.Opt {
	return kafka.CommitAfterWorkOptions(group, inTopic)
}

// Config says where the simulator reads and writes and when it declines.
type Config struct {
	InTopic      string       // KAFKA_TOPIC: the service's order events
	OutTopic     string       // KAFKA_INBOX_TOPIC: payment results
	DeclineAbove int64        // decline orders above this amount in minor units; 0 approves all
	Log          *slog.Logger // optional; slog.Default() when nil
}

// Run answers OrderCreated events read through cl (built with ClientOptions)
// until ctx ends, then returns nil. It commits a poll's offsets only after all
// its answers were acknowledged, so a crash leads to redelivery, never loss.
// Records of other types, and undecodable ones, are skipped.
func (c Config) Run(ctx context.Context, cl *kgo.Client) error {
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	log.Info("payments simulator started", "in_topic", c.InTopic, "out_topic", c.OutTopic, "decline_above", c.DeclineAbove)
	defer log.Info("payments simulator stopped")
	for {
		fetches := cl.PollRecords(ctx, 500)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			log.Warn("payments simulator fetch failed", "topic", topic, "partition", partition, "error", err)
		})
		err := c.answer(ctx, cl, log, fetches.Records())
		cl.AllowRebalance()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (c Config) answer(ctx context.Context, cl *kgo.Client, log *slog.Logger, in []*kgo.Record) error {
	if len(in) == 0 {
		return nil
	}
	var out []*kgo.Record
	for _, r := range in {
		if cloudevents.Parse(r.Headers).Type != orders.TypeOrderCreated {
			continue
		}
		res, err := c.Answer(r, time.Now())
		if err != nil {
			log.Warn("payments simulator skipped a record", "topic", r.Topic, "partition", r.Partition,
				"offset", r.Offset, "error", err)
			continue
		}
		out = append(out, res)
	}
	if len(out) > 0 {
		if err := cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("produce payment results: %w", err)
		}
	}
	if err := cl.CommitRecords(ctx, in...); err != nil && ctx.Err() == nil {
		log.Warn("payments simulator commit failed; the events will be answered again", "error", err)
	}
	return nil
}

// Answer returns the payment result record for the OrderCreated record r,
// stamped with time now.
func (c Config) Answer(r *kgo.Record, now time.Time) (*kgo.Record, error) {
	var created orders.OrderCreated
	if err := json.Unmarshal(r.Value, &created); err != nil {
		return nil, fmt.Errorf("decode %s: %w", orders.TypeOrderCreated, err)
	}
	if created.OrderID == "" {
		return nil, errors.New("decode " + orders.TypeOrderCreated + ": no order_id")
	}
	typ, result := orders.TypePaymentSucceeded, orders.PaymentResult{OrderID: created.OrderID}
	if c.DeclineAbove > 0 && created.Amount > c.DeclineAbove {
		typ, result.Reason = orders.TypePaymentFailed, DeclineReason
	}
	result.PaymentID = uuid.NewSHA1(namespace, []byte("payment/"+created.OrderID)).String()
	data, err := json.Marshal(result)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	id := uuid.NewSHA1(namespace, []byte(typ+"/"+created.OrderID)).String()
	return &kgo.Record{
		Topic: c.OutTopic,
		Key:   []byte(created.OrderID),
		Value: data,
		// The payment continues the order's trace, as payments-service would.
		Headers: cloudevents.AppendHeaders([]kgo.RecordHeader(nil), cloudevents.Event{ID: id, Type: typ, Source: Source,
			Time: now, DataSchema: cloudevents.DataSchemaURI(typ), TraceParent: cloudevents.Parse(r.Headers).TraceParent}),
	}, nil
}
