// Package periodic runs housekeeping jobs (retention, gauges) on a fixed
// interval beside a worker's main loop, and deletes in bounded batches.
package periodic

import (
	"context"
	"time"
)

// Run calls job at once and then every interval until ctx ends. An error
// of job, unless ctx has ended, goes to onErr (nil: dropped) and the next
// call comes at the next tick as usual.
func Run(ctx context.Context, every time.Duration, job func(context.Context) error, onErr func(error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := job(ctx); err != nil && ctx.Err() == nil && onErr != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DeleteInBatches calls del, which deletes at most batch rows, until a call
// deletes fewer than batch or fails: retention that never holds one long
// statement. It returns the rows deleted and the calls made.
func DeleteInBatches(ctx context.Context, batch int, del func(ctx context.Context, batch int) (int64, error)) (deleted int64, calls int, err error) {
	for {
		n, err := del(ctx, batch)
		calls++
		deleted += n
		if err != nil || n < int64(batch) {
			return deleted, calls, err
		}
	}
}
