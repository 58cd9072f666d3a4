package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// OutboxLanes is the number of lanes the outbox is published in. A row's
// lane is a function of its key (outboxLaneSQL), fixed by the index
// outbox_unsent_lane: changing it is a migration.
const OutboxLanes = 16

// outboxLaneSQL is a row's lane. It must match the expression of the index
// outbox_unsent_lane exactly, or the claim cannot use it.
const outboxLaneSQL = `(hashtext(coalesce(key, encode(key_bytes, 'hex'), id::text)) & 15)`

// outboxLaneLockClass is the first half of a lane's advisory lock
// (pg_try_advisory_xact_lock(int4, int4)); the lane is the second.
const outboxLaneLockClass int32 = 0x6f6c616e // "olan"

// OutboxSkip names rows a claim leaves out: the keys whose rows wait for a
// retry (text keys, binary keys) and null-keyed rows, which are alone.
type OutboxSkip struct {
	IDs        []int64
	TextTopics []string
	TextKeys   []string
	BinTopics  []string
	BinKeys    [][]byte
}

// Add leaves r's key out of the claim, or r alone when its key is null.
func (s *OutboxSkip) Add(r OutboxRecord) {
	switch text, bin := splitKey(r.Key); {
	case text != nil:
		s.TextTopics, s.TextKeys = append(s.TextTopics, r.Topic), append(s.TextKeys, *text)
	case bin != nil:
		s.BinTopics, s.BinKeys = append(s.BinTopics, r.Topic), append(s.BinKeys, bin)
	default:
		s.IDs = append(s.IDs, r.ID)
	}
}

// startPublishingSQL bounds how long the session may sit idle in the
// publishing transaction and commits it without waiting for its WAL flush.
//
// synchronous_commit = off is sound here, and only here: this transaction
// writes nothing but the marks (sent, parked) of rows whose records Kafka
// already has. A crash can lose the last such commits (a few hundred
// milliseconds of them), never anything the commit of an order wrote. A lost
// mark leaves its row unsent, so it is published again with the same ce_id,
// which the contract allows (at least once); WAL is flushed in order, so the
// marks of a key's later rows are lost with its earlier ones and the key is
// republished in order. A lost park is redone when the row is claimed again.
const startPublishingSQL = `
	SELECT set_config('idle_in_transaction_session_timeout', $1, true),
	       set_config('synchronous_commit', 'off', true)`

// lockOutboxLaneSQL takes, without waiting, the global outbox lock in
// shared mode and then the lane's lock. Relays from before lanes take the
// global lock exclusively (TryLockOutbox), so during a rolling upgrade an
// old relay and a new one never publish at once, while new ones share it.
const lockOutboxLaneSQL = `
	SELECT CASE WHEN pg_try_advisory_xact_lock_shared($1) THEN pg_try_advisory_xact_lock($2, $3) ELSE false END`

// TryLockOutboxLane takes lane's lock for the rest of tx, reporting false
// without waiting when another session holds the lane or an older relay
// holds the whole outbox.
func TryLockOutboxLane(ctx context.Context, tx pgx.Tx, lane int) (bool, error) {
	var ok bool
	err := tx.QueryRow(ctx, lockOutboxLaneSQL, OutboxLockKey, outboxLaneLockClass, int32(lane)).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("try outbox lane %d lock: %w", lane, err)
	}
	return ok, nil
}

// claimOutboxLaneSQL reads a lane's rows neither sent nor parked, in id
// order, through outbox_unsent_lane, leaving out the rows of keys that wait
// for a retry ($3 ids, $4/$5 text keys, $6/$7 binary keys).
const claimOutboxLaneSQL = `
	SELECT id, event_id::text, topic, key, key_bytes, headers, payload, created_at
	FROM outbox
	WHERE NOT sent AND parked_at IS NULL
	  AND ` + outboxLaneSQL + ` = $1
	  AND id <> ALL($3::bigint[])
	  AND NOT coalesce((topic, key) IN (SELECT * FROM unnest($4::text[], $5::text[])), false)
	  AND NOT coalesce((topic, key_bytes) IN (SELECT * FROM unnest($6::text[], $7::bytea[])), false)
	ORDER BY id
	LIMIT $2`

