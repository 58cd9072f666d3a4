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

// lockOutboxLaneSQL starts a publishing transaction: it bounds how long
// the session may sit idle in it ($1 ms), commits it without waiting for
// its WAL flush, and takes, without waiting, the global outbox lock in
// shared mode and then lane $4's lock ($2, $3 and $4). It records the lane
// it locked, or the empty string when it did not, in the setting
// orders.outbox_lane, which the claim checks: the claim is sent with this
// statement in one round trip, so it must find nothing when the lock was
// not taken.
//
// Relays from before lanes take the global lock exclusively (TryLockOutbox),
// so during a rolling upgrade an old relay and a new one never publish at
// once, while new ones share it.
//
// It also reads the lane's generation (outbox_lanes; 0 without a row).
//
// synchronous_commit = off is sound here, and only here: this transaction
// writes nothing but the marks (sent, parked) of rows whose records Kafka
// already has. A crash can lose the last such commits (a few hundred
// milliseconds of them), never anything the commit of an order wrote. A lost
// mark leaves its row unsent, so it is published again with the same ce_id,
// which the contract allows (at least once); WAL is flushed in order, so the
// marks of a key's later rows are lost with its earlier ones and the key is
// republished in order. A lost park is redone when the row is claimed again.
// A move to the lane's next generation is the exception: it is committed
// synchronously (nextOutboxLaneGenerationSQL).
const lockOutboxLaneSQL = `
	SELECT set_config('idle_in_transaction_session_timeout', $1, true),
	       set_config('synchronous_commit', 'off', true),
	       set_config('orders.outbox_lane',
	           CASE WHEN pg_try_advisory_xact_lock_shared($2) AND pg_try_advisory_xact_lock($3, $4) THEN $4::int::text ELSE '' END,
	           true) <> '',
	       coalesce((SELECT generation FROM outbox_lanes WHERE lane = $4), 0)`

// nextOutboxLaneGenerationSQL moves lane $1 to its next generation, in the
// transaction that holds the lane's lock. It is committed synchronously:
// the next batch produces with the new generation's transactional id,
// which a lane's later holder must find, or it would not fence that
// producer.
const nextOutboxLaneGenerationSQL = `
	WITH sync AS (SELECT set_config('synchronous_commit', 'on', true))
	INSERT INTO outbox_lanes AS l (lane, generation) SELECT $1, 1 FROM sync
	ON CONFLICT (lane) DO UPDATE SET generation = l.generation + 1`

