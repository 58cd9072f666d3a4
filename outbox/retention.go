package outbox

import (
	"context"

	"github.com/acme/orders-service/internal/periodic"
)

// retention runs DeleteExpired and logs what it deleted.
func (w *Relay) retention(ctx context.Context) error {
	n, _, err := w.DeleteExpired(ctx)
	if err == nil && n > 0 {
		w.log.Info("outbox retention deleted sent rows", "deleted", n)
	}
	return err
}

// DeleteExpired deletes rows sent more than Retention ago by the database
// clock, RetentionBatch at a time, until a statement deletes fewer than
// that. Run calls it every RetentionInterval.
func (w *Relay) DeleteExpired(ctx context.Context) (deleted int64, statements int, err error) {
	return periodic.DeleteInBatches(ctx, w.cfg.RetentionBatch, func(ctx context.Context, batch int) (int64, error) {
		return w.db.DeleteSentOutbox(ctx, w.cfg.Retention, batch)
	})
}

// refreshGauges sets the backlog gauges. Run calls it every GaugeInterval.
func (w *Relay) refreshGauges(ctx context.Context) error {
	n, err := w.db.CountUnsentOutbox(ctx, gaugeCountCap)
	if err != nil {
		return err
	}
	age, err := w.db.OldestUnsentOutboxAge(ctx)
	if err != nil {
		return err
	}
	parked, err := w.db.CountParkedOutbox(ctx, gaugeCountCap)
	if err != nil {
		return err
	}
	w.m.unsent.Set(float64(n))
	w.m.parkedNow.Set(float64(parked))
	w.m.oldestAge.Set(max(age.Seconds(), 0))
	return nil
}
