package cloudevents

import "strconv"

// Headers a dead-letter copy carries beside the original record's headers.
const (
	HeaderDLQError             = "dlq_error"
	HeaderDLQOriginalTopic     = "dlq_original_topic"
	HeaderDLQOriginalPartition = "dlq_original_partition"
	HeaderDLQOriginalOffset    = "dlq_original_offset"
	// HeaderDLQTruncated is set when the record's value was too large for
	// the dead-letter topic and was cut: its original length in bytes.
	HeaderDLQTruncated = "dlq_truncated"
)

// isDLQHeader reports whether key is one of the headers DeadLetter sets.
func isDLQHeader(key string) bool {
	switch key {
	case HeaderDLQError, HeaderDLQOriginalTopic, HeaderDLQOriginalPartition, HeaderDLQOriginalOffset, HeaderDLQTruncated:
		return true
	}
	return false
}

// DeadLetter returns the value and headers of the dead-letter copy of the
// record read at pos with value and headers hs, which failed for reason.
// The headers are hs without any dlq_* header DeadLetter sets (a record
// dead-lettered again carries only the current set), then dlq_error,
// dlq_original_topic, dlq_original_partition and dlq_original_offset.
//
// maxValueLen returns the longest value a copy with the given headers may
// have (negative when none fits), as kafka.MaxValueLen computes it for the
// record's key. When value is longer, it is cut to fit and a dlq_truncated
// header gives its original length. Neither value nor hs is modified.
func DeadLetter[H Header](pos Position, value []byte, hs []H, reason string, maxValueLen func([]H) int) ([]byte, []H) {
	out := make([]H, 0, len(hs)+5)
	for _, h := range hs {
		if !isDLQHeader(header(h).Key) {
			out = append(out, h)
		}
	}
	out = append(out,
		H(header{HeaderDLQError, []byte(reason)}),
		H(header{HeaderDLQOriginalTopic, []byte(pos.Topic)}),
		H(header{HeaderDLQOriginalPartition, strconv.AppendInt(nil, int64(pos.Partition), 10)}),
		H(header{HeaderDLQOriginalOffset, strconv.AppendInt(nil, pos.Offset, 10)}),
	)
	if len(value) <= maxValueLen(out) {
		return value, out
	}
	out = append(out, H(header{HeaderDLQTruncated, strconv.AppendInt(nil, int64(len(value)), 10)}))
	return value[:min(max(maxValueLen(out), 0), len(value))], out
}
