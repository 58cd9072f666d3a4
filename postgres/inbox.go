package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// InboxMessage is one Kafka record stored in the inbox. MessageID is the
// record's ce_id, or <topic>/<partition>/<offset> when it has none (or one
// that is not usable as an id).
type InboxMessage struct {
	MessageID string
	// AliasID, when set, is another id under which an earlier version may
	// have stored this very record (same topic, partition and offset).
	AliasID   string
	Seq       int64
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Headers   []Header
	Payload   []byte
	EventType string
	Attempts  int
}

// InsertInbox stores msgs in one statement, skipping message ids already in
// the inbox (or repeated within msgs), and records stored under their
// AliasID at the same position, and returns how many rows were new. It
// commits on its own: once it returns nil the rows are durable.
func (db *DB) InsertInbox(ctx context.Context, msgs []InboxMessage) (inserted int64, err error) {
	n := len(msgs)
	ids, topics, eventTypes, headers := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	aliases := make([]string, n)
	partitions, offsets := make([]int32, n), make([]int64, n)
	keys, payloads := make([][]byte, n), make([][]byte, n)
	for i, m := range msgs {
		h, err := encodeHeaders(nonNilHeaders(m.Headers))
		if err != nil {
			return 0, fmt.Errorf("encode inbox headers of %s: %w", m.MessageID, err)
		}
		ids[i], topics[i], eventTypes[i], headers[i], aliases[i] = m.MessageID, m.Topic, m.EventType, string(h), m.AliasID
		partitions[i], offsets[i], keys[i] = m.Partition, m.Offset, m.Key
		payloads[i] = m.Payload
		if payloads[i] == nil {
			payloads[i] = []byte{}
		}
	}
	tag, err := db.Pool.Exec(ctx, `
		INSERT INTO inbox (message_id, topic, kafka_partition, kafka_offset, key, headers, payload, event_type)
		SELECT id, topic, part, off, key, headers::jsonb, payload, event_type
		FROM unnest($1::text[], $2::text[], $3::integer[], $4::bigint[], $5::bytea[], $6::text[], $7::bytea[], $8::text[], $9::text[])
			AS m(id, topic, part, off, key, headers, payload, event_type, alias)
		WHERE m.alias = '' OR NOT EXISTS (
			SELECT 1 FROM inbox i
			WHERE i.message_id = m.alias AND i.topic = m.topic AND i.kafka_partition = m.part AND i.kafka_offset = m.off)
		ON CONFLICT (message_id) DO NOTHING`,
		ids, topics, partitions, offsets, keys, headers, payloads, eventTypes, aliases)
	if err != nil {
		return 0, fmt.Errorf("insert inbox rows: %w", classify(err))
	}
	return tag.RowsAffected(), nil
}

func nonNilHeaders(h []Header) []Header {
	if h == nil {
		return []Header{}
	}
	return h
}

const claimInboxSQL = `
	SELECT message_id, seq, topic, kafka_partition, kafka_offset, key, headers, payload, event_type, attempts
	FROM inbox
	WHERE NOT processed AND NOT dead AND next_attempt_at <= now()
	ORDER BY next_attempt_at, seq
	LIMIT $1
	FOR UPDATE SKIP LOCKED`

// ClaimInbox locks up to limit pending rows whose retry time has come, oldest
// first, skipping rows other transactions hold. The locks last until tx ends.
func ClaimInbox(ctx context.Context, tx pgx.Tx, limit int) ([]InboxMessage, error) {
	rows, err := tx.Query(ctx, claimInboxSQL, limit)
	if err != nil {
		return nil, fmt.Errorf("claim inbox rows: %w", err)
	}
	msgs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (InboxMessage, error) {
		var m InboxMessage
		err := row.Scan(&m.MessageID, &m.Seq, &m.Topic, &m.Partition, &m.Offset, &m.Key, (*headerList)(&m.Headers),
			&m.Payload, &m.EventType, &m.Attempts)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim inbox rows: %w", err)
	}
	return msgs, nil
}

