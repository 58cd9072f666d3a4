package inbox_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/internal/poll"
)

// TestAllowedSources: with an allow-list of ce_source values, a payment
// result from another source (or none) is dead-lettered at once, naming its
// source, and its order is left alone; one from an allowed source applies.
func TestAllowedSources(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	forged, unsourced, genuine := e.createOrder(100), e.createOrder(100), e.createOrder(100)
	from := func(orderID, source string) *kgo.Record {
		r := paymentRecord(orderID, uuid.NewString(), orders.TypePaymentSucceeded)
		for i, h := range r.Headers {
			if h.Key == "ce_source" {
				r.Headers[i].Value = []byte(source)
			}
		}
		if source == "" {
			r.Headers = append(r.Headers[:2], r.Headers[3:]...)
		}
		return r
	}
	recs := e.produce(from(forged, "evil-service"), from(unsourced, ""), from(genuine, "payments-service"))
	c, _ := e.startConsumer(m, inbox.ConsumerOptions{}, nil)
	e.startProcessor(m, inbox.ProcessorOptions{Wake: c.Stored(), AllowedSources: []string{"payments-service", "payments-sim"}})
	poll.Eventually(t, waitLong, "two dead, one processed", func() bool {
		return testutil.ToFloat64(m.Dead) == 2 && testutil.ToFloat64(m.Processed) == 1
	})
	for i, want := range []string{`ce_source "evil-service" is not an allowed source`, `ce_source "" is not an allowed source`} {
		id := header(recs[i], "ce_id")
		r, ok := e.row(id)
		if !ok || !r.dead || r.attempts > 1 || r.lastError == nil || !strings.Contains(*r.lastError, want) {
			t.Errorf("record %d: inbox row %+v (found %v), want dead at the first attempt with %q", i, r, ok, want)
		}
	}
	if s := e.status(forged); s != orders.StatusNew {
		t.Errorf("order of the forged payment: %v, want new", s)
	}
	if s := e.status(genuine); s != orders.StatusFinished {
		t.Errorf("order of the allowed payment: %v, want finished", s)
	}
	e.startRelay()
	for _, r := range e.readDLQ(2, 30*time.Second) {
		if !strings.Contains(header(r, "dlq_error"), "is not an allowed source") {
			t.Errorf("DLQ copy's dlq_error = %q", header(r, "dlq_error"))
		}
	}
}
