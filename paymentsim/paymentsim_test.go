package paymentsim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/internal/kafkatest"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/paymentsim"
)

const (
	inTopic  = "orders.events"
	outTopic = "payments.events"
	group    = "payments-sim"
)

func orderEvent(t *testing.T, typ string, ev any) *kgo.Record {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	switch e := ev.(type) {
	case orders.OrderCreated:
		id = e.OrderID
	case orders.OrderFinished:
		id = e.OrderID
	}
	return &kgo.Record{
		Topic: inTopic,
		Key:   []byte(id),
		Value: data,
		Headers: []kgo.RecordHeader{
			{Key: "ce_specversion", Value: []byte("1.0")},
			{Key: "ce_id", Value: []byte(uuid.NewString())},
			{Key: "ce_type", Value: []byte(typ)},
		},
	}
}

func created(t *testing.T, amount int64) *kgo.Record {
	return orderEvent(t, orders.TypeOrderCreated, orders.OrderCreated{
		OrderID: uuid.NewString(), UserID: "u1", Amount: amount, Currency: "EUR", Status: orders.StatusNew, CreatedAt: time.Now()})
}

func headers(r *kgo.Record) map[string]string {
	m := map[string]string{}
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

func TestSimulatorAnswersOrderCreated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cluster := kafkatest.New(t)
	in, out, grp := cluster.Name(inTopic), cluster.Name(outTopic), cluster.Name(group)
	cluster.CreateTopics(2, in, out)
	seeds := kgo.SeedBrokers(cluster.Brokers...)

	small, large := created(t, 1000), created(t, 1001)
	redelivered := *small
	redelivered.Headers = append([]kgo.RecordHeader(nil), small.Headers...)
	other := orderEvent(t, orders.TypeOrderFinished, orders.OrderFinished{OrderID: uuid.NewString(), Status: orders.StatusFinished})
	garbage := &kgo.Record{Topic: in, Value: []byte("{"), Headers: []kgo.RecordHeader{{Key: "ce_type", Value: []byte(orders.TypeOrderCreated)}}}
	for _, r := range []*kgo.Record{small, large, &redelivered, other} {
		r.Topic = in
	}
	producer, err := kgo.NewClient(seeds)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := producer.ProduceSync(ctx, small, other, garbage, large, &redelivered).FirstErr(); err != nil {
		t.Fatal(err)
	}

	simClient, err := kgo.NewClient(append([]kgo.Opt{seeds, kgo.FetchMaxWait(200 * time.Millisecond)},
		paymentsim.ClientOptions(grp, in)...)...)
	if err != nil {
		t.Fatal(err)
	}
	simCtx, stopSim := context.WithCancel(ctx)
	done := make(chan error, 1)
	sim := paymentsim.Config{InTopic: in, OutTopic: out, DeclineAbove: 1000,
		Log: slog.New(slog.NewTextHandler(t.Output(), nil))}
	go func() { done <- sim.Run(simCtx, simClient) }()
	defer func() {
		stopSim()
		if err := <-done; err != nil {
			t.Error(err)
		}
		simClient.Close()
	}()

	reader, err := kgo.NewClient(seeds, kgo.ConsumeTopics(out), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	var answers []*kgo.Record
	for len(answers) < 3 {
		fetches := reader.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("got %d answers before timeout", len(answers))
		}
		answers = append(answers, fetches.Records()...)
	}
	byOrder := map[string][]*kgo.Record{}
	for _, r := range answers {
		byOrder[string(r.Key)] = append(byOrder[string(r.Key)], r)
	}
	smallID, largeID := string(small.Key), string(large.Key)
	if len(byOrder[smallID]) != 2 || len(byOrder[largeID]) != 1 || len(byOrder) != 2 {
		t.Fatalf("answers per order = %v, want two for %s (redelivered) and one for %s", byOrder, smallID, largeID)
	}

	for _, tc := range []struct {
		rec    *kgo.Record
		typ    string
		reason string
	}{
		{byOrder[smallID][0], orders.TypePaymentSucceeded, ""},
		{byOrder[largeID][0], orders.TypePaymentFailed, paymentsim.DeclineReason},
	} {
		h := headers(tc.rec)
		if h["ce_specversion"] != "1.0" || h["ce_type"] != tc.typ || h["ce_source"] != paymentsim.Source ||
			h["content-type"] != "application/json" {
			t.Errorf("headers = %v, want CloudEvents %s", h, tc.typ)
		}
		if _, err := uuid.Parse(h["ce_id"]); err != nil {
			t.Errorf("ce_id %q: %v", h["ce_id"], err)
		}
		if _, err := time.Parse(time.RFC3339, h["ce_time"]); err != nil {
			t.Errorf("ce_time %q: %v", h["ce_time"], err)
		}
		var data map[string]string
		if err := json.Unmarshal(tc.rec.Value, &data); err != nil {
			t.Fatal(err)
		}
		if data["order_id"] != string(tc.rec.Key) || data["payment_id"] == "" || data["reason"] != tc.reason {
			t.Errorf("data = %s, want order_id %s and reason %q", tc.rec.Value, tc.rec.Key, tc.reason)
		}
	}
	first, second := headers(byOrder[smallID][0]), headers(byOrder[smallID][1])
	if first["ce_id"] != second["ce_id"] || string(byOrder[smallID][0].Value) != string(byOrder[smallID][1].Value) {
		t.Errorf("redelivered OrderCreated answered with ce_id %s then %s, want the same", first["ce_id"], second["ce_id"])
	}
	if first["ce_id"] == headers(byOrder[largeID][0])["ce_id"] {
		t.Error("two orders got the same ce_id")
	}

	// Offsets are committed once the answers are out: up to the end of the input.
	adm := kadm.NewClient(producer)
	ends, err := adm.ListEndOffsets(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, fmt.Sprintf("committed offsets at the end %v", ends), func() bool {
		committed, err := adm.FetchOffsets(ctx, grp)
		return err == nil && committedAll(committed, ends)
	})
}

func committedAll(committed kadm.OffsetResponses, ends kadm.ListedOffsets) bool {
	all := true
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(o.Topic, o.Partition)
		if o.Offset > 0 && (!ok || c.At != o.Offset) {
			all = false
		}
	})
	return all
}

func TestAnswerIsDeterministic(t *testing.T) {
	sim := paymentsim.Config{OutTopic: outTopic, DeclineAbove: 0}
	in := created(t, 1<<40)
	a, err := sim.Answer(in, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := sim.Answer(in, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if headers(a)["ce_id"] != headers(b)["ce_id"] || string(a.Value) != string(b.Value) {
		t.Errorf("same input, different answers: %v %s / %v %s", headers(a), a.Value, headers(b), b.Value)
	}
	if headers(a)["ce_type"] != orders.TypePaymentSucceeded {
		t.Errorf("DeclineAbove 0 declined: %v", headers(a))
	}
	declining := paymentsim.Config{OutTopic: outTopic, DeclineAbove: 10}
	c, _ := declining.Answer(in, time.Now())
	if headers(c)["ce_id"] == headers(a)["ce_id"] {
		t.Error("a decline and an approval of the same order share a ce_id")
	}
	if _, err := sim.Answer(&kgo.Record{Value: []byte(`{"amount":5}`)}, time.Now()); err == nil {
		t.Error("an OrderCreated without order_id was answered")
	}
}