// LockOrders locks the orders with the given ids (UUIDs; duplicates and
// unknown ids are fine) in id order until tx ends, the order in which
// OrderService.ApplyPayments locks them, so that callers locking several
// orders cannot deadlock each other.
func LockOrders(ctx context.Context, tx pgx.Tx, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `
		SELECT 1 FROM orders WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return fmt.Errorf("lock %d orders: %w", len(ids), err)
	}
	return nil
}

// MarkInboxProcessed records, in one statement, that the messages were
// applied.
func MarkInboxProcessed(ctx context.Context, tx pgx.Tx, messageIDs ...string) error {
	if len(messageIDs) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `
		UPDATE inbox SET processed = true, processed_at = now(), attempts = attempts + 1
		WHERE message_id = ANY($1)`, messageIDs)
	if err != nil {
		return fmt.Errorf("mark %d inbox rows processed (first %s): %w", len(messageIDs), messageIDs[0], err)
	}
	return nil
}

// RetryInbox records a failed attempt and schedules the next one after delay.
func RetryInbox(ctx context.Context, tx pgx.Tx, messageID, lastError string, delay time.Duration) error {
	_, err := tx.Exec(ctx, `
		UPDATE inbox
		SET attempts = attempts + 1, last_error = $2, next_attempt_at = now() + $3::bigint * interval '1 microsecond'
		WHERE message_id = $1`, messageID, lastError, delay.Microseconds())
	if err != nil {
		return fmt.Errorf("schedule inbox %s retry: %w", messageID, err)
	}
	return nil
}

// MarkInboxDead records a final failed attempt: the message is dead until
// re-driven. The caller copies it to the dead-letter topic in the same tx.
func MarkInboxDead(ctx context.Context, tx pgx.Tx, messageID, lastError string) error {
	_, err := tx.Exec(ctx, `
		UPDATE inbox SET dead = true, dead_at = now(), last_error = $2, attempts = attempts + 1
		WHERE message_id = $1`, messageID, lastError)
	if err != nil {
		return fmt.Errorf("mark inbox %s dead: %w", messageID, err)
	}
	return nil
}

// Redrive re-queues dead inbox rows, all of them when ids is empty, for an
// immediate new series of attempts. last_error is kept for the record. It
// returns how many rows were re-queued.
func Redrive(ctx context.Context, db *DB, ids []string) (int64, error) {
	if ids == nil {
		ids = []string{}
	}
	tag, err := db.Pool.Exec(ctx, `
		UPDATE inbox SET dead = false, dead_at = NULL, attempts = 0, next_attempt_at = now()
		WHERE dead AND (cardinality($1::text[]) = 0 OR message_id = ANY($1::text[]))`, ids)
	if err != nil {
		return 0, fmt.Errorf("redrive inbox: %w", classify(err))
	}
	return tag.RowsAffected(), nil
}

// DeleteProcessedInbox deletes up to limit rows processed more than olderThan
// ago by the database clock, which stamped processed_at, and returns how many
// it deleted. Dead and pending rows are never deleted.
func (db *DB) DeleteProcessedInbox(ctx context.Context, olderThan time.Duration, limit int) (int64, error) {
	tag, err := db.Pool.Exec(ctx, `
		DELETE FROM inbox WHERE message_id IN (
			SELECT message_id FROM inbox
			WHERE processed AND processed_at < now() - $1::bigint * interval '1 microsecond'
			ORDER BY processed_at
			LIMIT $2)`, olderThan.Microseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("delete processed inbox rows: %w", classify(err))
	}
	return tag.RowsAffected(), nil
}

// DeleteDeadInbox deletes up to limit rows dead-lettered more than olderThan
// ago by the database clock, which stamped dead_at, and returns how many it
// deleted. Their copies stay on the dead-letter topic.
func (db *DB) DeleteDeadInbox(ctx context.Context, olderThan time.Duration, limit int) (int64, error) {
	tag, err := db.Pool.Exec(ctx, `
		DELETE FROM inbox WHERE message_id IN (
			SELECT message_id FROM inbox
			WHERE dead AND dead_at < now() - $1::bigint * interval '1 microsecond'
			ORDER BY dead_at
			LIMIT $2)`, olderThan.Microseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("delete dead inbox rows: %w", classify(err))
	}
	return tag.RowsAffected(), nil
}

// CountPendingInbox counts rows neither processed nor dead, reading at most
// limit entries of the pending index so the cost stays bounded.
func (db *DB) CountPendingInbox(ctx context.Context, limit int) (int64, error) {
	var n int64
	err := db.Pool.QueryRow(ctx, `
		SELECT count(*) FROM (
			SELECT 1 FROM inbox WHERE NOT processed AND NOT dead LIMIT $1
		) AS pending`, limit).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count pending inbox rows: %w", classify(err))
	}
	return n, nil
}