// ClaimOutboxLane reads up to limit of lane's rows neither sent nor parked
// nor left out by skip, in id order. Callers hold the lane's lock, which is
// what keeps two publishers from publishing the same rows.
func ClaimOutboxLane(ctx context.Context, tx pgx.Tx, lane, limit int, skip OutboxSkip) ([]OutboxRecord, error) {
	rows, err := tx.Query(ctx, claimOutboxLaneSQL, lane, limit,
		nonNil(skip.IDs), nonNil(skip.TextTopics), nonNil(skip.TextKeys), nonNil(skip.BinTopics), nonNil(skip.BinKeys))
	if err != nil {
		return nil, fmt.Errorf("claim outbox lane %d: %w", lane, err)
	}
	recs, err := pgx.CollectRows(rows, scanOutboxRecord)
	if err != nil {
		return nil, fmt.Errorf("claim outbox lane %d: %w", lane, err)
	}
	return recs, nil
}

// nonNil returns s, or an empty slice for nil, so that it is sent as an
// empty array rather than NULL.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// activeOutboxLanesSQL lists the lanes with rows neither sent nor parked:
// one probe of outbox_unsent_lane per lane.
const activeOutboxLanesSQL = `
	SELECT l FROM generate_series(0, 15) AS l
	WHERE EXISTS (SELECT 1 FROM outbox WHERE NOT sent AND parked_at IS NULL AND ` + outboxLaneSQL + ` = l)`

// ActiveOutboxLanes returns the lanes that have rows to publish.
func (db *DB) ActiveOutboxLanes(ctx context.Context) ([]int, error) {
	rows, err := db.Pool.Query(ctx, activeOutboxLanesSQL)
	if err != nil {
		return nil, fmt.Errorf("active outbox lanes: %w", classify(err))
	}
	lanes, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("active outbox lanes: %w", classify(err))
	}
	return lanes, nil
}

// PublishOutboxLane runs one publishing transaction in lane. It bounds how
// long the session may sit idle in it by idle, takes the lane's lock (busy,
// without waiting, when another session holds it), claims up to limit rows
// of the lane neither sent nor parked nor left out by skip and, when there
// are any, calls publish with them and, for each of their topics and keys
// that has a parked row, the id of its first (see ParkedKeys). It parks and
// marks sent the rows publish names, then commits; an error of publish
// rolls the transaction back. The lock and the claim are held while publish
// runs, so no other publisher publishes in the lane meanwhile.
func (db *DB) PublishOutboxLane(ctx context.Context, lane, limit int, idle time.Duration, skip OutboxSkip,
	publish func(recs []OutboxRecord, parked map[string]int64) (OutboxMarks, error)) (busy bool, err error) {
	err = db.InTx(ctx, false, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, startPublishingSQL, strconv.FormatInt(idle.Milliseconds(), 10)); err != nil {
			return fmt.Errorf("start publishing: %w", err)
		}
		locked, err := TryLockOutboxLane(ctx, tx, lane)
		if err != nil {
			return err
		}
		if !locked {
			busy = true
			return nil
		}
		recs, err := ClaimOutboxLane(ctx, tx, lane, limit, skip)
		if err != nil || len(recs) == 0 {
			return err
		}
		parked, err := ParkedKeys(ctx, tx, recs)
		if err != nil {
			return err
		}
		marks, err := publish(recs, parked)
		if err != nil {
			return err
		}
		if len(marks.Parked) > 0 {
			if err := ParkOutbox(ctx, tx, marks.Parked, marks.ParkErrs); err != nil {
				return err
			}
		}
		if len(marks.Sent) > 0 {
			return MarkOutboxSent(ctx, tx, marks.Sent)
		}
		return nil
	})
	return busy, err
}
