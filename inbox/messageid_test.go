package inbox_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/postgres"
)

// TestCeIDEqualToAnotherRecordsPositionIsNoDuplicate: a record whose ce_id
// spells another record's <topic>/<partition>/<offset> fallback id does not
// make that record a duplicate: both are stored and applied.
func TestCeIDEqualToAnotherRecordsPositionIsNoDuplicate(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	a, b := e.createOrder(100), e.createOrder(200)
	// On partition 0 of the fresh topic the first record gets offset 0 and
	// the second offset 1: the first claims the second's position as ce_id.
	impostor := paymentRecord(a, e.inboxTopic+"/0/1", orders.TypePaymentSucceeded)
	noID := paymentRecord(b, "", orders.TypePaymentSucceeded)
	recs := e.produce(impostor, noID)
	if recs[1].Offset != 1 {
		t.Fatalf("record without ce_id at offset %d, want 1", recs[1].Offset)
	}

	c, _ := e.startConsumer(m, inbox.ConsumerOptions{}, nil)
	e.startProcessor(m, inbox.ProcessorOptions{Wake: c.Stored()})
	poll.Eventually(t, waitLong, "both records received", func() bool { return testutil.ToFloat64(m.Received) == 2 })
	poll.Eventually(t, waitLong, "both records applied", func() bool { return testutil.ToFloat64(m.Processed) == 2 })
	if got := testutil.ToFloat64(m.Duplicates); got != 0 {
		t.Errorf("duplicates = %v, want 0", got)
	}
	for _, id := range []string{a, b} {
		if s := e.status(id); s != orders.StatusFinished {
			t.Errorf("order %s is %s, want finished", id, s)
		}
	}
}

// TestRowStoredBeforeUpgradeStaysDuplicate: a record stored by an earlier
// version under a ce_id containing '/' (now identified by its position) is
// still recognised as stored when Kafka delivers it again after the upgrade.
func TestRowStoredBeforeUpgradeStaysDuplicate(t *testing.T) {
	e := newEnv(t)
	m := newMetrics(t)
	a := e.createOrder(100)
	rec := e.produce(paymentRecord(a, "payments/42", orders.TypePaymentSucceeded))[0]
	old := paymentMessage(a)
	old.MessageID, old.Topic, old.Partition, old.Offset = "payments/42", rec.Topic, rec.Partition, rec.Offset
	if _, err := e.db.InsertInbox(context.Background(), []postgres.InboxMessage{old}); err != nil {
		t.Fatal(err)
	}

	e.startConsumer(m, inbox.ConsumerOptions{}, nil)
	poll.Eventually(t, waitLong, "the record received", func() bool { return testutil.ToFloat64(m.Received) == 1 })
	if got := testutil.ToFloat64(m.Duplicates); got != 1 {
		t.Errorf("duplicates = %v, want 1", got)
	}
	if n := e.count(`SELECT count(*) FROM inbox`); n != 1 {
		t.Errorf("inbox rows = %d, want the one stored before the upgrade", n)
	}
	if _, ok := e.row(fmt.Sprintf("%s/%d/%d", rec.Topic, rec.Partition, rec.Offset)); ok {
		t.Errorf("the redelivered record was stored again under its position")
	}
}
