package kafka

import (
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kgo"
)

// MaxRecordBytes is the largest record batch this package's producers send
// (kgo.ProducerBatchMaxBytes); a record that does not fit in one batch of
// this size alone fails with MESSAGE_TOO_LARGE before it reaches a broker.
const MaxRecordBytes = ProducerBatchMaxBytes

// recordBatchOverhead is a record batch's header (61 bytes, magic 2) plus
// room for the longest length prefix of flexible produce requests.
const recordBatchOverhead = 61 + binary.MaxVarintLen32

// MaxValueLen returns the longest value a record with key and headers may
// have to fit in one batch of MaxRecordBytes alone, or -1 when even an
// empty value does not fit. A nil key is a null key.
func MaxValueLen(key []byte, headers []kgo.RecordHeader) int {
	base := 3 + varintLen(len(headers)) // attributes, timestamp and offset deltas of a batch's first record
	if key == nil {
		base += varintLen(-1)
	} else {
		base += varintLen(len(key)) + len(key)
	}
	for _, h := range headers {
		base += varintLen(len(h.Key)) + len(h.Key) + varintLen(len(h.Value)) + len(h.Value)
	}
	budget := MaxRecordBytes - recordBatchOverhead
	if recordWireLen(base, 0) > budget {
		return -1
	}
	v := max(budget-base-2*binary.MaxVarintLen32, 0) // fits whatever the varints' lengths
	for recordWireLen(base, v+1) <= budget {
		v++
	}
	return v
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
