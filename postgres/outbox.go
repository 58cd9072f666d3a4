package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// OutboxLockKey is the global outbox advisory lock. Relays from before lanes
// take it exclusively for each batch; lane publishers take it shared before
// their lane's lock, so the two kinds never publish at once; RedriveOutbox
// takes it exclusively. It is held for one transaction and so is released
// by commit, rollback or the death of the session.
const OutboxLockKey int64 = 0x6f75_7462_6f78_0001 // "outbox" + 1

// OutboxRecord is one unsent outbox row as the relay publishes it.
type OutboxRecord struct {
	ID        int64
	EventID   string
	Topic     string
	Key       []byte // nil: a null key
	Headers   []Header
	Payload   []byte
	CreatedAt time.Time
}

// SetIdleTimeout makes the server end tx's session when it stays idle inside
// the transaction for longer than d, so a stuck or partitioned relay releases
// the outbox lock.
func SetIdleTimeout(ctx context.Context, tx pgx.Tx, d time.Duration) error {
	_, err := tx.Exec(ctx, `SELECT set_config('idle_in_transaction_session_timeout', $1, true)`,
		strconv.FormatInt(d.Milliseconds(), 10))
	if err != nil {
		return fmt.Errorf("set idle_in_transaction_session_timeout: %w", err)
	}
	return nil
}

// TryLockOutbox takes the global outbox lock exclusively for the rest of tx,
// as relays from before lanes did for each batch (ordersbench's baseline
// relay still does). It reports false without waiting when another session
// holds it. tx must be
// READ COMMITTED (InTx is) so the statements after it see the previous
// holder's commit.
func TryLockOutbox(ctx context.Context, tx pgx.Tx) (bool, error) {
	var ok bool
	err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, OutboxLockKey).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("try outbox lock: %w", err)
	}
	return ok, nil
}

const claimOutboxSQL = `
	SELECT id, event_id::text, topic, key, key_bytes, headers, payload, created_at
	FROM outbox
	WHERE NOT sent AND parked_at IS NULL
	ORDER BY id
	LIMIT $1`

