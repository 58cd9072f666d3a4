package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// outboxOwnerLockClass is the first half of the session-level advisory
// locks by which relays share out the lanes (LaneOwner); the lane is the
// second, and outboxMemberKey marks a relay as a member.
const (
	outboxOwnerLockClass int32 = 0x6f6f776e // "oown"
	outboxMemberKey      int32 = OutboxLanes
)

// LaneOwner is one relay's PostgreSQL session holding the lanes it
// publishes in, so that each lane keeps one relay while the relays stay
// the same: a lane moving between relays makes the new one's Kafka producer
// fence the old one's, which costs a transaction and a producer on each
// move. Ownership is affinity, not exclusion: a batch still takes the
// lane's transaction lock (PublishOutboxLane). The locks are the session's,
// so a relay that dies or loses its session frees its lanes at once. A
// LaneOwner is not safe for concurrent use.
type LaneOwner struct {
	conn *pgx.Conn
}

// NewLaneOwner opens a session of its own (outside the pool) and makes this
// relay a member, counted by Members.
func (db *DB) NewLaneOwner(ctx context.Context) (*LaneOwner, error) {
	conn, err := pgx.ConnectConfig(ctx, db.Pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("lane owner session: %w", classify(err))
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock_shared($1, $2)`, outboxOwnerLockClass, outboxMemberKey); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("lane owner membership: %w", classify(err))
	}
	return &LaneOwner{conn: conn}, nil
}

// Close ends the session, which frees its lanes.
func (o *LaneOwner) Close(ctx context.Context) error { return o.conn.Close(ctx) }

// Members counts the relays that share out this database's lanes.
func (o *LaneOwner) Members(ctx context.Context) (int, error) {
	var n int
	err := o.conn.QueryRow(ctx, `
		SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND granted
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = 2`,
		outboxOwnerLockClass, outboxMemberKey).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count lane owners: %w", classify(err))
	}
	return n, nil
}

// Take takes up to n lanes that no relay holds, other than those in held,
// trying them from lane from on, and returns them.
func (o *LaneOwner) Take(ctx context.Context, n, from int, held []int) ([]int, error) {
	rows, err := o.conn.Query(ctx, `
		SELECT lane FROM (SELECT (g + $2) % $3 AS lane FROM generate_series(0, $3 - 1) AS g) AS l
		WHERE CASE WHEN lane = ANY($4::int[]) THEN false ELSE pg_try_advisory_lock($1, lane) END
		LIMIT $5`, outboxOwnerLockClass, from, OutboxLanes, nonNil(held), n)
	if err != nil {
		return nil, fmt.Errorf("take lanes: %w", classify(err))
	}
	lanes, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("take lanes: %w", classify(err))
	}
	return lanes, nil
}

// Release gives lane up for another relay to take.
func (o *LaneOwner) Release(ctx context.Context, lane int) error {
	if _, err := o.conn.Exec(ctx, `SELECT pg_advisory_unlock($1, $2)`, outboxOwnerLockClass, lane); err != nil {
		return fmt.Errorf("release lane %d: %w", lane, classify(err))
	}
	return nil
}
