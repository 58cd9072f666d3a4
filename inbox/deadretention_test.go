package inbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/acme/orders-service/inbox"
	"github.com/acme/orders-service/postgres"
)

// TestRetentionDeletesOldDeadRows: dead rows are deleted once they have
// been dead for DeadRetention (INBOX_DEAD_RETENTION), counted from when they
// were dead-lettered, not received; recent dead rows, re-driven rows and
// pending rows stay.
func TestRetentionDeletesOldDeadRows(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	oldDead, recentDead, redriven, pending := paymentMessage(uuid.NewString()), paymentMessage(uuid.NewString()),
		paymentMessage(uuid.NewString()), paymentMessage(uuid.NewString())
	for _, m := range []*postgres.InboxMessage{&oldDead, &recentDead, &redriven} {
		m.EventType = "payments.v1.Unknown" // dead-lettered at once
	}
	e.store(oldDead, recentDead, redriven, pending)
	p := inbox.NewProcessor(inbox.ProcessorDeps{Store: e.db, Applier: e.svc, Metrics: newMetrics(t), Logger: testLogger(t)},
		inbox.ProcessorOptions{DLQTopic: e.dlqTopic, DeadRetention: 24 * time.Hour})
	if _, err := p.ProcessBatch(ctx); err != nil {
		t.Fatal(err)
	}
	// Received long ago; oldDead and redriven also dead-lettered long ago.
	e.db.Pool.Exec(ctx, `UPDATE inbox SET created_at = now() - interval '400 hours'`)
	e.db.Pool.Exec(ctx, `UPDATE inbox SET dead_at = now() - interval '25 hours' WHERE message_id = ANY($1)`,
		[]string{oldDead.MessageID, redriven.MessageID})
	if _, err := postgres.Redrive(ctx, e.db, []string{redriven.MessageID}); err != nil {
		t.Fatal(err)
	}

	n, _, err := p.DeleteExpired(ctx)
	if err != nil || n != 1 {
		t.Errorf("deleted %d, %v; want 1 (the row dead for 25h)", n, err)
	}
	if _, ok := e.row(oldDead.MessageID); ok {
		t.Error("the row dead for 25h with a retention of 24h is still there")
	}
	for name, m := range map[string]postgres.InboxMessage{"recently dead": recentDead, "re-driven": redriven, "pending": pending} {
		if _, ok := e.row(m.MessageID); !ok {
			t.Errorf("the %s row was deleted", name)
		}
	}
}
