package inbox

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/acme/orders-service/postgres"
)

// SetBeforeCommit installs a hook that runs after a poll's rows are stored
// and before its offsets are committed; an error from it ends Run there.
func SetBeforeCommit(c *Consumer, f func() error) { c.beforeCommit = f }

// ApplyEach runs the row-by-row pass of a batch on msgs inside tx.
func ApplyEach(p *Processor, ctx context.Context, tx pgx.Tx, msgs []postgres.InboxMessage) error {
	_, err := p.applyEach(ctx, tx, msgs)
	return err
}
