package kafka

import (
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/cloudevents"
)

// recordBatchOverhead is a record batch's header (61 bytes, magic 2) plus
// room for the longest length prefix of flexible produce requests.
const recordBatchOverhead = 61 + binary.MaxVarintLen32

// RecordBatchBytes is the size of a record batch holding only a record with
// key, a value of valueLen bytes and headers, as the producer measures it
// against ProducerBatchMaxBytes: a larger one fails with MESSAGE_TOO_LARGE
// before it reaches a broker. A nil key is a null key.
func RecordBatchBytes[H cloudevents.Header](key []byte, valueLen int, headers []H) int {
	return recordBatchOverhead + recordWireLen(recordBase(key, headers), valueLen)
}

// MaxValueLen returns the longest value a record with key and headers may
// have to fit in one batch of ProducerBatchMaxBytes alone, or -1 when even
// an empty value does not fit. A nil key is a null key. The headers may be
// kgo.RecordHeader or any type of that shape, such as postgres.Header.
func MaxValueLen[H cloudevents.Header](key []byte, headers []H) int {
	base := recordBase(key, headers)
	budget := ProducerBatchMaxBytes - recordBatchOverhead
	if recordWireLen(base, 0) > budget {
		return -1
	}
	v := max(budget-base-2*binary.MaxVarintLen32, 0) // fits whatever the varints' lengths
	for recordWireLen(base, v+1) <= budget {
		v++
	}
	return v
}

// recordBase is the length of a batch's first record's fields other than
// its value.
func recordBase[H cloudevents.Header](key []byte, headers []H) int {
	base := 3 + varintLen(len(headers)) // attributes, timestamp and offset deltas of a batch's first record
	if key == nil {
		base += varintLen(-1)
	} else {
		base += varintLen(len(key)) + len(key)
	}
	for _, h := range headers {
		h := kgo.RecordHeader(h)
		base += varintLen(len(h.Key)) + len(h.Key) + varintLen(len(h.Value)) + len(h.Value)
	}
	return base
}

// recordWireLen is the length, with its length prefix, of a record whose
// fields other than the value take base bytes.
func recordWireLen(base, valueLen int) int {
	l := base + varintLen(valueLen) + valueLen
	return varintLen(l) + l
}

func varintLen(n int) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutVarint(buf[:], int64(n))
}