// ClaimOutbox reads up to limit rows neither sent nor parked, in id order,
// whatever their lane: the claim of relays from before lanes. Callers hold
// the global outbox lock exclusively (TryLockOutbox).
func ClaimOutbox(ctx context.Context, tx pgx.Tx, limit int) ([]OutboxRecord, error) {
	rows, err := tx.Query(ctx, claimOutboxSQL, limit)
	if err != nil {
		return nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	recs, err := pgx.CollectRows(rows, scanOutboxRecord)
	if err != nil {
		return nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	return recs, nil
}

// scanOutboxRecord reads a row of the claims' select list.
func scanOutboxRecord(row pgx.CollectableRow) (OutboxRecord, error) {
	var r OutboxRecord
	var key *string
	var keyBytes []byte
	err := row.Scan(&r.ID, &r.EventID, &r.Topic, &key, &keyBytes, (*headerList)(&r.Headers), &r.Payload, &r.CreatedAt)
	r.Key = joinKey(key, keyBytes)
	return r, err
}

// markOutboxSentSQL marks the rows $1 sent, stamped with the statement's
// time: after Kafka acknowledged them, where now() would be the publishing
// transaction's start, before the produce.
const markOutboxSentSQL = `UPDATE outbox SET sent = true, sent_at = statement_timestamp() WHERE id = ANY($1)`

// MarkOutboxSent marks the rows with the given ids sent inside tx (see
// markOutboxSentSQL).
func MarkOutboxSent(ctx context.Context, tx pgx.Tx, ids []int64) error {
	tag, err := tx.Exec(ctx, markOutboxSentSQL, ids)
	if err != nil {
		return fmt.Errorf("mark outbox rows sent: %w", err)
	}
	if tag.RowsAffected() != int64(len(ids)) {
		return fmt.Errorf("mark outbox rows sent: updated %d of %d rows", tag.RowsAffected(), len(ids))
	}
	return nil
}

// OutboxMarks is what became of a claimed batch: the rows to mark sent and
// the rows to park, each with its error, and whether the lane moves to its
// next generation (PublishOutboxLane).
type OutboxMarks struct {
	Sent           []int64
	Parked         []int64
	ParkErrs       []string // ParkErrs[i] is the error of Parked[i]
	NextGeneration bool
}

// DeleteSentOutbox deletes up to limit rows sent more than olderThan ago by
// the database clock, which stamped sent_at, oldest first, and reports how
// many it deleted. Unsent rows are never deleted.
func (db *DB) DeleteSentOutbox(ctx context.Context, olderThan time.Duration, limit int) (int64, error) {
	tag, err := db.Pool.Exec(ctx, `
		DELETE FROM outbox
		WHERE id IN (
			SELECT id FROM outbox
			WHERE sent AND sent_at < now() - $1::bigint * interval '1 microsecond'
			ORDER BY sent_at
			LIMIT $2)`, olderThan.Microseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("delete sent outbox rows: %w", classify(err))
	}
	return tag.RowsAffected(), nil
}

// CountUnsentOutbox counts rows waiting to be published (neither sent nor
// parked), stopping at limit so that a large
// backlog costs a bounded index scan.
func (db *DB) CountUnsentOutbox(ctx context.Context, limit int) (int64, error) {
	var n int64
	err := db.Pool.QueryRow(ctx, `
		SELECT count(*) FROM (SELECT 1 FROM outbox WHERE NOT sent AND parked_at IS NULL LIMIT $1) s`, limit).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count unsent outbox rows: %w", classify(err))
	}
	return n, nil
}

// OldestUnsentOutboxAge returns how long ago, by the database clock, the
// first row waiting to be published (not parked) was written, or 0 when none is unsent.
func (db *DB) OldestUnsentOutboxAge(ctx context.Context) (time.Duration, error) {
	var secs float64
	err := db.Pool.QueryRow(ctx, `
		SELECT EXTRACT(EPOCH FROM now() - created_at)::float8
		FROM outbox
		WHERE NOT sent AND parked_at IS NULL
		ORDER BY id
		LIMIT 1`).Scan(&secs)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("oldest unsent outbox row: %w", classify(err))
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// parkOutboxSQL parks the rows $1, each with its error $2: the claim skips
// them until RedriveOutbox.
const parkOutboxSQL = `
	UPDATE outbox SET parked_at = now(), last_error = p.err
	FROM unnest($1::bigint[], $2::text[]) AS p(id, err)
	WHERE outbox.id = p.id`

// ParkedOutboxRow is a parked row as listed for an operator.
type ParkedOutboxRow struct {
	ID        int64
	EventID   string
	EventType string
	Topic     string
	Key       []byte // nil: a null key
	Bytes     int    // payload size
	ParkedAt  time.Time
	LastError string
}

// ListParkedOutbox returns up to limit parked rows in id order.
func (db *DB) ListParkedOutbox(ctx context.Context, limit int) ([]ParkedOutboxRow, error) {
	rows, err := db.Pool.Query(ctx, `
		SELECT id, event_id::text, event_type, topic, key, key_bytes, octet_length(payload), parked_at, coalesce(last_error, '')
		FROM outbox
		WHERE parked_at IS NOT NULL
		ORDER BY id
		LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list parked outbox rows: %w", classify(err))
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ParkedOutboxRow, error) {
		var r ParkedOutboxRow
		var key *string
		var keyBytes []byte
		err := row.Scan(&r.ID, &r.EventID, &r.EventType, &r.Topic, &key, &keyBytes, &r.Bytes, &r.ParkedAt, &r.LastError)
		r.Key = joinKey(key, keyBytes)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list parked outbox rows: %w", classify(err))
	}
	return list, nil
}

// RedriveOutbox un-parks the rows with the given ids together with every
// parked row of their topics and keys (a row with a null key alone), or
// every parked row when ids is empty, so that the relay claims them again in
// id order. last_error is kept for the record. It returns how many rows it
// un-parked.
//
// It first waits for the global outbox lock, exclusively: every publisher
// holds it (shared) while a batch is in flight, so no batch that read the
// rows' parking state before the redrive commits after it (which would park
// a key's later row behind a row no longer parked, stranding it).
func (db *DB) RedriveOutbox(ctx context.Context, ids []int64) (n int64, err error) {
	if ids == nil {
		ids = []int64{}
	}
	err = db.InTx(ctx, false, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, OutboxLockKey); err != nil {
			return fmt.Errorf("wait for the outbox lock: %w", err)
		}
		n, err = redriveOutboxRows(ctx, tx, ids)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("redrive parked outbox rows: %w", classify(err))
	}
	return n, nil
}

// redriveOutboxRows is RedriveOutbox's UPDATE inside tx, whose caller holds
// the global outbox lock.
func redriveOutboxRows(ctx context.Context, tx pgx.Tx, ids []int64) (int64, error) {
	tag, err := tx.Exec(ctx, `
		UPDATE outbox SET parked_at = NULL
		WHERE parked_at IS NOT NULL
		  AND (cardinality($1::bigint[]) = 0
		       OR id = ANY($1::bigint[])
		       OR (topic, key) IN (SELECT topic, key FROM outbox WHERE id = ANY($1::bigint[]) AND parked_at IS NOT NULL)
		       OR (topic, key_bytes) IN (SELECT topic, key_bytes FROM outbox WHERE id = ANY($1::bigint[]) AND parked_at IS NOT NULL))`, ids)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// CountParkedOutbox counts parked rows, stopping at limit.
func (db *DB) CountParkedOutbox(ctx context.Context, limit int) (int64, error) {
	var n int64
	err := db.Pool.QueryRow(ctx, `
		SELECT count(*) FROM (SELECT 1 FROM outbox WHERE parked_at IS NOT NULL LIMIT $1) s`, limit).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count parked outbox rows: %w", classify(err))
	}
	return n, nil
}