// claimOutboxLaneSQL reads a lane's rows neither sent nor parked, in id
// order, through outbox_unsent_lane, leaving out the rows of keys that wait
// for a retry ($3 ids, $4/$5 text keys, $6/$7 binary keys), and only when
// this transaction holds the lane's lock (lockOutboxLaneSQL): a one-time
// filter, checked before the scan. With each row it reads the first parked
// row of its topic and key, if any (through outbox_parked and
// outbox_parked_bytes, which hold only parked rows), so that the relay parks
// a row only behind an earlier parked row of its key. Rows with a null key
// are in no order with each other and are never looked up.
const claimOutboxLaneSQL = `
	SELECT id, event_id::text, topic, key, key_bytes, headers, payload, created_at,
	       CASE WHEN key IS NOT NULL THEN
	                (SELECT min(p.id) FROM outbox p WHERE p.parked_at IS NOT NULL AND p.topic = o.topic AND p.key = o.key)
	            WHEN key_bytes IS NOT NULL THEN
	                (SELECT min(p.id) FROM outbox p WHERE p.parked_at IS NOT NULL AND p.key_bytes IS NOT NULL
	                   AND p.topic = o.topic AND p.key_bytes = o.key_bytes)
	       END
	FROM outbox o
	WHERE current_setting('orders.outbox_lane', true) = $1::int::text
	  AND NOT sent AND parked_at IS NULL
	  AND ` + outboxLaneSQL + ` = $1
	  AND id <> ALL($3::bigint[])
	  AND NOT coalesce((topic, key) IN (SELECT * FROM unnest($4::text[], $5::text[])), false)
	  AND NOT coalesce((topic, key_bytes) IN (SELECT * FROM unnest($6::text[], $7::bytea[])), false)
	ORDER BY id
	LIMIT $2`

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
// are any, calls publish with them, for each of their topics and keys
// that has a parked row the id of its first (keyed topic + "\x00" + key),
// and the lane's generation. It parks and marks sent the rows publish
// names and moves the lane to its next generation when publish says so,
// then commits; an error of publish rolls the transaction back. The lock
// and the claim are held while publish runs, so no other publisher
// publishes in the lane meanwhile.
//
// The transaction takes two round trips: BEGIN, the lock and the claim are
// sent together, and so are the marks and COMMIT.
func (db *DB) PublishOutboxLane(ctx context.Context, lane, limit int, idle time.Duration, skip OutboxSkip,
	publish func(recs []OutboxRecord, parked map[string]int64, generation int) (OutboxMarks, error)) (busy bool, err error) {
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("publish outbox lane %d: %w", lane, classify(err))
	}
	// A transaction left open (an error, a failed COMMIT) is rolled back;
	// a connection that cannot even do that is closed by Release.
	defer func() {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = conn.Exec(rctx, "ROLLBACK")
			cancel()
		}
		conn.Release()
	}()

	var b pgx.Batch
	b.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
	b.Queue(lockOutboxLaneSQL, strconv.FormatInt(idle.Milliseconds(), 10), OutboxLockKey, outboxLaneLockClass, int32(lane))
	b.Queue(claimOutboxLaneSQL, lane, limit,
		nonNil(skip.IDs), nonNil(skip.TextTopics), nonNil(skip.TextKeys), nonNil(skip.BinTopics), nonNil(skip.BinKeys))
	var (
		locked     bool
		generation int
		recs       []OutboxRecord
		parked     = map[string]int64{}
	)
	err = func() error {
		br := conn.SendBatch(ctx, &b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		if err := br.QueryRow().Scan(nil, nil, &locked, &generation); err != nil {
			return fmt.Errorf("try lane lock: %w", err)
		}
		rows, err := br.Query()
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		recs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (OutboxRecord, error) {
			var r OutboxRecord
			var key *string
			var keyBytes []byte
			var firstParked *int64
			err := row.Scan(&r.ID, &r.EventID, &r.Topic, &key, &keyBytes, (*headerList)(&r.Headers), &r.Payload, &r.CreatedAt, &firstParked)
			r.Key = joinKey(key, keyBytes)
			if firstParked != nil {
				parked[r.Topic+"\x00"+string(r.Key)] = *firstParked
			}
			return r, err
		})
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		return br.Close()
	}()
	if err != nil {
		return false, fmt.Errorf("publish outbox lane %d: %w", lane, classify(err))
	}
	if !locked || len(recs) == 0 {
		return !locked, nil // the deferred ROLLBACK releases the locks
	}
	marks, err := publish(recs, parked, generation)
	if err != nil {
		return false, err
	}
	var end pgx.Batch
	if marks.NextGeneration {
		end.Queue(nextOutboxLaneGenerationSQL, int16(lane))
	}
	if len(marks.Parked) > 0 {
		end.Queue(parkOutboxSQL, marks.Parked, marks.ParkErrs)
	}
	if len(marks.Sent) > 0 {
		end.Queue(markOutboxSentSQL, marks.Sent)
	}
	end.Queue("COMMIT")
	br := conn.SendBatch(ctx, &end)
	defer br.Close()
	if marks.NextGeneration {
		if _, err := br.Exec(); err != nil {
			return false, fmt.Errorf("publish outbox lane %d: next generation: %w", lane, classify(err))
		}
	}
	if len(marks.Parked) > 0 {
		if _, err := br.Exec(); err != nil {
			return false, fmt.Errorf("publish outbox lane %d: park rows: %w", lane, classify(err))
		}
	}
	var sentErr error
	if len(marks.Sent) > 0 {
		tag, err := br.Exec()
		if err != nil {
			return false, fmt.Errorf("publish outbox lane %d: mark rows sent: %w", lane, classify(err))
		}
		// The COMMIT is already sent: every row it marks was acknowledged,
		// so the marks stand; a row missing from them stays unsent.
		if tag.RowsAffected() != int64(len(marks.Sent)) {
			sentErr = fmt.Errorf("publish outbox lane %d: marked %d of %d rows sent", lane, tag.RowsAffected(), len(marks.Sent))
		}
	}
	if _, err := br.Exec(); err != nil {
		return false, fmt.Errorf("publish outbox lane %d: commit: %w", lane, classify(err))
	}
	if err := br.Close(); err != nil {
		return false, fmt.Errorf("publish outbox lane %d: commit: %w", lane, classify(err))
	}
	return false, sentErr
}
